"""Renders the benchmark's results as Markdown (docs/performance.md).

Run directly to render a saved run again, e.g. after editing bench/analysis.md:
    python3 bench/report.py RAW.json > docs/performance.md
(bench/run.sh names RAW.json, in $TMPDIR, on its last line.)"""

import json
import os
import statistics
import sys
import limit as limit_mod

MiB = 1 << 20
GiB = 1 << 30

# Goals of issue 18: each N at >= 80 % of the limit; controller + agents CPU
# per delivered GiB <= 1.25 x the formula's cost; >= 2x the strongest peer's
# speed at N = 4 and 16; peak RSS within 10 % from a 256 MiB to a 4 GiB package.
LIMIT_GOAL = 0.8
CPU_GOAL = 1.25
PEER_GOAL, PEER_GOAL_NS = 2.0, (4, 16)
MEMORY_GOAL, MEMORY_GOAL_SIZES = 1.10, (256 * MiB, 4 * GiB)

# How each peer is named in the report (bench/peer.py's clients).
# (No "|" in them: they go into Markdown tables.)
PEER_LABEL = {"sha256sum": "curl+sha256sum", "openssl": "curl+openssl"}


def _size(b):
    return f"{b / GiB:g} GiB" if b >= GiB else f"{b / MiB:g} MiB"


def _mib(kib):
    return f"{kib / 1024:.0f}"


def _gbs(rate):
    return f"{rate / 1e9:.2f} GB/s"


def _table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]
    return "\n".join(out)


def _spread(values, fmt="{:.2f}"):
    """The median of `values` with min-max beside it when there are several."""
    med = fmt.format(statistics.median(values))
    if len(values) < 2:
        return med
    return f"{med} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def _rate(part):
    """A rate the limit uses (its best probe) with the probes' range."""
    if part["min"] == part["best"]:
        return _gbs(part["best"])
    return f"{_gbs(part['best'])} (probes {part['min'] / 1e9:.2f}-{part['best'] / 1e9:.2f})"


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


def _cpu_per_gib(run):
    """Controller + agents core-seconds per GiB delivered to one receiver."""
    return (run["controller_cpu_s"] + run["agents_cpu_s"]) / (run["n"] * run["size"] / GiB)


def _peer_cpu_per_gib(p):
    """nginx + clients core-seconds per GiB delivered to one receiver."""
    return (p["server_cpu_s"] + p["client_cpu_s"]) / (p["n"] * p["size"] / GiB)


def per_n(r):
    """One dict per N: pkgdist's runs, each peer's, the limit's bounds, and
    the medians the report shows."""
    lim = r["limit"]
    rows = []
    for n in sorted({run["n"] for run in r["runs"]}):
        runs = [x for x in r["runs"] if x["n"] == n]
        size = runs[0]["size"]
        walls = [x["wall_s"] for x in runs]
        peers = {}
        for p in r.get("peer", []):
            if p["n"] == n:
                peers.setdefault(p["peer"], []).append(p)
        peer_wall = {k: statistics.median(p["wall_s"] for p in v) for k, v in peers.items()}
        strongest = min(peer_wall, key=peer_wall.get) if peer_wall else None
        limit_s, bound_by = limit_mod.limit_seconds(lim, size, n)
        rows.append({
            "n": n, "size": size, "runs": runs, "walls": walls,
            "wall": statistics.median(walls), "fastest": min(walls),
            "cpu_per_gib": statistics.median(_cpu_per_gib(x) for x in runs),
            "peers": peers, "peer_wall": peer_wall, "strongest": strongest,
            "limit_s": limit_s, "bound_by": bound_by,
            "bounds": limit_mod.bounds(lim, size, n),
            # A run faster than the limit means the limit is wrong.
            "underestimated": min(walls) < limit_s,
        })
    return rows


def _limit_cell(row):
    if row["underestimated"]:
        return "**limit underestimated** (below)"
    return f"{100 * row['limit_s'] / row['wall']:.0f} %"


