// `keel proto decode|encode`: inspect protocol bytes in the conformance-vector JSON form.
#pragma once

#include <CLI/CLI.hpp>

namespace keel::cli {

// Registers the `proto` subcommand on `app`.
void AddProtoCommand(CLI::App& app);

}  // namespace keel::cli
