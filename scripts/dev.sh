#!/usr/bin/env bash
# Keel's main job on the embedded default (the README's first command): installs what the
# build needs, builds the release preset, starts keel-engine on 127.0.0.1:6420 with its
# RocksDB data in .keel/data (namespace `default` with pool `default` exist from the first
# start) and a runtime hosting the example actors (counter, chat, scheduler), prints how to
# call them, and stops both cleanly on Ctrl-C. Arguments go to keel-engine (e.g. --port 0,
# --storage memory, --admin-token T; with a token, KEEL_TOKEN is passed to the runtime).
# `./scripts/dev.sh proto …` runs the `keel` tool instead.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/keel-ccache}"
echo "==> building keel-engine, keel-examples and keel (release preset)"
cmake --preset release >/dev/null
cmake --build --preset release --target keel-engine keel-examples keel -j "${KEEL_JOBS:-$(nproc)}"
if [ "${1:-}" = "proto" ]; then
  exec build/release/bin/keel "$@"
fi

mkdir -p .keel
engine_out=$(mktemp -t keel-engine.XXXXXX)
engine_pid=""
runtime_pid=""
stop() {
  trap - INT TERM EXIT
  echo
  echo "==> stopping (runtime first, so its actors sleep with their state saved)"
  [ -n "$runtime_pid" ] && kill -TERM "$runtime_pid" 2>/dev/null && wait "$runtime_pid" 2>/dev/null || true
  [ -n "$engine_pid" ] && kill -TERM "$engine_pid" 2>/dev/null && wait "$engine_pid" 2>/dev/null || true
  rm -f "$engine_out"
}
trap stop INT TERM EXIT

echo "==> starting keel-engine"
# Each child in its own session: Ctrl-C reaches only this script, which stops the runtime
# first (its actors stop and save) and then the engine — one signal each, in that order.
setsid build/release/bin/keel-engine --data-dir "${KEEL_DATA_DIR:-.keel/data}" "$@" >"$engine_out" &
engine_pid=$!
address=""
for _ in $(seq 1 300); do
  address=$(sed -n 's/^listening on //p' "$engine_out" | head -n1)
  [ -n "$address" ] && break
  kill -0 "$engine_pid" 2>/dev/null || { cat "$engine_out"; echo "keel-engine exited"; exit 1; }
  sleep 0.1
done
[ -n "$address" ] || { echo "keel-engine did not start within 30 s"; exit 1; }
echo "listening on $address"
# Pass a token given to the engine on to the runtime.
token="${KEEL_TOKEN:-}"
args=("$@")
for i in "${!args[@]}"; do
  if [ "${args[$i]}" = "--admin-token" ] && [ $((i + 1)) -lt ${#args[@]} ]; then token="${args[$((i + 1))]}"; fi
done

echo "==> starting the example runtime (counter, chat, scheduler)"
KEEL_ENDPOINT="http://$address" KEEL_TOKEN="$token" setsid build/release/bin/keel-examples &
runtime_pid=$!

base="http://$address"
q="rvt-namespace=default&rvt-method=getOrCreate&rvt-runner=default&rvt-key=room-1"
cat <<EOT

Keel is running. Try:
  curl -s -XPOST '$base/gateway/counter/action/increment?$q' -H 'content-type: application/json' -d '{"args":[5]}'
  curl -s -XPOST '$base/gateway/counter/action/getCount?$q' -H 'content-type: application/json' -d '{"args":[]}'
  curl -s '$base/actors?namespace=default&name=counter'
Ctrl-C stops both processes.

EOT
wait "$engine_pid"
