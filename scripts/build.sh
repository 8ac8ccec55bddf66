#!/usr/bin/env bash
# Configures and builds pkgdist (Ninja, ccache when present).
# Usage: scripts/build.sh [--sanitize | --thread-safety] [BUILD_DIR]
#   --sanitize       ASan + UBSan, into build-asan/
#   --thread-safety  clang 14 with -Wthread-safety as errors, into build-tsa/;
#                    compiles the libraries only (the analysis is a compile
#                    step; nothing of it runs)
# Prints the build directory on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

sanitize=OFF
thread_safety=OFF
case "${1:-}" in
  --sanitize) sanitize=ON; shift ;;
  --thread-safety) thread_safety=ON; shift ;;
esac
default_dir=build
[ "$sanitize" = ON ] && default_dir=build-asan
[ "$thread_safety" = ON ] && default_dir=build-tsa
build_dir=${1:-$default_dir}

# Let ccache share results between clones in other folders (CI builds a
# fresh clone): paths below the source tree are hashed relative to it.
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=true

if [ "$thread_safety" = ON ]; then
  cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Debug \
    -DCMAKE_CXX_COMPILER=clang++-14 -DPKGDIST_THREAD_SAFETY=ON >/dev/null
  cmake --build "$build_dir" --target pkgdist_shared pkgdist_agent pkgdist_controller \
    pkgdist_cli -- -j"$(nproc)" >&2
  echo "$build_dir"
  exit 0
fi

cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DPKGDIST_SANITIZE="$sanitize" >/dev/null
cmake --build "$build_dir" -- -j"$(nproc)" >&2
echo "$build_dir"
