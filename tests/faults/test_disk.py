"""Broken disks on an agent (issue 5).

Disk full (root only): the agent's root is a small tmpfs. A package that
cannot fit (with the agent's --reserve-bytes) is refused up front with
RESOURCE_EXHAUSTED; a package that fits but whose disk is filled by a
ballast file mid-transfer puts the target in retry_wait with a clear error
and publishes nothing; once the ballast is deleted it resumes and completes
byte-identical.

Write and fsync failures (any user): the agent runs under `fiu-run` (Debian
fiu-utils) with pwrite() and fsync() failing at random; the package still
ends byte-identical after retries."""

import os
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

TMPFS_BYTES = 48 * MiB
RESERVE = 8 * MiB
TOO_BIG = 42 * MiB   # 42 + 8 reserve > 48
FITS = 20 * MiB      # 20 + 8 reserve < 48
RATE = 8 * MiB
WINDOW = 2 * MiB
TIMEOUT = 60
FIU_PROBABILITY = 0.05


fill_disk = harness.fill_disk


def asan_runtime(binary):
    """The libasan an AddressSanitizer build of `binary` loads, else None."""
    r = subprocess.run(["ldd", binary], capture_output=True, text=True, timeout=30)
    for line in r.stdout.splitlines():
        parts = line.split()
        if parts and parts[0].startswith("libasan.so") and len(parts) >= 3:
            return parts[2]
    return None


def preload_first(library):
    """A wrapper prefix that puts `library` first in LD_PRELOAD before exec.
    fiu-run preloads its own libraries; ASan refuses to run unless its runtime
    comes first, so an ASan agent under fiu-run needs this between the two."""
    return ["sh", "-c", 'LD_PRELOAD="$0 $LD_PRELOAD" exec "$@"', library]


def start_agent_wrapped(c, name, prefix, extra=()):
    """Starts agent NAME like Cluster.start_agent, with argv prefixed by
    `prefix` (a wrapper such as fiu-run that execs the agent)."""
    agent = c._agent(name)
    port_file = os.path.join(c.dir, f"agent-{name}.port")
    argv = [*prefix, harness.binary("pkgdist-agent"), "--name", name,
            "--listen", f"127.0.0.1:{agent.port}", "--port-file", port_file,
            "--root", agent.root, *c.tls_flags(name), *extra]
    agent.proc, agent.port = c._start(f"agent-{name}", argv, port_file)
    return agent.proc


class DiskFullTest(unittest.TestCase):

    def test_disk_full_refuses_up_front_or_fails_mid_transfer_and_resumes_once_space_is_freed(self):
        # tmpfs root: too big -> RESOURCE_EXHAUSTED; ballast mid-transfer -> retry_wait; freed -> done.
        if os.geteuid() != 0:
            self.skipTest("mounting a tmpfs as the agent's root needs root; "
                          "the disk-full scenario runs only as root")
        with Cluster(agents=["dp1"]) as c:
            root = os.path.join(c.dir, "agents", "dp1")
            os.makedirs(root)
            r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES},mode=0700",
                                "pkgdist-test", root], capture_output=True, text=True, timeout=30)
            if r.returncode != 0:
                self.skipTest(f"cannot mount a tmpfs here: {r.stderr.strip()}")
            try:
                self._disk_full(c, root)
            finally:
                agent = c.agents.get("dp1")
                if agent and agent.proc and agent.proc.alive():
                    c.kill(agent.proc, signal.SIGTERM)
                if subprocess.run(["umount", root], capture_output=True, timeout=30).returncode:
                    subprocess.run(["umount", "-l", root], capture_output=True, timeout=30)

    def _disk_full(self, c, root):
        c.start_controller(max_bytes_per_second=RATE, window_bytes=WINDOW, max_backoff_seconds=1)
        c.start_agent("dp1", extra=["--reserve-bytes", str(RESERVE)])
        c.add_agent("dp1")
        big = harness.make_file_package(os.path.join(c.dir, "big"), "big.bin", TOO_BIG, 61)
        c.import_package(big, "big", "1.0")
        fits = harness.make_file_package(os.path.join(c.dir, "fits"), "fits.bin", FITS, 62)
        c.import_package(fits, "fits", "1.0")

        job = c.distribute("big@1.0", ["dp1"])
        status = c.wait_job(job, lambda j: target(j, "dp1")["state"] == "retry_wait", TIMEOUT,
                            "the package that cannot fit is refused")
        err = target(status, "dp1")["last_error"]
        print(f"too big: {err}")
        self.assertIn("RESOURCE_EXHAUSTED", err)
        self.assertIn("not enough disk space", err)
        self.assertEqual(int(target(status, "dp1")["bytes_sent"]), 0)
        c.ctl("job", "cancel", job)
        results.record("package larger than the agent's free space minus its reserve",
                       "refused up front: RESOURCE_EXHAUSTED, 0 bytes sent")

        job = c.distribute("fits@1.0", ["dp1"])
        c.wait_job(job, lambda j: int(target(j, "dp1")["bytes_acked"]) >= 4 * MiB, TIMEOUT,
                   "4 MiB acknowledged before the disk fills")
        ballast = os.path.join(root, "ballast")
        filled = fill_disk(ballast)
        print(f"ballast of {filled} bytes fills the tmpfs")
        status = c.wait_job(
            job, lambda j: target(j, "dp1")["state"] == "retry_wait"
            and "RESOURCE_EXHAUSTED" in target(j, "dp1")["last_error"], TIMEOUT,
            "the full disk fails the attempt")
        t = target(status, "dp1")
        print(f"disk full mid-transfer: {t['last_error']}")
        self.assertTrue("No space left on device" in t["last_error"]
                        or "not enough disk space" in t["last_error"], t["last_error"])
        self.assertEqual(os.listdir(os.path.join(root, "packages")), [],
                         "a partial package is visible under packages/")
        self.assertLess(int(t["bytes_acked"]), FITS)

        os.unlink(ballast)
        status = c.wait_job(job, lambda j: j["state"] == "complete", TIMEOUT,
                            "the transfer resumes and completes once space is freed")
        t = target(status, "dp1")
        resent = int(t["bytes_sent"]) - FITS
        harness.assert_trees_identical(os.path.dirname(fits), c.published("dp1", "fits", "1.0"))
        self.assertEqual(os.listdir(os.path.join(root, "staging")), [])
        print(f"complete after {t['attempts']} attempts, re-sent {resent} bytes")
        self.assertLessEqual(resent, 2 * WINDOW, "more than the in-flight windows re-sent")
        results.record("agent disk (tmpfs) filled by a ballast file mid-transfer, then freed",
                       "retry_wait with RESOURCE_EXHAUSTED, nothing published early; resumed, "
                       "complete, bytes identical", attempts=int(t["attempts"]),
                       resent_bytes=resent)


