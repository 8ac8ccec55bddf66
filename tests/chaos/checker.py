"""Checks a chaos campaign's history (written by tests/chaos/campaign.py).

    python3 checker.py HISTORY.jsonl [--json]

prints the campaign's figures and every violation found; exits 1 if there is
any violation, 0 if there is none, 2 if the history cannot be read. As a
module: `result = check(load(path))`, then `result.violations` (a list of
Violation(rule, subject, message, t)) and `result.figures` (a dict).

History format (the contract between the runner and this checker)
-----------------------------------------------------------------
One JSON object per line. Every record has "type" and "t": seconds (float) on
ONE monotonic clock shared by every observer (time.monotonic() minus the
campaign start), so times of different records compare. Records are in the
order the runner wrote them, which is not always t order (threads): the
checker sorts by t wherever order matters.

  campaign       t=0, first: seed, mode "netns"|"loopback", agents [...],
                 window_bytes, settle_bound_s, scan_interval_s, fault_kinds,
                 wall_t0 (time.time() at t=0: event times, wall clock, map
                 onto the history's clock as time - wall_t0).
  round_start    round k (1, 2, ...).
  faults_healed  round k: every fault of the round has ended; the settle bound
                 runs from here.
  round_end      round k, settled: bool; after the runner waited (up to
                 settle_bound_s after faults_healed) for every job to be final
                 and took the end-of-round snapshot (final_agent, final_jobs).
  source         package "name@version", id (package id hex), tree
                 {"rel/path": [kind, mode, size, digest]} (kind file|dir|symlink;
                 digest = sha256 of a file, target of a symlink, null for a dir),
                 written once the import succeeded.
  event          event {...}: one admin-API event as received by the follower,
                 t = receipt time. Fields: sequence (grows by one), kind,
                 job_id, job_kind, package, package_id, agent, state, target
                 {agent, state, attempts, last_error, bytes_acked, bytes_total,
                 bytes_sent, ...}, detail. Kinds used here: job_created
                 (job_kind distribute|remove, package, package_id),
                 target_changed (agent, state pending|transferring|retry_wait|
                 done|failed|cancelled; job_kind is EMPTY: take it from the
                 job's job_created), job_finished (state complete|failed|
                 cancelled; a job can finish, be reopened by an operator's
                 retry of a failed target, and finish again). The follower may
                 deliver an event twice across a reconnect: dedupe by
                 sequence, keep the first receipt.
  scan           agent, packages [...], prev_t: written only when the agent's
                 set of AGENT_ROOT/packages/*/* changed. The set was the
                 previous record's at every scan up to prev_t and is
                 `packages` from t on, until the agent's next record (the
                 first record of an agent has prev_t null).
  verify         agent, package, ok, vanished, problems: the observer hashed a
                 tree it saw appear; ok false + vanished true = it disappeared
                 while being read; ok false + vanished false = it differed.
  fault_start    id, kind (agent_kill, agent_stop, controller_kill,
                 controller_term, cable, reset, slow_link, disk_full,
                 cert_rotate), subject ("dp3" | "controller"), detail.
  fault_end      id.
  op             action import|distribute|remove_from|cancel|retry|
                 delete_package, args, ok, result, error: the operator's calls
                 (a failed call may still have taken effect: events are the
                 truth).
  final_agent    round k, agent, published {"name@version": tree}, staging
                 [id hex], trash [...], tmp_files [paths]: end-of-round
                 snapshot of the agent's root, taken after every job was final.
  final_jobs     round k, jobs [job status documents {id, kind, package,
                 state, targets [{agent, state, last_error, bytes_total,
                 bytes_sent, ...}]}]: every job through the API at round end.

The model the rules use
-----------------------
Events are deduplicated by sequence (earliest receipt kept) and replayed in
sequence order into jobs: kind, package and package id (job_created, else the
snapshots and source records), creation receipt time, each target's events
(sequence, receipt t, state) and the job's job_finished records. A target's
*lifetime* runs from its job's job_created receipt (else the job's first
event, else -inf) to the receipt of its last event if that one is final
(done/failed/cancelled), else +inf (still open). Scan records make an agent's
set *exactly known* on [t_i, prev_t of record i+1] for its consecutive records,
and from its last record's t to the end of the history; at a time in a gap
the first known scan after it is the next record's t.

Rules (each a function below, named in the Violation's `rule`)
--------------------------------------------------------------
complete_without_package / removed_but_present   (a finished job's effect is on disk)
done_then_not_done / complete_then_not_complete  (final states are never left)
not_settled / failed_job                         (every round ends settled in time)
differs_from_source / vanished_without_removal / unknown_package  (bytes are right)
unexpected_end_state                             (the last done target decides the end state)
leftover_files                                   (nothing is left behind but resumable chunks)
resent_too_much                                  (at most one window re-sent per interruption)

Figures: seed, mode, rounds, faults_by_kind, faults_total, jobs, jobs_by_final_state,
targets, cancels, retries, bytes_moved, bytes_resent, interruptions, recovery_s,
recovery_median_s, recovery_p99_s, violations, published_verified (see figures()).
"""

