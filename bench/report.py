"""Renders the benchmark's results as Markdown (docs/performance.md).

Run directly to render a saved run again, e.g. after editing bench/analysis.md:
    python3 bench/report.py RAW.json > docs/performance.md
(bench/run.sh names RAW.json, in $TMPDIR, on its last line.)"""

import json
import os
import sys
import limit as limit_mod

MiB = 1 << 20
GiB = 1 << 30

# Targets of issue 6: fraction of the limit per N, speed-up over the peer at N=4.
LIMIT_TARGET = {1: 0.8, 4: 0.8, 16: 0.6}
PEER_TARGET_N, PEER_TARGET = 4, 1.5


def _size(b):
    return f"{b / GiB:g} GiB" if b >= GiB else f"{b / MiB:g} MiB"


def _mib(kib):
    return f"{kib / 1024:.0f}"


def _table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]
    return "\n".join(out)


def machine_section(r):
    m = r["machine"]
    return "\n".join([
        "## Machine and run", "",
        f"- date: {r['date']}",
        f"- command: `{r['command']}`",
        f"- CPU: {m['cpu']}, nproc {m['nproc']}",
        f"- memory: {m['memory']}",
        f"- kernel: {m['kernel']}",
        f"- load average before / after the run: {r['load_before']} / {r['load_after']}"
        " (other work on the machine makes every figure slower)",
    ])


def limit_section(r):
    lim = r["limit"]
    rt = lim["rates"]
    gbs = lambda k: f"{rt[k] / 1e9:.2f} GB/s"
    return "\n".join([
        "## The machine's limit", "",
        "Measured parts, one core: " + ", ".join([
            f"AES-128-GCM {gbs('aes128gcm')} (`openssl speed -evp aes-128-gcm`, 16 KiB)",
            f"SHA-256 {gbs('sha256')} (`openssl speed -evp sha256`, 16 KiB)",
            f"loopback TCP {gbs('loopback')} (one stream, 1 MiB sends)",
            f"write + fsync {gbs('write')}"]) + ".",
        (f"Not in the formula: the disk itself takes {gbs('write_direct')} "
         "(4 MiB `O_DIRECT` writes + fsync, past the page cache, as the agent writes)."
         if rt.get("write_direct") else "Not in the formula: `O_DIRECT` is refused here."),
        "",
        "Formula (per receiver, per GiB, core-seconds):", "",
        "    cost = G/aes + G/aes + G/loopback + G/sha256 + G/write      (G = 2^30 bytes)",
        "    limit(N) = N * (S / G) * cost / cores", "",
        f"Here cost = {lim['cost_core_s_per_gib']:.2f} core-s/GiB, cores = {lim['cores']}, "
        f"so 1 GiB to one agent takes at best "
        f"{limit_mod.limit_seconds(lim, GiB, 1):.2f} s.",
    ])


