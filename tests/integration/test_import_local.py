"""`pkgdistctl package import --local PATH` (issue 13 item 4): the controller
reads a tree from its own disk, under its --import-root only. The package
is the one a streamed import of the same tree makes, reaches an agent
byte-identical, and a path outside the root is refused with exit 1, the
message naming the path and the root, leaving nothing behind."""

import os
import unittest

import harness
from harness import Cluster, MiB, target

TIMEOUT = 60


class ImportLocalTest(unittest.TestCase):

    def test_local_import_distributes_identical_and_equals_the_streamed_package(self):
        # Imported --local under the root, distributed to an agent: identical; same id as streamed.
        with Cluster(agents=["il1"]) as c:
            builds = os.path.join(c.dir, "builds")
            src = harness.make_tree(os.path.join(builds, "app-2.0"), seed=7,
                                    big_file_bytes=5 * MiB)
            c.start_controller(extra=["--import-root", builds])
            c.start_agent("il1")
            c.add_agent("il1")
            info = c.ctl("package", "import", "--local", src, "--name", "app", "--version",
                         "2.0", timeout=120)
            self.assertEqual((info["name"], info["version"]), ("app", "2.0"))
            streamed = c.import_package(src, "app-streamed", "2.0")
            again = c.ctl("package", "import", src, "--name", "app", "--version", "2.0",
                          timeout=120)
            self.assertEqual(again["id"], info["id"],
                             "a streamed import of the same tree is the same package")
            self.assertEqual(streamed["size"], info["size"])
            with open(c.log_of("controller")) as f:
                self.assertRegex(f.read(), r"local import of .* by (reflink|copy_file_range)")
            job = c.distribute("app@2.0", ["il1"])
            status = c.wait_job(job, lambda j: j["state"] == "complete", TIMEOUT,
                                "the local import reaches the agent")
            self.assertEqual(target(status, "il1")["state"], "done")
            harness.assert_trees_identical(src, c.published("il1", "app", "2.0"))
            audit = c.ctl("audit", "list")
            records = audit["records"] if isinstance(audit, dict) else audit
            self.assertTrue(any(r.get("method") == "ImportLocalPackage" for r in records),
                            f"no audit record of ImportLocalPackage: {records}")

    def test_local_import_outside_the_root_or_without_one_is_refused(self):
        # Outside the root (also through a symlink): exit 1 naming path and root; no root: refused.
        with Cluster() as c:
            builds = os.path.join(c.dir, "builds")
            os.makedirs(builds)
            outside = harness.make_tree(os.path.join(c.dir, "elsewhere"), seed=8)
            os.symlink(outside, os.path.join(builds, "link"))
            c.start_controller(extra=["--import-root", builds])
            for path in (outside, os.path.join(builds, "link"),
                         os.path.join(builds, "..", "elsewhere")):
                rc, out, err = c.ctl_raw("package", "import", "--local", path, "--name", "x",
                                         "--version", "1", output="table")
                self.assertEqual(rc, 1, f"{path}: {out} {err}")
                self.assertIn(path, err)
                self.assertIn(builds, err)
                self.assertIn("PERMISSION_DENIED", err.upper().replace(" ", "_"))
            uploads = os.path.join(c.controller_state_dir, "uploads")
            self.assertEqual(os.listdir(uploads), [])
            self.assertEqual(c.ctl("package", "list").get("packages", []), [])

            c.kill(c.controller)
            c.restart_controller(extra=[])
            rc, _, err = c.ctl_raw("package", "import", "--local", outside, "--name", "x",
                                   "--version", "1", output="table")
            self.assertEqual(rc, 1)
            self.assertIn("--import-root", err)


if __name__ == "__main__":
    unittest.main()
