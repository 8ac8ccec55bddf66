"""An upload that never finishes leaves nothing behind (issue 4): pkgdistctl
killed half-way through a 200 MiB import, or a Python client whose stream
ends without the end message. No package appears, STATE_DIR/uploads/ is
emptied, and the next upload of the same package succeeds and distributes."""

import os
import signal
import unittest

import grpc

import api_client
import harness
from harness import Cluster, MiB, wait_for

BIG = 200 * MiB
# Kill the client once the controller holds this much of the upload.
KILL_AFTER = 24 * MiB
TIMEOUT = 60


def bytes_under(path):
    """Total size of the regular files under `path` (0 if it is missing)."""
    total = 0
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except FileNotFoundError:
                pass  # removed while we looked
    return total


def entries_under(path):
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return None


class UploadInterruptedTest(unittest.TestCase):

    def uploads_dir(self, c):
        return os.path.join(c.dir, "controller-state", "uploads")

    def package_names(self, c):
        return [f"{p['name']}@{p['version']}" for p in c.ctl("package", "list")["packages"]]

    def test_killed_cli_upload_leaves_nothing_and_the_next_upload_succeeds(self):
        # kill -9 of pkgdistctl mid-import: no package, uploads/ emptied, re-import and distribution work.
        with Cluster(agents=["up1"]) as c:
            c.start_controller()
            c.start_agent("up1")
            c.add_agent("up1")
            src_dir = os.path.join(c.dir, "src")
            path = harness.make_file_package(src_dir, "big.bin", BIG, seed=4)
            uploads = self.uploads_dir(c)

            argv = [harness.binary("pkgdistctl"), "--controller", c.controller_address,
                    *c.tls_flags("admin"), "--output", "json", "package", "import", path,
                    "--name", "big", "--version", "1"]
            ctl = harness.Proc("import", argv, os.path.join(c.dir, "logs", "import.log"))
            c.procs.append(ctl)  # stopped at teardown whatever happens

            def held():
                if not ctl.alive():
                    raise AssertionError(f"pkgdistctl {ctl.describe_exit()} before it could be "
                                         f"killed half-way; its output: {ctl.tail()}")
                return bytes_under(uploads)

            have = wait_for(held, lambda n: n >= KILL_AFTER, timeout=TIMEOUT, interval=0.01,
                            what=f"the controller to hold {KILL_AFTER} bytes of the upload")
            c.kill(ctl, signal.SIGKILL)
            print(f"killed pkgdistctl with {have} of {BIG} bytes at the controller")
            self.assertLess(have, BIG)

            wait_for(lambda: entries_under(uploads), lambda e: e == [], timeout=20,
                     what=f"{uploads} to be emptied after the client died")
            self.assertNotIn("big@1", self.package_names(c))
            rc, _, err = c.ctl_raw("package", "show", "big@1")
            self.assertEqual(rc, 1, err)
            self.assertIn("NOT_FOUND", err)

            info = c.import_package(path, "big", "1")
            self.assertEqual((info["size"], info["files"]), (BIG, 1))
            self.assertIn("big@1", self.package_names(c))
            self.assertEqual(entries_under(uploads), [], "the finished upload left files behind")
            job = c.distribute("big@1", ["up1"])
            c.wait_job(job, lambda j: j["state"] == "complete", TIMEOUT, "big@1 reaches up1")
            harness.assert_trees_identical(src_dir, c.published("up1", "big", "1"))

    def test_python_upload_without_end_message_is_refused_and_leaves_nothing(self):
        # A stream that stops after some data but before ImportEnd is an error and keeps nothing.
        stubs = api_client.Stubs()
        self.addCleanup(stubs.close)
        with Cluster() as c:
            c.start_controller()
            pb = stubs.pb
            content = os.urandom(3 * MiB)
            entries = [("lib", "dir", 0o755, None), ("lib/a.bin", "file", 0o644, content),
                       ("b.txt", "file", 0o644, b"hello\n")]
            with api_client.admin_channel(c) as chan:
                admin = stubs.admin(chan)
                with self.assertRaises(grpc.RpcError) as cm:
                    admin.ImportPackage(api_client.upload_requests(pb, "noend", "1", entries,
                                                                   end=False),
                                        timeout=api_client.CALL_TIMEOUT)
                print(f"upload without end: {cm.exception.code()}: {cm.exception.details()}")
                self.assertNotEqual(cm.exception.code(), grpc.StatusCode.OK)

                # Ended half-way through a file's content, too.
                def cut():
                    for i, req in enumerate(api_client.upload_requests(pb, "noend", "1", entries)):
                        if i == 4:  # header, dir, file entry, one data piece
                            return
                        yield req

                with self.assertRaises(grpc.RpcError):
                    admin.ImportPackage(cut(), timeout=api_client.CALL_TIMEOUT)

                wait_for(lambda: entries_under(self.uploads_dir(c)), lambda e: e == [],
                         timeout=10, what="uploads/ to be emptied")
                listed = admin.ListPackages(pb.ListPackagesRequest(),
                                            timeout=api_client.CALL_TIMEOUT)
                self.assertEqual(list(listed.packages), [])
                with self.assertRaises(grpc.RpcError) as cm:
                    admin.GetPackage(pb.GetPackageRequest(package="noend@1"),
                                     timeout=api_client.CALL_TIMEOUT)
                self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)

                pkg = admin.ImportPackage(api_client.upload_requests(pb, "noend", "1", entries),
                                          timeout=api_client.CALL_TIMEOUT)
                self.assertEqual((pkg.name, pkg.version, pkg.size),
                                 ("noend", "1", len(content) + 6))
                self.assertEqual(entries_under(self.uploads_dir(c)), [])


if __name__ == "__main__":
    unittest.main()
