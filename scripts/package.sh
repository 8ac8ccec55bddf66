#!/usr/bin/env bash
# Builds the Debian packages pkgdist-controller, pkgdist-agent and pkgdistctl
# (CPack's DEB generator, packaging/) into dist/.
# Usage: scripts/package.sh [--build-dir DIR] [--out DIR] [--no-build]
#   --build-dir DIR  the build tree (default build-pkg/: Ninja + ccache,
#                    RelWithDebInfo like build/, the flags the test suite
#                    runs against; the packaged binaries are stripped)
#   --out DIR        where the .debs go (default dist/)
#   --no-build       package the tree's binaries as they are (they must be
#                    built already)
# Prints the path of each .deb, one a line.
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir=build-pkg
out_dir=dist
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) build_dir=$2; shift 2 ;;
    --out) out_dir=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "package.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

bash scripts/setup.sh
# As scripts/build.sh: ccache shares results with other clones.
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=true
if [ "$build" = 1 ]; then
  if [ ! -f "$build_dir/CMakeCache.txt" ]; then
    cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  else
    cmake "$build_dir" >/dev/null
  fi
  cmake --build "$build_dir" --target pkgdist-controller pkgdist-agent pkgdistctl \
    -- -j"$(nproc)" >&2
fi
if [ ! -f "$build_dir/CPackConfig.cmake" ]; then
  echo "package.sh: $build_dir is not a configured pkgdist build tree" >&2
  exit 2
fi
if grep -q '^PKGDIST_SANITIZE:BOOL=ON' "$build_dir/CMakeCache.txt"; then
  echo "package.sh: $build_dir is a sanitizer build; package a plain one" >&2
  exit 2
fi

mkdir -p "$out_dir"
out_dir=$(cd "$out_dir" && pwd)
rm -f "$out_dir"/pkgdist-controller_*.deb "$out_dir"/pkgdist-agent_*.deb "$out_dir"/pkgdistctl_*.deb
# CPack's own work area goes to the build tree, only the .debs to out_dir.
rm -f "$build_dir"/cpack/*.deb
cpack --config "$build_dir/CPackConfig.cmake" -B "$build_dir/cpack" >&2
mv "$build_dir"/cpack/*.deb "$out_dir"/
ls "$out_dir"/pkgdist-controller_*.deb "$out_dir"/pkgdist-agent_*.deb "$out_dir"/pkgdistctl_*.deb