import argparse
import bisect
import datetime
import json
import math
import sys
from dataclasses import dataclass, field
from typing import NamedTuple

FINAL_TARGET_STATES = frozenset({"done", "failed", "cancelled"})
FINAL_JOB_STATES = frozenset({"complete", "failed", "cancelled"})
JOB_KINDS = ("distribute", "remove")
CONTROLLER_FAULTS = frozenset({"controller_kill", "controller_term"})
# A verify that saw a tree vanish is explained by a removal on that agent that
# was under way then or had finished at most this long before.
VANISH_GRACE_S = 5.0
# Event times have millisecond resolution and the two clocks are read apart.
COMMIT_SLACK_S = 0.01
# At most this many paths of each sort are named in one message.
LIST_LIMIT = 10
INF = math.inf

# Fields a record of each type must have (beyond "type" and "t").
REQUIRED = {
    "round_start": ("round",), "faults_healed": ("round",), "round_end": ("round",),
    "source": ("package", "tree"), "event": ("event",), "scan": ("agent", "packages"),
    "verify": ("agent", "package", "ok"), "fault_start": ("id", "kind"), "fault_end": ("id",),
    "op": ("action",), "final_agent": ("round", "agent"), "final_jobs": ("round", "jobs"),
}


class HistoryError(ValueError):
    """The history is not JSON lines of well-formed records; names the line."""


class Violation(NamedTuple):
    rule: str       # the rule function's name
    subject: str    # what is wrong: "job/agent", "agent:package", "job" or "round k agent"
    message: str    # one sentence naming job, agent, package and times
    t: float        # history time of the evidence


@dataclass
class Result:
    violations: list
    figures: dict

    @property
    def ok(self):
        return not self.violations


def _malformed(rec):
    """Why `rec` is not a well-formed record, or None."""
    if not isinstance(rec, dict):
        return "not a JSON object"
    if not isinstance(rec.get("type"), str):
        return 'no string "type"'
    t = rec.get("t")
    if isinstance(t, bool) or not isinstance(t, (int, float)):
        return f'{rec["type"]} record has no numeric "t"'
    missing = [k for k in REQUIRED.get(rec["type"], ()) if k not in rec]
    if missing:
        return f'{rec["type"]} record lacks {", ".join(missing)}'
    if rec["type"] == "event":
        ev = rec["event"]
        if not isinstance(ev, dict) or not isinstance(ev.get("sequence"), int) or "kind" not in ev:
            return "event record without an event object having an integer sequence and a kind"
    return None


def load(path):
    """The records of the JSON-lines history at `path` (blank lines skipped).
    Raises HistoryError naming the line of the first bad line, OSError if the
    file cannot be read."""
    records = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise HistoryError(f"{path}: line {n} is not JSON ({e.msg} at column {e.colno})") from None
            problem = _malformed(rec)
            if problem:
                raise HistoryError(f"{path}: line {n}: {problem}")
            records.append(rec)
    return records


# ---------------------------------------------------------------- the model

class Ev(NamedTuple):
    seq: int
    t: float
    state: str
    doc: dict  # the event's target document ({} for job_finished)


@dataclass
class Job:
    id: str
    kind: str = ""
    package: str = ""
    package_id: str = ""
    created_t: float = None   # commit of job_created (its event's time), else its receipt
    first_t: float = INF      # receipt of its first event of any kind
    targets: dict = field(default_factory=dict)   # agent -> Target
    finished: list = field(default_factory=list)  # job_finished Evs in sequence order

    @property
    def start(self):
        if self.created_t is not None:
            return self.created_t
        return self.first_t if self.first_t < INF else -INF

    def target(self, agent):
        if agent not in self.targets:
            self.targets[agent] = Target(self, agent)
        return self.targets[agent]

    def finish_t(self, until=INF):
        """Receipt time of its last job_finished received by `until`, or None."""
        times = [f.t for f in self.finished if f.t <= until]
        return times[-1] if times else None

    def describe(self):
        return f"{self.kind or 'unknown-kind'} job {self.id} of {self.package or '?'}"