def results_section(r):
    peers = {p["n"]: p for p in r.get("peer", [])}
    rows = []
    for run in r["runs"]:
        n = run["n"]
        lim_s = limit_mod.limit_seconds(r["limit"], run["size"], n)
        p = peers.get(n)
        rows.append([
            n, f"{run['wall_s']:.2f}", f"{n * run['size'] / run['wall_s'] / 1e6:.0f}",
            f"{run['controller_cpu_s']:.2f}", f"{run['agents_cpu_s']:.2f}",
            _mib(run["controller_peak_rss_kib"]), _mib(max(run["agent_peak_rss_kib"])),
            run["controller_max_threads"],
            f"{p['wall_s']:.2f}" if p else "-",
            f"{n * run['size'] / p['wall_s'] / 1e6:.0f}" if p else "-",
            f"{lim_s:.2f}",
            f"{p['wall_s'] / run['wall_s']:.2f}x" if p else "-",
            f"{100 * lim_s / run['wall_s']:.0f} %",
        ])
    size = _size(r["runs"][0]["size"]) if r["runs"] else "?"
    text = ["## Distribution: pkgdist vs the peer vs the limit", "",
            f"Package: one file of {size} of random data. Wall time from `distribute` to the job "
            "complete (`pkgdistctl distribute --wait`), every agent having verified sha256 and "
            "fsynced. MB/s = N x size / wall. Peak RSS is VmHWM (controller: reset before each "
            "run; agents: started fresh for each run, the largest shown).", "",
            _table(["N", "pkgdist s", "MB/s", "ctrl CPU s", "agents CPU s", "ctrl peak MiB",
                    "agent peak MiB", "ctrl threads", "peer s", "peer MB/s", "limit s",
                    "pkgdist / peer (speed)", "pkgdist / limit"], rows)]
    if r.get("peer"):
        text += ["", "Peer (nginx 2 workers over HTTPS, N concurrent `curl | tee FILE | "
                 "sha256sum`, then `sync FILE`): CPU seconds of nginx / of the clients: " +
                 "; ".join(f"N={p['n']}: {p['server_cpu_s']:.2f} / {p['client_cpu_s']:.2f}"
                           for p in r["peer"]) + "."]
    elif r.get("peer_skipped"):
        text += ["", f"Peer not measured: {r['peer_skipped']}."]
    text += ["", "Targets of issue 6: " + targets_line(r, peers)]
    direct = limit_mod.with_direct_write(r["limit"])
    if direct and r["runs"]:
        shares = " / ".join(
            f"{100 * limit_mod.limit_seconds(direct, run['size'], run['n']) / run['wall_s']:.0f} %"
            for run in r["runs"])
        ns = " / ".join(str(run["n"]) for run in r["runs"])
        text += ["", f"The same formula with the disk's `O_DIRECT` rate "
                 f"({r['limit']['rates']['write_direct'] / 1e9:.2f} GB/s) in place of write + "
                 "fsync, since the agent writes past the page cache: 1 GiB to one agent takes "
                 f"at best {limit_mod.limit_seconds(direct, GiB, 1):.2f} s, and pkgdist reaches "
                 f"{shares} of that limit for N = {ns}."]
    disk = r["limit"]["rates"].get("write_direct")
    if disk and r["runs"]:
        # Every agent writes to the same disk here, and a disk is not a core:
        # N x S must pass it whatever the CPUs do.
        shares = " / ".join(f"{100 * run['n'] * run['size'] / disk / run['wall_s']:.0f} %"
                            for run in r["runs"])
        ns = " / ".join(str(run["n"]) for run in r["runs"])
        text += ["", "The disk alone: every agent here writes to one disk, so N x S bytes must "
                 f"pass it at its `O_DIRECT` rate whatever the cores do; 1 GiB takes "
                 f"{GiB / disk:.2f} s that way, and pkgdist reaches {shares} of that bound "
                 f"for N = {ns} (above 100 % where the disk was faster during the run than "
                 "during the probe)."]
    return "\n".join(text)


def targets_line(r, peers):
    parts = []
    for run in r["runs"]:
        n = run["n"]
        frac = limit_mod.limit_seconds(r["limit"], run["size"], n) / run["wall_s"]
        if n in LIMIT_TARGET:
            ok = "met" if frac >= LIMIT_TARGET[n] else "NOT met"
            parts.append(f"N={n} at {100 * frac:.0f} % of the limit "
                         f"(target {100 * LIMIT_TARGET[n]:.0f} %: {ok})")
        if n == PEER_TARGET_N and n in peers:
            speed = peers[n]["wall_s"] / run["wall_s"]
            ok = "met" if speed >= PEER_TARGET else "NOT met"
            parts.append(f"N={n} {speed:.2f}x the peer's speed (target {PEER_TARGET}x: {ok})")
    return "; ".join(parts) + "." if parts else "no run with a target."


def memory_section(r):
    rows = [[_size(m["size"]), f"{m['wall_s']:.2f}", _mib(m["controller_peak_rss_kib"]),
             _mib(max(m["agent_peak_rss_kib"]))] for m in r.get("memory", [])]
    if not rows:
        return ""
    text = ["## Memory bounded (N=1)", "",
            _table(["package", "wall s", "controller peak MiB", "agent peak MiB"], rows)]
    mem = r["memory"]
    if len(mem) >= 2:
        c = mem[-1]["controller_peak_rss_kib"] / mem[0]["controller_peak_rss_kib"]
        a = max(mem[-1]["agent_peak_rss_kib"]) / max(mem[0]["agent_peak_rss_kib"])
        text += ["", f"Largest / smallest package: controller peak x{c:.2f}, agent peak x{a:.2f} "
                 "(target: within 10 %, x1.10)."]
    return "\n".join(text)


