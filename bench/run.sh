#!/usr/bin/env bash
# The pkgdist benchmark (issues 6 and 18): in one run on 127.0.0.1,
# distributes a package of S bytes to N = 1, 4, 16 agents and measures wall
# time, aggregate MB/s, CPU seconds and peak RSS of the controller and
# agents; two peers (nginx over HTTPS + N curl clients writing the file and
# hashing it, with coreutils sha256sum and with openssl dgst); the machine's
# limit (openssl speed, loopback, the agent's own O_DIRECT write path; the
# bound of the cores, of the disk and of loopback at each N). The runs
# alternate, pkgdist then each peer at each N, for --runs rounds, each round
# beginning with the limit's probes, and the report gives medians with their
# spread. Then memory with a 256 MiB vs a 4 GiB package; import speed; 1,000
# agents (scale); the micro-benchmarks and a perf profile. Writes
# docs/performance.md, and every run's figures to $TMPDIR/pkgdist-bench-last.json.
#
# Usage: bench/run.sh [--size BYTES] [--agents 1,4,16] [--runs R] [--quick]
#                     [--no-peer] [--scale-agents K] [--no-profile] [--out FILE]
#        bench/run.sh --smoke --bin-dir DIR
#   --runs R      rounds of alternated runs at each N (default 3: medians of 3)
#   --quick       no 4 GiB memory run, no micro-benchmarks
#   --smoke       8 MiB to 2 agents, no peer, quick probes, tiny memory and
#                 scale runs; finishes in < 30 s, writes its report to a
#                 temporary file
#   --bin-dir DIR use the binaries in DIR and do not build (default: build
#                 Release into build-bench/ and use build-bench/bin)
#   --build-dir D build into D instead of build-bench/
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(dirname "$here")

bin_dir="" build_dir="$src/build-bench" smoke=0 args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) bin_dir=$2; shift 2 ;;
    --build-dir) build_dir=$2; shift 2 ;;
    --smoke) smoke=1; shift ;;
    -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) args+=("$1"); shift ;;
  esac
done

if [ -z "$bin_dir" ]; then
  bash "$src/scripts/setup.sh" --bench
  export CCACHE_BASEDIR="$src" CCACHE_NOHASHDIR=true  # shared between clones, as in build.sh
  cmake -S "$src" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$build_dir" --target pkgdist-controller pkgdist-agent pkgdistctl \
    pkgdist-multi-agent pkgdist-make-certs bench_sha256 bench_manifest bench_staging \
    bench_codec bench_fastcdc >&2
  bin_dir="$build_dir/bin"
fi

cmd="bench/run.sh${args[*]:+ ${args[*]}}"
if [ "$smoke" = 1 ]; then
  out=$(mktemp -d "${TMPDIR:-/tmp}/pkgdist-bench-smoke.XXXXXX")
  trap 'rm -rf "$out"' EXIT
  python3 "$here/bench.py" --bin-dir "$bin_dir" --size $((8 << 20)) --agents 2 --smoke \
    --out "$out/performance.md" --command "bench/run.sh --smoke" "${args[@]}"
else
  python3 "$here/bench.py" --bin-dir "$bin_dir" --command "$cmd" "${args[@]}"
fi
