// `keel dev`: the local development stack in one foreground command — keel-engine on the
// embedded RocksDB store (data in .keel/data) plus a runtime hosting the example actors,
// with a clean ordered stop on Ctrl-C/SIGTERM (runtime first, then engine). docs/cli.md.
#pragma once

#include <CLI/CLI.hpp>

namespace keel::cli {

// Registers the `dev` subcommand on `app`.
void AddDevCommand(CLI::App& app);

}  // namespace keel::cli
