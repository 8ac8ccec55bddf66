"""bench/run.sh's driver: measures pkgdist, the peers and the limit in one
run and writes the Markdown report. See bench/run.sh for the options.

The distribution runs go in rounds (--runs, default 3): each round first
probes the machine's parts (bench/limit.py), then, for each N in turn,
distributes to N fresh agents with pkgdist and fetches with each peer
(bench/peer.py) in the same order, A B C A B C ..., so that a slow stretch
of the disk or other work on the machine falls on all of them alike rather
than on one. The report shows the median run of each at each N with the
spread beside it; the JSON results keep every run with its round."""

import argparse
import contextlib
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.dirname(HERE)
MiB = 1 << 20
GiB = 1 << 30


def parse_args():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--bin-dir", required=True)
    p.add_argument("--size", type=int, default=GiB)
    p.add_argument("--agents", default="1,4,16")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--out", default=os.path.join(SOURCE_DIR, "docs", "performance.md"))
    p.add_argument("--scale-agents", type=int, default=1000)
    p.add_argument("--scale-per-process", type=int, default=100)
    p.add_argument("--no-peer", action="store_true")
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--runs", type=int, default=3,
                   help="rounds of alternated runs (pkgdist, then each peer) at each N")
    p.add_argument("--command", default="bench/run.sh")
    p.add_argument("--only", choices=["import"],
                   help="import: only the import measurement (streamed and --local beside "
                        "SHA-256 and the disk, --runs rounds); prints it, writes no report")
    return p.parse_args()


def machine():
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    return {"cpu": cpu, "nproc": os.cpu_count(), "memory": f"{mem_kib / (1 << 20):.1f} GiB",
            "kernel": platform.release()}


def load():
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_micro(bin_dir):
    out = []
    for name in ("bench_sha256", "bench_manifest", "bench_staging", "bench_codec"):
        path = os.path.join(bin_dir, name)
        if not os.access(path, os.X_OK):
            continue
        r = subprocess.run([path, "--benchmark_format=json", "--benchmark_min_time=0.3"],
                           capture_output=True, text=True, timeout=600)
        if r.returncode == 0:
            out += json.loads(r.stdout)["benchmarks"]
    return out