@dataclass
class Target:
    job: Job
    agent: str
    events: list = field(default_factory=list)  # Evs in sequence order

    @property
    def start(self):
        return self.job.start

    def outcome(self, until=INF):
        """(state, receipt t) of its last event received by `until` if that
        state is final, else None (not final, or no event yet)."""
        last = None
        for e in self.events:
            if e.t <= until:
                last = e
        return (last.state, last.t) if last and last.state in FINAL_TARGET_STATES else None

    def final_seq(self, until=INF):
        """Sequence of its final event received by `until` (commit order, which
        receipt times can blur: a follower catching up receives a burst), or None."""
        last = None
        for e in self.events:
            if e.t <= until:
                last = e
        return last.seq if last and last.state in FINAL_TARGET_STATES else None

    def end(self, until=INF):
        """End of its lifetime as seen at `until`: the final event's receipt, or INF."""
        o = self.outcome(until)
        return o[1] if o else INF

    def first(self, state):
        return next((e for e in self.events if e.state == state), None)


class Snapshot(NamedTuple):
    t: float
    round: int
    jobs: dict     # job id -> job status document
    targets: dict  # (job id, agent) -> target document


def _s(t):
    return {INF: "never", -INF: "unknown"}.get(t) or f"{t:.3f}s"


def _listed(items, limit=LIST_LIMIT):
    items = list(items)
    text = ", ".join(str(i) for i in items[:limit])
    return text + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


