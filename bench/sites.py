#!/usr/bin/env python3
"""The sites benchmark (issue 14): a package of --size bytes (1 GiB) to two
sites of --agents-per-site agents (8) each, every site in a network
namespace of its own behind ONE veth pair, its WAN link (tests/faults/netns.py
Sites), once with the agents unlabelled (every agent receives the package
from the controller) and once labelled site=NAME (each site's relay
receives it once, the other agents fetch it from the relay). Reports, per
run, the bytes that crossed each site's WAN link (the interface counters of
the controller's end of its veth), those bytes per package, and the time
from `distribute` to the job's completion, with the time the first and the
last agent finished. Each round runs both on the bare veth (this machine's
cores and disk are the bound) and with the veth shaped to --wan-mbit (tc
tbf on the controller's end: a WAN link, the case sites are for); the runs
alternate (unlabelled, labelled) within each, for --runs rounds, and the
report gives each run and the medians.

Needs root and `ip netns` (as the netns fault tests); says why and exits 2
otherwise. Every run starts fresh agents (empty roots: no chunk store to
reuse) and a fresh package (new random content).

Usage: bench/sites.py [--bin-dir DIR] [--size BYTES] [--agents-per-site N]
                      [--runs R] [--wan-mbit M] [--out FILE]
  --wan-mbit  the shaped runs' link rate per site, Mbit/s (default 400;
              0: no shaped runs)
  --bin-dir   binaries to run (default: build/bin; bench/run.sh builds
              build-bench/ in Release, use --bin-dir build-bench/bin for it)
  --out       also write the report (Markdown) to FILE
"""

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))
sys.path.insert(0, os.path.join(SRC, "tests", "faults"))

GiB = 1 << 30
SITES = ("fra", "muc")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bin-dir", default=os.path.join(SRC, "build", "bin"))
    p.add_argument("--size", type=int, default=GiB)
    p.add_argument("--agents-per-site", type=int, default=8)
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--wan-mbit", type=int, default=400)
    p.add_argument("--out")
    return p.parse_args()


def shape(sites, mbit):
    """Limits what each site's WAN veth sends to the site to `mbit` Mbit/s
    (a token bucket of 1 MB, as a router's would be)."""
    for site in SITES:
        sites.in_ctrl_ns("tc", "qdisc", "add", "dev", sites.veth_ctrl[site], "root", "tbf",
                         "rate", f"{mbit}mbit", "burst", "1mb", "latency", "100ms")


def one_run(labelled, size, per_site, seed, wan_mbit):
    """One distribution; returns {"seconds", "first", "last", "wan": {site:
    bytes}, "sent", "from_peer"} (bytes over all targets; first and last: the
    seconds at which the first and the last target was done)."""
    import harness
    from netns import Sites, SitesCluster
    layout = {s: [f"{s}{i}" for i in range(1, per_site + 1)] for s in SITES}
    with Sites(layout, index=seed) as sites, SitesCluster(sites) as c:
        if wan_mbit:
            shape(sites, wan_mbit)
        c.start_controller()
        for name in sites.agents:
            c.start_agent(name)
            if labelled:
                c.add_agent(name)
            else:
                c.ctl("agent", "add", name, c.agent_address(name))
        path = harness.make_file_package(os.path.join(c.dir, "src"), "big.bin", size, seed)
        info = c.import_package(path, "big", "1")
        if int(info["size"]) != size:
            raise AssertionError(f"imported {info['size']} bytes, expected {size}")
        before = {s: sites.tx_bytes(s) for s in SITES}
        start = time.monotonic()
        job_id = c.ctl("distribute", "big@1", "--all")["id"]
        done_at = {}
        deadline = start + 3600
        while True:
            job = c.job(job_id)
            now = time.monotonic() - start
            for t in job["targets"]:
                if t["state"] == "done":
                    done_at.setdefault(t["agent"], now)
            if job["state"] in ("complete", "failed", "cancelled"):
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} not done within an hour: {job}")
            time.sleep(0.2)  # polling a status: there is no event to wait for here
        seconds = time.monotonic() - start
        if job["state"] != "complete":
            raise AssertionError(f"job {job_id} ended {job['state']}: {job}")
        wan = {s: sites.tx_bytes(s) - before[s] for s in SITES}
        targets = job["targets"]
        for t in targets:
            published = c.published(t["agent"], "big", "1")
            got = os.path.getsize(os.path.join(published, "big.bin"))
            if got != size:
                raise AssertionError(f"{t['agent']}: {got} bytes published, expected {size}")
        return {
            "seconds": seconds,
            "first": min(done_at.values()),
            "last": max(done_at.values()),
            "wan": wan,
            "sent": sum(int(t.get("bytes_sent", 0)) for t in targets),
            "from_peer": sum(int(t.get("bytes_from_peer", 0)) for t in targets),
        }


