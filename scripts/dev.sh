#!/usr/bin/env bash
# Keel's main job on the embedded default (the README's first command): installs what the
# build needs, builds the release preset and starts `keel`. Arguments go to `keel`.
# Today `keel` is the protocol tool; keel-engine and the example actors join this command
# as they land (the dev stack: `keel dev`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/keel-ccache}"
echo "==> building keel (release preset)"
cmake --preset release >/dev/null
cmake --build --preset release --target keel -j "${KEEL_JOBS:-$(nproc)}"
exec build/release/bin/keel "$@"
