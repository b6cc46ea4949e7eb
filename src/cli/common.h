// Shared pieces of the `keel` subcommands: exit codes, the one-line error format, and
// reading the terminal signals (SIGINT/SIGTERM) without handlers.
//
// Every failure is reported as ONE line on stderr, `keel: group.code: message`, and the
// process exits with one of the codes below (docs/cli.md, "Exit codes").
// Thread-safety: the functions write to stdout/stderr; call them from one thread.
#pragma once

#include <signal.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <string>
#include <string_view>
#include <vector>

namespace keel::cli {

// Exit codes of every `keel` command.
inline constexpr int kExitOk = 0;
// The actor or the engine answered with an error (action threw, actor.not_found, auth.*…).
inline constexpr int kExitError = 1;
// Bad command line (unknown flag, missing argument, invalid JSON for --input, ...).
inline constexpr int kExitUsage = 2;
// No usable answer: the engine is unreachable, timed out, or spoke something else.
inline constexpr int kExitTransport = 3;
// `keel dev`: keel-engine or the runtime failed to start or died.
inline constexpr int kExitDevStack = 4;

// Prints `keel: <id>: <message>` (id is "group.code") on stderr and returns `exit_code`.
int Fail(int exit_code, std::string_view id, std::string_view message);

// A progress line on stderr (e.g. "waiting for the runtime to connect (3 s)").
void Progress(std::string_view line);

// A positional that takes every remaining argument verbatim, one element each. A plain
// vector option lets CLI11 read `[a,b]` as a list of two values (allow_extra_args), which
// would split `'["a","b"]'` and make `'[5]'` the text 5; this one reads no such syntax.
CLI::Option* AddVerbatimArgs(CLI::App& app, const std::string& name, std::vector<std::string>& into,
                             const std::string& description);

// The path `keel` was invoked as (argv[0]), for hints printed to the user.
void SetInvocationName(std::string name);
const std::string& InvocationName();

// SIGINT and SIGTERM blocked for this thread and every thread it starts later, so that
// they can be taken synchronously with TakeStopSignal. Call before starting threads.
void BlockStopSignals();
// Waits up to `timeout` (0 = just look) for SIGINT or SIGTERM; returns the signal number,
// or 0 when none arrived. REQUIRES BlockStopSignals() first.
int TakeStopSignal(std::chrono::milliseconds timeout);

}  // namespace keel::cli
