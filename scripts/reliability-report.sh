#!/usr/bin/env bash
# Regenerates docs/reliability.md: builds pkgdist (and the fuzz targets),
# runs the fault, integration and fuzz suites through ctest with PKGDIST_RESULTS_DIR set (each fault
# scenario appends its figures there, see tests/faults/results.py), then
# tests/faults/report.py writes the table.
# Usage: scripts/reliability-report.sh [--repeat N] [--no-build] [BUILD_DIR]
#   --repeat N  run the suites N times (figures become medians over N runs)
#   --no-build  use BUILD_DIR as it is (already built)
#   BUILD_DIR   default: build
# Exits non-zero if a test failed; the page is written either way.
set -euo pipefail
cd "$(dirname "$0")/.."

repeat=1
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --repeat) repeat=${2:?--repeat needs a number}; shift 2 ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    -*) echo "reliability-report: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
build_dir=${1:-build}

if [ "$build" = 1 ]; then
  bash scripts/setup.sh
  build_dir=$(bash scripts/build.sh "$build_dir" | tail -n 1)
  bash scripts/fuzz.sh --build-only || true  # 77 (no clang): the fuzz tests skip
fi
if [ ! -f "$build_dir/CTestTestfile.cmake" ]; then
  echo "reliability-report: $build_dir is not a configured build directory" >&2
  exit 2
fi

work=$(mktemp -d -t pkgdist-reliability-XXXXXX)
trap 'rm -rf "$work"' EXIT
export PKGDIST_RESULTS_DIR="$work/results"
mkdir -p "$PKGDIST_RESULTS_DIR"

status=0
logs=()
for i in $(seq 1 "$repeat"); do
  echo "reliability-report: run $i of $repeat" >&2
  log="$work/ctest-$i.log"
  logs+=(--ctest-log "$log")
  # Fault and integration suites are RUN_SERIAL: one test at a time, as in CI.
  ctest --test-dir "$build_dir" -L '^(faults|integration|fuzz)$' --output-on-failure \
    2>&1 | tee "$log" || true
  if ! grep -q "100% tests passed" "$log"; then status=1; fi
done

python3 tests/faults/report.py --results "$PKGDIST_RESULTS_DIR/results.jsonl" "${logs[@]}" \
  --output docs/reliability.md
exit "$status"
