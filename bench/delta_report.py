"""Renders bench/delta.py's results (the delta section of docs/performance.md).

Run directly to render a saved run again into the page:
    python3 bench/delta_report.py bench/results/delta-DATE.json [docs/performance.md]
"""

import os
import statistics
import sys

from report import DELTA_BEGIN, DELTA_END

MiB = 1 << 20
GiB = 1 << 30
CONTENDERS = ("pkgdist", "pkgdist-fixed", "rsync")
UPDATES = "abcd"  # the wall-time goal is for updates; (e) is a new package


def wire(run):
    return run["to_receiver"] + run["to_sender"]


def medians(r):
    """{(scenario, contender): the median of every figure over the rounds}."""
    groups = {}
    for run in r["runs"]:
        groups.setdefault((run["scenario"], run["contender"]), []).append(run)
    out = {}
    for key, runs in groups.items():
        m = {"n": len(runs)}
        for field in ("to_receiver", "to_sender", "wall_s", "cpu_sender_s", "cpu_receiver_s",
                      "bytes_sent", "bytes_reused"):
            values = [x[field] for x in runs if x.get(field) is not None]
            m[field] = statistics.median(values) if values else None
        m["wall_range"] = (min(x["wall_s"] for x in runs), max(x["wall_s"] for x in runs))
        m["rsync_stats"] = runs[0].get("rsync_stats")
        out[key] = m
    return out


def _mib(b):
    return "–" if b is None else f"{b / MiB:,.2f}"


def _pct(part, whole):
    v = 100 * part / whole
    return f"{v:.3f} %" if v < 1 else f"{v:.1f} %"


def _ratio(x):
    return f"{x:,.0f}×" if x >= 100 else f"{x:.2f}×" if x >= 0.01 else f"{x:.1g}×"


def _size(b):
    return f"{b / GiB:g} GiB" if b >= GiB else f"{b / MiB:g} MiB"


def _table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]
    return "\n".join(out)


def goals(s, facts, m, rs):
    """[(goal, met, figure)] of one pkgdist result `m` in scenario `s`
    against rsync's `rs` (None if rsync was not run)."""
    w, pkg, new = wire(m), facts["package_bytes"], facts["new_bytes"]
    out = []
    if s == "a":
        out.append(("≤ 0.3 % of the package", w <= 0.003 * pkg, _pct(w, pkg)))
    elif s == "b":
        out.append(("≤ 3 % of the package", w <= 0.03 * pkg, _pct(w, pkg)))
    elif s == "c":
        out.append(("≤ 5 % of the moved files' bytes", w <= 0.05 * new, _pct(w, new)))
    elif s == "d":
        out.append(("≤ 105 % of the unshared files' bytes", w <= 1.05 * new, _pct(w, new)))
    if rs is not None and s in "ab":
        out.append(("≤ 2× rsync's bytes", w <= 2 * wire(rs), f"{_ratio(w / wire(rs))} rsync's"))
    if rs is not None and s in "cd":
        out.append(("fewer bytes than rsync", w < wire(rs), f"{_ratio(w / wire(rs))} rsync's"))
    if rs is not None and s in UPDATES:
        out.append(("≥ 3× rsync's speed", 3 * m["wall_s"] <= rs["wall_s"],
                    f"{rs['wall_s'] / m['wall_s']:.2f}×: rsync {rs['wall_s']:.2f} s, "
                    f"pkgdist {m['wall_s']:.2f} s"))
    return out


def results_section(r, med):
    label = {k: v["label"] for k, v in r["contenders"].items()}
    rows = []
    for s, facts in r["scenarios"].items():
        for key in CONTENDERS:
            m = med.get((s, key))
            if m is None:
                continue
            wall = f"{m['wall_s']:.2f}"
            if m["n"] > 1:
                wall += f" ({m['wall_range'][0]:.2f}-{m['wall_range'][1]:.2f})"
            reused = ("–" if key == "rsync" else
                      "absent" if m["bytes_reused"] is None else _mib(m["bytes_reused"]))
            rows.append([f"({s})", label[key], _mib(wire(m)), _mib(m["to_receiver"]),
                         _mib(m["to_sender"]), _pct(wire(m), facts["package_bytes"]),
                         _mib(facts["new_bytes"]), reused, wall,
                         f"{m['cpu_sender_s']:.2f} + {m['cpu_receiver_s']:.2f}"])
    header = ["scn", "contender", "wire MiB", "→ receiver", "← back", "wire / package",
              "new MiB", "reused MiB", "wall s", "CPU s sender + receiver"]
    what = "\n".join(f"- ({s}) {f['title']}: package {_size(f['package_bytes'])}, "
                     f"new = {f['new_what']}" for s, f in r["scenarios"].items())
    n = r["rounds"]
    return "\n\n".join([
        f"{_size(r['size'])}, {r['files']} files (the largest {_size(r['largest_file'])}), "
        f"random content; each v2 to one destination holding v1"
        + (f"; medians of {n} rounds (wall: range in brackets)." if n > 1 else "; one round."),
        what, _table(header, rows)])


