"""The controller's state database cannot be written for a while.

A failed store write never strands a target: the engine keeps the progress
and the ended attempts it could not record and writes them again every
pass, `job status` carries a `store_error` (and the table a `warning:`
line) only while writes fail, and once they succeed the job completes. A
target is never `done` unless its agent published the package.

(a) Any user: the controller runs under `fiu-run` (Debian fiu-utils) with
SQLite's writes and syncs failing at random, then always, then not at all,
switched at run time with fiu-ctrl so the same process recovers.

(b) Root only: the controller's state directory is a small tmpfs, filled
by a filler file mid-distribution so SQLite fails with SQLITE_FULL, then
freed."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import results  # noqa: E402
from harness import Cluster, MiB, target  # noqa: E402
from test_disk import asan_runtime, fill_disk, preload_first  # noqa: E402

WAIT = 60.0  # generous: an ASan+UBSan build is 2-3x slower
WINDOW = MiB

# The failure points, and why only these two. The controller links the
# system libsqlite3, which writes the database and its WAL with pwrite64()
# (fiu's posix/io/rw/pwrite covers pwrite and pwrite64) and makes commits
# durable with fdatasync() (posix/io/sync/fdatasync); it imports neither
# write() for that nor fsync(). gRPC's sockets use sendmsg()/recvmsg() and
# its wakeup fds read()/write() (posix/io/net/*, posix/io/rw/read|write), so
# a broader pattern such as posix/io/rw/* or posix/io/* would break the
# agents' and pkgdistctl's connections instead of the store. The controller's
# own pwrite()/fsync() calls are in package import and the port file, both
# done before failures are switched on. Reads (pread64) keep working, so
# status calls still answer.
FIU_POINTS = ("posix/io/rw/pwrite", "posix/io/sync/fdatasync")
FIU_PROBABILITY = 0.3  # per call; a progress write makes ~3 (2 pwrite, 1 fdatasync)
FIU_RATE = 2 * MiB  # a chunk acknowledged every 0.5 s: a progress write every second
FIU_BIG_FILE = 32 * MiB  # ~35 MiB in all: ~17 s per agent
FIU_RANDOM_EPISODES = 3  # store failures to see before failing every write
PERSIST_SECONDS = 2.0  # how long store_error must stay while every write fails

TMPFS_BYTES = 24 * MiB
TMPFS_RATE = MiB

FAILING_LINE = "state store failing since"
RECOVERED_LINE = "state store writes succeed again"


def controller_log(c):
    with open(c.log_of("controller"), encoding="utf-8", errors="replace") as f:
        return f.read()


def check_done_published(c, status, src, name, version):
    """Nothing is `done` that its agent did not publish, byte for byte."""
    for t in status["targets"]:
        if t["state"] == "done":
            harness.assert_trees_identical(src, c.published(t["agent"], name, version))


def unrecorded(status):
    """How many ended attempts store_error says are waiting to be written."""
    m = re.search(r"(\d+) ended attempt\(s\) not yet recorded", status.get("store_error", ""))
    return int(m.group(1)) if m else None


def table_status(c, job_id):
    rc, out, err = c.ctl_raw("job", "status", job_id, output="table")
    if rc != 0:
        raise AssertionError(f"pkgdistctl job status (table) exited {rc}: {err.strip()}")
    return out


class StoreFaultTest(unittest.TestCase):

    def assert_store_error_persists(self, c, job, agents, name, version, seconds):
        """While every write fails and the transfers still run (only their
        progress is waiting to be written), store_error is set from the first
        failure on, in every status for `seconds`, not only now and then."""
        status = c.wait_job(job, lambda j: "store_error" in j, WAIT,
                            "store_error once writes fail")
        first = time.monotonic()
        samples = []

        # Sampled for `seconds` whatever the agents do: once one publishes its
        # ended attempt waits to be written too, and store_error must stay.
        # The samples taken while nothing had published yet (progress alone
        # waiting: the phase where it used to flap) are counted apart.
        progress_only = []

        def observe():
            j = c.job(job)
            running = not any(os.path.isdir(c.published(a, name, version)) for a in agents)
            samples.append("store_error" in j)
            if running:
                progress_only.append(samples[-1])
            return j

        harness.wait_for(observe, lambda _: time.monotonic() - first >= seconds,
                         timeout=WAIT, what=f"{seconds}s of status samples while writes fail")
        pattern = "".join("E" if e else "." for e in samples)
        print(f"store_error first seen as {status['store_error']!r}; then in "
              f"{sum(samples)} of {len(samples)} samples over {time.monotonic() - first:.1f}s "
              f"({pattern}; {len(progress_only)} before any agent published)")
        self.assertTrue(all(samples), f"store_error came and went while every write failed "
                                      f"(E: set, .: absent): {pattern}")
        self.assertGreaterEqual(len(progress_only), 3,
                                "too few samples before the agents published to see the "
                                "progress-only phase; lower the rate or grow the package")
        return status

    def assert_stuck_until_recorded(self, c, job, agents, name, version):
        """Every agent published while the store cannot be written: the ends
        are held, not lost, and nothing is `done` yet."""
        for a in agents:
            harness.wait_for(lambda: os.path.isdir(c.published(a, name, version)), timeout=WAIT,
                             what=f"{a} to publish {name}@{version} while the store fails")
        status = c.wait_job(job, lambda j: unrecorded(j) == len(agents), WAIT,
                            f"store_error counting {len(agents)} unrecorded ended attempts")
        print(f"all published, store failing: store_error = {status['store_error']!r}")
        for a in agents:
            self.assertEqual(target(status, a)["state"], "transferring", target(status, a))
        table = table_status(c, job)
        warnings = [line for line in table.splitlines() if line.startswith("warning:")]
        self.assertEqual(len(warnings), 1, f"table output without one warning: line:\n{table}")
        self.assertIn("cannot write its state database", warnings[0])
        return status

    def assert_recovers(self, c, job, agents, src, name, version):
        # store_error clears at the first pass in which every write succeeds,
        # which can be the pass after the one that recorded the last ends: a
        # write earlier in that pass may still have failed. So wait for both.
        status = c.wait_job(job, lambda j: j["state"] == "complete" and "store_error" not in j,
                            WAIT, "the job complete and store_error cleared once the store "
                                  "can be written")
        self.assertNotIn("warning:", table_status(c, job))
        for a in agents:
            t = target(status, a)
            self.assertEqual(t["state"], "done")
            harness.assert_trees_identical(src, c.published(a, name, version))
            # One attempt to an empty agent: every byte was sent once, and the
            # progress the store refused was written before the attempt's end.
            self.assertEqual(int(t["bytes_sent"]) + int(t["bytes_reused"])
                             + int(t["bytes_from_peer"]), int(t["bytes_total"]),
                             f"{a}: progress lost to the store failure: {t}")
        self.assertIn(RECOVERED_LINE, controller_log(c))
        self.assertTrue(c.controller.alive(), c.controller.describe_exit())
        return status

    def test_sqlite_write_and_sync_failures_injected_then_stopped_complete_every_job(self):
        # fiu: random then permanent pwrite/fdatasync failures, then none: complete, identical.
        fiu_run, fiu_ctrl = shutil.which("fiu-run"), shutil.which("fiu-ctrl")
        if fiu_run is None or fiu_ctrl is None:
            print("skipped: fiu-run/fiu-ctrl are not installed (Debian package fiu-utils)")
            self.skipTest("fiu-run/fiu-ctrl are not installed (Debian package fiu-utils)")
        agents = ["dp1", "dp2", "dp3"]
        with Cluster(agents=agents) as c:
            # -f: a control fifo, so failures are switched at run time (fiu-ctrl)
            # and the very process that failed is the one that recovers.
            ctrl = os.path.join(c.dir, "fiu-ctrl")
            wrapper = [fiu_run, "-x", "-f", ctrl]
            asan = asan_runtime(harness.binary("pkgdist-controller"))
            if asan:
                wrapper += preload_first(asan)
            proc = c.start_controller(wrapper=wrapper, max_bytes_per_second=FIU_RATE,
                                      window_bytes=WINDOW, max_backoff_seconds=1)

            def fiu(*commands):
                argv = [fiu_ctrl, "-f", ctrl]
                for command in commands:
                    argv += ["-c", command]
                r = subprocess.run([*argv, str(proc.pid)], capture_output=True, text=True,
                                   timeout=30)
                self.assertEqual(r.returncode, 0, f"fiu-ctrl {commands} failed: {r.stderr.strip()}")

            for name in agents:
                c.start_agent(name)
                c.add_agent(name)
            src = harness.make_tree(os.path.join(c.dir, "src"), seed=91,
                                    big_file_bytes=FIU_BIG_FILE)
            c.import_package(src, "tree", "1.0")
            job = c.distribute("tree@1.0", agents)
            c.wait_job(job, lambda j: all(t["state"] == "transferring" for t in j["targets"]),
                       WAIT, "every target transferring before failures start")

            fiu(*(f"enable_random name={p},probability={FIU_PROBABILITY}" for p in FIU_POINTS))
            started = time.monotonic()

            def random_phase_over():
                status = c.job(job)
                check_done_published(c, status, src, "tree", "1.0")
                return (controller_log(c).count(FAILING_LINE) >= FIU_RANDOM_EPISODES
                        and all(int(t["bytes_acked"]) * 10 >= int(t["bytes_total"]) * 3
                                for t in status["targets"]))

            harness.wait_for(random_phase_over, timeout=WAIT,
                             what=f"{FIU_RANDOM_EPISODES} store failure episodes and 30% of "
                                  f"the package acknowledged")
            status = c.job(job)
            self.assertNotEqual(status["state"], "complete",
                                "the job completed before every write could be made to fail")
            episodes = controller_log(c).count(FAILING_LINE)
            print(f"random failures (p={FIU_PROBABILITY}) for {time.monotonic() - started:.1f}s: "
                  f"{episodes} store failure episode(s) logged, "
                  f"{controller_log(c).count(RECOVERED_LINE)} recoveries; targets at "
                  + ", ".join(f"{t['agent']} {int(t['bytes_acked']) * 100 // int(t['bytes_total'])}%"
                              for t in status["targets"]))

            # Now every write fails: the transfers still end, their ends wait.
            fiu(*(f"disable name={p}" for p in FIU_POINTS))
            recovered = controller_log(c).count(RECOVERED_LINE)
            fiu(*(f"enable name={p}" for p in FIU_POINTS))
            self.assert_store_error_persists(c, job, agents, "tree", "1.0", PERSIST_SECONDS)
            held = self.assert_stuck_until_recorded(c, job, agents, "tree", "1.0")
            self.assertIn("state database", held["store_error"])
            self.assertEqual(controller_log(c).count(RECOVERED_LINE), recovered,
                             "the controller logged that writes succeed again while they all failed")

            fiu(*(f"disable name={p}" for p in FIU_POINTS))
            freed = time.monotonic()
            status = self.assert_recovers(c, job, agents, src, "tree", "1.0")
            print(f"complete {time.monotonic() - freed:.1f}s after failures stopped; attempts "
                  + ", ".join(f"{t['agent']} {t['attempts']}" for t in status["targets"]))
            for t in status["targets"]:
                self.assertEqual(int(t["attempts"]), 1,
                                 f"{t['agent']}: a store failure cost an attempt")
            results.record(f"controller under fiu-run: SQLite pwrite()/fdatasync() fail at random "
                           f"(p={FIU_PROBABILITY}), then always, then never",
                           "ends held (store_error, nothing done early); complete after, one "
                           "attempt each, bytes identical", tried=episodes,
                           recovered_s=round(time.monotonic() - freed, 2))

    def test_state_dir_full_mid_distribution_reports_store_error_and_completes_once_freed(self):
        # tmpfs state dir filled mid-job: store_error, nothing done; filler deleted: complete.
        if os.geteuid() != 0:
            print("skipped: mounting a tmpfs as the controller's state directory needs root")
            self.skipTest("mounting a tmpfs as the controller's state directory needs root")
        agents = ["dp1", "dp2"]
        with Cluster(agents=agents) as c:
            state = c.controller_state_dir
            os.makedirs(state)
            r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES},mode=0700",
                                "pkgdist-test", state], capture_output=True, text=True, timeout=30)
            if r.returncode != 0:
                print(f"skipped: cannot mount a tmpfs here: {r.stderr.strip()}")
                self.skipTest(f"cannot mount a tmpfs here: {r.stderr.strip()}")
            try:
                self._state_dir_full(c, agents, state)
            finally:
                if c.controller and c.controller.alive():
                    c.kill(c.controller, signal.SIGTERM, timeout=30)
                if subprocess.run(["umount", state], capture_output=True, timeout=30).returncode:
                    subprocess.run(["umount", "-l", state], capture_output=True, timeout=30)

    def _state_dir_full(self, c, agents, state):
        c.start_controller(max_bytes_per_second=TMPFS_RATE, window_bytes=WINDOW,
                           max_backoff_seconds=1)
        for name in agents:
            c.start_agent(name)
            c.add_agent(name)
        # The package store is in the state dir too: import before filling it.
        src = harness.make_tree(os.path.join(c.dir, "src"), seed=92, big_file_bytes=4 * MiB)
        c.import_package(src, "tree", "1.0")
        job = c.distribute("tree@1.0", agents)
        c.wait_job(job, lambda j: all(t["state"] == "transferring"
                                      and int(t["bytes_acked"]) * 10 >= int(t["bytes_total"])
                                      for t in j["targets"]),
                   WAIT, "both targets transferring, 10% acknowledged")
        filler = os.path.join(state, "filler")
        filled = fill_disk(filler)
        full_at = time.monotonic()
        print(f"filler of {filled} bytes fills the {TMPFS_BYTES >> 20} MiB tmpfs")

        recovered = controller_log(c).count(RECOVERED_LINE)
        status = self.assert_store_error_persists(c, job, agents, "tree", "1.0", PERSIST_SECONDS)
        print(f"store_error {time.monotonic() - full_at:.1f}s after the disk filled")
        self.assertIn("RESOURCE_EXHAUSTED", status["store_error"])
        self.assertIn("full", status["store_error"])
        check_done_published(c, status, src, "tree", "1.0")
        self.assert_stuck_until_recorded(c, job, agents, "tree", "1.0")
        self.assertEqual(controller_log(c).count(RECOVERED_LINE), recovered,
                         "the controller logged that writes succeed again while the disk was full")

        os.unlink(filler)
        freed = time.monotonic()
        status = self.assert_recovers(c, job, agents, src, "tree", "1.0")
        print(f"complete {time.monotonic() - freed:.1f}s after the filler was deleted; attempts "
              + ", ".join(f"{t['agent']} {t['attempts']}" for t in status["targets"]))
        for t in status["targets"]:
            self.assertEqual(int(t["attempts"]), 1, f"{t['agent']}: the full disk cost an attempt")
        results.record("controller state dir (tmpfs) filled mid-distribution, then freed",
                       "store_error (RESOURCE_EXHAUSTED) while full, nothing done early; complete "
                       "after, one attempt each, bytes identical",
                       recovered_s=round(time.monotonic() - freed, 2))


if __name__ == "__main__":
    unittest.main()
