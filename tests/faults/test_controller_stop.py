"""The controller stopped normally (SIGTERM) with work in flight, then
started again on the same state directory.

A stop is not a failed attempt: the attempts it cancels are not recorded,
their targets stay `transferring` and are recovered at the next start as
after a crash, so even a job with --max-attempts 1 completes (before this
was fixed, the stop was recorded as a failed attempt, "CANCELLED:
controller shutting down", and such a job ended `failed`). And shutdown
waits for every transfer and removal callback before the engine, pool and
store are destroyed: twenty stops in a row, each with 8 transfers and 8
removals in flight, exit 0 without a sanitizer report (CI runs this file
again against an ASan+UBSan build). The removals go to agents that accept
every call and never answer one (black_hole.py), so they are in flight at
every stop."""

import os
import re
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import results  # noqa: E402
from black_hole import BlackHole  # noqa: E402
from harness import Cluster, MiB, target  # noqa: E402

# Generous: an ASan+UBSan build is 2-3x slower, and 17 processes share 2 cores.
STOP_TIMEOUT = 30.0
WAIT = 60.0
STOPPED_LINE = "pkgdist-controller stopped"
SIGNAL_LINE = "signal 15: shutting down"
# Test B: two halves of 16 agents, 20 stops. Each cycle stops the controller
# as soon as every target has a new attempt running. A new transfer sends its
# first 1 MiB chunk at once and paces the rest, so each cycle moves about
# one chunk per agent and the 32 MiB file is still in flight at the 20th
# stop; the last start lifts the limit.
DIST = [f"d{i:02d}" for i in range(1, 9)]
REMOVE = [f"r{i:02d}" for i in range(1, 9)]
CYCLES = 20
CYCLE_RATE = 256 * 1024
CYCLE_BIG_FILE = 32 * MiB
# How the engine logs an attempt it recorded as failed.
FAILED_ATTEMPT = re.compile(r"job (\S+): (\S+) attempt (\d+) failed: (.*)")


def controller_log(c):
    with open(c.log_of("controller"), encoding="utf-8", errors="replace") as f:
        return f.read()


def stop_controller(test, c, what):
    """SIGTERMs the controller, asserts it exited 0 with its "stopped" line
    and without a sanitizer report; returns how long the stop took."""
    proc = c.controller
    stops_before = controller_log(c).count(STOPPED_LINE)
    started = time.monotonic()
    c.kill(proc, signal.SIGTERM, timeout=STOP_TIMEOUT)
    took = time.monotonic() - started
    test.assertEqual(proc.returncode(), 0,
                     f"{what}: the controller {proc.describe_exit()} after SIGTERM; "
                     f"last lines of its log:\n{proc.tail()}")
    log = controller_log(c)
    test.assertEqual(log.count(STOPPED_LINE), stops_before + 1,
                     f"{what}: no '{STOPPED_LINE}' line for this run; log tail:\n{proc.tail()}")
    test.assertEqual(log.count(SIGNAL_LINE), stops_before + 1,
                     f"{what}: no '{SIGNAL_LINE}' line for this run")
    test.assertEqual(c.sanitizer_reports(), [], f"{what}: sanitizer report(s)")
    return took


def failed_attempts(c, job_id=None):
    return [m.groups() for m in map(FAILED_ATTEMPT.search, controller_log(c).splitlines())
            if m and (job_id is None or m.group(1) == job_id)]