def goals_section(r, med):
    label = {k: v["label"] for k, v in r["contenders"].items()}
    rows = []
    for s, facts in r["scenarios"].items():
        for key in ("pkgdist", "pkgdist-fixed"):
            m = med.get((s, key))
            if m is None or s not in UPDATES:
                continue
            cells = [f"{'pass' if ok else 'miss'}: {goal} ({fig})"
                     for goal, ok, fig in goals(s, facts, m, med.get((s, "rsync")))]
            rows.append([f"({s})", label[key]] + cells + [""] * (3 - len(cells)))
    return "\n\n".join([
        "Goals of issue 13 (for the default chunking; the fixed rows show the distance "
        "from today's baseline). \"New\" is read per scenario: (c) the moved files' "
        "bytes, whose content the agent holds, so the goal is ≤ 5 % of them; (d) the "
        "unshared files' bytes, which any tool must send, so the goal is at most 5 % "
        "above them. The wall-time goal is for the updates (a)-(d); (e) has none.",
        _table(["scn", "contender", "bytes", "bytes vs rsync", "wall vs rsync"], rows)])


def rsync_section(r, med):
    rows = []
    for s in r["scenarios"]:
        m = med.get((s, "rsync"))
        if not m or not m["rsync_stats"]:
            continue
        st = m["rsync_stats"]
        rows.append([f"({s})", _mib(st.get("literal_data")), _mib(st.get("matched_data")),
                     _mib(st.get("total_bytes_sent", 0) + st.get("total_bytes_received", 0)),
                     st.get("number_of_regular_files_transferred", "?")])
    if not rows:
        return ""
    opts = next((run["options"] for run in r["runs"] if run["contender"] == "rsync"), [])
    return "\n\n".join([
        f"rsync's own account (`--stats`; client options `{' '.join(opts)}`, (d) adds "
        "`--copy-dest=../base`, v1's directory in the same module, whose unchanged files "
        "the daemon copies locally as pkgdist's agent copies chunks):",
        _table(["scn", "literal data MiB", "matched data MiB", "rsync's bytes MiB",
                "files transferred"], rows)])


def notes_section(r):
    c = r["contenders"]
    lines = ["How it is measured:",
             "- wire: TCP payload through a counting forwarder (splice, bench/delta.py "
             "`CountingProxy`) between the two sides, both directions; the agent is "
             "registered at the forwarder's address, so TLS records, the Offer, the Need and "
             "the Acks are counted (the TLS handshake happened at `agent add`, before). "
             "rsync's protocol is plain TCP (no TLS).",
             "- wall: `pkgdistctl distribute NAME@V2 --wait`; for rsync the client's run.",
             "- CPU: controller + agent from /proc (utime + stime) around the run; rsync "
             "client from wait4, daemon from wait4 after its stop (it and every child it "
             "forked and reaped).",
             "- each run: a fresh agent (pkgdist: v1 distributed first, not measured), or a "
             "fresh copy of v1 with v1's mtimes (rsync); every file of both sides written "
             "back and dropped from the page cache before the measured run; the result "
             "compared with its source (paths, modes, sha256): identical in every run."]
    for key in ("pkgdist", "pkgdist-fixed"):
        if c[key].get("skipped"):
            lines.append(f"- {c[key]['label']}: not measured: {c[key]['skipped']}.")
        elif c[key].get("note"):
            lines.append(f"- {c[key]['label']}: {c[key]['note']}.")
        imp = c[key].get("imports") or []
        if imp:
            b = imp[0]
            lines.append(f"- {c[key]['label']}: import of v1 took {b['wall_s']:.2f} s, "
                         f"controller CPU {b['controller_cpu_s']:.2f} s, {b['chunks']} chunks.")
    if not any(run.get("bytes_reused") is not None for run in r["runs"]):
        lines.append("- `bytes_reused` is absent from this build's job status.")
    return "\n".join(lines)


def machine_section(r):
    m = r["machine"]
    return "\n".join([
        f"Run: {r['date']}, `{r['command']}`, commit {r['commit']}, binaries {r.get('bin_dir', '?')}",
        f"- CPU: {m['cpu']}, {m['nproc']} cores; memory {m['memory']}; kernel {m['kernel']}",
        f"- disk (all temporary directories): {m['disk']}",
        f"- {m['rsync'][0]}",
        f"- load average before / after: {r['load_before']} / {r['load_after']}"])


def render(r):
    med = medians(r)
    parts = ["## Delta transfer against rsync (issue 13)",
             "Generated by `bench/delta.sh` (do not edit by hand; run it again).",
             results_section(r, med), goals_section(r, med), rsync_section(r, med),
             notes_section(r), machine_section(r)]
    return "\n\n".join(p for p in parts if p).rstrip() + "\n"


def write_section(path, text):
    """Puts `text` between the delta markers of the page at `path`, replacing
    what was there, or appends the markers and text at its end."""
    try:
        with open(path, encoding="utf-8") as f:
            page = f.read()
    except FileNotFoundError:
        page = ""
    block = f"{DELTA_BEGIN}\n{text.rstrip()}\n{DELTA_END}"
    start, end = page.find(DELTA_BEGIN), page.find(DELTA_END)
    if start >= 0 and end > start:
        page = page[:start] + block + page[end + len(DELTA_END):]
    else:
        page = (page.rstrip("\n") + "\n\n" if page else "") + block + "\n"
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(tmp, path)


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        raise SystemExit("usage: bench/delta_report.py RAW.json [PAGE.md]")
    import json
    with open(sys.argv[1], encoding="utf-8") as f:
        text = render(json.load(f))
    if len(sys.argv) == 3:
        write_section(sys.argv[2], text)
    else:
        sys.stdout.write(text)
