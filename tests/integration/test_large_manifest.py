"""A package whose manifest exceeds the default message bound (issue 13
item 3): the controller offers it in ManifestParts and the agent
reassembles it, with the default --max-message-bytes (3 MiB) on both sides;
the next version reaches the agent that holds this one as a manifest delta.

Size: a file costs the manifest a FileEntry (its path, a 32-byte sha256
and about 15 bytes of fields) and a ChunkRef (about 42 bytes) per chunk.
10,000 files of a few bytes with 322-byte paths in 10 x 10 directories make
a manifest of about 4 MiB: over the 3 MiB bound with room to spare. Long
paths rather than more files, because the controller's import holds a file
descriptor per file its writer thread has not fsynced yet, and 40,000 tiny
files ran it out of descriptors (EMFILE at 20,000) before the transfer
began; and fewer files also keep the per-file fsyncs of the import and the
agent's seal to a few seconds each."""

import os
import re
import time
import unittest

import harness
from harness import Cluster, MiB, target

TOP_DIRS, SUB_DIRS, PER_DIR = 10, 10, 100
FILES = TOP_DIRS * SUB_DIRS * PER_DIR
DIR_NAME = "d{:02d}-" + "y" * 56  # 60 characters
FILE_NAME = "f-{:06d}-" + "x" * 187 + ".txt"  # 200 characters
PATH_BYTES = 2 * (len(DIR_NAME.format(0)) + 1) + len(FILE_NAME.format(0))
DEFAULT_MAX_MESSAGE_BYTES = 3 * MiB  # kMaxMessageBytes, shared/grpc_options.h
TIMEOUT = 90


def make_many_files(root):
    """FILES files of a few distinct bytes each with PATH_BYTES-long paths,
    PER_DIR in each of TOP_DIRS x SUB_DIRS directories; returns root."""
    n = 0
    for a in range(TOP_DIRS):
        for b in range(SUB_DIRS):
            d = os.path.join(root, DIR_NAME.format(a), DIR_NAME.format(b))
            os.makedirs(d)
            for _ in range(PER_DIR):
                with open(os.path.join(d, FILE_NAME.format(n)), "w") as f:
                    f.write(f"{n}\n")
                n += 1
    for d, _, _ in os.walk(root):
        os.chmod(d, 0o755)
    return root


class LargeManifestTest(unittest.TestCase):

    def test_a_manifest_over_the_message_bound_is_distributed_with_default_settings(self):
        # 10,000 small files, 4 MiB of manifest: the job completes, the tree is byte-identical.
        with Cluster(agents=["dp1"]) as c:
            c.start_controller()
            c.start_agent("dp1")
            c.add_agent("dp1")
            src = make_many_files(os.path.join(c.dir, "src"))
            started = time.monotonic()
            info = c.import_package(src, "many", "1.0")
            imported = time.monotonic() - started
            files, chunks = int(info["files"]), int(info["chunks"])
            self.assertEqual(files, FILES + TOP_DIRS * (SUB_DIRS + 1))
            self.assertEqual(chunks, FILES)
            # A lower bound of the serialized manifest: a ChunkRef has a
            # 32-byte sha256 and 4 bytes of tags and lengths at least, a
            # FileEntry a 32-byte sha256, its path and 8 bytes of tags,
            # type, mode and size.
            lower_bound = chunks * 36 + FILES * (32 + PATH_BYTES + 8)
            self.assertGreater(lower_bound, DEFAULT_MAX_MESSAGE_BYTES)

            started = time.monotonic()
            job = c.distribute("many@1.0", ["dp1"])
            status = c.wait_job(job, lambda j: j["state"] == "complete", TIMEOUT,
                                f"the package of {FILES} files is published")
            distributed = time.monotonic() - started
            t = target(status, "dp1")
            self.assertEqual(t["state"], "done")
            self.assertEqual(int(t["bytes_acked"]), int(t["bytes_total"]))
            harness.assert_trees_identical(src, c.published("dp1", "many", "1.0"))
            # The agent keeps the manifest it assembled: its exact size.
            manifest = os.path.join(c.agents["dp1"].root, "manifests", f"{info['id']}.pb")
            size = os.path.getsize(manifest)
            self.assertGreater(size, DEFAULT_MAX_MESSAGE_BYTES)
            print(f"{files} entries, {chunks} chunks: manifest of {size} bytes "
                  f"({size / MiB:.2f} MiB); import {imported:.1f}s, "
                  f"distribution {distributed:.1f}s")

            # Version 2.0, one file changed: dp1 holds 1.0's manifest and
            # receives 2.0's as a delta of it, not 4 MiB again.
            with open(os.path.join(src, DIR_NAME.format(3), DIR_NAME.format(4),
                                   FILE_NAME.format(345)), "w") as f:
                f.write("changed\n")
            c.import_package(src, "many", "2.0")
            job = c.distribute("many@2.0", ["dp1"])
            c.wait_job(job, lambda j: j["state"] == "complete", TIMEOUT,
                       "version 2.0 is published")
            harness.assert_trees_identical(src, c.published("dp1", "many", "2.0"))
            with open(c.log_of("agent-dp1")) as f:
                found = re.search(r"manifest of many@2\.0: a delta of many@1\.0 "
                                  r"\([0-9a-f]{64}\), (\d+) bytes in (\d+) parts", f.read())
            self.assertIsNotNone(found, "the agent did not receive 2.0's manifest as a delta")
            delta_bytes = int(found.group(1))
            print(f"version 2.0: manifest delta of {delta_bytes} bytes in "
                  f"{found.group(2)} parts, for a manifest of {size} bytes")
            self.assertLess(delta_bytes * 100, size)


if __name__ == "__main__":
    unittest.main()
