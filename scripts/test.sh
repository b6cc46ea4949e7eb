#!/usr/bin/env bash
# Keel's test command (the README's second command, and what CI runs):
#   1. installs what the build needs (scripts/bootstrap.sh),
#   2. builds the `dev` preset (Debug, ASan + UBSan) and the `wasm` preset (the sans-I/O
#      cores and the JS runtime, keel.wasm), then runs every ctest suite (the acceptance
#      suite's `wasm` entries run JavaScript actors on keel.wasm); a test that hangs fails
#      after 600 s (the ctest preset's timeout; the acceptance entries set 300 s),
#   3. runs the wasm smoke programs, the sans-I/O unit suites built for wasm
#      (tests/wasm/run.sh) and the JS package's tests (JS actors in Node, Deno and
#      workerd, and the JS client, against the dev build's engine),
#   4. builds the main job's programs in the release preset (mimalloc as the allocator)
#      and runs scripts/release_smoke.sh: `keel dev`, calls, Ctrl-C, restart, data kept,
#   5. builds the libFuzzer targets with clang and runs each for FUZZ_SECONDS (default 30).
# Set KEEL_SKIP_WASM=1, KEEL_SKIP_RELEASE=1 or KEEL_SKIP_FUZZ=1 to skip a stage locally.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$(date +%s)
# Each stage's header says how long the run has taken so far (CI keeps well under 30 min).
step() { printf '\n==> [%d s] %s\n' "$(($(date +%s) - started))" "$*"; }

step "bootstrap"
bash scripts/bootstrap.sh

export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/keel-ccache}"
JOBS="${KEEL_JOBS:-$(nproc)}"

step "build: dev preset (Debug, ASan + UBSan)"
cmake --preset dev >/dev/null
cmake --build --preset dev -j "$JOBS"

CTEST_ARGS=()
if [ "${KEEL_SKIP_WASM:-0}" != "1" ]; then
  # Before ctest: the acceptance suite's `wasm` entries run JS actors on keel.wasm.
  step "build: wasm preset (sans-I/O cores and the JS runtime under Emscripten)"
  cmake --preset wasm >/dev/null
  NODE_PATH=/usr/share/nodejs cmake --build --preset wasm -j "$JOBS"
else
  CTEST_ARGS+=(-LE wasm)
fi

step "tests: ctest (all labels${CTEST_ARGS[*]:+, }${CTEST_ARGS[*]:-})"
ctest_rc=0
ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}" \
UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}" \
  ctest --preset dev -j "$JOBS" ${CTEST_ARGS[@]+"${CTEST_ARGS[@]}"} || ctest_rc=$?
if [ "$ctest_rc" != 0 ]; then
  # The failing assertions last, where a log viewer that keeps only the tail still shows
  # them (a failed test's whole output can run to thousands of lines).
  step "ctest failed (exit $ctest_rc); the failing assertions, from build/dev/Testing/Temporary/LastTest.log"
  log=build/dev/Testing/Temporary/LastTest.log
  if [ -f "$log" ]; then
    grep -E -A8 ': Failure$|^\[  FAILED  \]|ERROR: AddressSanitizer|runtime error:' "$log" \
      | cut -c1-300 | head -n 200 || true
  fi
  exit "$ctest_rc"
fi

if [ "${KEEL_SKIP_WASM:-0}" != "1" ]; then
  step "wasm: protocol and runtime smoke tests under Node"
  # Emscripten 3.1.6's loader predates Node's global fetch; keep Node on the fs path.
  node --no-experimental-fetch build/wasm/bin/protocol_smoke.js
  node --no-experimental-fetch build/wasm/bin/runtime_smoke.js
  step "wasm: the sans-I/O unit suites (envoy, runtime, value, protocol) under Node"
  bash tests/wasm/run.sh build/wasm
  step "wasm: JS actors and the JS client against keel-engine (packages/keel-wasm)"
  KEEL_BIN_DIR="$PWD/build/dev/bin" node --experimental-websocket --test packages/keel-wasm/test/
fi

if [ "${KEEL_SKIP_RELEASE:-0}" != "1" ]; then
  step "build: release preset (keel, keel-engine, keel-examples: what scripts/dev.sh runs)"
  cmake --preset release >/dev/null
  cmake --build --preset release --target keel-engine keel-examples keel -j "$JOBS"
  step "release: the main job end to end (scripts/release_smoke.sh)"
  bash scripts/release_smoke.sh
fi

if [ "${KEEL_SKIP_FUZZ:-0}" != "1" ]; then
  step "fuzz: libFuzzer targets, ${FUZZ_SECONDS:-30} s each"
  bash scripts/fuzz.sh
fi

step "all green in $(( $(date +%s) - started )) s"