class History:
    """An index of the records: jobs rebuilt from the events, scans per
    agent, rounds, snapshots, sources."""

    def __init__(self, records):
        for i, rec in enumerate(records):
            problem = _malformed(rec)
            if problem:
                raise HistoryError(f"record {i + 1}: {problem}")
        ordered = sorted(records, key=lambda r: r["t"])  # stable: ties keep file order
        self.campaign = next((r for r in ordered if r["type"] == "campaign"), {})
        self.window = self.campaign.get("window_bytes")
        self.settle = self.campaign.get("settle_bound_s")
        self.wall_t0 = self.campaign.get("wall_t0")
        self.end_t = ordered[-1]["t"] if ordered else 0.0
        self.rounds = {}        # k -> {"start": t, "healed": t, "end": t}
        self.sources = {}       # package -> source record (the last)
        self.scans = {}         # agent -> scan records by t
        self.verifies, self.ops, self.fault_starts = [], [], []
        self.final_agents = {}  # (k, agent) -> record (the last)
        self.final_jobs = {}    # k -> Snapshot (the last)
        self.snapshots = []     # every final_jobs Snapshot by t
        self.jobs = {}
        events = {}
        slot = {"round_start": "start", "faults_healed": "healed", "round_end": "end"}
        for r in ordered:
            typ = r["type"]
            if typ in slot:
                self.rounds.setdefault(r["round"], {})[slot[typ]] = r["t"]
            elif typ == "source":
                self.sources[r["package"]] = r
            elif typ == "scan":
                self.scans.setdefault(r["agent"], []).append(r)
            elif typ == "verify":
                self.verifies.append(r)
            elif typ == "op":
                self.ops.append(r)
            elif typ == "fault_start":
                self.fault_starts.append(r)
            elif typ == "final_agent":
                self.final_agents[(r["round"], r["agent"])] = r
            elif typ == "final_jobs":
                docs = {d["id"]: d for d in r["jobs"] if isinstance(d, dict) and "id" in d}
                tds = {(jid, td.get("agent")): td for jid, d in docs.items()
                       for td in d.get("targets") or []}
                snap = Snapshot(r["t"], r["round"], docs, tds)
                self.snapshots.append(snap)
                self.final_jobs[r["round"]] = snap
            elif typ == "event":
                events.setdefault(r["event"]["sequence"], r)  # the first (earliest) receipt
        for seq in sorted(events):
            self._replay(events[seq])
        for snap in self.snapshots:  # jobs and targets the events did not show
            for jid, doc in snap.jobs.items():
                job = self._job(jid)
                job.kind = job.kind or doc.get("kind", "")
                job.package = job.package or doc.get("package", "")
                for td in doc.get("targets") or []:
                    if td.get("agent"):
                        job.target(td["agent"])
        self.id_package = {r.get("id", "").lower(): p for p, r in self.sources.items() if r.get("id")}
        self.by_kind_package = {}
        for job in self.jobs.values():
            if not job.package_id and job.package in self.sources:
                job.package_id = self.sources[job.package].get("id", "")
            self.by_kind_package.setdefault((job.kind, job.package), []).append(job)
        self._scan_times = {a: [r["t"] for r in rs] for a, rs in self.scans.items()}

    def _job(self, jid):
        if jid not in self.jobs:
            self.jobs[jid] = Job(jid)
        return self.jobs[jid]

    def commit_t(self, ev, default):
        """When the controller committed event `ev`, on the history's clock:
        its `time` (wall clock, ms) less the campaign's wall_t0. A follower
        that reconnects after a controller restart receives events seconds
        after their commit, and an operator's call can return (its job
        created) before the follower has seen the jobs finished just before
        it, so lifetimes start at the commit, not the receipt. `default`
        when the campaign has no wall_t0 or the event no parsable time."""
        if self.wall_t0 is None or not isinstance(ev.get("time"), str):
            return default
        try:
            wall = datetime.datetime.fromisoformat(ev["time"].replace("Z", "+00:00")).timestamp()
        except ValueError:
            return default
        return wall - self.wall_t0 - COMMIT_SLACK_S

    def _replay(self, rec):
        ev, t = rec["event"], rec["t"]
        kind, jid = ev["kind"], ev.get("job_id")
        if not jid or kind not in ("job_created", "target_changed", "job_finished"):
            return
        job = self._job(jid)
        job.first_t = min(job.first_t, t)
        if kind == "job_created":
            job.kind = ev.get("job_kind") or job.kind
            job.package = ev.get("package") or job.package
            job.package_id = ev.get("package_id") or job.package_id
            if job.created_t is None:
                job.created_t = min(t, self.commit_t(ev, t))
        elif kind == "target_changed":
            doc = ev.get("target") or {}
            agent = ev.get("agent") or doc.get("agent")
            if agent:
                job.package = job.package or ev.get("package", "")
                job.target(agent).events.append(Ev(ev["sequence"], t, ev.get("state") or doc.get("state", ""), doc))
        else:
            job.finished.append(Ev(ev["sequence"], t, ev.get("state", ""), {}))

    def known_at(self, agent, t):
        """(time, set): the agent's package set at the first exactly-known
        scan time at or after t (t itself when t lies in a known interval),
        or None if the agent has no scan records."""
        recs = self.scans.get(agent)
        if not recs:
            return None
        i = bisect.bisect_right(self._scan_times[agent], t) - 1
        if i < 0:
            return recs[0]["t"], set(recs[0]["packages"])
        if i == len(recs) - 1:
            return t, set(recs[i]["packages"])
        nxt = recs[i + 1]
        if nxt.get("prev_t") is not None and t <= nxt["prev_t"]:
            return t, set(recs[i]["packages"])
        return nxt["t"], set(nxt["packages"])

    def overlapping(self, kind, package, agent, lo, hi):
        """A job of `kind` and `package` whose target on `agent` lived at some
        time in [lo, hi], or None."""
        for job in self.by_kind_package.get((kind, package), []):
            tgt = job.targets.get(agent)
            if tgt and tgt.start <= hi and tgt.end() >= lo:
                return job
        return None

    def round_cut(self, k, t):
        """The earlier of t and round k's round_end."""
        return min(t, self.rounds.get(k, {}).get("end", INF))

    def last_snapshot(self):
        return self.snapshots[-1] if self.snapshots else None


# ---------------------------------------------------------------- rules

def _effect_missing(h, kind):
    """Shared by rule 1's two halves: a `kind` job finished complete while the
    first known scan of a target agent at or after that shows the opposite."""
    other = "remove" if kind == "distribute" else "distribute"
    rule = "complete_without_package" if kind == "distribute" else "removed_but_present"
    out = []
    for job in h.jobs.values():
        done = next((f for f in job.finished if f.state == "complete"), None)
        if job.kind != kind or done is None:
            continue  # complete is never left: its first receipt is the one to check
        for agent in sorted(job.targets):
            seen = h.known_at(agent, done.t)
            if seen is None:
                continue
            ts, present = seen
            if (job.package in present) == (kind == "distribute"):
                continue
            if h.overlapping(other, job.package, agent, job.start, ts):
                continue
            state = "absent" if kind == "distribute" else "still present"
            out.append(Violation(
                rule, f"{job.id}/{agent}",
                f"{job.describe()} finished complete at {_s(done.t)}, but the scan of {agent} at "
                f"{_s(ts)} shows {job.package} {state} (it holds: {_listed(sorted(present)) or 'nothing'}) "
                f"and no {other} job of {job.package} on {agent} overlaps {_s(job.start)}..{_s(ts)}",
                ts))
    return out