class ControllerStopTest(unittest.TestCase):

    def test_sigterm_mid_transfer_is_not_a_failed_attempt_and_the_job_completes_after_restart(self):
        # --max-attempts 1, SIGTERM at ~25%: exit 0, nothing failed; restart -> complete, identical.
        agents = ["dp1", "dp2"]
        with Cluster(agents=agents) as c:
            c.start_controller(max_bytes_per_second=2 * MiB, window_bytes=MiB,
                               max_backoff_seconds=1)
            for name in agents:
                c.start_agent(name)
                c.add_agent(name)
            src = harness.make_tree(os.path.join(c.dir, "src"), seed=71, big_file_bytes=6 * MiB)
            c.import_package(src, "tree", "1.0")
            job = c.ctl("distribute", "tree@1.0", "--to", ",".join(agents),
                        "--max-attempts", "1")["id"]
            before = c.wait_job(job, lambda j: all(
                t["state"] == "transferring" and int(t["bytes_acked"]) >= int(t["bytes_total"]) // 4
                for t in j["targets"]), WAIT, "both targets transferring, 25% acknowledged")
            for name in agents:
                t = target(before, name)
                self.assertEqual(int(t["attempts"]), 1, t)
                self.assertLess(int(t["bytes_acked"]), int(t["bytes_total"]),
                                f"{name} finished before the stop; the test needs it mid-transfer")

            stop_s = stop_controller(self, c, "stop mid-transfer")
            print(f"controller stopped in {stop_s:.2f}s with both transfers at "
                  + ", ".join(f"{t['agent']} {int(t['bytes_acked']) * 100 // int(t['bytes_total'])}%"
                              for t in before["targets"]))
            self.assertEqual(failed_attempts(c, job), [],
                             "the stop was recorded as a failed attempt")

            stopped_at = time.monotonic()
            c.restart_controller()
            after = c.job(job)
            print("as recovered: " + ", ".join(
                f"{t['agent']} {t['state']} attempts {t['attempts']} ({t['last_error']!r})"
                for t in after["targets"]))
            self.assertNotIn(after["state"], ("failed", "cancelled", "complete"), after)
            for name in agents:
                self.assertIn(target(after, name)["state"],
                              ("retry_wait", "transferring"), target(after, name))

            status = c.wait_job(job, lambda j: j["state"] in ("complete", "failed", "cancelled"),
                                WAIT, "the job ends after the restart")
            self.assertEqual(status["state"], "complete", f"job ended {status['state']}: {status}")
            recovered_s = time.monotonic() - stopped_at
            for name in agents:
                t = target(status, name)
                self.assertEqual(t["state"], "done")
                print(f"{name}: done after {t['attempts']} attempt(s) (the stopped one is not "
                      f"a failure), bytes_sent {t['bytes_sent']} of {t['bytes_total']}")
                harness.assert_trees_identical(src, c.published(name, "tree", "1.0"))
            self.assertEqual(failed_attempts(c, job), [])
            results.record("controller stopped (SIGTERM) mid-transfer, job with --max-attempts 1",
                           "exit 0, no attempt recorded as failed; recovered at restart, "
                           "complete, bytes identical",
                           stop_s=round(stop_s, 2), recovered_s=round(recovered_s, 2))

    def test_twenty_stops_with_transfers_and_removals_in_flight_exit_cleanly_and_jobs_complete(self):
        # 8 paced transfers + 8 removals (to frozen agents) in flight, SIGTERM x20: exit 0 each.
        with Cluster(agents=DIST + REMOVE) as c:
            setup_started = time.monotonic()
            c.start_controller(max_bytes_per_second=CYCLE_RATE, window_bytes=MiB,
                               max_backoff_seconds=1)
            for name in DIST + REMOVE:
                c.start_agent(name)
                c.add_agent(name)
            agents_s = time.monotonic() - setup_started
            gone = harness.make_file_package(os.path.join(c.dir, "gone"), "gone.bin", 64 * 1024, 81)
            c.import_package(gone, "gone", "1.0")
            src = harness.make_tree(os.path.join(c.dir, "src"), seed=82,
                                    big_file_bytes=CYCLE_BIG_FILE)
            c.import_package(src, "tree", "1.0")
            first = c.distribute("gone@1.0", REMOVE)  # what the removal job removes
            c.wait_job(first, lambda j: j["state"] == "complete", WAIT, "gone@1.0 reaches r01-r08")
            for name in REMOVE:
                harness.assert_trees_identical(os.path.dirname(gone),
                                               c.published(name, "gone", "1.0"))
            # The removal agents are re-registered at black holes: a Remove
            # call stays in flight until its 30 s deadline or the stop's
            # cancel. (A SIGSTOPped agent did not hold it: its TLS handshake
            # never completes, gRPC gives up on the connection after its
            # 0.5 s connect timeout and later calls fail fast, so after a
            # dozen cycles no poll saw removals in flight.)
            holes = {name: BlackHole(c.cert(name), c.key(name)) for name in REMOVE}
            self.addCleanup(lambda: [h.close() for h in holes.values()])
            for name in REMOVE:
                c.ctl("agent", "add", name, holes[name].address)
            rm_job = c.ctl("package", "remove-from", "gone@1.0", "--from", ",".join(REMOVE))["id"]
            dist_job = c.distribute("tree@1.0", DIST)
            print(f"{len(DIST + REMOVE)} agents started and registered in {agents_s:.1f}s; "
                  f"set up in {time.monotonic() - setup_started:.1f}s")

            attempts = {name: 0 for name in DIST + REMOVE}  # as last seen before a stop
            acked = {name: 0 for name in DIST}

            def jobs():
                by_id = {j["id"]: j for j in c.job_list()}
                return by_id[dist_job], by_id[rm_job]

            def in_flight(statuses):
                # Every target has a new attempt (of this run), every transfer
                # is unfinished and every removal waits on its black hole.
                dist, rm = statuses
                if not all(int(t["attempts"]) > attempts[t["agent"]]
                           for t in dist["targets"] + rm["targets"]):
                    return False
                if not all(t["state"] == "transferring"
                           and int(t["bytes_acked"]) < int(t["bytes_total"])
                           for t in dist["targets"]):
                    return False
                return len(harness.targets_in(rm, "transferring")) == len(REMOVE)

            cycles = []
            loop_started = time.monotonic()
            for cycle in range(1, CYCLES + 1):
                started = time.monotonic()
                if cycle > 1:
                    c.restart_controller()
                    # What the stopped attempts had acknowledged was written
                    # at the stop and is still there.
                    for t in jobs()[0]["targets"]:
                        self.assertGreaterEqual(int(t["bytes_acked"]), acked[t["agent"]],
                                                f"cycle {cycle}: {t['agent']} lost progress")
                        acked[t["agent"]] = int(t["bytes_acked"])
                up = time.monotonic()
                dist, rm = harness.wait_for(
                    jobs, in_flight, timeout=WAIT,
                    what=f"cycle {cycle}: a new attempt of every target, every transfer "
                         f"unfinished and every removal in flight")
                busy = time.monotonic()
                for t in dist["targets"] + rm["targets"]:
                    attempts[t["agent"]] = int(t["attempts"])
                for t in dist["targets"]:
                    acked[t["agent"]] = int(t["bytes_acked"])
                removing = len(harness.targets_in(rm, "transferring"))
                stop_s = stop_controller(self, c, f"cycle {cycle}")
                cycles.append((up - started, busy - up, stop_s, time.monotonic() - started))
                share = sum(acked.values()) * 100 // sum(int(t["bytes_total"])
                                                         for t in dist["targets"])
                print(f"cycle {cycle:2d}: start {up - started:.2f}s, in flight after "
                      f"{busy - up:.2f}s (8 transfers at {share}%, {removing} removals), "
                      f"stop {stop_s:.2f}s, cycle {cycles[-1][3]:.2f}s")
            loop_s = time.monotonic() - loop_started
            per_cycle = loop_s / CYCLES
            slowest_stop = max(s for _, _, s, _ in cycles)
            print(f"{CYCLES} cycles in {loop_s:.1f}s: {per_cycle:.2f}s per cycle, slowest stop "
                  f"{slowest_stop:.2f}s")

            calls = sum(h.calls for h in holes.values())
            self.assertGreaterEqual(calls, CYCLES * len(REMOVE), "fewer Remove calls reached the "
                                    "black holes than one per removal and cycle")
            c.restart_controller(max_bytes_per_second=None)
            # The real agents again; closing the black holes ends the Remove
            # calls still waiting on them, which are retried at the new address.
            for name in REMOVE:
                c.ctl("agent", "add", name, c.agents[name].address)
            for h in holes.values():
                h.close()
            finished = time.monotonic()
            for job, what in ((dist_job, "the distribution"), (rm_job, "the removal")):
                status = c.wait_job(job, lambda j: j["state"] in ("complete", "failed", "cancelled"),
                                    2 * WAIT, f"{what} ends after the last restart")
                self.assertEqual(status["state"], "complete", f"{what} ended: {status}")
            print(f"both jobs complete {time.monotonic() - finished:.1f}s after the last start")
            for name in DIST:
                harness.assert_trees_identical(src, c.published(name, "tree", "1.0"))
            for name in REMOVE:
                self.assertFalse(os.path.exists(c.published(name, "gone", "1.0")),
                                 f"gone@1.0 is still published on {name}")
            failed = failed_attempts(c)
            by_stop = [f for f in failed if "shutting down" in f[3] or "CANCELLED" in f[3]]
            for f in failed:
                print("recorded as failed: job {} {} attempt {}: {}".format(*f))
            print(f"{len(failed)} attempt(s) recorded as failed, {len(by_stop)} of them by a stop")
            self.assertEqual(by_stop, [], "a stop was recorded as a failed attempt")
            self.assertEqual([f for f in failed if f[0] == dist_job], [],
                             "a transfer attempt was recorded as failed")
            stop_controller(self, c, "final stop")
            results.record(f"controller stopped (SIGTERM) {CYCLES} times in a row with 8 "
                           f"transfers and 8 removals in flight",
                           "exit 0 every time, no sanitizer report, no stop recorded as a failed "
                           "attempt; both jobs complete, bytes identical", tried=CYCLES,
                           cycle_s=round(per_cycle, 2), slowest_stop_s=round(slowest_stop, 2))

if __name__ == "__main__":
    unittest.main()
