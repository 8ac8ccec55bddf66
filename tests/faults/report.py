"""Writes docs/reliability.md from the fault tests' recorded results.

    report.py --results RESULTS.jsonl [--ctest-log LOG]... --output docs/reliability.md

RESULTS.jsonl holds one JSON line per scenario run (tests/faults/results.py
writes them when PKGDIST_RESULTS_DIR is set); each ctest log is the output
of one ctest run of the suites. scripts/reliability-report.sh runs the
suites and then this script; run that, not this, to regenerate the page.

The page has one row per scenario: how many times the fault was applied,
the outcome observed, the figures (median and max over the runs when there
are several) and OK / FAILED, then one row per ctest test with its status,
then the machine the figures come from.
"""

import argparse
import collections
import datetime
import json
import os
import platform
import re
import statistics
import sys
import tempfile

REGENERATE = "scripts/reliability-report.sh"

# Figure name pattern -> formatter, first match wins; others are shown as-is.
UNITS = [
    (re.compile(r"_mib_s$"), lambda v: f"{v:.2f} MiB/s"),
    (re.compile(r"_s$"), lambda v: f"{v:.2f} s"),
    (re.compile(r"bytes$"), lambda v: _bytes(v)),
]
ORDER = ["detect_s", "reconnect_s", "resent_bytes", "window_bytes", "throughput_mib_s"]

CTEST_LINE = re.compile(r"^\s*\d+/\d+ Test\s+#\d+: (\S+) \.+\s*(\*+)?\s*([A-Za-z][^0-9]*?)\s+"
                        r"([\d.]+) sec")


def _bytes(v):
    v = int(v)
    if abs(v) >= 1 << 20:
        return f"{v / (1 << 20):.2f} MiB"
    if abs(v) >= 1 << 10:
        return f"{v / (1 << 10):.1f} KiB"
    return f"{v} B"


def _fmt(name, v):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    for pattern, fmt in UNITS:
        if pattern.search(name):
            return fmt(v)
    return f"{v:g}" if isinstance(v, float) else str(v)


# Paths in temporary directories (a test's, e.g. TMP/pkgdist-test-ab12cd/...): the
# page must not name paths of the machine that made it.
TMP_PATH = re.compile("(?:%s)(?:/[\\w.@-]+)+" % "|".join(
    sorted({re.escape(tempfile.gettempdir()), "/tmp", "/var/tmp"})))


def _escape(text):
    text = TMP_PATH.sub(lambda m: "TMPDIR/" + m.group(0).rsplit("/", 1)[-1], str(text))
    text = re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", lambda m: "\\x%02x" % ord(m.group(0)), text)
    return text.replace("|", "\\|").replace("\n", " ")


def load_results(path):
    entries = []
    if not path or not os.path.exists(path):
        return entries
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise SystemExit(f"{path}:{n}: not JSON ({e})")
    return entries


