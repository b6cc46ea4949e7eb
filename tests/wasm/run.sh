#!/usr/bin/env bash
# Runs the sans-I/O unit suites built for wasm (tests/wasm/CMakeLists.txt) under Node, one
# program per native suite, and prints each program's GoogleTest output and a total.
#   tests/wasm/run.sh [BUILD_DIR] [gtest flags...]
# BUILD_DIR defaults to build/wasm (the `wasm` preset); gtest flags such as
# --gtest_filter=EnvoyClientTest.* are passed to every program. Exits non-zero when a test
# fails or a program ends without a GoogleTest summary (a trap or abort in wasm).
set -uo pipefail
cd "$(dirname "$0")/../.."

build_dir=build/wasm
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
  build_dir=$1
  shift
fi
manifest="$build_dir/wasm-tests/manifest.tsv"
if [ ! -f "$manifest" ]; then
  echo "wasm unit tests: $manifest not found; build the wasm preset first" \
       "(cmake --preset wasm && cmake --build --preset wasm)" >&2
  exit 2
fi

passed=0
failed=0
broken=()
started=$(date +%s%N)
while IFS=$'\t' read -r program filter; do
  [ -n "$program" ] || continue
  name=$(basename "$program" .js)
  args=(--gtest_color=no)
  # A manifest filter excludes cases that need a native-only facility (see CMakeLists.txt).
  if [ -n "$filter" ]; then args+=("--gtest_filter=-$filter"); fi
  printf '\n--- %s\n' "$name"
  log=$(mktemp)
  t0=$(date +%s%N)
  # Emscripten 3.1.6's loader predates Node's global fetch; keep Node on the fs path.
  timeout 300 node --no-experimental-fetch "$program" "${args[@]}" "$@" </dev/null 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  t1=$(date +%s%N)
  p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) tests\?\.$/\1/p' "$log" | tail -1)
  f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) tests\?, listed below:$/\1/p' "$log" | tail -1)
  rm -f "$log"
  passed=$((passed + ${p:-0}))
  failed=$((failed + ${f:-0}))
  printf -- '--- %s: exit %d, %d passed, %d failed, %d ms\n' \
    "$name" "$rc" "${p:-0}" "${f:-0}" $(((t1 - t0) / 1000000))
  if [ "$rc" -ne 0 ] && [ -z "$f" ]; then broken+=("$name (exit $rc)"); fi
  if [ "$rc" -eq 0 ] && [ -z "$p" ]; then broken+=("$name (no GoogleTest summary)"); fi
done < "$manifest"

elapsed_ms=$((($(date +%s%N) - started) / 1000000))
echo
if [ ${#broken[@]} -gt 0 ]; then
  echo "wasm unit tests: programs that ended without a result: ${broken[*]}"
fi
echo "wasm unit tests in ${elapsed_ms} ms:"
echo "wasm: $passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ ${#broken[@]} -eq 0 ]
