#!/usr/bin/env python3
"""Side by side: two builds of pkgdist distributing the same package, run
alternately (A B A B ...) in one session, so that a slow stretch of this
machine falls on both alike (issue 18: "measure each change side by side
before keeping it"). Each build gets its own controller; every run gets
fresh agents (bench/pkgdist_runs.py). Prints, per build and N, the median
wall time and CPU seconds with their range, and B's ratios to A.

Usage: bench/ab.py --a DIR --b DIR [--size BYTES] [--agents 1,4] [--runs 5]
                   [--chunking fixed|fastcdc] [--threads] [--json FILE]
--threads also prints, for each build's median run at each N, the CPU
seconds of each thread (by name) of the controller and of one agent.
DIR is a directory of built binaries (e.g. a copy of build-bench/bin taken
before a change, and build-bench/bin after it).
"""

import argparse
import contextlib
import json
import os
import statistics
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(here), "tests", "integration"))
sys.path.insert(0, here)

import harness  # noqa: E402
import pkgdist_runs  # noqa: E402
import procstat  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30


def cluster(bin_dir, names, chunking, size):
    """A started controller of `bin_dir` holding package bench@1."""
    harness.BIN_DIR = bin_dir
    c = harness.Cluster(agents=names)
    c.__enter__()
    c.start_controller(log_level="warn", extra=["--chunking", chunking])
    src = pkgdist_runs.make_random_file(os.path.join(c.dir, "src", "pkg.bin"), size)
    pkgdist_runs.import_package(c, src, "bench", "1", size)
    os.unlink(src)
    return c


def spread(values, fmt="{:.2f}"):
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-" \
           f"{fmt.format(max(values))})"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--a", required=True)
    ap.add_argument("--b", required=True)
    ap.add_argument("--size", type=int, default=GiB)
    ap.add_argument("--agents", default="1,4")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--chunking", default="fastcdc")
    ap.add_argument("--threads", action="store_true")
    ap.add_argument("--json")
    a = ap.parse_args()
    ns = [int(x) for x in a.agents.split(",")]
    builds = {"A": os.path.abspath(a.a), "B": os.path.abspath(a.b)}
    names = {(b, k, n): [f"{b.lower()}{k}n{n}-{i}" for i in range(n)]
             for b in builds for k in range(a.runs) for n in ns}
    clusters = {}
    try:
        for b, d in builds.items():
            clusters[b] = cluster(d, [x for (bb, _, _), v in names.items() if bb == b for x in v],
                                  a.chunking, a.size)
        runs = []
        for k in range(a.runs):
            for n in ns:
                for b in builds:
                    harness.BIN_DIR = builds[b]
                    meters = {}

                    def around(ctl, agents):
                        stack = contextlib.ExitStack()
                        if a.threads:
                            meters["controller"] = stack.enter_context(procstat.ThreadCpu(ctl))
                            meters["agent"] = stack.enter_context(procstat.ThreadCpu(agents[0]))
                        return stack
                    r = pkgdist_runs.distribute(clusters[b], "bench@1", names[(b, k, n)], a.size,
                                                "pkg.bin", around=around)
                    r.update(build=b, round=k,
                             threads={who: m.by_name() for who, m in meters.items()})
                    runs.append(r)
                    print(f"round {k + 1}/{a.runs} N={n} {b}: {r['wall_s']:.2f} s, ctrl "
                          f"{r['controller_cpu_s']:.2f} + agents {r['agents_cpu_s']:.2f} CPU-s",
                          file=sys.stderr, flush=True)
    finally:
        for c in clusters.values():
            c.__exit__(None, None, None)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"builds": builds, "size": a.size, "chunking": a.chunking, "runs": runs}, f,
                      indent=1)
    gib = a.size / GiB
    print(f"{a.size / MiB:.0f} MiB, --chunking {a.chunking}, {a.runs} alternated runs each; "
          "median (min-max)")
    print("| N | build | wall s | ctrl CPU s | agents CPU s | core-s/GiB/receiver "
          "| agent peak MiB |")
    print("|---|---|---|---|---|---|---|")
    med = {}
    for n in ns:
        for b in builds:
            rs = [r for r in runs if r["build"] == b and r["n"] == n]
            per = [(r["controller_cpu_s"] + r["agents_cpu_s"]) / (gib * n) for r in rs]
            med[(b, n)] = [statistics.median(x) for x in (
                [r["wall_s"] for r in rs], [r["controller_cpu_s"] for r in rs],
                [r["agents_cpu_s"] for r in rs], per)]
            # Each run's largest agent (fresh agents every run: their own peak).
            peak = [max(r["agent_peak_rss_kib"]) / 1024 for r in rs]
            print(f"| {n} | {b} | {spread([r['wall_s'] for r in rs])} | "
                  f"{spread([r['controller_cpu_s'] for r in rs])} | "
                  f"{spread([r['agents_cpu_s'] for r in rs])} | {spread(per)} | "
                  f"{spread(peak, '{:.1f}')} |")
    if a.threads:
        for n in ns:
            for b in builds:
                rs = sorted((r for r in runs if r["build"] == b and r["n"] == n),
                            key=lambda r: r["wall_s"])
                mid = rs[len(rs) // 2]
                for who, by in mid["threads"].items():
                    top = ", ".join(f"{name} {cpu:.2f}" for name, cpu in by.items() if cpu >= 0.01)
                    print(f"N={n} {b} (run of {mid['wall_s']:.2f} s) {who} threads: {top}")
    for n in ns:
        ratios = [med[("B", n)][i] / med[("A", n)][i] for i in range(4)]
        print(f"N={n}: B/A wall x{ratios[0]:.3f}, ctrl CPU x{ratios[1]:.3f}, agents CPU "
              f"x{ratios[2]:.3f}, core-s/GiB x{ratios[3]:.3f}")


if __name__ == "__main__":
    main()
