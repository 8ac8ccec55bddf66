"""Corruption is detected by hash and costs only the damaged chunks (issue 5).

On disk: the agent is killed (-9) mid-transfer, a byte of an already
journaled chunk of its staged file is flipped, the agent restarts; the
package completes byte-identical and the bytes sent again are at most the
in-flight window plus the damaged chunk.

In transit: TLS turns real in-transit corruption into a connection error,
so the agent's own hash check is exercised with agent_client.py sending a
chunk with a flipped byte: the agent answers Need{index} and does not
acknowledge it; the good copy is then acknowledged and published."""

import glob
import os
import random
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agent_client  # noqa: E402
import harness  # noqa: E402
import results  # noqa: E402
from harness import Cluster, MiB, target  # noqa: E402

import grpc  # noqa: E402

SIZE = 16 * MiB
RATE = 8 * MiB
WINDOW = 2 * MiB
CHUNK = MiB               # the unit the byte to flip is chosen in
MIN_CHUNK = 8 * 1024      # kDefaultChunking (shared/fastcdc.h): content-defined chunks
MAX_CHUNK = 128 * 1024    # of 8 to 128 KiB
TIMEOUT = 60


class CorruptionTest(unittest.TestCase):

    def test_byte_flipped_in_staged_file_while_agent_is_down_costs_only_that_chunk(self):
        # kill -9, flip one byte of a journaled chunk, restart: identical, re-sent <= window + chunk.
        seed = int(os.environ.get("PKGDIST_TEST_SEED", time.time_ns() % (1 << 32)))
        rng = random.Random(seed)
        print(f"seed {seed} (set PKGDIST_TEST_SEED to repeat)")
        with Cluster(agents=["dp1"]) as c:
            c.start_controller(max_bytes_per_second=RATE, window_bytes=WINDOW,
                               max_backoff_seconds=1)
            c.start_agent("dp1")
            c.add_agent("dp1")
            path = harness.make_file_package(os.path.join(c.dir, "src"), "big.bin", SIZE, seed)
            c.import_package(path, "big", "1.0")
            job = c.distribute("big@1.0", ["dp1"])
            status = c.wait_job(job, lambda j: int(target(j, "dp1")["bytes_acked"]) >= SIZE // 3,
                                TIMEOUT, "a third of the package acknowledged")
            c.kill(c.agents["dp1"].proc, signal.SIGKILL)
            acked = int(target(status, "dp1")["bytes_acked"])

            staged = glob.glob(os.path.join(c.agents["dp1"].root, "staging", "*", "tree",
                                            "big.bin"))
            self.assertEqual(len(staged), 1, f"one staged file expected: {staged}")
            # Acknowledged chunks are journaled; flip a byte inside one of them.
            damaged_chunk = rng.randrange(0, max(1, acked // CHUNK - 1))
            offset = damaged_chunk * CHUNK + rng.randrange(CHUNK)
            with open(staged[0], "r+b") as f:
                f.seek(offset)
                byte = f.read(1)
                f.seek(offset)
                f.write(bytes([byte[0] ^ 0x40]))
            print(f"killed at bytes_acked {acked}; flipped the byte at {offset} "
                  f"(chunk {damaged_chunk})")

            c.restart_agent("dp1")
            status = c.wait_job(job, lambda j: j["state"] == "complete", TIMEOUT,
                                "the job completes after the restart")
            t = target(status, "dp1")
            sent = int(t["bytes_sent"])
            resent = sent - SIZE
            print(f"complete: bytes_sent {sent}, re-sent {resent} "
                  f"(bound: window {WINDOW} + one chunk of at most {MAX_CHUNK})")
            harness.assert_trees_identical(os.path.dirname(path),
                                           c.published("dp1", "big", "1.0"))
            with open(c.log_of("agent-dp1"), encoding="utf-8", errors="replace") as f:
                self.assertIn("1 journaled chunks no longer match on disk", f.read())
            self.assertGreaterEqual(resent, MIN_CHUNK, "the damaged chunk was not sent again")
            self.assertLessEqual(resent, WINDOW + MAX_CHUNK,
                                 "more than the window and the damaged chunk were sent again")
            results.record("byte flipped in a staged file while the agent was down (kill -9)",
                           "detected by hash on restart, complete, bytes identical, only the "
                           "damaged chunk and the in-flight window re-sent",
                           resent_bytes=resent, window_bytes=WINDOW, chunk_bytes=MAX_CHUNK)

    def test_chunk_corrupted_in_transit_is_re_requested_and_never_acknowledged(self):
        # A chunk with one flipped byte gets Need{index}, no Ack; the good copy is acked, published.
        with Cluster(agents=["dp1"]) as c:
            c.start_agent("dp1")
            client = agent_client.AgentClient(c.agents["dp1"].address,
                                              os.path.join(c.certs, "ca.pem"),
                                              c.cert("controller"), c.key("controller"))
            self.addCleanup(client.close)
            files = {"f.bin": random.Random(3).randbytes(3 * MiB + 17)}
            m = agent_client.make_manifest("transit", "1.0", files)
            tried = 0
            with client.transfer() as t:
                t.send_offer(m, window_bytes=2 * MiB)
                self.assertEqual(list(t.recv().need.indices), [0, 1, 2, 3])
                for index in (1, 3):
                    bad = bytearray(agent_client.chunk_bytes(m, files, index))
                    bad[random.Random(index).randrange(len(bad))] ^= 0x01
                    t.send_chunk(index, bytes(bad))
                    tried += 1
                    resp = t.recv()
                    self.assertTrue(resp.HasField("need"), f"expected Need, got {resp}")
                    self.assertEqual(list(resp.need.indices), [index])
                acked = set()
                for index in range(4):
                    t.send_chunk(index, agent_client.chunk_bytes(m, files, index))
                while acked != {0, 1, 2, 3}:
                    resp = t.recv()
                    self.assertTrue(resp.HasField("ack"), f"expected Ack, got {resp}")
                    acked.update(resp.ack.indices)
                t.send_commit()
                self.assertTrue(t.recv().HasField("published"))
                code, details = t.status()
            self.assertEqual(code, grpc.StatusCode.OK, details)
            with open(os.path.join(c.published("dp1", "transit", "1.0"), "f.bin"), "rb") as f:
                self.assertEqual(f.read(), files["f.bin"])
            results.record("chunk with a flipped byte sent to the agent (in transit)",
                           "Need{index} re-request, no Ack; good copy acked, published identical",
                           tried=tried)


if __name__ == "__main__":
    unittest.main()
