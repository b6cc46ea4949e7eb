#!/usr/bin/env bash
# The README's main job on the release build, end to end (scripts/test.sh runs it; the
# test suites run on the dev build): `keel dev` on a fresh data directory, an action on
# the counter and a SQLite insert on todos through `keel call`, Ctrl-C, then a second
# `keel dev` on the same directory, where both must have kept their data. It also checks
# that mimalloc serves both processes' malloc (the release preset links it). Expects
# build/release/bin/{keel,keel-engine,keel-examples}.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$PWD/build/release/bin"
tmp=$(mktemp -d)
pid=
cleanup() {
  # Ctrl-C, as a user would: `keel dev` stops the runtime and the engine it started (a
  # SIGKILL would leave them running).
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -INT "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

fail() {
  echo "release smoke: $*" >&2
  if [ -f "$tmp/dev.log" ]; then
    echo "--- keel dev output (last 40 lines)" >&2
    tail -n 40 "$tmp/dev.log" >&2
  fi
  exit 1
}

# start_dev: `keel dev` in the background on $tmp/data; sets $pid and $endpoint.
start_dev() {
  "$bin/keel" dev --port 0 --data-dir "$tmp/data" >"$tmp/dev.log" 2>&1 &
  pid=$!
  for _ in $(seq 300); do
    grep -q "Ctrl-C stops" "$tmp/dev.log" && break
    kill -0 "$pid" 2>/dev/null || fail "keel dev exited before it served"
    sleep 0.2
  done
  grep -q "Ctrl-C stops" "$tmp/dev.log" || fail "keel dev did not serve within 60 s"
  endpoint="http://$(grep -o 'listening on 127.0.0.1:[0-9]*' "$tmp/dev.log" | head -n 1 | cut -d' ' -f3)"
}

stop_dev() {
  kill -INT "$pid"
  local rc=0
  wait "$pid" || rc=$?
  pid=
  [ "$rc" = 0 ] || fail "keel dev exited with $rc after Ctrl-C"
}

# expect WANT CMD...: runs a `keel` command and compares its output.
expect() {
  local want=$1
  shift
  local got
  got=$("$bin/keel" "$@" --endpoint "$endpoint") || fail "keel $* failed"
  [ "$got" = "$want" ] || fail "keel $*: got '$got', want '$want'"
  echo "  keel $* -> $got"
}

echo "release smoke: keel dev on a fresh data directory"
start_dev
for process in engine runtime; do
  grep "^\[$process\]" "$tmp/dev.log" | grep -q 'allocator="mimalloc ' ||
    fail "the $process does not run on mimalloc"
done
echo "  engine and runtime on mimalloc"
expect 5 call counter/smoke increment 5
expect 1 call todos/smoke add 'buy milk'
stop_dev

echo "release smoke: keel dev again on the same data directory"
start_dev
expect 6 call counter/smoke increment 1
expect 2 call todos/smoke add 'buy bread'
stop_dev
echo "release smoke: passed"
