#!/usr/bin/env bash
# The delta-transfer benchmark against rsync (issue 13): five scenarios on a
# package of several files (a: one byte inserted, b: 1 % changed in 100
# places, c: 10 files moved, d: another name sharing 50 % of the files, e: an
# unrelated package), each sent as v2 to one destination holding v1, by
# pkgdist (default chunking), pkgdist --chunking fixed and Debian's rsync
# daemon on 127.0.0.1. Measures the bytes on the wire both ways (a counting
# TCP forwarder between the sides), wall time and CPU of both sides, checks
# every result byte for byte, and writes the table into the delta section of
# docs/performance.md and the raw figures to bench/results/delta-DATE.json.
# See bench/delta.py for what exactly is measured.
#
# Usage: bench/delta.sh [--size BYTES] [--runs R] [--no-docs] [--out FILE]
#                       [--json FILE] [--bin-dir DIR]
#        bench/delta.sh --smoke --bin-dir DIR
#   --size BYTES  package size (default 1 GiB; --smoke: 24 MiB)
#   --runs R      rounds, contenders alternated in each scenario; medians (default 1)
#   --no-docs     do not write docs/performance.md (the JSON is still written)
#   --out FILE    the page whose delta section is written (default docs/performance.md)
#   --smoke       24 MiB, every scenario and contender, checks the results,
#                 writes nothing in the tree; finishes in < 60 s
#   --bin-dir DIR use the binaries in DIR and do not build (default: build
#                 Release into build-bench/ and use build-bench/bin)
#   --build-dir D build into D instead of build-bench/
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(dirname "$here")

bin_dir="" build_dir="$src/build-bench" args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) bin_dir=$2; shift 2 ;;
    --build-dir) build_dir=$2; shift 2 ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) args+=("$1"); shift ;;
  esac
done

if [ -z "$bin_dir" ]; then
  bash "$src/scripts/setup.sh"
  export CCACHE_BASEDIR="$src" CCACHE_NOHASHDIR=true  # shared between clones, as in build.sh
  cmake -S "$src" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$build_dir" --target pkgdist-controller pkgdist-agent pkgdistctl >&2
  bin_dir="$build_dir/bin"
fi

export PYTHONDONTWRITEBYTECODE=1
python3 "$here/delta.py" --bin-dir "$bin_dir" --command "bench/delta.sh${args[*]:+ ${args[*]}}" \
  "${args[@]}"
