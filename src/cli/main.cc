// keel — Keel's command-line tool: the local dev stack (`keel dev`), actors over the REST
// API and the gateway (`keel actors`, `keel call`, `keel watch`) and the protocol inspector
// (`keel proto`). docs/cli.md describes every command, flag and exit code.
#include <iostream>

#include <CLI/CLI.hpp>

#include "cli/common.h"
#include "cli/dev_command.h"
#include "cli/proto_command.h"
#ifdef KEEL_CLI_HAS_CLIENT
#include "cli/actor_commands.h"
#endif

int main(int argc, char** argv) {
  keel::cli::SetInvocationName(argc > 0 ? argv[0] : "keel");
  CLI::App app{"keel — stateful actors on keel-engine"};
  app.set_version_flag("--version", "keel 0.1.0");
  app.require_subcommand(0, 1);
  keel::cli::AddDevCommand(app);
#ifdef KEEL_CLI_HAS_CLIENT
  keel::cli::AddActorCommands(app);
#endif
  keel::cli::AddProtoCommand(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::RuntimeError& e) {
    return e.get_exit_code();  // a command failed; it printed its own error line
  } catch (const CLI::ParseError& e) {
    return keel::cli::Fail(keel::cli::kExitUsage, "cli.usage",
                           std::string(e.what()) + " (see `keel --help`)");
  }
  if (app.get_subcommands().empty()) {
    std::cout << app.help();
  }
  return 0;
}