def complete_without_package(h):
    """A distribute job reported complete only once every target published the
    package, so the first known scan of each target agent at or after the
    completion must show it -- unless a remove job of the same package on that
    agent lived during [job created, that scan], which may have removed it."""
    return _effect_missing(h, "distribute")


def removed_but_present(h):
    """The mirror of complete_without_package: a remove job complete means the
    package is gone from every target agent at the first known scan after,
    unless a distribute job of it on that agent overlapped."""
    return _effect_missing(h, "remove")


def done_then_not_done(h):
    """Done is never left: once a target is observed done, no later event
    (higher sequence) shows it in another state, and no later final_jobs
    snapshot (t after the done event's receipt) shows it not done."""
    out = []
    for job in h.jobs.values():
        for agent, tgt in sorted(job.targets.items()):
            done = tgt.first("done")
            if done is None:
                continue
            later = next((e for e in tgt.events if e.seq > done.seq and e.state != "done"), None)
            if later:
                out.append(Violation(
                    "done_then_not_done", f"{job.id}/{agent}",
                    f"the target on {agent} of {job.describe()} was done at {_s(done.t)} "
                    f"(sequence {done.seq}) and then {later.state} at {_s(later.t)} (sequence {later.seq})",
                    later.t))
                continue
            for snap in h.snapshots:
                td = snap.targets.get((job.id, agent))
                if snap.t > done.t and td is not None and td.get("state") != "done":
                    out.append(Violation(
                        "done_then_not_done", f"{job.id}/{agent}",
                        f"the target on {agent} of {job.describe()} was done at {_s(done.t)} but the "
                        f"round {snap.round} snapshot at {_s(snap.t)} shows it {td.get('state')}",
                        snap.t))
                    break
    return out


def complete_then_not_complete(h):
    """Complete is never left (a job is complete iff every target is done, and
    done is final): after a job_finished complete, no later event of the job
    shows a target other than done or another finish state, and no later
    snapshot shows the job other than complete."""
    out = []
    for job in h.jobs.values():
        done = next((f for f in job.finished if f.state == "complete"), None)
        if done is None:
            continue
        later = [(e.seq, e.t, f"its target on {a} {e.state}") for a, tgt in job.targets.items()
                 for e in tgt.events if e.seq > done.seq and e.state != "done"]
        later += [(f.seq, f.t, f"finished {f.state}") for f in job.finished
                  if f.seq > done.seq and f.state != "complete"]
        if later:
            seq, t, what = min(later)
            out.append(Violation(
                "complete_then_not_complete", job.id,
                f"{job.describe()} finished complete at {_s(done.t)} and then {what} at {_s(t)} (sequence {seq})",
                t))
            continue
        for snap in h.snapshots:
            doc = snap.jobs.get(job.id)
            if snap.t > done.t and doc is not None and doc.get("state") != "complete":
                out.append(Violation(
                    "complete_then_not_complete", job.id,
                    f"{job.describe()} finished complete at {_s(done.t)} but the round {snap.round} "
                    f"snapshot at {_s(snap.t)} shows it {doc.get('state')}", snap.t))
                break
    return out


def not_settled(h):
    """Every round settles: in round k's final_jobs snapshot every job and
    every target is final, and every job created before faults_healed(k) had
    its last finish (last job_finished received by round_end) no later than
    faults_healed(k) + settle_bound_s."""
    out = []
    for k, snap in sorted(h.final_jobs.items()):
        healed = h.rounds.get(k, {}).get("healed")
        cut = h.rounds.get(k, {}).get("end", snap.t)
        for jid, doc in sorted(snap.jobs.items()):
            job = h.jobs[jid]
            open_targets = [f"{td.get('agent')} {td.get('state')}" for td in doc.get("targets") or []
                            if td.get("state") not in FINAL_TARGET_STATES]
            if doc.get("state") not in FINAL_JOB_STATES or open_targets:
                out.append(Violation(
                    "not_settled", jid,
                    f"at the end of round {k} (snapshot at {_s(snap.t)}) {job.describe()} is "
                    f"{doc.get('state')} with targets not final: {_listed(open_targets) or 'none'}",
                    snap.t))
                continue
            if healed is None or h.settle is None or job.created_t is None or job.created_t >= healed:
                continue
            fin = job.finish_t(cut)
            if fin is not None and fin > healed + h.settle:
                out.append(Violation(
                    "not_settled", jid,
                    f"{job.describe()} (created at {_s(job.created_t)}) last finished at {_s(fin)}, "
                    f"{fin - healed:.3f}s after round {k}'s faults healed at {_s(healed)}: more than "
                    f"the settle bound of {h.settle}s", fin))
    return out