def results_section(r):
    rows = per_n(r)
    kinds = [k for k in PEER_LABEL if any(k in row["peers"] for row in rows)]
    speed = []
    for row in rows:
        n, size = row["n"], row["size"]
        cells = [n, _spread(row["walls"]), f"{n * size / row['wall'] / 1e6:.0f}"]
        for k in kinds:
            cells.append(_spread([p["wall_s"] for p in row["peers"][k]])
                         if k in row["peers"] else "-")
        s = row["strongest"]
        cells += [PEER_LABEL[s] if s else "-",
                  f"{row['peer_wall'][s] / row['wall']:.2f}x" if s else "-",
                  f"{row['limit_s']:.2f}", row["bound_by"], _limit_cell(row)]
        speed.append(cells)
    cost = r["limit"]["cost_core_s_per_gib"]
    resources = []
    for row in rows:
        runs = row["runs"]
        resources.append([
            row["n"], _spread([x["controller_cpu_s"] for x in runs]),
            _spread([x["agents_cpu_s"] for x in runs]),
            _spread([_cpu_per_gib(x) for x in runs]), f"{row['cpu_per_gib'] / cost:.2f}x",
            _mib(max(x["controller_peak_rss_kib"] for x in runs)),
            _mib(max(max(x["agent_peak_rss_kib"]) for x in runs)),
            max(x["controller_max_threads"] for x in runs)])
    size = _size(rows[0]["size"]) if rows else "?"
    count = r.get("rounds", 1)
    text = ["## Distribution: pkgdist vs the peers vs the limit", "",
            f"Package: one file of {size} of random data. Wall time from `distribute` to the job "
            "complete (`pkgdistctl distribute --wait`), every agent having verified sha256 and "
            "fsynced. Every figure is the median of "
            f"{count} run{'s' if count != 1 else ''} (min-max in brackets); the runs alternated "
            "(pkgdist, then each peer, at each N, round after round), and each round began with "
            "a probe of the machine's parts for the limit. MB/s = N x size / median wall. "
            "\"strongest peer\" is the peer with the shorter median at that N; "
            "\"bound by\" the resource whose bound sets the limit (next section).", "",
            _table(["N", "pkgdist s", "MB/s"] + [f"{PEER_LABEL[k]} s" for k in kinds]
                   + ["strongest peer", "pkgdist / strongest peer (speed)", "limit s",
                      "bound by", "pkgdist / limit"], speed),
            "", "CPU and memory of pkgdist's runs: controller and agents' CPU seconds, and "
            "their sum per GiB delivered to one receiver against the formula's cost "
            f"({cost:.2f} core-s/GiB, next section). Peak RSS is VmHWM (controller: reset "
            "before each run; agents: started fresh for each run), the largest of the runs.", "",
            _table(["N", "ctrl CPU s", "agents CPU s", "core-s / GiB / receiver", "/ cost",
                    "ctrl peak MiB", "agent peak MiB", "ctrl threads"], resources)]
    if r.get("peer"):
        peer_rows = [[PEER_LABEL[k], row["n"],
                      _spread([p["server_cpu_s"] for p in row["peers"][k]]),
                      _spread([p["client_cpu_s"] for p in row["peers"][k]]),
                      _spread([_peer_cpu_per_gib(p) for p in row["peers"][k]])]
                     for k in kinds for row in rows if k in row["peers"]]
        text += ["", "Peers: nginx (2 workers) over HTTPS and N concurrent clients "
                 "`curl | tee FILE | HASHER`, then `sync FILE`, each on its own file on the "
                 "agents' disk; HASHER is coreutils `sha256sum` (curl+sha256sum) or "
                 "`openssl dgst -sha256` (curl+openssl). Their CPU seconds:", "",
                 _table(["peer", "N", "nginx CPU s", "clients CPU s",
                         "core-s / GiB / receiver"], peer_rows)]
    elif r.get("peer_skipped"):
        text += ["", f"Peers not measured: {r['peer_skipped']}."]
    errors = [row for row in rows if row["underestimated"]]
    if errors:
        text += ["", "**Errors in the limit.** A run faster than the limit means the limit is "
                 "wrong (a part is faster than its probe, or the formula charges work the run "
                 "does not do), not that the run beat the machine:"]
        text += [f"- limit underestimated at N={row['n']}: the fastest pkgdist run took "
                 f"{row['fastest']:.2f} s (median {row['wall']:.2f} s), faster than the bound "
                 f"of {row['limit_s']:.2f} s set by {row['bound_by']}; " + _bounds_text(r, row)
                 for row in errors]
    return "\n".join(text)


def _bounds_text(r, row):
    lim = r["limit"]
    n = row["n"]
    b = row["bounds"]
    return (f"cores {b['cores']:.2f} s, disk {b['disk']:.2f} s, loopback {b['loopback']:.2f} s, "
            f"from the measured rates {lim['cipher'].upper()} {_gbs(limit_mod.rate(lim, 'aes'))}, "
            f"SHA-256 {_gbs(limit_mod.rate(lim, 'sha256'))}, loopback "
            f"{_gbs(limit_mod.rate(lim, 'loopback'))}, the agents' disk with {n} writer(s) "
            f"{_gbs(lim['disk'][str(n)]['best'])}.")


