"""Unit tests of checker.py over small synthetic histories.

clean() builds one round that breaks no rule: a distribute job of a@1 to dp1
and dp2 (dp2 killed once mid-transfer, re-sending half a window), a remove job
of a@1 from dp2, and a cancelled distribute of c@1 to dp1 whose staging stays.
Each test mutates it into one failure and asserts exactly which rules fire.

    cd tests/chaos && python3 -m unittest -v test_checker
"""

import copy
import json
import os
import random
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import checker  # noqa: E402

MiB = 1 << 20
CHECKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "checker.py")
J1, J2, J3, J4 = "j1distribute", "j2remove", "j3cancelled", "j4pending"
TREE_A = {"bin": ["dir", "0o755", None, None],
          "bin/tool": ["file", "0o755", 3 * MiB, "ab" * 32],
          "lib": ["symlink", None, None, "bin"]}
TREE_C = {"data": ["file", "0o644", 2 * MiB, "cd" * 32]}


def tdoc(agent, state, total=0, sent=None, last_error=""):
    """A target status document as final_jobs and target_changed carry it."""
    return {"agent": agent, "state": state, "attempts": 1, "last_error": last_error,
            "next_attempt_at": None, "bytes_acked": total if state == "done" else 0,
            "bytes_total": total, "bytes_sent": total if sent is None else sent, "updated_at": ""}


def jdoc(jid, kind, package, state, *targets):
    return {"id": jid, "kind": kind, "package": package, "state": state, "created_at": "",
            "targets": list(targets)}


class Builder:
    """Appends history records at given times; build() numbers the events'
    sequences in time order and returns the records sorted by t."""

    def __init__(self, seed=7, mode="loopback", agents=("dp1", "dp2"), window=MiB, settle=30.0):
        self.records = []
        self.add("campaign", 0.0, seed=seed, mode=mode, agents=list(agents), window_bytes=window,
                 settle_bound_s=settle, scan_interval_s=0.5, fault_kinds=["agent_kill"])

    def add(self, type, t, **fields):
        rec = {"type": type, "t": t, **fields}
        self.records.append(rec)
        return rec

    def round(self, k, start, healed, end, settled=True):
        self.add("round_start", start, round=k)
        self.add("faults_healed", healed, round=k)
        self.add("round_end", end, round=k, settled=settled)

    def source(self, t, package, pid, tree):
        self.add("source", t, package=package, id=pid, tree=copy.deepcopy(tree))

    def event(self, t, kind, job, **fields):
        ev = {"time": "", "kind": kind, "job_id": job, "job_kind": "", "package": "",
              "package_id": "", "agent": "", "address": "", "state": "", "detail": "", **fields}
        return self.add("event", t, event=ev)

    def created(self, t, job, kind, package, pid, n):
        self.event(t, "job_created", job, job_kind=kind, package=package, package_id=pid,
                   state="pending", detail=f"{n} target(s)")

    def target(self, t, job, agent, state, total=0, sent=None, last_error=""):
        self.event(t, "target_changed", job, agent=agent, state=state,
                   target=tdoc(agent, state, total, sent, last_error))

    def finished(self, t, job, state):
        self.event(t, "job_finished", job, state=state)

    def scan(self, t, agent, packages, prev_t=None):
        self.add("scan", t, prev_t=prev_t, agent=agent, packages=list(packages))

    def verify(self, t, agent, package, ok=True, vanished=False, problems=()):
        self.add("verify", t, agent=agent, package=package, ok=ok, vanished=vanished,
                 problems=list(problems))

    def fault(self, fid, kind, subject, start, end):
        self.add("fault_start", start, id=fid, kind=kind, subject=subject, detail="")
        self.add("fault_end", end, id=fid)

    def final_agent(self, t, k, agent, published=None, staging=(), trash=(), tmp_files=()):
        self.add("final_agent", t, round=k, agent=agent, published=copy.deepcopy(published or {}),
                 staging=list(staging), trash=list(trash), tmp_files=list(tmp_files))

    def final_jobs(self, t, k, *jobs):
        self.add("final_jobs", t, round=k, jobs=copy.deepcopy(list(jobs)))

    def find(self, type, **match):
        """Records of `type` whose fields (an event's own fields for events) match."""
        def fields(r):
            return r["event"] if type == "event" else r
        return [r for r in self.records if r["type"] == type
                and all(fields(r).get(k) == v for k, v in match.items())]

    def drop(self, type, **match):
        doomed = self.find(type, **match)
        assert doomed, f"nothing to drop: {type} {match}"
        self.records = [r for r in self.records if all(r is not d for d in doomed)]

    def snap_job(self, jid):
        return next(d for d in self.find("final_jobs")[-1]["jobs"] if d["id"] == jid)

    def snap_target(self, jid, agent):
        return next(td for td in self.snap_job(jid)["targets"] if td["agent"] == agent)

    def agent_snap(self, agent):
        return self.find("final_agent", agent=agent)[-1]

    def build(self):
        records = copy.deepcopy(sorted(self.records, key=lambda r: r["t"]))
        events = [r for r in records if r["type"] == "event"]
        for seq, r in enumerate(events, 1):
            r["event"].setdefault("sequence", seq)
        return records


