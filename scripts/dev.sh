#!/usr/bin/env bash
# Keel's main job on the embedded default (the README's first command): installs what the
# build needs, builds the release preset and runs `keel dev` — keel-engine on
# 127.0.0.1:6420 with its RocksDB data in .keel/data (namespace `default` with pool
# `default` exist from the first start) plus a runtime hosting the example actors (counter,
# chat, scheduler, todos; with --js the JavaScript versions on the wasm runtime in Node); it
# prints how to call them and stops both cleanly on Ctrl-C (runtime
# first). Arguments go to `keel dev` (e.g. --port 0, --storage memory, --data-dir DIR,
# --admin-token T, --log-level warn; other keel-engine flags after `--`; `keel dev --help`). `./scripts/dev.sh call|watch|actors|proto …` runs
# that `keel` command instead (docs/cli.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/keel-ccache}"
echo "==> building keel, keel-engine and keel-examples (release preset)" >&2
cmake --preset release >/dev/null
cmake --build --preset release --target keel-engine keel-examples keel -j "${KEEL_JOBS:-$(nproc)}" >&2
case "${1:-}" in
  dev | call | watch | actors | proto | -h | --help | --version) exec build/release/bin/keel "$@" ;;
esac
# --js: the same example actors written in JavaScript (examples/js), on the wasm runtime in
# Node, instead of the C++ keel-examples.
args=()
for a in "$@"; do
  if [ "$a" = "--js" ]; then
    echo "==> building keel.wasm (wasm preset) for the JavaScript examples" >&2
    cmake --preset wasm >/dev/null
    NODE_PATH=/usr/share/nodejs cmake --build --preset wasm --target keel_wasm -j "${KEEL_JOBS:-$(nproc)}" >&2
    args+=(--runtime "$PWD/examples/js/keel-js-examples")
  else
    args+=("$a")
  fi
done
exec build/release/bin/keel dev ${args[@]+"${args[@]}"}