def goals_section(r):
    """Issue 18's goals, each met or missed with its numbers."""
    rows = per_n(r)
    cost = r["limit"]["cost_core_s_per_gib"]
    lines = ["## Goals (issue 18)", ""]
    missing = [n for n in (1, 4, 16) if n not in {row["n"] for row in rows}]

    parts, ok = [], True
    for row in rows:
        if row["underestimated"]:
            parts.append(f"N={row['n']}: limit underestimated, so no share of it can be given")
            ok = False
            continue
        frac = row["limit_s"] / row["wall"]
        ok = ok and frac >= LIMIT_GOAL
        parts.append(f"N={row['n']} {100 * frac:.0f} % (pkgdist {row['wall']:.2f} s, limit "
                     f"{row['limit_s']:.2f} s, bound by {row['bound_by']})")
    lines.append(_goal(f"each N at >= {100 * LIMIT_GOAL:.0f} % of the limit", ok, parts,
                       missing, "not in this run"))

    parts, ok = [], True
    for row in rows:
        ratio = row["cpu_per_gib"] / cost
        ok = ok and ratio <= CPU_GOAL
        parts.append(f"N={row['n']} {row['cpu_per_gib']:.2f} core-s/GiB ({ratio:.2f}x)")
    lines.append(_goal(f"controller + agents CPU per delivered GiB <= {CPU_GOAL} x the formula's "
                       f"cost ({cost:.2f} core-s/GiB, so <= {CPU_GOAL * cost:.2f})", ok, parts,
                       missing, "not in this run"))

    parts, ok, peer_missing = [], True, []
    for n in PEER_GOAL_NS:
        row = next((x for x in rows if x["n"] == n), None)
        if row is None or not row["strongest"]:
            peer_missing.append(n)
            continue
        s = row["strongest"]
        ratio = row["peer_wall"][s] / row["wall"]
        ok = ok and ratio >= PEER_GOAL
        parts.append(f"N={n} {ratio:.2f}x the strongest peer ({PEER_LABEL[s]} "
                     f"{row['peer_wall'][s]:.2f} s, pkgdist {row['wall']:.2f} s)")
    lines.append(_goal(f">= {PEER_GOAL:g}x the strongest peer's speed at N = "
                       + " and ".join(map(str, PEER_GOAL_NS)), ok, parts, peer_missing,
                       "no pkgdist and peer runs at that N in this run"))

    mem = r.get("memory", [])
    goal = (f"controller and agent peak RSS within {100 * (MEMORY_GOAL - 1):.0f} % from a "
            "256 MiB to a 4 GiB package")
    if len(mem) >= 2:
        small, large = min(mem, key=lambda m: m["size"]), max(mem, key=lambda m: m["size"])
        c = large["controller_peak_rss_kib"] / small["controller_peak_rss_kib"]
        a = max(large["agent_peak_rss_kib"]) / max(small["agent_peak_rss_kib"])
        figures = (f"{_size(small['size'])} to {_size(large['size'])}: controller "
                   f"{_mib(small['controller_peak_rss_kib'])} to "
                   f"{_mib(large['controller_peak_rss_kib'])} MiB (x{c:.2f}), agent "
                   f"{_mib(max(small['agent_peak_rss_kib']))} to "
                   f"{_mib(max(large['agent_peak_rss_kib']))} MiB (x{a:.2f})")
        if (small["size"], large["size"]) == MEMORY_GOAL_SIZES:
            ok = c <= MEMORY_GOAL and a <= MEMORY_GOAL
            lines.append(_goal(goal, ok, [figures], [], ""))
        else:
            lines.append(f"- **not measured**: {goal}. Only {figures} (--quick or --smoke).")
    else:
        lines.append(f"- **not measured**: {goal} (one package size only: --quick).")
    return "\n".join(lines)


def _goal(goal, ok, parts, missing, why):
    """One goal's line: met, missed, met where measured, or not measured."""
    if not parts:
        return f"- **not measured**: {goal} ({why})."
    verdict = "missed" if not ok else "met where measured" if missing else "met"
    text = f"- **{verdict}**: {goal}. " + "; ".join(parts)
    if missing:
        text += f"; N = {', '.join(map(str, missing))}: {why}"
    return text + "."


