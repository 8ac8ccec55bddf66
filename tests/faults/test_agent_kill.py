"""An agent killed (SIGKILL) in the middle of a large transfer, three times:
each restart resumes from the agent's journal, so the package ends complete
and byte-identical and at most one window of unacknowledged bytes is re-sent
per interruption."""

import os
import random
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import results  # noqa: E402
from harness import Cluster, MiB, target  # noqa: E402

SIZE = 64 * MiB
# 10 MiB/s makes the transfer last ~6.4 s: room for three kills.
RATE = 10 * MiB
# The controller's window of unacknowledged bytes (--window-bytes).
WINDOW = 4194304
KILLS = 3
# Each kill happens at a random fraction of the package inside its band.
BANDS = [(0.10, 0.25), (0.35, 0.50), (0.60, 0.75)]


class AgentKillTest(unittest.TestCase):

    def test_agent_killed_three_times_mid_transfer_ends_identical_resending_at_most_a_window_each(self):
        # Three SIGKILLs of the receiving agent cost at most 3 windows of re-sent bytes.
        seed = int(os.environ.get("PKGDIST_TEST_SEED", time.time_ns() % (1 << 32)))
        rng = random.Random(seed)
        print(f"seed {seed} (set PKGDIST_TEST_SEED to repeat); window_bytes {WINDOW}, "
              f"max_bytes_per_second {RATE}")
        with Cluster(agents=["dp1"]) as c:
            c.start_controller(max_bytes_per_second=RATE, window_bytes=WINDOW,
                               max_backoff_seconds=2)
            c.start_agent("dp1")
            c.add_agent("dp1")
            path = harness.make_file_package(os.path.join(c.dir, "src"), "big.bin", SIZE, seed)
            info = c.import_package(path, "big", "1.0")
            size = int(info["size"])
            self.assertEqual(size, SIZE)

            started = time.monotonic()
            job = c.distribute("big@1.0", ["dp1"])
            attempts, acked = 0, 0
            for i, (lo, hi) in enumerate(BANDS):
                threshold = max(int(size * rng.uniform(lo, hi)), acked + MiB)

                def in_new_attempt_past_threshold(j):
                    t = target(j, "dp1")
                    return (t["state"] == "transferring" and int(t["attempts"]) > attempts
                            and int(t["bytes_acked"]) >= threshold)

                status = c.wait_job(job, in_new_attempt_past_threshold, 60,
                                    f"kill {i + 1}: a new attempt acknowledging {threshold} bytes")
                c.kill(c.agents["dp1"].proc, signal.SIGKILL)
                t = target(status, "dp1")
                attempts, acked = int(t["attempts"]), int(t["bytes_acked"])
                print(f"kill {i + 1} at {time.monotonic() - started:.2f}s: attempt {attempts}, "
                      f"bytes_acked {acked} ({acked / size:.0%}), bytes_sent {t['bytes_sent']}")
                c.restart_agent("dp1")

            status = c.wait_job(job, lambda j: j["state"] == "complete", 90,
                                "the job completes after the last restart")
            t = target(status, "dp1")
            sent = int(t["bytes_sent"])
            print(f"complete after {time.monotonic() - started:.2f}s and {t['attempts']} attempts: "
                  f"bytes_sent {sent}, re-sent {sent - size} bytes "
                  f"({(sent - size) / MiB:.2f} MiB; bound {KILLS} x {WINDOW})")
            self.assertEqual(t["state"], "done")
            self.assertEqual(int(t["bytes_acked"]), size)
            self.assertGreaterEqual(sent, size)
            self.assertLessEqual(sent, size + KILLS * WINDOW,
                                 "more than one window re-sent per interruption")
            harness.assert_trees_identical(os.path.dirname(path), c.published("dp1", "big", "1.0"))
            results.record("agent killed -9 at a random point of a 64 MiB transfer, restarted",
                           "complete, bytes identical, at most one window re-sent per kill",
                           tried=KILLS, resent_bytes=sent - size, window_bytes=WINDOW)


if __name__ == "__main__":
    unittest.main()