def figures_text(runs):
    """'name: median M (max X)' for every figure, over the runs that have it."""
    values = collections.defaultdict(list)
    for r in runs:
        for k, v in (r.get("figures") or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                values[k].append(v)
    names = [k for k in ORDER if k in values] + sorted(k for k in values if k not in ORDER)
    parts = []
    for k in names:
        vs = values[k]
        if len(vs) == 1:
            parts.append(f"{k} {_fmt(k, vs[0])}")
        else:
            parts.append(f"{k} median {_fmt(k, statistics.median(vs))}, max {_fmt(k, max(vs))}")
    return "; ".join(parts) or "—"


def scenario_rows(entries):
    by_scenario = collections.OrderedDict()
    for e in entries:
        by_scenario.setdefault(e["scenario"], []).append(e)
    rows = []
    for scenario, runs in by_scenario.items():
        failed = [r for r in runs if not r.get("ok")]
        tried = sum(int(r.get("tried", 1)) for r in runs)
        outcome = (failed[-1] if failed else runs[-1]).get("outcome", "")
        if len(runs) > 1:
            outcome = f"{outcome} (last of {len(runs)} runs)" if not failed else \
                f"{outcome} ({len(failed)} of {len(runs)} runs failed)"
        result = "OK" if not failed else "FAILED"
        rows.append((scenario, tried, len(runs), outcome, figures_text(runs), result))
    return rows


def parse_ctest_logs(paths):
    """{test name: [(status, seconds), ...]} from ctest's progress lines."""
    tests = collections.OrderedDict()
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                m = CTEST_LINE.match(line)
                if m:
                    status = m.group(3).strip()
                    tests.setdefault(m.group(1), []).append((status, float(m.group(4))))
    return tests


def machine():
    cpus = os.cpu_count() or 0
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
        mem = f", {kib / (1 << 20):.1f} GiB of memory"
    except (OSError, ValueError, IndexError):
        pass
    distro = ""
    try:
        with open("/etc/os-release") as f:
            info = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
        distro = info.get("PRETTY_NAME", "").strip('"')
    except OSError:
        pass
    return (f"{cpus} CPU cores (nproc){mem}, {platform.system()} kernel "
            f"{platform.release()} (uname -r), {platform.machine()}"
            + (f", {distro}" if distro else ""))


def render(entries, tests, now):
    out = []
    w = out.append
    w("# Reliability: faults tried and what happened")
    w("")
    w(f"Generated by `{REGENERATE}` on {now:%Y-%m-%d %H:%M} UTC; do not edit by hand.")
    w("")
    w("Each row is one fault or bad input that a test in `tests/faults/` or "
      "`tests/integration/` applied to real processes (controller, agents, `pkgdistctl`) "
      "over real mutual TLS, and what was then observed: every scenario ends by comparing "
      "the published package with its source byte for byte. *Tried* is how many times the "
      "fault was applied (one run of a scenario may apply it several times); figures are "
      "the median and maximum over the runs when there are several.")
    w("")
    w("Figures: `detect_s` seconds from the fault to the controller ending the attempt "
      "(target `retry_wait`); `reconnect_s` seconds from the fault's removal (or a drop) "
      "until bytes move again; `resent_bytes` bytes sent beyond the package size "
      "(re-sends); `window_bytes` the controller's window of unacknowledged bytes, the "
      "bound on re-sends per interruption; `throughput_mib_s` package bytes over the time "
      "from `distribute` to complete.")
    w("")
    rows = scenario_rows(entries)
    if rows:
        w("| scenario | tried | runs | outcome | figures | result |")
        w("|---|---:|---:|---|---|---|")
        for scenario, tried, runs, outcome, figures, result in rows:
            mark = "**FAILED**" if result == "FAILED" else "OK"
            w(f"| {_escape(scenario)} | {tried} | {runs} | {_escape(outcome)} | "
              f"{_escape(figures)} | {mark} |")
    else:
        w("No scenario recorded any result: did the suites run?")
    w("")
    if tests:
        w("## Test runs")
        w("")
        w("Every ctest test of the suites run for this page (labels `faults` and "
          "`integration`); a skipped test names its reason in its output.")
        w("")
        w("| test | status | seconds |")
        w("|---|---|---:|")
        for name, runs in tests.items():
            statuses = collections.Counter(s for s, _ in runs)
            status = ", ".join(f"{s} x{n}" if n > 1 else s for s, n in statuses.items())
            secs = max(t for _, t in runs)
            w(f"| {name} | {_escape(status)} | {secs:.1f} |")
        w("")
    failed = [r for r in rows if r[5] == "FAILED"]
    bad_tests = [n for n, runs in tests.items() if any(s != "Passed" for s, _ in runs)]
    w("## Summary")
    w("")
    w(f"{len(rows)} scenarios, {len(rows) - len(failed)} OK, {len(failed)} failed; "
      f"{len(tests)} tests, {len(tests) - len(bad_tests)} passed"
      + (f", not passed: {', '.join(bad_tests)}" if bad_tests else "") + ".")
    w("")
    w("## Machine")
    w("")
    w(machine() + ".")
    w("")
    w("## Regenerate")
    w("")
    w("```sh")
    w(f"{REGENERATE}               # build (scripts/build.sh), run the fault and")
    w(f"{' ' * len(REGENERATE)}               # integration suites through ctest, write this page")
    w(f"{REGENERATE} --repeat 5    # the suites 5 times: medians over 5 runs")
    w(f"{REGENERATE} --no-build B  # use the already built build directory B")
    w("```")
    w("")
    w("Tests in `tests/faults/test_network_netns.py` and `test_site_bandwidth.py` need root, "
      "`ip netns` and iptables "
      "(Debian packages iproute2, iptables); without them they are skipped and listed as "
      "such above.")
    return "\n".join(out) + "\n"


CHAOS_BEGIN = "<!-- chaos:begin"
CHAOS_END = "<!-- chaos:end -->"


def keep_chaos_section(path, text):
    """`text` with the chaos campaign's section of the page at `path` (written
    by scripts/chaos.sh, tests/chaos/report.py) appended, if it has one."""
    try:
        with open(path, encoding="utf-8") as f:
            old = f.read()
    except FileNotFoundError:
        return text
    start, end = old.find(CHAOS_BEGIN), old.find(CHAOS_END)
    if start < 0 or end < start:
        return text
    return text.rstrip("\n") + "\n\n" + old[start:end + len(CHAOS_END)] + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", required=True, help="results.jsonl written by the tests")
    ap.add_argument("--ctest-log", action="append", default=[], help="a ctest output log")
    ap.add_argument("--output", required=True, help="the Markdown page to write")
    args = ap.parse_args(argv)
    entries = load_results(args.results)
    tests = parse_ctest_logs(args.ctest_log)
    now = datetime.datetime.now(datetime.timezone.utc)
    text = render(entries, tests, now)
    text = keep_chaos_section(args.output, text)
    tmp = args.output + ".tmp"
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, args.output)
    print(f"wrote {args.output}: {len(entries)} results, {len(tests)} tests", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
