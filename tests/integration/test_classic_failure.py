"""The classic failure (issue 3): one of two agents is unreachable when a
distribution starts. The job must not report success; the unreachable
target keeps retrying with a readable error, and when the agent comes up it
gets the package without anyone doing anything."""

import os
import re
import time
import unittest

import harness
from harness import Cluster, MiB, target

UNREACHABLE = re.compile(r"connection refused|unavailable|failed to connect", re.IGNORECASE)


class ClassicFailureTest(unittest.TestCase):

    def test_unreachable_agent_keeps_job_open_and_gets_package_when_it_comes_up(self):
        # dp2 is down at first: the job stays in progress, dp2 retries, then completes unaided.
        with Cluster(agents=["dp1", "dp2"]) as c:
            c.start_controller()
            c.start_agent("dp1")
            c.add_agent("dp1")
            c.reserve_port("dp2")
            c.add_agent("dp2")
            src = harness.make_tree(os.path.join(c.dir, "src"), seed=4, big_file_bytes=2 * MiB)
            c.import_package(src, "app", "2.1")

            job = c.distribute("app@2.1", ["dp1", "dp2"])
            status = c.wait_job(
                job, lambda j: (target(j, "dp1")["state"] == "done"
                                and target(j, "dp2")["state"] == "retry_wait"
                                and int(target(j, "dp2")["attempts"]) >= 2),
                30, "dp1 done and dp2 waiting after at least two attempts")
            dp2 = target(status, "dp2")
            print(f"dp2 down: job {status['state']}, dp2 attempts {dp2['attempts']}, "
                  f"next_attempt_at {dp2['next_attempt_at']}, last_error {dp2['last_error']!r}")
            self.assertEqual(status["state"], "in_progress")
            self.assertRegex(dp2["last_error"], UNREACHABLE)
            self.assertTrue(dp2["next_attempt_at"], "a waiting target has its next attempt scheduled")
            listed = [j["state"] for j in c.job_list() if j["id"] == job]
            self.assertEqual(listed, ["in_progress"], "job list agrees with job status")
            harness.assert_trees_identical(src, c.published("dp1", "app", "2.1"))

            started = time.monotonic()
            c.start_agent("dp2")
            status = c.wait_job(job, lambda j: j["state"] == "complete", 60,
                                "the job completes once dp2 is up, with no operator action")
            print(f"dp2 up: job complete {time.monotonic() - started:.2f}s after dp2 started; "
                  f"dp2 attempts {target(status, 'dp2')['attempts']}")
            for name in ("dp1", "dp2"):
                self.assertEqual(target(status, name)["state"], "done")
                harness.assert_trees_identical(src, c.published(name, "app", "2.1"))


if __name__ == "__main__":
    unittest.main()
