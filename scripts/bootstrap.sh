#!/usr/bin/env bash
# Installs everything Keel's build and tests need on Debian 12, from Debian's packages
# only. Idempotent: when every package is present it changes nothing and says so.
set -euo pipefail

PACKAGES=(
  # toolchain
  g++-12 cmake ninja-build ccache lld clang libclang-rt-14-dev python3 git pkg-config
  # libraries
  libboost1.81-dev librocksdb-dev libsqlite3-dev libfmt-dev libspdlog-dev nlohmann-json3-dev
  libcli11-dev libzstd-dev liblz4-dev
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
