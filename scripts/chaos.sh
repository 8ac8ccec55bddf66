#!/usr/bin/env bash
# Runs the chaos campaign (tests/chaos/campaign.py) for a long time and writes
# its figures into docs/reliability.md (the "Chaos campaign" section).
# Usage: scripts/chaos.sh [--minutes N] [--seed S] [--round-seconds S] [--no-build] [--no-docs]
#   --minutes N        how long to run (default 60), in rounds of --round-seconds
#                      (default 60) of faults, each followed by the settle wait
#   --seed S           the schedule's seed (default: a fresh one, printed)
#   --no-build         use build/ as it is
#   --no-docs          print the figures, leave docs/reliability.md alone
# Exits non-zero if the checker found a violation or a fault could not be
# applied; the history is then kept and its path printed.
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=60
round_seconds=60
seed=""
build=1
docs=1
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes=${2:?--minutes needs a number}; shift 2 ;;
    --seed) seed=${2:?--seed needs a number}; shift 2 ;;
    --round-seconds) round_seconds=${2:?--round-seconds needs a number}; shift 2 ;;
    --no-build) build=0; shift ;;
    --no-docs) docs=0; shift ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "chaos: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

if [ "$build" = 1 ]; then
  bash scripts/setup.sh
  bash scripts/build.sh >/dev/null
fi
export PKGDIST_BIN_DIR=${PKGDIST_BIN_DIR:-$PWD/build/bin}

work=$(mktemp -d -t pkgdist-chaos-XXXXXX)
status=0
python3 tests/chaos/campaign.py --seconds "$((minutes * 60))" --round-seconds "$round_seconds" \
  --dir "$work/run" --figures "$work/figures.json" ${seed:+--seed "$seed"} || status=$?

if [ -s "$work/figures.json" ]; then
  if [ "$docs" = 1 ]; then
    python3 tests/chaos/report.py --figures "$work/figures.json" --minutes "$minutes" \
      --round-seconds "$round_seconds" --output docs/reliability.md
  else
    cat "$work/figures.json"
  fi
fi
if [ "$status" = 0 ]; then
  rm -rf "$work"
else
  echo "chaos: the campaign failed (status $status); history and logs kept in $work" >&2
fi
exit "$status"
