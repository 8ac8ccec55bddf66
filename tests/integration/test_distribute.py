"""Distribution to several agents over real mutual TLS (issue 2): the bytes
arrive intact, a repeated distribution sends nothing, and a peer presenting
another agent's certificate gets nothing."""

import os
import time
import unittest

import harness
from harness import Cluster, MiB, target

AGENTS = ["dp1", "dp2", "dp3"]
TIMEOUT = 60


class DistributeTest(unittest.TestCase):

    def test_multi_file_package_reaches_every_agent_byte_identical_and_resending_sends_nothing(self):
        # Three agents get a tree package identical to the source; a second job of it sends 0 bytes.
        with Cluster(agents=AGENTS) as c:
            c.start_controller()
            for name in AGENTS:
                c.start_agent(name)
                c.add_agent(name)
            src = harness.make_tree(os.path.join(c.dir, "src"), seed=2, big_file_bytes=5 * MiB)
            info = c.import_package(src, "tree", "1.0")
            self.assertEqual(info["name"], "tree")
            self.assertEqual(info["version"], "1.0")

            started = time.monotonic()
            job = c.distribute("tree@1.0", AGENTS)
            status = c.wait_job(job, lambda j: j["state"] == "complete", TIMEOUT,
                                "every target done")
            print(f"first distribution of {info['size']} bytes to {len(AGENTS)} agents: "
                  f"{time.monotonic() - started:.2f}s")
            for name in AGENTS:
                t = target(status, name)
                self.assertEqual(t["state"], "done")
                self.assertEqual(int(t["bytes_acked"]), int(t["bytes_total"]))
                harness.assert_trees_identical(src, c.published(name, "tree", "1.0"))

            started = time.monotonic()
            again = c.distribute("tree@1.0", AGENTS)
            self.assertNotEqual(again, job)
            status = c.wait_job(again, lambda j: j["state"] == "complete", 10,
                                "the repeated distribution completes at once")
            print(f"repeated distribution: complete after {time.monotonic() - started:.2f}s, "
                  f"bytes_sent {[int(t['bytes_sent']) for t in status['targets']]}")
            for name in AGENTS:
                self.assertEqual(int(target(status, name)["bytes_sent"]), 0,
                                 f"{name} was sent bytes it already had: {status}")
                harness.assert_trees_identical(src, c.published(name, "tree", "1.0"))

    def test_agent_presenting_another_agents_certificate_is_refused(self):
        # dp3's address answers with dp1's certificate: dp3 never gets the package, the others do.
        with Cluster(agents=AGENTS) as c:
            c.start_controller()
            c.start_agent("dp1")
            c.start_agent("dp2")
            c.start_agent("dp3", cert="dp1")
            for name in AGENTS:
                c.add_agent(name)
            src = harness.make_tree(os.path.join(c.dir, "src"), seed=3, big_file_bytes=MiB)
            c.import_package(src, "tree", "1.0")

            job = c.distribute("tree@1.0", AGENTS)
            expected_error = "identity mismatch: expected dp3, certificate names dp1"

            def refused_and_retried(j):
                dp3 = target(j, "dp3")
                return (target(j, "dp1")["state"] == "done"
                        and target(j, "dp2")["state"] == "done"
                        and dp3["state"] == "retry_wait"
                        and expected_error in dp3["last_error"]
                        and int(dp3["attempts"]) >= 2)

            status = c.wait_job(job, refused_and_retried, TIMEOUT,
                                "dp1 and dp2 done, dp3 refused twice with an identity mismatch")
            dp3 = target(status, "dp3")
            print(f"dp3: state {dp3['state']}, attempts {dp3['attempts']}, "
                  f"last_error {dp3['last_error']!r}")
            self.assertEqual(status["state"], "in_progress")
            self.assertEqual(int(dp3["bytes_sent"]), 0)
            self.assertFalse(os.path.exists(c.published("dp3", "tree", "1.0")))
            for name in ("dp1", "dp2"):
                harness.assert_trees_identical(src, c.published(name, "tree", "1.0"))


if __name__ == "__main__":
    unittest.main()
