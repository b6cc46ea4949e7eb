// keel — Keel's command-line tool.
#include <iostream>

#include <CLI/CLI.hpp>

#include "cli/proto_command.h"

int main(int argc, char** argv) {
  CLI::App app{"keel — stateful actors on keel-engine"};
  app.set_version_flag("--version", "keel 0.1.0");
  app.require_subcommand(0, 1);
  keel::cli::AddProtoCommand(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (app.get_subcommands().empty()) {
    std::cout << app.help();
  }
  return 0;
}