def limit_section(r):
    lim = r["limit"]
    probes = len(lim["probes"])
    cpu = lim["cpu_s_per_gib"]
    terms = limit_mod.cost_terms(lim)
    ns = sorted(int(k) for k in lim["disk"])
    los = sorted(int(k) for k in lim["loopback"])
    path = ("written by the agent's path: a file truncated to its size, 4 MiB `O_DIRECT` "
            "writes one at a time by a writer thread, and every 16 MiB an fsync of the file "
            "and of a journal on a second thread while the writes go on"
            if lim.get("direct") else
            "`O_DIRECT` is refused here, so written through the page cache as the agent then "
            "does, in 4 MiB writes with an fsync of the file and of a journal every 16 MiB")
    text = [
        "## The machine's limit", "",
        f"Measured in this run: every part probed at the start of each of the {probes} "
        f"round{'s' if probes != 1 else ''}, and the limit takes each part's best probe (a "
        "limit is a best case; the range of the probes in brackets).", "",
        f"- {lim['cipher'].upper()}: {_rate(lim['rates']['aes'])}, one core "
        f"(`openssl speed -evp {lim['cipher']}`, 16 KiB blocks: the cipher the controller and "
        "its agents negotiate, see `CIPHER` in bench/limit.py)",
        f"- SHA-256: {_rate(lim['rates']['sha256'])}, one core "
        "(`openssl speed -evp sha256`, 16 KiB blocks)",
        "- loopback TCP, 1 MiB sends: " + "; ".join(
            f"{k} stream{'s' if k != 1 else ''} at once {_rate(lim['loopback'][str(k)])}"
            for k in los),
        f"- the agents' disk, {path}: " + "; ".join(
            f"{w} writer{'s' if w != 1 else ''} on {w} file{'s' if w != 1 else ''} "
            f"{_rate(lim['disk'][str(w)])}" for w in ns),
        "- not in the formula, for comparison and the import: write through the page "
        f"cache + fsync {_rate(lim['rates']['write_buffered'])}",
        "- the probes' own CPU (median), core-seconds per GiB: " + ", ".join(
            [f"loopback {k} stream{'s' if k != 1 else ''} {cpu[f'loopback_{k}']:.2f}"
             for k in los] +
            [f"disk {w} writer{'s' if w != 1 else ''} {cpu[f'disk_{w}']:.2f}" for w in ns]),
        "",
        "Formula (per receiver, per GiB, core-seconds; then one bound per resource):", "",
        "    cost        = G/aes + G/loopback + G/aes + G/sha256 + G/disk(1 writer)",
        "                                                     (G = 2^30 bytes, S = package size)",
        "    cores(N)    = N * (S / G) * cost / cores",
        "    disk(N)     = N * S / disk(N writers)        (every agent writes to this one disk)",
        "    loopback(N) = N * S / loopback(min(N, cores) streams)",
        "    limit(N)    = max(cores(N), disk(N), loopback(N))", "",
        f"Here cost = {terms['encrypt']:.2f} (encrypt) + {terms['loopback']:.2f} (loopback) + "
        f"{terms['decrypt']:.2f} (decrypt) + {terms['sha256']:.2f} (SHA-256) + "
        f"{terms['write']:.2f} (write) = {terms['total']:.2f} core-s/GiB, cores = {lim['cores']}. "
        "The write term is the writer's time, charged as if it held a core; the probe's own "
        f"CPU above shows how much of one it used ({cpu['disk_1']:.2f} core-s/GiB).",
    ]
    rows = per_n(r)
    if rows:
        text += ["", f"The bounds for the package of {_size(rows[0]['size'])}, in seconds (the "
                 "largest is the limit):", "",
                 _table(["N", "cores s", "disk s", "loopback s", "limit s", "bound by"],
                        [[row["n"]] + [f"{row['bounds'][k]:.2f}" for k in limit_mod.RESOURCES]
                         + [f"{row['limit_s']:.2f}", row["bound_by"]] for row in rows])]
        text += ["", "Which resource bounds each N: " + "; ".join(
            f"N={row['n']}: {_bound_reason(row)}" for row in rows) + "."]
    return "\n".join(text)


def _bound_reason(row):
    b, which = row["bounds"], row["bound_by"]
    others = [k for k in limit_mod.RESOURCES if k != which]
    return (f"{which} ({b[which]:.2f} s; "
            + ", ".join(f"{k} {b[k]:.2f} s" for k in others) + ")")


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
                 f"(goal: within {100 * (MEMORY_GOAL - 1):.0f} %, x{MEMORY_GOAL:.2f})."]
    return "\n".join(text)