class InjectedIoFailureTest(unittest.TestCase):

    def test_agent_with_random_write_and_fsync_failures_ends_byte_identical_after_retries(self):
        # fiu-run fails pwrite()/fsync() at random in the agent; retries still end identical.
        fiu_run = shutil.which("fiu-run")
        if fiu_run is None:
            self.skipTest("fiu-run is not installed (Debian package fiu-utils)")
        with Cluster(agents=["dp1"]) as c:
            c.start_controller(window_bytes=WINDOW, max_backoff_seconds=1)
            # Failures are switched on once the agent is up (fiu-ctrl), so that
            # its start-up (which fsyncs its port file) is not what fails.
            ctrl = os.path.join(c.dir, "fiu-ctrl")
            prefix = [fiu_run, "-x", "-f", ctrl]
            asan = asan_runtime(harness.binary("pkgdist-agent"))
            if asan:
                prefix += preload_first(asan)
            proc = start_agent_wrapped(c, "dp1", prefix)
            c.add_agent("dp1")
            for point in ("posix/io/rw/pwrite", "posix/io/sync/fsync"):
                r = subprocess.run([shutil.which("fiu-ctrl") or "fiu-ctrl", "-f", ctrl, "-c",
                                    f"enable_random name={point},probability={FIU_PROBABILITY}",
                                    str(proc.pid)], capture_output=True, text=True, timeout=30)
                self.assertEqual(r.returncode, 0, f"fiu-ctrl failed: {r.stderr.strip()}")
            src = harness.make_tree(os.path.join(c.dir, "src"), seed=63, big_file_bytes=6 * MiB)
            c.import_package(src, "tree", "1.0")
            started = time.monotonic()
            job = c.distribute("tree@1.0", ["dp1"])
            status = c.wait_job(job, lambda j: j["state"] == "complete", TIMEOUT,
                                "the job completes despite injected I/O failures")
            t = target(status, "dp1")
            with open(c.log_of("agent-dp1"), encoding="utf-8", errors="replace") as f:
                failures = sum(1 for line in f if "transfer from" in line and "failed" in line)
            print(f"complete after {time.monotonic() - started:.1f}s, {t['attempts']} attempts, "
                  f"{failures} failed transfer(s) in the agent's log")
            harness.assert_trees_identical(src, c.published("dp1", "tree", "1.0"))
            self.assertTrue(c.agents["dp1"].proc.alive())
            results.record(f"agent under fiu-run: pwrite() and fsync() fail with probability "
                           f"{FIU_PROBABILITY}", "complete after retries, bytes identical",
                           tried=failures, attempts=int(t["attempts"]))


if __name__ == "__main__":
    unittest.main()
