"""Records the outcome of each fault scenario for docs/reliability.md.

A fault test calls record(...) once per scenario run. When the environment
variable PKGDIST_RESULTS_DIR is set (scripts/reliability-report.sh sets it),
one JSON line per call is appended to PKGDIST_RESULTS_DIR/results.jsonl;
otherwise the record is only printed, so a plain ctest run shows the
figures too. tests/faults/report.py turns the JSON lines into the table.
"""

import contextlib
import json
import os
import time


def record(scenario, outcome, tried=1, ok=True, **figures):
    """scenario: what was done ("agent killed -9 mid-transfer");
    outcome: what was observed ("bytes identical, 3.1 MiB re-sent");
    tried: how many times the fault was applied in this run;
    ok: whether the outcome is the expected one;
    figures: measured numbers (seconds, bytes), reported as columns."""
    entry = {"scenario": scenario, "outcome": outcome, "tried": tried, "ok": bool(ok),
             "figures": figures, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    print("RESULT " + json.dumps(entry, sort_keys=True), flush=True)
    out_dir = os.environ.get("PKGDIST_RESULTS_DIR")
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "results.jsonl"), "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, sort_keys=True) + "\n")


@contextlib.contextmanager
def recorded(scenario, tried=1):
    """Yields a dict of figures; records the scenario when the block ends,
    as FAILED (with the first line of the error) if it raised."""
    figures = {"outcome": ""}
    try:
        yield figures
    except BaseException as e:
        outcome = figures.pop("outcome") or "did not complete"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        record(scenario, f"{outcome}; FAILED: {first}", tried=tried, ok=False, **figures)
        raise
    outcome = figures.pop("outcome")
    record(scenario, outcome, tried=tried, ok=True, **figures)
