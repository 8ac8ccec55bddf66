"""An agent frozen (SIGSTOP) in the middle of a transfer is a silent peer:
the controller must notice within its detection bound (keepalive), not at
TCP timeout, and finish the transfer once the agent runs again."""

import os
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import results  # noqa: E402
from harness import Cluster, MiB, target  # noqa: E402

SIZE = 32 * MiB
RATE = 8 * MiB
DETECT_SECONDS = 6
SLACK_SECONDS = 3


class AgentFreezeTest(unittest.TestCase):

    def test_frozen_agent_is_detected_within_bound_and_completes_after_resuming(self):
        # SIGSTOP mid-transfer: retry_wait within --detect-seconds + slack; SIGCONT: complete.
        with Cluster(agents=["dp1"]) as c:
            c.start_controller(detect_seconds=DETECT_SECONDS, max_bytes_per_second=RATE,
                               max_backoff_seconds=2)
            c.start_agent("dp1")
            c.add_agent("dp1")
            path = harness.make_file_package(os.path.join(c.dir, "src"), "frozen.bin", SIZE, 7)
            c.import_package(path, "frozen", "1.0")

            job = c.distribute("frozen@1.0", ["dp1"])
            status = c.wait_job(job, lambda j: (target(j, "dp1")["state"] == "transferring"
                                                and int(target(j, "dp1")["bytes_acked"]) >= SIZE // 5),
                                30, "dp1 transferring with a fifth acknowledged")
            attempts = int(target(status, "dp1")["attempts"])
            agent = c.agents["dp1"].proc
            c.kill(agent, signal.SIGSTOP)
            frozen_at = time.monotonic()

            # Detected: the attempt ended (retry_wait, or already a later attempt).
            status = c.wait_attempt_ended(job, "dp1", attempts, DETECT_SECONDS + SLACK_SECONDS + 20,
                                          "the controller to notice the frozen agent")
            detected = time.monotonic() - frozen_at
            t = target(status, "dp1")
            print(f"frozen agent detected after {detected:.2f}s (bound {DETECT_SECONDS}s + "
                  f"{SLACK_SECONDS}s slack): state {t['state']}, attempts {t['attempts']}, "
                  f"last_error {t['last_error']!r}")
            self.assertIn(t["state"], ("retry_wait", "transferring"))
            self.assertTrue(t["last_error"], "the broken attempt left no error")
            self.assertLessEqual(detected, DETECT_SECONDS + SLACK_SECONDS)

            c.kill(agent, signal.SIGCONT)
            resumed_at = time.monotonic()
            status = c.wait_job(job, lambda j: j["state"] == "complete", 60,
                                "the job completes after SIGCONT")
            t = target(status, "dp1")
            print(f"complete {time.monotonic() - resumed_at:.2f}s after SIGCONT: "
                  f"bytes_sent {t['bytes_sent']} for {t['bytes_total']} bytes")
            harness.assert_trees_identical(os.path.dirname(path),
                                           c.published("dp1", "frozen", "1.0"))
            results.record("agent frozen with SIGSTOP mid-transfer, then SIGCONT",
                           "retry_wait within the detection bound; complete, bytes identical",
                           detect_s=round(detected, 2),
                           complete_after_cont_s=round(time.monotonic() - resumed_at, 2),
                           bound_s=DETECT_SECONDS)


if __name__ == "__main__":
    unittest.main()