def failed_job(h):
    """No job fails: the runner sets no policy (max attempts, deadline) that
    could fail a target, so a failed job in any snapshot is a defect. Reported
    once per job, at the first snapshot showing it, with its targets' errors."""
    out, seen = [], set()
    for snap in h.snapshots:
        for jid, doc in sorted(snap.jobs.items()):
            if doc.get("state") != "failed" or jid in seen:
                continue
            seen.add(jid)
            errors = [f"{td.get('agent')}: {td.get('last_error') or 'no error given'}"
                      for td in doc.get("targets") or [] if td.get("state") == "failed"]
            out.append(Violation(
                "failed_job", jid,
                f"{h.jobs[jid].describe()} is failed in the round {snap.round} snapshot at {_s(snap.t)} "
                f"(failed targets: {_listed(errors) or 'none listed'})", snap.t))
    return out


def _tree_diff(source, published):
    missing = sorted(set(source) - set(published))
    extra = sorted(set(published) - set(source))
    differing = sorted(p for p in set(source) & set(published) if list(source[p]) != list(published[p]))
    parts = []
    if missing:
        parts.append(f"missing {_listed(missing)}")
    if extra:
        parts.append(f"extra {_listed(extra)}")
    if differing:
        parts.append("differing " + _listed(f"{p} (has {list(published[p])}, source {list(source[p])})"
                                            for p in differing))
    return "; ".join(parts)


def differs_from_source(h):
    """Published bytes are the source's: no verify found a tree that differed
    (ok false, not vanished), and every published tree in a final_agent
    snapshot equals its source tree path by path (kind, mode, size, digest)."""
    out = []
    for v in h.verifies:
        if not v["ok"] and not v.get("vanished"):
            out.append(Violation(
                "differs_from_source", f"{v['agent']}:{v['package']}",
                f"the observer found {v['package']} on {v['agent']} differing from its source at "
                f"{_s(v['t'])}: {_listed(v.get('problems') or []) or 'no problems listed'}", v["t"]))
    for (k, agent), snap in sorted(h.final_agents.items()):
        for package, tree in sorted((snap.get("published") or {}).items()):
            src = h.sources.get(package)
            diff = src is not None and _tree_diff(src["tree"], tree or {})
            if diff:
                out.append(Violation(
                    "differs_from_source", f"{agent}:{package}",
                    f"{package} published on {agent} at the end of round {k} ({_s(snap['t'])}) "
                    f"differs from its source: {diff}", snap["t"]))
    return out


def vanished_without_removal(h):
    """A tree disappears only by a removal: a verify that saw it vanish needs a
    remove job of that package with a target on that agent that was under way
    at the verify's time or had finished at most VANISH_GRACE_S before."""
    out = []
    for v in h.verifies:
        if v["ok"] or not v.get("vanished"):
            continue
        if h.overlapping("remove", v["package"], v["agent"], v["t"] - VANISH_GRACE_S, v["t"]):
            continue
        out.append(Violation(
            "vanished_without_removal", f"{v['agent']}:{v['package']}",
            f"{v['package']} vanished from {v['agent']} while the observer read it (verify at "
            f"{_s(v['t'])}) with no remove job of it on {v['agent']} under way then or finished "
            f"within {VANISH_GRACE_S}s before", v["t"]))
    return out


def unknown_package(h):
    """Agents publish only imported packages: every published name@version
    in a final_agent snapshot has a source record."""
    out = []
    for (k, agent), snap in sorted(h.final_agents.items()):
        for package in sorted(snap.get("published") or {}):
            if package not in h.sources:
                out.append(Violation(
                    "unknown_package", f"{agent}:{package}",
                    f"{package} is published on {agent} at the end of round {k} ({_s(snap['t'])}) "
                    f"but no source of that name@version was imported", snap["t"]))
    return out


