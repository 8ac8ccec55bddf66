#!/usr/bin/env bash
# Configures and builds pkgdist (Ninja, ccache when present).
# Usage: scripts/build.sh [--sanitize] [BUILD_DIR]
# Prints the build directory on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

sanitize=OFF
if [ "${1:-}" = "--sanitize" ]; then sanitize=ON; shift; fi
build_dir=${1:-$([ "$sanitize" = ON ] && echo build-asan || echo build)}

# Let ccache share results between clones in other folders (CI builds a
# fresh clone): paths below the source tree are hashed relative to it.
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=true

cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DPKGDIST_SANITIZE="$sanitize" >/dev/null
cmake --build "$build_dir" -- -j"$(nproc)" >&2
echo "$build_dir"
