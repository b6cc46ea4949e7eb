// `keel actors list|get|create|destroy`, `keel call` and `keel watch`: actors through the
// engine's REST API and gateway, on keel::client (src/client/client.h). docs/cli.md.
//
// Targets are `NAME` (the empty key) or `NAME/KEY`, where everything after the first '/'
// is ONE key component (`chat/team/a` is actor `chat` with key ["team/a"]); `--key a,b`
// (or `--key a --key b`) gives a multi-component key instead.
#pragma once

#include <CLI/CLI.hpp>

namespace keel::cli {

// Registers `actors`, `call` and `watch` on `app`.
void AddActorCommands(CLI::App& app);

}  // namespace keel::cli