def main():
    a = parse_args()
    os.environ["PKGDIST_BIN_DIR"] = os.path.abspath(a.bin_dir)
    os.environ["PKGDIST_SOURCE_DIR"] = SOURCE_DIR
    sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "integration"))
    import harness  # noqa: E402  (needs the environment above)
    import limit
    import peer
    import pkgdist_runs
    import profile
    import report
    import scale

    ns = [int(x) for x in a.agents.split(",") if x]
    if a.runs < 1:
        raise SystemExit("--runs must be at least 1")
    mem_sizes = [2 * MiB, 8 * MiB] if a.smoke else [256 * MiB] + ([] if a.quick else [4 * GiB])
    r = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
         "command": a.command, "machine": machine(), "load_before": load(), "rounds": a.runs}

    # Fresh agents for every run: names per (round, N).
    names = {(k, n): [f"r{k}n{n}-{i}" for i in range(n)] for k in range(a.runs) for n in ns}
    do_profile = not a.smoke and not a.no_profile and profile.available()
    extra = [f"mem{i}" for i in range(len(mem_sizes))] + (["prof"] if do_profile else [])
    peers = [] if a.smoke or a.no_peer else peer.available()
    if not peers:
        r["peer_skipped"] = ("--smoke" if a.smoke else "--no-peer" if a.no_peer
                             else "nginx or curl not installed")
    with harness.Cluster(agents=[x for v in names.values() for x in v] + extra) as c:
        # The source's directory is an import root: the import is measured
        # streamed and --local.
        src_dir = os.path.join(c.dir, "src")
        os.makedirs(src_dir)
        c.start_controller(log_level="warn", extra=["--import-root", src_dir])
        src = pkgdist_runs.make_random_file(os.path.join(src_dir, "pkg.bin"), a.size)
        sha = pkgdist_runs.file_sha256(src)
        log(f"importing {a.size} bytes")
        r["import"] = pkgdist_runs.measure_import(
            c, src, a.size, rounds=a.runs if a.only == "import" else 1, log=log)
        if a.only == "import":
            print(report.import_section(r))
            raw = os.path.join(tempfile.gettempdir(), "pkgdist-bench-import.json")
            with open(raw, "w") as f:
                json.dump(r, f, indent=1)
            log(f"raw figures: {raw}")
            return
        r["runs"], r["peer"], probes = [], [], []
        with contextlib.ExitStack() as stack:
            ng = (stack.enter_context(peer.Nginx(c.dir, src, c.cert("controller"),
                                                 c.key("controller"))) if peers else None)
            for k in range(a.runs):
                log(f"round {k + 1}/{a.runs}: measuring the machine's parts")
                probes.append(limit.measure(c.dir, ns, quick=a.smoke))
                for n in ns:
                    log(f"round {k + 1}/{a.runs}: pkgdist to {n} agent(s)")
                    run = pkgdist_runs.distribute(
                        c, "bench@1", names[(k, n)], a.size, "pkg.bin",
                        check_sha256=sha if k == 0 and n == ns[0] else None)
                    r["runs"].append(dict(run, round=k))
                    log(f"  N={n}: {run['wall_s']:.2f} s")
                    for kind in peers:
                        log(f"round {k + 1}/{a.runs}: peer nginx + {n} x curl | {kind}")
                        p = peer.run(ng, os.path.join(c.certs, "ca.pem"),
                                     os.path.join(c.dir, "peer-out"), n, sha, a.size, kind)
                        r["peer"].append(dict(p, round=k))
                        log(f"  N={n}: {p['wall_s']:.2f} s")
        r["limit"] = limit.combine(probes)
        if do_profile:
            log("profiling one N=1 distribution with perf")
            data = {"controller": os.path.join(c.dir, "perf-controller.data"),
                    "agent": os.path.join(c.dir, "perf-agent.data")}

            def around(ctl, agents):
                stack = contextlib.ExitStack()
                stack.enter_context(profile.Recorder(ctl, data["controller"]))
                stack.enter_context(profile.Recorder(agents[0], data["agent"]))
                return stack
            pkgdist_runs.distribute(c, "bench@1", ["prof"], a.size, "pkg.bin", around=around)
            r["profile"] = {}
            for who, path in data.items():
                r["profile"][f"{who}, share of each binary or library"] = profile.top_symbols(
                    path, limit=8, sort="dso")
                r["profile"][f"{who}, hottest symbols by self time"] = profile.top_symbols(path)
        os.unlink(src)
        r["memory"] = []
        for i, size in enumerate(mem_sizes):
            log(f"memory: {size} bytes to one agent")
            path = pkgdist_runs.make_random_file(os.path.join(c.dir, "mem", "mem.bin"), size)
            pkgdist_runs.import_package(c, path, "mem", str(i), size)
            os.unlink(path)
            r["memory"].append(pkgdist_runs.distribute(c, f"mem@{i}", [f"mem{i}"], size,
                                                       "mem.bin"))
        if a.scale_agents > 0:
            count = 2 if a.smoke else a.scale_agents
            per = 2 if a.smoke else a.scale_per_process
            log(f"scale: {count} agents, {per} per process")
            r["scale"] = scale.run(c, count, per)
            log(f"  complete={r['scale']['complete']} wall {r['scale']['wall_s']:.1f} s")
    if not a.smoke and not a.quick:
        log("micro-benchmarks")
        r["micro"] = run_micro(a.bin_dir)
    r["load_after"] = load()

    text = report.keep_delta_section(a.out, report.render(r))
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        f.write(text)
    # The raw figures: beside a smoke report (its directory is removed), else in $TMPDIR.
    raw = (os.path.splitext(a.out)[0] + ".json" if a.smoke
           else os.path.join(tempfile.gettempdir(), "pkgdist-bench-last.json"))
    with open(raw, "w") as f:
        json.dump(r, f, indent=1)
    print(text)
    log(f"wrote {a.out} (raw figures: {raw})")
    if "| N |" not in text:
        raise SystemExit("the report has no results table")
    if "scale" in r and not r["scale"]["complete"]:
        raise SystemExit("the scale run did not complete")


if __name__ == "__main__":
    main()