def import_section(r):
    imp = r["import"]
    rate = imp["size"] / imp["wall_s"]
    rates = r["limit"]["rates"]
    sha = rates["sha256"]
    text = [
        "## Import speed", "",
        f"`pkgdistctl package import` of {_size(imp['size'])}: {imp['wall_s']:.2f} s, "
        f"{rate / 1e9:.2f} GB/s = {100 * rate / sha:.0f} % of single-core SHA-256 "
        f"({sha / 1e9:.2f} GB/s; target 80 %)."]
    if "client_cpu_s" in imp:
        text += ["", f"CPU seconds: pkgdistctl (read, encrypt, send) {imp['client_cpu_s']:.2f}, "
                 f"controller (receive, decrypt, hash, write, fsync) {imp['controller_cpu_s']:.2f}."]
    if rates.get("write_direct"):
        disk = rates["write_direct"]
        text += ["", f"Bound: the import stores a durable copy, and this run's disk took "
                 f"{disk / 1e9:.2f} GB/s past the page cache ({100 * disk / sha:.0f} % of "
                 f"SHA-256) and {rates['write'] / 1e9:.2f} GB/s through it."]
    return "\n".join(text)


def scale_section(r):
    s = r.get("scale")
    if not s:
        return ""
    return "\n".join([
        "## Scale", "",
        f"{s['agents']} agents ({s['per_process']} per `pkgdist-multi-agent` process, each a "
        f"real AgentServer with its own certificate, root and port), one package of "
        f"{s['package_bytes'] // 1024} KiB distributed to all:", "",
        _table(["completes", "targets done", "wall s", "ctrl max threads",
                "ctrl RSS before MiB", "ctrl max RSS MiB", "ctrl KiB / agent",
                "agent host KiB / agent", "certs s", "register s"],
               [["yes" if s["complete"] else f"NO (exit {s['exit_code']}: {s['error'][:200]})",
                 s["done_targets"], f"{s['wall_s']:.1f}", s["controller_max_threads"],
                 _mib(s["controller_rss_before_kib"]), _mib(s["controller_max_rss_kib"]),
                 f"{s['controller_kib_per_agent']:.0f}", f"{s['host_rss_kib_per_agent']:.0f}",
                 f"{s['certs_s']:.1f}", f"{s['register_s']:.1f}"]])])


def scale_10000_section(_r):
    """bench/scale-10000.md: the 10,000-agent runs of bench/scale_bench.py
    (issue 12), hand-written from their figures; kept when the report is
    generated again."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scale-10000.md")
    if not os.path.exists(path):
        return ""
    with open(path, encoding="utf-8") as f:
        return f.read().strip()


def micro_section(r):
    micro = r.get("micro")
    if not micro:
        return ""
    rows = [[b["name"], f"{b['real_time']:.3g} {b['time_unit']}",
             f"{b.get('bytes_per_second', 0) / 1e9:.2f}"] for b in micro]
    return "\n".join(["## Micro-benchmarks (bench/micro, Google Benchmark)", "",
                      _table(["benchmark", "time / iteration", "GB/s"], rows)])


def profile_section(r):
    prof = r.get("profile")
    if not prof:
        return ""
    text = ["## Where the CPU goes (perf, N=1)", ""]
    for who, rows in prof.items():
        text += [f"{who}:", "", "```"]
        text += [f"{pct:6.2f}%  {sym}" for pct, sym in rows] + ["```", ""]
    return "\n".join(text)


def analysis_section(_r):
    """bench/analysis.md: the hand-written reading of the figures (why a
    target is missed and what would close it), kept next to the code."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "analysis.md")
    if not os.path.exists(path):
        return ""
    with open(path, encoding="utf-8") as f:
        return f.read().strip()


def render(r):
    parts = ["# Performance", "",
             "Generated by `bench/run.sh` (do not edit by hand; run it again). Issue 6 states "
             "what is measured and the targets.", "",
             results_section(r), limit_section(r), memory_section(r), import_section(r),
             scale_section(r), scale_10000_section(r), micro_section(r), profile_section(r),
             analysis_section(r), machine_section(r)]
    return "\n\n".join(p for p in parts if p).rstrip() + "\n"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: bench/report.py RAW.json > docs/performance.md")
    with open(sys.argv[1], encoding="utf-8") as f:
        sys.stdout.write(render(json.load(f)))