def import_section(r):
    """The import beside its bounds measured in the same run
    (pkgdist_runs.measure_import): each import as % of the slower of
    single-core SHA-256 and the disk's write + fsync (goal: 80 %), both at the
    best rate any round of the run measured: a VM disk that throttles after a
    burst slows the later rounds' probes and imports alike, and a throttled
    probe would put an import above 100 % of its bound."""
    imp = r["import"]
    size = imp["size"]
    rounds = imp["rounds"]
    sha_best = max(x["sha256"] for x in rounds)
    disk_best = max(x["disk_write"] for x in rounds)
    bound = min(sha_best, disk_best)
    rows = []
    for k, x in enumerate(rounds):
        row = [k + 1, f"{x['sha256'] / 1e9:.2f}", f"{x['disk_write'] / 1e9:.2f}"]
        for kind in ("streamed", "local"):
            rate = size / x[kind]["wall_s"]
            row += [f"{x[kind]['wall_s']:.2f}", f"{rate / 1e9:.2f}", f"{100 * rate / bound:.0f} %"]
        rows.append(row)

    def med(kind, key):
        return statistics.median(x[kind][key] for x in rounds)

    def best(kind):
        return max(100 * size / x[kind]["wall_s"] / bound for x in rounds)

    def median_pct(kind):
        return statistics.median(100 * size / x[kind]["wall_s"] / bound for x in rounds)
    local_how = ("reflink (FICLONE): no byte copied" if imp.get("reflink")
                 else "copy_file_range: copied in the kernel (this filesystem cannot reflink)")
    text = [
        "## Import speed", "",
        f"`pkgdistctl package import` of {_size(size)} (one file of random bytes), streamed "
        "over mutual TLS and `--local` (the controller reads it from its own disk, "
        f"{local_how}), beside the bounds measured in each round: single-core SHA-256 "
        "(`openssl speed -evp sha256`, 16 KiB blocks) and the disk's write rate in the "
        f"controller's state directory ({_size(size)} in 1 MiB blocks + fsync). Each import "
        "as % of the slower of the best rates any round measured "
        f"({bound / 1e9:.2f} GB/s: SHA-256 {sha_best / 1e9:.2f}, disk {disk_best / 1e9:.2f}; "
        "goal: 80 %):", "",
        _table(["round", "SHA-256 GB/s", "disk GB/s", "streamed s", "GB/s", "% of bound",
                "--local s", "GB/s", "% of bound"], rows), "",
        f"Best round: streamed {best('streamed'):.0f} %, --local {best('local'):.0f} % of the "
        f"bound (medians: {median_pct('streamed'):.0f} % and {median_pct('local'):.0f} %). A disk whose probe falls from round to round is being throttled (a VM's "
        "burst allowance); the rounds after the first then measure the throttle.", "",
        f"CPU seconds (median): streamed: pkgdistctl (read, encrypt, send) "
        f"{med('streamed', 'client_cpu_s'):.2f}, controller (receive, decrypt, chunk + hash, "
        f"write, fsync) {med('streamed', 'controller_cpu_s'):.2f}; --local: controller (copy, "
        f"chunk + hash the copy, fsync) {med('local', 'controller_cpu_s'):.2f}."]
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


# The delta benchmark's section (bench/delta.py writes it): bench/run.sh
# rewrites the page around it and keeps it, at the end.
DELTA_BEGIN = "<!-- delta:begin -->"
DELTA_END = "<!-- delta:end -->"


def keep_delta_section(path, text):
    """`text` with the delta section of the page at `path` appended, if it has one."""
    try:
        with open(path, encoding="utf-8") as f:
            old = f.read()
    except FileNotFoundError:
        return text
    start, end = old.find(DELTA_BEGIN), old.find(DELTA_END)
    if start < 0 or end < start:
        return text
    return text.rstrip("\n") + "\n\n" + old[start:end + len(DELTA_END)] + "\n"


def render(r):
    parts = ["# Performance", "",
             "Generated by `bench/run.sh` (do not edit by hand; run it again). Issue 6 states "
             "what is measured; issue 18 the corrected limit, the peers and the goals.", "",
             results_section(r), goals_section(r), limit_section(r), memory_section(r),
             import_section(r), scale_section(r), scale_10000_section(r), micro_section(r), profile_section(r),
             analysis_section(r), machine_section(r)]
    return "\n\n".join(p for p in parts if p).rstrip() + "\n"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: bench/report.py RAW.json > docs/performance.md")
    with open(sys.argv[1], encoding="utf-8") as f:
        sys.stdout.write(render(json.load(f)))