def unexpected_end_state(h):
    """The end state follows the last done target: for each agent A and
    package P any job targeted on A, among P's targets on A final by A's
    round-k final_agent snapshot (and round_end), the done one whose final
    event was committed last (highest sequence) decides -- distribute: P published;
    remove: P absent. Cancelled and failed targets decide nothing. No verdict
    when a target of the opposite kind lived at some time from the deciding
    target's start up to the snapshot (overlapping, or cancelled/unfinished
    after it: it may or may not have taken effect)."""
    pairs = {}  # agent -> package -> [Target]
    for job in h.jobs.values():
        if job.kind in JOB_KINDS and job.package:
            for agent, tgt in job.targets.items():
                pairs.setdefault(agent, {}).setdefault(job.package, []).append(tgt)
    out = []
    for (k, agent), snap in sorted(h.final_agents.items()):
        cut = h.round_cut(k, snap["t"])
        published = snap.get("published") or {}
        for package, tgts in sorted(pairs.get(agent, {}).items()):
            dones = [(tgt.final_seq(cut), i) for i, tgt in enumerate(tgts)
                     if (o := tgt.outcome(cut)) and o[0] == "done"]
            if not dones:
                continue
            d = tgts[max(dones)[1]]
            if any(o.job.kind != d.job.kind and o.start <= cut and o.end(cut) >= d.start for o in tgts):
                continue
            want = d.job.kind == "distribute"
            if (package in published) != want:
                out.append(Violation(
                    "unexpected_end_state", f"{agent}:{package}",
                    f"the last done target of {package} on {agent} is {d.job.describe()}, done at "
                    f"{_s(d.outcome(cut)[1])}, but at the end of round {k} ({_s(snap['t'])}) {package} is "
                    f"{'not ' if want else ''}published there", snap["t"]))
    return out


def leftover_files(h):
    """Nothing is left behind in an agent's root at round end: no temporary
    file, nothing in trash, and a staging directory only for a package whose
    last final distribute target on that agent was cancelled (a transfer given
    up on keeps its durable chunks for a later resume) or is still under way."""
    out = []
    for (k, agent), snap in sorted(h.final_agents.items()):
        where = f"on {agent} at the end of round {k} ({_s(snap['t'])})"
        for what in ("tmp_files", "trash"):
            items = snap.get(what) or []
            if items:
                out.append(Violation("leftover_files", f"round {k} {agent}",
                                     f"{what} is not empty {where}: {_listed(items)}", snap["t"]))
        cut = h.round_cut(k, snap["t"])
        for sid in snap.get("staging") or []:
            tgts = [job.targets[agent] for job in h.jobs.values()
                    if job.kind == "distribute" and job.package_id.lower() == sid.lower()
                    and agent in job.targets and job.start <= cut]
            outcomes = [(tgt.outcome(cut), tgt.final_seq(cut), tgt.job.id) for tgt in tgts]
            if any(o is None for o, _, _ in outcomes):
                continue
            finals = sorted((seq, jid, state, t) for (state, t), seq, jid in outcomes)
            if finals and finals[-1][2] == "cancelled":
                continue
            name = h.id_package.get(sid.lower(), "an unknown package")
            last = (f"its last distribute target there, job {finals[-1][1]}, ended {finals[-1][2]} "
                    f"at {_s(finals[-1][3])}" if finals else "no distribute job targeted it there")
            out.append(Violation("leftover_files", f"round {k} {agent}",
                                 f"staging {sid} ({name}) is left {where}, but {last}", snap["t"]))
    return out


class Transfer(NamedTuple):
    job: str
    agent: str
    package: str
    sent: int
    total: int
    transferring_events: int
    controller_faults: int
    interruptions: int
    removals: int  # remove jobs of the package for the agent, created meanwhile


def transfers(h):
    """The done distribute targets of the last final_jobs snapshot with their
    interruptions: max(transferring events - 1, controller kills/terms started
    between the first transferring event and the done event), because a
    restarted controller may resume an attempt without a new event."""
    snap = h.last_snapshot()
    if snap is None:
        return []
    ctl = [f["t"] for f in h.fault_starts if f.get("kind") in CONTROLLER_FAULTS]
    out = []
    for (jid, agent), td in sorted(snap.targets.items()):
        job = h.jobs[jid]
        if job.kind != "distribute" or td.get("state") != "done":
            continue
        tgt = job.target(agent)
        tr = [e for e in tgt.events if e.state == "transferring"]
        done = tgt.first("done")
        t_done = done.t if done else snap.t
        faults = sum(1 for t in ctl if tr and tr[0].t <= t <= t_done)
        # A removal of the same package from the agent deletes its staging
        # too (Agent.Remove), so what had been received is sent again.
        removals = sum(1 for other in h.jobs.values()
                       if other.kind == "remove" and other.package == job.package
                       and agent in other.targets and tr and tr[0].t <= other.start <= t_done)
        out.append(Transfer(jid, agent, job.package, int(td.get("bytes_sent") or 0),
                            int(td.get("bytes_total") or 0), len(tr), faults,
                            max(len(tr) - 1, faults, 0), removals))
    return out


