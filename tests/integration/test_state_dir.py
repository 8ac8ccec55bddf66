"""The controller's state directory as an operator meets it: a second
controller on the same directory refuses to start, and a damaged state.db is
refused (and left as it was) instead of being used or replaced."""

import hashlib
import os
import signal
import subprocess
import unittest

import harness
from harness import Cluster


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class StateDirTest(unittest.TestCase):

    def run_controller(self, c):
        """Runs a second pkgdist-controller on the cluster's state directory
        and returns its CompletedProcess (it is expected to exit at once)."""
        argv = [harness.binary("pkgdist-controller"), "--listen", "127.0.0.1:0",
                "--state-dir", c.controller_state_dir, *c.tls_flags("controller")]
        return subprocess.run(argv, capture_output=True, text=True, timeout=30)

    def test_a_second_controller_on_the_same_state_dir_refuses_to_start(self):
        # The second exits 2 naming the first's pid; the first keeps serving.
        with Cluster(agents=["dp1"]) as c:
            first = c.start_controller()
            c.start_agent("dp1")
            c.add_agent("dp1")
            r = self.run_controller(c)
            self.assertEqual(r.returncode, 2, f"stdout {r.stdout!r} stderr {r.stderr!r}")
            self.assertIn("is in use by another process", r.stderr)
            self.assertIn(f"pid {first.pid}", r.stderr)
            self.assertTrue(first.alive())
            self.assertEqual([a["name"] for a in c.ctl("agent", "list")["agents"]], ["dp1"])

    def test_a_damaged_state_db_is_refused_and_left_as_it_was(self):
        # A page of state.db overwritten: the controller exits 2 saying the
        # database is damaged and what to do, and does not touch the file.
        with Cluster(agents=["dp1"]) as c:
            c.start_controller()
            for i in range(40):
                c.ctl("agent", "add", f"node-{i:03d}", f"127.0.0.1:{20000 + i}")
            c.kill(c.controller, signal.SIGTERM)
            db = os.path.join(c.controller_state_dir, "state.db")
            size = os.path.getsize(db)
            self.assertGreaterEqual(size, 3 * 4096, "state.db should have several pages")
            with open(db, "r+b") as f:
                f.seek(4096)
                f.write(b"\xa5" * 4096)
            before = sha256(db)
            r = self.run_controller(c)
            self.assertEqual(r.returncode, 2, f"stdout {r.stdout!r} stderr {r.stderr!r}")
            self.assertIn("the database is damaged", r.stderr)
            self.assertIn("restore it from a backup", r.stderr)
            self.assertEqual(sha256(db), before, "the damaged state.db was modified")
            self.assertEqual(os.path.getsize(db), size)


if __name__ == "__main__":
    unittest.main()
