"""Agent labels and label selectors (issue 14, item 1), through pkgdistctl
against a real controller and agents: labels set at registration and changed
later, shown by `agent list` and kept across a controller restart; a job
started by selector targets exactly the agents it matched then; a bad or
unmatched selector is refused with a clear message and starts nothing."""

import os
import random
import unittest

import harness
from harness import Cluster, MiB

AGENTS = ["fra1", "fra2", "muc1"]
TIMEOUT = 60


def labels_of(c):
    """name -> labels, from `agent list`."""
    out = c.ctl("agent", "list")
    return {a["name"]: a["labels"] for a in out["agents"]}


class LabelsTest(unittest.TestCase):

    def test_labels_are_kept_changed_and_select_the_targets_of_a_job(self):
        with Cluster(agents=AGENTS) as c:
            c.start_controller()
            for name in AGENTS:
                c.start_agent(name)
            site = {"fra1": "fra", "fra2": "fra", "muc1": "muc"}
            for name in AGENTS:
                c.ctl("agent", "add", name, c.agents[name].address, "--label",
                      f"site={site[name]}", "--label", "tier=edge")
            c.ctl("agent", "label", "fra2", "tier=core", "rack=r7")
            c.ctl("agent", "label", "fra2", "rack-")
            self.assertEqual(labels_of(c), {
                "fra1": {"site": "fra", "tier": "edge"},
                "fra2": {"site": "fra", "tier": "core"},
                "muc1": {"site": "muc", "tier": "edge"}})
            rc, table, _ = c.ctl_raw("agent", "list", output="table")
            self.assertEqual(rc, 0)
            self.assertIn("LABELS", table)
            self.assertIn("site=fra,tier=core", table)

            # Registered again at the same address without --label: kept.
            c.add_agent("muc1")
            c.kill(c.controller)
            c.restart_controller()
            self.assertEqual(labels_of(c)["muc1"], {"site": "muc", "tier": "edge"})

            src = os.path.join(c.dir, "src")
            os.makedirs(src)
            harness.write_random_file(os.path.join(src, "a.bin"), 2 * MiB, random.Random(1))
            c.import_package(src, "app", "1.0")
            job = c.ctl("distribute", "app@1.0", "--select", "site=fra")["id"]
            status = c.wait_job(job, lambda j: j["state"] == "complete", TIMEOUT,
                                "the site's agents have the package")
            self.assertEqual(sorted(t["agent"] for t in status["targets"]), ["fra1", "fra2"])
            for name in ["fra1", "fra2"]:
                harness.assert_trees_identical(src, c.published(name, "app", "1.0"))
            self.assertFalse(os.path.exists(c.published("muc1", "app", "1.0")))

            # A set-based selector, repeated --select (all must hold), and
            # --to besides: the union.
            job = c.ctl("distribute", "app@1.0", "--select", "tier in (edge, core)",
                        "--select", "site!=fra", "--to", "fra1")["id"]
            status = c.wait_job(job, lambda j: j["state"] == "complete", TIMEOUT,
                                "muc1 and fra1 have the package")
            self.assertEqual(sorted(t["agent"] for t in status["targets"]), ["fra1", "muc1"])

            # The job keeps the agents it chose: relabelling later changes nothing.
            job = c.ctl("package", "remove-from", "app@1.0", "--select", "tier=core")["id"]
            c.ctl("agent", "label", "fra1", "tier=core")
            status = c.wait_job(job, lambda j: j["state"] == "complete", TIMEOUT,
                                "removed from fra2")
            self.assertEqual([t["agent"] for t in status["targets"]], ["fra2"])
            self.assertFalse(os.path.exists(c.published("fra2", "app", "1.0")))
            self.assertTrue(os.path.exists(c.published("fra1", "app", "1.0")))

            jobs_before = len(c.job_list())
            for selector, message in [
                    ("tier in (edge", 'expected ")"'),
                    ("si@te=fra", 'invalid character "@"'),
                    ("site=ber", "matches none of the 3 registered agents")]:
                rc, _, err = c.ctl_raw("distribute", "app@1.0", "--select", selector)
                self.assertNotEqual(rc, 0, selector)
                self.assertIn(message, err, selector)
            rc, _, err = c.ctl_raw("agent", "label", "fra1", "bad")
            self.assertNotEqual(rc, 0)
            self.assertIn('must be KEY=VALUE or KEY-', err)
            rc, _, err = c.ctl_raw("agent", "label", "nope", "a=b")
            self.assertNotEqual(rc, 0)
            self.assertIn("agent nope is not registered", err)
            self.assertEqual(len(c.job_list()), jobs_before, "a refused selector started a job")


if __name__ == "__main__":
    unittest.main()