def resent_too_much(h):
    """Resumption re-sends at most the window of unacknowledged bytes per
    interruption: bytes_sent - bytes_total <= window_bytes * interruptions
    for every done distribute target (sending less than the total, thanks to
    delta reuse, is fine), plus the whole package once per removal of it
    from the agent that started meanwhile (it deletes the staging)."""
    if h.window is None:
        return []
    out = []
    for x in transfers(h):
        resent = x.sent - x.total
        if resent > h.window * x.interruptions + x.total * x.removals:
            out.append(Violation(
                "resent_too_much", f"{x.job}/{x.agent}",
                f"the target on {x.agent} of distribute job {x.job} of {x.package} re-sent {resent} bytes "
                f"({x.sent} sent of {x.total}) after {x.interruptions} interruption(s) "
                f"({x.transferring_events} transferring events, {x.controller_faults} controller faults): "
                f"more than {x.interruptions} x window_bytes {h.window}", h.last_snapshot().t))
    return out


RULES = (complete_without_package, removed_but_present, done_then_not_done,
         complete_then_not_complete, not_settled, failed_job, differs_from_source,
         vanished_without_removal, unknown_package, unexpected_end_state, leftover_files,
         resent_too_much)


# ---------------------------------------------------------------- figures

def _nearest_rank(values, p):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def figures(h, violations):
    """The campaign's figures (see the module docstring for the keys).
    recovery_s[k] = last job_finished receipt (by round_end) among the jobs of
    round k's snapshot minus faults_healed(k), 0.0 if all were final by then;
    rounds without faults_healed or a snapshot are left out."""
    snap = h.last_snapshot()
    faults = {}
    for f in h.fault_starts:
        faults[f["kind"]] = faults.get(f["kind"], 0) + 1
    final_states = {}
    for doc in (snap.jobs.values() if snap else []):
        final_states[doc.get("state")] = final_states.get(doc.get("state"), 0) + 1
    xs = transfers(h)
    recovery = []
    for k, rsnap in sorted(h.final_jobs.items()):
        healed = h.rounds.get(k, {}).get("healed")
        if healed is None:
            continue
        cut = h.rounds[k].get("end", rsnap.t)
        fins = [t for jid in rsnap.jobs if (t := h.jobs[jid].finish_t(cut)) is not None]
        recovery.append(round(max([0.0] + [t - healed for t in fins]), 3))
    return {
        "seed": h.campaign.get("seed"),
        "mode": h.campaign.get("mode"),
        "rounds": len(h.rounds),
        "faults_by_kind": dict(sorted(faults.items())),
        "faults_total": len(h.fault_starts),
        "jobs": {kind: sum(1 for j in h.jobs.values() if j.kind == kind) for kind in JOB_KINDS},
        "jobs_by_final_state": dict(sorted(final_states.items())),
        "targets": sum(len(j.targets) for j in h.jobs.values()),
        "cancels": sum(1 for o in h.ops if o["action"] == "cancel" and o.get("ok")),
        "retries": sum(1 for o in h.ops if o["action"] == "retry" and o.get("ok")),
        "bytes_moved": sum(int(td.get("bytes_sent") or 0) for td in snap.targets.values()) if snap else 0,
        "bytes_resent": sum(max(0, x.sent - x.total) for x in xs),
        "interruptions": sum(x.interruptions for x in xs),
        "recovery_s": recovery,
        "recovery_median_s": _nearest_rank(recovery, 50),
        "recovery_p99_s": _nearest_rank(recovery, 99),
        "violations": len(violations),
        "published_verified": sum(1 for v in h.verifies if v["ok"]),
    }


def check(records):
    """Every rule over the records; violations sorted by time."""
    h = History(records)
    violations = sorted((v for rule in RULES for v in rule(h)), key=lambda v: (v.t, v.rule, v.subject))
    return Result(violations, figures(h, violations))


def report(result):
    lines = ["figures:"]
    lines += [f"  {key}: {json.dumps(value)}" for key, value in result.figures.items()]
    lines.append(f"violations: {len(result.violations)}")
    lines += [f"  [{v.rule}] t={_s(v.t)} {v.subject}: {v.message}" for v in result.violations]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Check a chaos campaign history (JSON lines).")
    ap.add_argument("history", help="the history file written by campaign.py")
    ap.add_argument("--json", action="store_true", help="print figures and violations as JSON")
    args = ap.parse_args(argv)
    try:
        result = check(load(args.history))
    except (OSError, UnicodeDecodeError, HistoryError) as e:
        print(f"checker: cannot read history {args.history}: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"figures": result.figures, "violations": [v._asdict() for v in result.violations]},
                         indent=1))
    else:
        print(report(result))
    return 1 if result.violations else 0


if __name__ == "__main__":
    sys.exit(main())
