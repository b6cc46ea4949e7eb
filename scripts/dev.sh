#!/usr/bin/env bash
# Keel's main job on the embedded default (the README's first command): installs what the
# build needs, builds the release preset and starts keel-engine on 127.0.0.1:6420 with its
# RocksDB data in .keel/data (namespace `default` with pool `default` exist from the first
# start). Arguments go to keel-engine (e.g. --port 0, --storage memory, --admin-token T);
# `./scripts/dev.sh proto …` runs the `keel` tool instead. The example actors join this
# command with the runtime (the `keel dev` stack).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/keel-ccache}"
echo "==> building keel-engine and keel (release preset)"
cmake --preset release >/dev/null
cmake --build --preset release --target keel-engine keel -j "${KEEL_JOBS:-$(nproc)}"
if [ "${1:-}" = "proto" ]; then
  exec build/release/bin/keel "$@"
fi
mkdir -p .keel
echo "==> starting keel-engine (Ctrl-C stops it gracefully)"
exec build/release/bin/keel-engine --data-dir "${KEEL_DATA_DIR:-.keel/data}" "$@"
