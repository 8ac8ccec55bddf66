"""Delta transfer (issue 13): content-defined chunks and every agent a chunk
store. Real controller and agents over mutual TLS; each test checks the
trees byte for byte and bounds what crossed the wire with the targets'
bytes_sent and bytes_reused.

Bounds: an edit changes the chunks it touches and a few after it, until
FastCDC's cut points fall in step again (bench/chunking.md measured 2.6-2.9
average chunks per edited region, and up to 8 for one inserted byte over 500
trials), so each edit is allowed EDIT_SLACK bytes beyond its own size: two
chunks of the largest size (kDefaultChunking in shared/fastcdc.h), which is
eight of the average."""

import os
import random
import shutil
import signal
import time
import unittest

import harness
from harness import Cluster, MiB, target, wait_for

TIMEOUT = 90
MAX_CHUNK = 128 * 1024       # kDefaultChunking.max_size
EDIT_SLACK = 2 * MAX_CHUNK


def copy_tree(src, dst):
    shutil.copytree(src, dst, symlinks=True)
    return dst


def insert_byte(path, at, value=b"\x5a"):
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:at] + value + data[at:])


def overwrite(path, at, data):
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(data)


def make_base(root, seed, big=24 * MiB):
    """A tree package: harness.make_tree plus a second large file."""
    harness.make_tree(root, seed=seed, big_file_bytes=big)
    harness.write_random_file(os.path.join(root, "data", "second.bin"), 8 * MiB,
                              random.Random(seed + 1))
    return root


def journal_records(root):
    """Chunks journaled in every staging directory under an agent root."""
    total = 0
    staging = os.path.join(root, "staging")
    for d in os.listdir(staging) if os.path.isdir(staging) else []:
        path = os.path.join(staging, d, "journal")
        if os.path.exists(path):
            total += os.path.getsize(path) // 44
    return total


