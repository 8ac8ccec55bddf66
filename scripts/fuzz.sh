#!/usr/bin/env bash
# Builds the libFuzzer targets (clang 14, ASan + UBSan; tests/fuzz/) into
# build-fuzz/ and, for each target, replays every input kept in
# tests/fuzz/regressions/<target>/ and then fuzzes for SECONDS starting from
# the committed seeds in tests/fuzz/corpus/<target>/ (copied to a temporary
# working corpus: the repository is not modified).
#
# Usage: scripts/fuzz.sh [--build-only | --no-build] [--build-dir DIR] [SECONDS] [TARGET...]
#   SECONDS  per target, default 20; longer runs on demand: scripts/fuzz.sh 600
#   TARGET   manifest, journal, transfer, chunk_wire (default: all)
# Exit status: 0 clean; 1 a crash or invariant violation (the reproducer's
# path is printed; copy it into tests/fuzz/regressions/<target>/ to keep it);
# 77 the fuzzers cannot be built or, with --no-build, were not built.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=all
build_dir=build-fuzz
while [ $# -gt 0 ]; do
  case "$1" in
    --build-only) mode=build; shift ;;
    --no-build) mode=run; shift ;;
    --build-dir) build_dir=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) break ;;
  esac
done
seconds=20
if [[ "${1:-}" =~ ^[0-9]+$ ]]; then seconds=$1; shift; fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(manifest journal transfer chunk_wire)

if [ "$mode" != run ]; then
  if ! command -v clang++-14 >/dev/null; then
    echo "fuzz: clang++-14 not found (Debian: clang-14 libclang-rt-14-dev); skipped" >&2
    exit 77
  fi
  export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=true  # shared with other clones, as in build.sh
  cmake -S tests/fuzz -B "$build_dir" -G Ninja -DCMAKE_CXX_COMPILER=clang++-14 \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$build_dir" -- -j"$(nproc)" >&2
  [ "$mode" = build ] && exit 0
fi

for t in "${targets[@]}"; do
  if [ ! -x "$build_dir/bin/fuzz_$t" ]; then
    echo "fuzz: $build_dir/bin/fuzz_$t not built (run scripts/fuzz.sh --build-only); skipped" >&2
    exit 77
  fi
done

# Scratch space: the working corpora and every temporary ROOT the targets
# create (they honour TMPDIR); on tmpfs when there is one, as fsync is the
# bulk of a transfer's cost.
scratch_base=${TMPDIR:-/tmp}
[ -d /dev/shm ] && [ -w /dev/shm ] && scratch_base=/dev/shm
scratch=$(mktemp -d "$scratch_base/pkgdist-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
export TMPDIR=$scratch
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:symbolize=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
artifacts=$(cd "$build_dir" && pwd)/artifacts

# record TARGET RUNS CORPUS_SIZE: one row of docs/reliability.md (through
# tests/faults/results.py, which also prints it as a RESULT line).
record() {
  python3 - "$1" "${2:-0}" "$3" "$seconds" <<'PY'
import sys
sys.path.insert(0, "tests/faults")
import results
target, runs, corpus, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
what = {"manifest": "manifest validation (ValidateManifest)",
        "journal": "journal replay (Journal::Open on arbitrary bytes)",
        "transfer": "agent handling a sequence of Transfer messages"}.get(target, target)
results.record(f"libFuzzer: {what}, {seconds} s under ASan + UBSan",
               f"no crash, leak or UB; corpus grew to {corpus} inputs", tried=runs)
PY
}
status=0

for t in "${targets[@]}"; do
  bin=$(cd "$build_dir/bin" && pwd)/fuzz_$t
  mkdir -p "$artifacts/$t"
  for input in tests/fuzz/regressions/"$t"/*; do
    [ -f "$input" ] || continue
    if ! "$bin" -runs=1 "$input" >"$scratch/replay.log" 2>&1; then
      cat "$scratch/replay.log" >&2
      echo "fuzz: $t: regression input fails: $input" >&2
      echo "fuzz: reproduce with: $bin $input" >&2
      status=1
    fi
  done
  work=$scratch/corpus-$t
  mkdir -p "$work"
  cp tests/fuzz/corpus/"$t"/* "$work"/ 2>/dev/null || true
  echo "fuzz: $t: fuzzing for ${seconds}s from $(ls "$work" | wc -l) seeds" >&2
  log=$scratch/fuzz-$t.log
  dict=()
  [ -f tests/fuzz/"$t".dict ] && dict=(-dict=tests/fuzz/"$t".dict)
  if ! "$bin" -max_total_time="$seconds" -timeout=25 -rss_limit_mb=2048 -max_len=4096 \
      "${dict[@]}" -print_final_stats=1 -artifact_prefix="$artifacts/$t/" "$work" \
      >"$log" 2>&1; then
    tail -n 80 "$log" >&2
    reproducer=$(grep -o "Test unit written to .*" "$log" | tail -n 1 | sed 's/Test unit written to //')
    echo "fuzz: $t: CRASH; reproducer: ${reproducer:-(none written; see the log above)}" >&2
    echo "fuzz: reproduce with: $bin ${reproducer}" >&2
    echo "fuzz: keep it as a regression: cp ${reproducer} tests/fuzz/regressions/$t/" >&2
    status=1
  else
    grep -E "^stat::number_of_executed_units|^Done [0-9]+ runs" "$log" | tail -n 2 >&2 || true
    echo "fuzz: $t: clean" >&2
    record "$t" "$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)" \
      "$(ls "$work" | wc -l)"
  fi
done
exit $status