def report(args, runs):
    size = args.size
    lines = [
        f"# Sites benchmark: {size / GiB:g} GiB to {len(SITES)} sites x "
        f"{args.agents_per_site} agents",
        "",
        f"`bench/sites.py --size {size} --agents-per-site {args.agents_per_site} "
        f"--runs {args.runs}`, {time.strftime('%Y-%m-%d')}, on this machine ({os.cpu_count()} "
        "cores). Each site sits in a network namespace behind one veth pair (its WAN link); "
        "the bytes are that veth's transmit counter at the controller's end (TLS, HTTP/2 and "
        "TCP/IP included), the time runs from `distribute` to the job's completion.",
        "",
        "| run | link | agents | job (s) | first done (s) | last done (s) | " +
        " | ".join(f"WAN {s} (GiB, x package)" for s in SITES) +
        " | sent by controller (GiB) | from relays (GiB) |",
        "|---|---|---|---|---|---|" + "---|" * len(SITES) + "---|---|",
    ]
    for i, (link, mode, r) in enumerate(runs, 1):
        wan = " | ".join(f"{r['wan'][s] / GiB:.2f} (x{r['wan'][s] / size:.3f})" for s in SITES)
        lines.append(f"| {i} | {link} | {mode} | {r['seconds']:.1f} | {r['first']:.1f} | "
                     f"{r['last']:.1f} | {wan} | {r['sent'] / GiB:.2f} | "
                     f"{r['from_peer'] / GiB:.2f} |")
    lines.append("")
    for link in dict.fromkeys(l for l, _, _ in runs):
        medians = {}
        for mode in ("unlabelled", "sites"):
            rs = [r for l, m, r in runs if l == link and m == mode]
            if not rs:
                continue
            medians[mode] = statistics.median(r["seconds"] for r in rs)
            per_site = statistics.median(r["wan"][s] / size for r in rs for s in SITES)
            lines.append(f"- **{link}, {mode}**: median {medians[mode]:.1f} s; each WAN link "
                         f"carried x{per_site:.3f} the package.")
        if len(medians) == 2:
            lines.append(f"- **{link}**: with sites the job took x"
                         f"{medians['sites'] / medians['unlabelled']:.2f} the time without.")
    return "\n".join(lines) + "\n"


def main():
    args = parse_args()
    os.environ["PKGDIST_BIN_DIR"] = os.path.abspath(args.bin_dir)
    from netns import environment_problem, remove_stale_namespaces
    problem = environment_problem()
    if problem:
        print(f"bench/sites.py: cannot run: {problem}", file=sys.stderr)
        return 2
    remove_stale_namespaces()
    runs = []
    seed = 1
    links = [0] + ([args.wan_mbit] if args.wan_mbit else [])
    for _ in range(args.runs):
        for mbit in links:
            link = f"{mbit} Mbit/s" if mbit else "bare veth"
            for labelled in (False, True):
                mode = "sites" if labelled else "unlabelled"
                print(f"run {len(runs) + 1}: {link}, {mode} ...", file=sys.stderr, flush=True)
                r = one_run(labelled, args.size, args.agents_per_site, seed, mbit)
                seed += 1
                print(f"  {r['seconds']:.1f} s, WAN bytes {r['wan']}", file=sys.stderr,
                      flush=True)
                runs.append((link, mode, r))
    text = report(args, runs)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
