#!/usr/bin/env bash
# Installs everything Keel's build and tests need on Debian 12, from Debian's packages
# only, plus the JS package's npm devDependencies (deno and workerd, the hosts its tests
# run actors in) from packages/keel-wasm/package-lock.json. Idempotent: when every package
# is present it changes nothing and says so.
set -euo pipefail
cd "$(dirname "$0")/.."

# npm: `npm ci` when node_modules does not match the lockfile (a hash of package.json and
# package-lock.json kept in node_modules/.keel-lock-hash after a successful install).
KEEL_WASM=packages/keel-wasm
if ! command -v npm >/dev/null; then
  echo "bootstrap: npm is required (Node 20 with npm) for $KEEL_WASM's devDependencies" >&2
  exit 1
fi
lock_hash=$(cat "$KEEL_WASM/package.json" "$KEEL_WASM/package-lock.json" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$KEEL_WASM/node_modules/.keel-lock-hash" 2>/dev/null)" = "$lock_hash" ]; then
  echo "bootstrap: $KEEL_WASM/node_modules up to date"
else
  echo "bootstrap: npm ci in $KEEL_WASM"
  npm ci --prefix "$KEEL_WASM" --no-audit --no-fund
  echo "$lock_hash" >"$KEEL_WASM/node_modules/.keel-lock-hash"
fi

PACKAGES=(
  # toolchain
  g++-12 cmake ninja-build ccache lld clang libclang-rt-14-dev python3 git pkg-config
  # libraries
  libboost1.81-dev librocksdb-dev libsqlite3-dev libfmt-dev libspdlog-dev nlohmann-json3-dev
  libcli11-dev libzstd-dev liblz4-dev libmimalloc-dev libpq-dev
  # the PostgreSQL storage backend's tests start throwaway servers
  postgresql
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev
  # the wasm build of the sans-I/O cores
  emscripten
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "bootstrap: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "bootstrap: installing ${#missing[@]} package(s): ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# libboost1.81-dev conflicts with the default 1.74 -dev packages; apt removes those.
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "bootstrap: done"