class DeltaTest(unittest.TestCase):

    def start(self, c, agents):
        c.start_controller()
        for name in agents:
            c.start_agent(name)
            c.add_agent(name)

    def wait_mid_copy(self, c, name):
        """Waits until agent NAME's local copy has journaled its first batch
        (the agent flushes every 64 MiB it copies) and returns the count."""
        root = c.agents[name].root
        return wait_for(lambda: journal_records(root), timeout=30, interval=0.002,
                        what=f"{name} journals its first locally copied chunks")

    def distribute_and_wait(self, c, package, agents, what):
        started = time.monotonic()
        job = c.distribute(package, agents)
        status = c.wait_job(job, lambda j: j["state"] == "complete", TIMEOUT, what)
        return status, time.monotonic() - started

    def test_version_2_after_version_1_sends_only_what_changed_to_three_agents(self):
        # One byte inserted near the start of the large file, 10 scattered
        # 4 KiB overwrites in another, a new file: the agents receive about
        # that much and copy the rest from version 1.
        agents = ["dp1", "dp2", "dp3"]
        with Cluster(agents=agents) as c:
            self.start(c, agents)
            v1 = make_base(os.path.join(c.dir, "v1"), seed=31)
            info1 = c.import_package(v1, "app", "1.0")
            self.distribute_and_wait(c, "app@1.0", agents, "version 1 everywhere")

            v2 = copy_tree(v1, os.path.join(c.dir, "v2"))
            insert_byte(os.path.join(v2, "data", "big.bin"), 1000)
            rng = random.Random(5)
            second = os.path.join(v2, "data", "second.bin")
            for i in range(10):
                overwrite(second, i * (8 * MiB // 10) + rng.randrange(4096), rng.randbytes(4096))
            harness.write_random_file(os.path.join(v2, "data", "new.bin"), 100_000,
                                      random.Random(9))
            info2 = c.import_package(v2, "app", "2.0")
            status, took = self.distribute_and_wait(c, "app@2.0", agents, "version 2 everywhere")

            bound = 11 * EDIT_SLACK + 10 * 4096 + 1 + 100_000
            for name in agents:
                t = target(status, name)
                sent, reused = int(t["bytes_sent"]), int(t["bytes_reused"])
                print(f"{name}: version 2 ({info2['size']} bytes, {info2['chunks']} chunks; "
                      f"version 1 had {info1['chunks']}): sent {sent}, reused {reused}, "
                      f"in {took:.2f}s")
                self.assertLessEqual(sent, bound, f"{name} was sent more than the edits: {t}")
                self.assertEqual(sent + reused, int(t["bytes_total"]),
                                 f"{name}: every byte either sent or reused: {t}")
                harness.assert_trees_identical(v2, c.published(name, "app", "2.0"))
                harness.assert_trees_identical(v1, c.published(name, "app", "1.0"))

    def test_a_package_of_another_name_sharing_files_receives_only_its_own(self):
        # Another package holding half of app's files reuses them on the agent.
        with Cluster(agents=["dp1"]) as c:
            self.start(c, ["dp1"])
            app = make_base(os.path.join(c.dir, "app"), seed=41)
            c.import_package(app, "app", "1.0")
            self.distribute_and_wait(c, "app@1.0", ["dp1"], "app on dp1")

            tools = os.path.join(c.dir, "tools")
            os.makedirs(os.path.join(tools, "vendor"))
            shutil.copy2(os.path.join(app, "data", "big.bin"), os.path.join(tools, "vendor"))
            own = harness.write_random_file(os.path.join(tools, "own.bin"), 3 * MiB,
                                            random.Random(4))
            info = c.import_package(tools, "tools", "7")
            status, _ = self.distribute_and_wait(c, "tools@7", ["dp1"], "tools on dp1")
            t = target(status, "dp1")
            print(f"tools@7 ({info['size']} bytes): sent {t['bytes_sent']}, "
                  f"reused {t['bytes_reused']}")
            self.assertLessEqual(int(t["bytes_sent"]), os.path.getsize(own) + EDIT_SLACK)
            self.assertGreaterEqual(int(t["bytes_reused"]), 24 * MiB - EDIT_SLACK)
            harness.assert_trees_identical(tools, c.published("dp1", "tools", "7"))

    def test_a_local_copy_damaged_on_the_agents_disk_is_fetched_from_the_controller(self):
        # A byte of version 1 flipped on dp1's disk: the chunk it falls in
        # fails its hash when version 2 copies it, and comes from the
        # controller instead; version 2 is still identical to its source.
        with Cluster(agents=["dp1"]) as c:
            self.start(c, ["dp1"])
            v1 = make_base(os.path.join(c.dir, "v1"), seed=51)
            c.import_package(v1, "app", "1.0")
            self.distribute_and_wait(c, "app@1.0", ["dp1"], "version 1 on dp1")
            published_big = os.path.join(c.published("dp1", "app", "1.0"), "data", "big.bin")
            os.chmod(published_big, 0o644)
            overwrite(published_big, 12 * MiB, b"\xff\x00\xff")

            v2 = copy_tree(v1, os.path.join(c.dir, "v2"))
            harness.write_random_file(os.path.join(v2, "data", "new.bin"), 10_000,
                                      random.Random(3))
            c.import_package(v2, "app", "2.0")
            status, _ = self.distribute_and_wait(c, "app@2.0", ["dp1"], "version 2")
            t = target(status, "dp1")
            print(f"damaged local copy: sent {t['bytes_sent']}, reused {t['bytes_reused']}")
            self.assertGreater(int(t["bytes_sent"]), 10_000, "the damaged chunk was not re-sent")
            self.assertLessEqual(int(t["bytes_sent"]), 10_000 + EDIT_SLACK)
            harness.assert_trees_identical(v2, c.published("dp1", "app", "2.0"))
            with open(c.log_of("agent-dp1")) as f:
                self.assertIn("failed their sha256; requesting them", f.read())

    def test_the_source_package_vanishing_while_its_chunks_are_copied(self):
        # dp1 is frozen while it copies version 1's chunks into version 2,
        # and version 1's tree is taken away meanwhile (what Remove's rename
        # does); the chunks not yet copied come from the controller.
        with Cluster(agents=["dp1"]) as c:
            self.start(c, ["dp1"])
            v1 = make_base(os.path.join(c.dir, "v1"), seed=61, big=192 * MiB)
            c.import_package(v1, "app", "1.0")
            self.distribute_and_wait(c, "app@1.0", ["dp1"], "version 1 on dp1")
            v2 = copy_tree(v1, os.path.join(c.dir, "v2"))
            insert_byte(os.path.join(v2, "data", "big.bin"), 10)
            c.import_package(v2, "app", "2.0")

            agent = c.agents["dp1"].proc
            job = c.distribute("app@2.0", ["dp1"])
            journaled = self.wait_mid_copy(c, "dp1")
            c.kill(agent, signal.SIGSTOP)
            os.rename(c.published("dp1", "app", "1.0"), os.path.join(c.dir, "v1-removed"))
            c.kill(agent, signal.SIGCONT)
            status = c.wait_job(job, lambda j: j["state"] == "complete", TIMEOUT, "version 2")
            t = target(status, "dp1")
            print(f"source vanished after {journaled} chunks were journaled: "
                  f"sent {t['bytes_sent']}, reused {t['bytes_reused']}")
            harness.assert_trees_identical(v2, c.published("dp1", "app", "2.0"))
            self.assertEqual(int(t["bytes_sent"]) + int(t["bytes_reused"]), int(t["bytes_total"]))
            # Then removed through the API as well: version 2 stays whole.
            shutil.move(os.path.join(c.dir, "v1-removed"), c.published("dp1", "app", "1.0"))
            out = c.ctl("package", "remove-from", "app@1.0", "--from", "dp1", "--wait")
            self.assertEqual(out["state"], "complete")
            harness.assert_trees_identical(v2, c.published("dp1", "app", "2.0"))

    def test_an_agent_killed_while_copying_local_chunks_resumes(self):
        # kill -9 during the local copy: after the restart the journal keeps
        # what was copied, the rest is copied again, the result is identical.
        with Cluster(agents=["dp1"]) as c:
            self.start(c, ["dp1"])
            v1 = make_base(os.path.join(c.dir, "v1"), seed=71, big=192 * MiB)
            c.import_package(v1, "app", "1.0")
            self.distribute_and_wait(c, "app@1.0", ["dp1"], "version 1 on dp1")
            v2 = copy_tree(v1, os.path.join(c.dir, "v2"))
            insert_byte(os.path.join(v2, "data", "big.bin"), 10)
            c.import_package(v2, "app", "2.0")

            job = c.distribute("app@2.0", ["dp1"])
            journaled = self.wait_mid_copy(c, "dp1")
            c.kill(c.agents["dp1"].proc)
            self.assertFalse(os.path.exists(c.published("dp1", "app", "2.0")),
                             "version 2 was published before the kill: nothing was interrupted")
            c.restart_agent("dp1")
            status = c.wait_job(job, lambda j: j["state"] == "complete", TIMEOUT,
                                "version 2 after the restart")
            t = target(status, "dp1")
            print(f"killed after {journaled} journaled chunks: attempts {t['attempts']}, "
                  f"sent {t['bytes_sent']}, reused {t['bytes_reused']}")
            harness.assert_trees_identical(v2, c.published("dp1", "app", "2.0"))
            self.assertLessEqual(int(t["bytes_sent"]), 2 * EDIT_SLACK + 1,
                                 "the restart fetched from the controller what was local")


if __name__ == "__main__":
    unittest.main()