def clean():
    b = Builder()
    b.source(0.5, "a@1", "aa11", TREE_A)
    b.source(0.6, "c@1", "cc11", TREE_C)
    b.round(1, start=1.0, healed=4.0, end=11.0)
    b.scan(1.0, "dp1", [])
    b.scan(1.0, "dp2", [])
    # J1: a@1 to dp1 and dp2; dp2 is killed once and re-sends half a window.
    b.add("op", 1.9, action="distribute", args=["a@1", "dp1", "dp2"], ok=True, result={}, error="")
    b.created(2.0, J1, "distribute", "a@1", "aa11", 2)
    b.target(2.1, J1, "dp1", "transferring", 3 * MiB, 0)
    b.target(2.1, J1, "dp2", "transferring", 3 * MiB, 0)
    b.fault(1, "agent_kill", "dp2", 3.0, 3.9)
    b.target(3.1, J1, "dp2", "retry_wait", 3 * MiB, MiB)
    b.target(4.2, J1, "dp2", "transferring", 3 * MiB, MiB)
    b.target(5.0, J1, "dp1", "done", 3 * MiB)
    b.scan(5.0, "dp1", ["a@1"], prev_t=4.5)
    b.verify(5.2, "dp1", "a@1")
    b.target(6.0, J1, "dp2", "done", 3 * MiB, 3 * MiB + MiB // 2)
    b.scan(6.0, "dp2", ["a@1"], prev_t=5.5)
    b.finished(6.05, J1, "complete")
    b.verify(6.2, "dp2", "a@1")
    # J2: a@1 removed from dp2.
    b.created(7.0, J2, "remove", "a@1", "aa11", 1)
    b.target(7.1, J2, "dp2", "transferring")
    b.target(8.0, J2, "dp2", "done")
    b.finished(8.05, J2, "complete")
    b.scan(8.5, "dp2", [], prev_t=8.0)
    # J3: c@1 to dp1, cancelled mid-transfer: its staging stays for a resume.
    b.created(9.0, J3, "distribute", "c@1", "cc11", 1)
    b.target(9.1, J3, "dp1", "transferring", 2 * MiB, 0)
    b.add("op", 9.5, action="cancel", args=[J3], ok=True, result={}, error="")
    b.target(9.6, J3, "dp1", "cancelled", 2 * MiB, MiB)
    b.finished(9.65, J3, "cancelled")
    b.final_jobs(10.0, 1,
                 jdoc(J1, "distribute", "a@1", "complete", tdoc("dp1", "done", 3 * MiB),
                      tdoc("dp2", "done", 3 * MiB, 3 * MiB + MiB // 2)),
                 jdoc(J2, "remove", "a@1", "complete", tdoc("dp2", "done")),
                 jdoc(J3, "distribute", "c@1", "cancelled", tdoc("dp1", "cancelled", 2 * MiB, MiB)))
    b.final_agent(10.0, 1, "dp1", published={"a@1": TREE_A}, staging=["cc11"])
    b.final_agent(10.0, 1, "dp2")
    return b


def rules(b):
    return {v.rule for v in checker.check(b.build()).violations}


class CleanHistoryTest(unittest.TestCase):

    def test_clean_history_has_no_violation_and_its_figures(self):
        result = checker.check(clean().build())
        self.assertEqual(result.violations, [])
        f = result.figures
        self.assertEqual(f["recovery_s"], [5.65])
        f = {k: v for k, v in f.items() if k != "recovery_s"}
        self.assertEqual(f, {
            "seed": 7, "mode": "loopback", "rounds": 1,
            "faults_by_kind": {"agent_kill": 1}, "faults_total": 1,
            "jobs": {"distribute": 2, "remove": 1},
            "jobs_by_final_state": {"cancelled": 1, "complete": 2},
            "targets": 4, "cancels": 1, "retries": 0,
            "bytes_moved": 3 * MiB + 3 * MiB + MiB // 2 + MiB, "bytes_resent": MiB // 2,
            "interruptions": 1, "recovery_median_s": 5.65, "recovery_p99_s": 5.65,
            "violations": 0, "published_verified": 2})

    def test_records_out_of_order_and_duplicate_events_change_nothing(self):
        records = clean().build()
        # The follower re-delivers dp1's first transferring event after a reconnect,
        # after its done event: kept as the first receipt, it is no regression.
        dup = next(r for r in records if r["type"] == "event" and r["event"]["agent"] == "dp1"
                   and r["event"]["state"] == "transferring")
        records.append(dict(copy.deepcopy(dup), t=7.5))
        random.Random(3).shuffle(records)
        result = checker.check(records)
        self.assertEqual(result.violations, [])
        self.assertEqual(result.figures["interruptions"], 1)

    def test_a_quiet_second_round_recovers_in_zero_and_repeats_nothing(self):
        b = clean()
        b.round(2, start=12.0, healed=13.0, end=15.0)
        last = b.find("final_jobs")[-1]
        b.final_jobs(14.0, 2, *last["jobs"])
        b.final_agent(14.0, 2, "dp1", published={"a@1": TREE_A}, staging=["cc11"])
        b.final_agent(14.0, 2, "dp2")
        result = checker.check(b.build())
        self.assertEqual(result.violations, [])
        self.assertEqual(result.figures["rounds"], 2)
        self.assertEqual(result.figures["recovery_s"], [5.65, 0.0])
        self.assertEqual(result.figures["recovery_median_s"], 0.0)  # nearest rank: ceil(0.5 * 2) = 1st
        self.assertEqual(result.figures["recovery_p99_s"], 5.65)


class RuleTest(unittest.TestCase):

    def assertRules(self, b, expected):
        result = checker.check(b.build())
        self.assertEqual({v.rule for v in result.violations}, set(expected),
                         "\n".join(v.message for v in result.violations))
        return result.violations

    def test_complete_while_an_agent_never_had_the_package(self):
        b = clean()
        b.drop("scan", agent="dp2", t=6.0)
        b.drop("verify", agent="dp2")
        (v,) = self.assertRules(b, {"complete_without_package"})
        self.assertEqual(v.subject, f"{J1}/dp2")
        for word in (J1, "dp2", "a@1", "6.050s"):
            self.assertIn(word, v.message)

    def test_remove_complete_while_the_package_stays(self):
        b = clean()
        b.drop("scan", agent="dp2", t=8.5)
        self.assertRules(b, {"removed_but_present"})

    def test_a_removal_committed_before_the_follower_saw_the_job_complete(self):
        # Seed 7 (campaign.py --seed 7 --seconds 720 --round-seconds 60
        # --fault-interval 1.0) found this false positive. After a controller
        # restart the follower reconnected late and received J1's job_finished
        # and a remove job's job_created in one burst at t=7.0-7.01, while the
        # operator's remove-from had returned at t=6.3 and the remove ran at
        # once: the scan at 7.0 no longer shows a@1 on dp2. The remove's
        # lifetime starts at its commit (its event's time), not its receipt.
        b = clean()
        b.records[0]["wall_t0"] = 1000.0
        for r in b.find("event", job_id=J1, kind="job_finished"):
            r["t"] = 7.0
            r["event"]["time"] = "1970-01-01T00:16:46.040Z"   # 1006.04: committed at 6.04
        for kind in ("job_created", "job_finished"):
            b.drop("event", job_id=J2, kind=kind)
        for state in ("transferring", "done"):
            b.drop("event", job_id=J2, state=state)
        b.add("op", 6.3, action="remove_from", args=["a@1", "dp2"], ok=True, result={}, error="")
        created = b.event(7.01, "job_created", J2, job_kind="remove", package="a@1",
                          package_id="aa11", state="pending", detail="1 target(s)")
        created["event"]["time"] = "1970-01-01T00:16:46.200Z"    # 1006.2: committed at 6.2
        b.target(7.01, J2, "dp2", "transferring")
        b.target(7.01, J2, "dp2", "done")
        b.finished(7.01, J2, "complete")
        b.drop("scan", agent="dp2", t=8.5)
        b.scan(6.5, "dp2", [], prev_t=6.45)
        self.assertRules(b, set())
        # Without the commit times the same history is flagged: the test above
        # would pass for the wrong reason if the removal were not what excuses it.
        del b.records[0]["wall_t0"]
        self.assertRules(b, {"complete_without_package"})

    def test_overlapping_distribute_and_remove_are_not_flagged(self):
        # The remove of a@1 from dp2 runs while the distribute is still going:
        # either order of their effects is possible.
        for case in ("package stays", "package goes"):
            with self.subTest(case):
                b = clean()
                for state in ("transferring", "done"):
                    b.drop("event", job_id=J2, state=state)
                b.drop("event", job_id=J2, kind="job_created")
                b.drop("event", job_id=J2, kind="job_finished")
                b.created(5.5, J2, "remove", "a@1", "aa11", 1)
                b.target(5.6, J2, "dp2", "transferring")
                if case == "package stays":
                    # Removed before the publish: dp2 ends with a@1, scans agree.
                    b.target(6.5, J2, "dp2", "done")
                    b.finished(6.55, J2, "complete")
                    b.drop("scan", agent="dp2", t=8.5)
                    b.agent_snap("dp2")["published"] = {"a@1": copy.deepcopy(TREE_A)}
                else:
                    # Removed after the publish, before the distribute job completed:
                    # no scan ever saw a@1 on dp2.
                    b.target(5.8, J2, "dp2", "done")
                    b.finished(5.85, J2, "complete")
                    b.drop("scan", agent="dp2", t=6.0)
                    b.drop("verify", agent="dp2")
                self.assertRules(b, set())

    def test_done_target_later_retry_wait(self):
        b = clean()
        b.target(5.5, J1, "dp1", "retry_wait", 3 * MiB)
        b.target(5.7, J1, "dp1", "done", 3 * MiB)
        (v,) = self.assertRules(b, {"done_then_not_done"})
        self.assertIn("retry_wait", v.message)

    def test_done_target_not_done_in_a_later_snapshot(self):
        b = clean()
        b.snap_target(J1, "dp1")["state"] = "failed"
        self.assertRules(b, {"done_then_not_done"})

    def test_complete_job_reopened(self):
        b = clean()
        b.target(7.0, J1, "dp1", "pending", 3 * MiB)
        self.assertRules(b, {"done_then_not_done", "complete_then_not_complete"})
        b = clean()
        b.finished(6.5, J1, "failed")
        self.assertRules(b, {"complete_then_not_complete"})

    def test_job_not_final_at_round_end(self):
        b = clean()
        b.created(9.8, J4, "distribute", "a@1", "aa11", 1)
        b.find("final_jobs")[-1]["jobs"].append(jdoc(J4, "distribute", "a@1", "pending", tdoc("dp2", "pending")))
        (v,) = self.assertRules(b, {"not_settled"})
        self.assertIn(J4, v.message)
        self.assertIn("dp2 pending", v.message)

    def test_job_final_after_the_settle_bound(self):
        b = clean()
        b.records[0]["settle_bound_s"] = 1.5  # healed at 4.0; J1 finished at 6.05
        (v,) = self.assertRules(b, {"not_settled"})
        self.assertEqual(v.subject, J1)

    def test_failed_job(self):
        b = clean()
        b.drop("event", job_id=J3, state="cancelled")
        b.target(9.6, J3, "dp1", "failed", 2 * MiB, MiB, last_error="disk full")
        b.snap_job(J3)["state"] = "failed"
        b.snap_target(J3, "dp1").update(state="failed", last_error="disk full")
        b.agent_snap("dp1")["staging"] = []
        (v,) = self.assertRules(b, {"failed_job"})
        self.assertIn("disk full", v.message)

    def test_verify_found_a_differing_tree(self):
        b = clean()
        b.verify(6.3, "dp2", "a@1", ok=False, problems=["bin/tool: digest differs"])
        self.assertRules(b, {"differs_from_source"})

    def test_vanished_tree_without_and_with_a_removal(self):
        b = clean()
        b.verify(8.2, "dp2", "a@1", ok=False, vanished=True)  # J2's target done at 8.0
        self.assertRules(b, set())
        b.verify(12.0, "dp1", "a@1", ok=False, vanished=True)  # nothing removes a@1 from dp1
        b.verify(13.5, "dp2", "a@1", ok=False, vanished=True)  # 5.5 s after J2's target ended
        vs = self.assertRules(b, {"vanished_without_removal"})
        self.assertEqual({v.subject for v in vs}, {"dp1:a@1", "dp2:a@1"})

    def test_published_tree_differs_from_its_source(self):
        b = clean()
        tree = b.agent_snap("dp1")["published"]["a@1"]
        tree["bin/tool"][3] = "ef" * 32
        del tree["lib"]
        tree["bin/extra"] = ["file", "0o644", 1, "00" * 32]
        (v,) = self.assertRules(b, {"differs_from_source"})
        for word in ("missing lib", "extra bin/extra", "differing bin/tool"):
            self.assertIn(word, v.message)

    def test_published_package_never_imported(self):
        b = clean()
        b.agent_snap("dp2")["published"]["z@9"] = {"f": ["file", "0o644", 1, "00" * 32]}
        self.assertRules(b, {"unknown_package"})

    def test_end_state_contradicts_the_last_done_job(self):
        b = clean()
        b.agent_snap("dp1")["published"] = {}  # J1 done on dp1
        (v,) = self.assertRules(b, {"unexpected_end_state"})
        self.assertIn("not published", v.message)
        b = clean()
        b.agent_snap("dp2")["published"] = {"a@1": TREE_A}  # J2 removed it last
        self.assertRules(b, {"unexpected_end_state"})

    def test_leftover_tmp_file_trash_and_staging(self):
        for what, value in (("tmp_files", ["packages/a/.tmp-4711"]), ("trash", ["a@1.old"]),
                            ("staging", ["cc11", "aa11"])):
            with self.subTest(what):
                b = clean()
                b.agent_snap("dp1")[what] = value
                (v,) = self.assertRules(b, {"leftover_files"})
                self.assertIn(value[-1], v.message)

    def test_resent_three_windows_after_one_interruption(self):
        b = clean()
        b.snap_target(J1, "dp2")["bytes_sent"] = 3 * MiB + 3 * MiB
        (v,) = self.assertRules(b, {"resent_too_much"})
        self.assertIn("1 interruption", v.message)

    def test_a_removal_of_the_package_meanwhile_allows_sending_it_again(self):
        # J4 removes a@1 from dp2 while J1 still sends it there: the staging
        # goes, and the whole package may be sent once more.
        b = clean()
        b.snap_target(J1, "dp2")["bytes_sent"] = 3 * MiB + 3 * MiB
        b.created(4.5, "J4", "remove", "a@1", "aa11", 1)
        b.target(4.6, "J4", "dp2", "transferring")
        b.target(4.8, "J4", "dp2", "done")
        b.finished(4.85, "J4", "complete")
        self.assertNotIn("resent_too_much", rules(b))
        b.snap_target(J1, "dp2")["bytes_sent"] = 3 * MiB + 3 * MiB + 2 * MiB
        self.assertIn("resent_too_much", rules(b), "beyond the package and a window")

    def test_a_controller_kill_counts_as_an_interruption(self):
        b = clean()
        b.snap_target(J1, "dp1")["bytes_sent"] = 3 * MiB + MiB  # one transferring event
        self.assertRules(b, {"resent_too_much"})
        b.fault(2, "controller_kill", "controller", 3.0, 3.5)
        self.assertRules(b, set())
        self.assertEqual(checker.check(b.build()).figures["interruptions"], 2)


class LoadAndMainTest(unittest.TestCase):

    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)

    def write(self, records, extra=""):
        path = os.path.join(self.dir.name, "history.jsonl")
        with open(path, "w", encoding="utf-8") as f:
            f.write("".join(json.dumps(r) + "\n" for r in records) + extra)
        return path

    def run_main(self, *args):
        return subprocess.run([sys.executable, CHECKER, *args], capture_output=True, text=True, timeout=30)

    def test_load_names_the_bad_line(self):
        path = self.write(clean().build()[:3], '{"type": "scan", "t": 1.0\n')
        with self.assertRaisesRegex(checker.HistoryError, r"line 4 is not JSON"):
            checker.load(path)
        path = self.write([{"type": "scan", "t": 1.0}])
        with self.assertRaisesRegex(checker.HistoryError, r"line 1: scan record lacks agent, packages"):
            checker.load(path)
        self.assertEqual(checker.load(self.write(clean().build())), clean().build())

    def test_main_exit_codes(self):
        good = self.run_main(self.write(clean().build()))
        self.assertEqual(good.returncode, 0, good.stdout + good.stderr)
        self.assertIn("violations: 0", good.stdout)

        b = clean()
        b.agent_snap("dp2")["trash"] = ["x"]
        bad = self.run_main(self.write(b.build()), "--json")
        self.assertEqual(bad.returncode, 1, bad.stderr)
        out = json.loads(bad.stdout)
        self.assertEqual([v["rule"] for v in out["violations"]], ["leftover_files"])
        self.assertEqual(out["figures"]["violations"], 1)

        broken = self.run_main(self.write([], "not json\n"))
        self.assertEqual(broken.returncode, 2)
        self.assertIn("line 1", broken.stderr)
        missing = self.run_main(os.path.join(self.dir.name, "absent.jsonl"))
        self.assertEqual(missing.returncode, 2)


if __name__ == "__main__":
    unittest.main()
