"""A client in another language (issue 4): Python with Debian's python3-grpcio
and stubs generated from protos/ at test time (api_client.Stubs) drives the
Admin API over mutual TLS without any of our C++ code: it registers agents,
imports a package by streaming upload, distributes it and follows it with
WatchJob to completion. The controller's reflection and health services
answer generic clients, and a non-admin certificate is refused."""

import os
import unittest

import grpc

import api_client
import harness
from harness import Cluster, MiB

AGENTS = ["py1", "py2"]
TIMEOUT = 30
TARGET_STATES = {"pending", "transferring", "retry_wait", "done"}


def tree_upload_entries(root):
    """(path, type, mode, content) for everything under `root`, parents
    before children, as api_client.upload_requests takes them."""
    entries = []
    for rel, (kind, mode, _, _) in sorted(harness.tree_entries(root).items()):
        full = os.path.join(root, rel)
        if kind == "dir":
            entries.append((rel, "dir", int(mode, 8), None))
        elif kind == "symlink":
            entries.append((rel, "symlink", 0o777, os.readlink(full)))
        else:
            with open(full, "rb") as f:
                entries.append((rel, "file", int(mode, 8), f.read()))
    return entries


class PythonApiClientTest(unittest.TestCase):
    c = None
    stubs = None

    @classmethod
    def setUpClass(cls):
        cls.stubs = api_client.Stubs()
        cls.c = Cluster(agents=AGENTS).__enter__()
        try:
            cls.c.start_controller()
            for name in AGENTS:
                cls.c.start_agent(name)
        except BaseException as e:
            cls.c.__exit__(type(e), e, None)
            cls.stubs.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.c.__exit__(None, None, None)
        cls.stubs.close()

    def setUp(self):
        self.channel = api_client.admin_channel(self.c)
        self.addCleanup(self.channel.close)
        self.admin = self.stubs.admin(self.channel)
        self.pb = self.stubs.pb

    def assert_rpc_error(self, code, call, *words):
        """call() raises grpc.RpcError with `code` and every word in its details."""
        with self.assertRaises(grpc.RpcError) as cm:
            call()
        self.assertEqual(cm.exception.code(), code, cm.exception.details())
        for w in words:
            self.assertIn(w, cm.exception.details())

    def test_register_upload_distribute_and_watch_to_completion(self):
        # The whole integration path of another service, ending in byte-identical copies.
        pb, admin, t = self.pb, self.admin, api_client.CALL_TIMEOUT
        for name in AGENTS:
            info = admin.AddAgent(pb.AddAgentRequest(name=name,
                                                     address=self.c.agents[name].address),
                                  timeout=t)
            self.assertEqual((info.name, info.address), (name, self.c.agents[name].address))
        listed = admin.ListAgents(pb.ListAgentsRequest(), timeout=t)
        self.assertEqual(sorted(a.name for a in listed.agents), AGENTS)

        src = harness.make_tree(os.path.join(self.c.dir, "src"), seed=7, big_file_bytes=3 * MiB)
        entries = tree_upload_entries(src)
        pkg = admin.ImportPackage(api_client.upload_requests(pb, "pyapp", "1.0", entries),
                                  timeout=60)
        self.assertEqual((pkg.name, pkg.version), ("pyapp", "1.0"))
        self.assertRegex(pkg.id, r"^[0-9a-f]{64}$")
        self.assertEqual(pkg.size, sum(len(e[3]) for e in entries if e[1] == "file"))
        self.assertGreaterEqual(pkg.chunks, 4)
        self.assertEqual(admin.GetPackage(pb.GetPackageRequest(package="pyapp@1.0"), timeout=t),
                         pkg)
        again = admin.ImportPackage(api_client.upload_requests(pb, "pyapp", "1.0", entries),
                                    timeout=60)
        self.assertEqual(again.id, pkg.id, "identical content imported again is the same package")

        job = admin.Distribute(pb.DistributeRequest(package="pyapp@1.0", agents=AGENTS), timeout=t)
        self.assertEqual((job.kind, job.package), ("distribute", "pyapp@1.0"))
        self.assertEqual(sorted(x.agent for x in job.targets), AGENTS)

        seen = list(admin.WatchJob(pb.GetJobRequest(id=job.id), timeout=TIMEOUT))
        self.assertTrue(seen, "WatchJob sent nothing")
        print(f"WatchJob sent {len(seen)} statuses: {[s.state for s in seen]}")
        self.assertEqual(seen[-1].state, "complete", seen[-1])
        self.assertNotIn("complete", [s.state for s in seen[:-1]],
                         "the watch went on after the final state")
        acked = {name: 0 for name in AGENTS}
        for status in seen:
            self.assertEqual(status.id, job.id)
            self.assertIn(status.state, {"pending", "in_progress", "complete"}, status)
            for target in status.targets:
                self.assertIn(target.state, TARGET_STATES, target)
                self.assertEqual(target.bytes_total, pkg.size, target)
                self.assertGreaterEqual(target.bytes_acked, acked[target.agent],
                                        f"acknowledged bytes went back: {target}")
                acked[target.agent] = target.bytes_acked
        for target in seen[-1].targets:
            self.assertEqual((target.state, target.bytes_acked), ("done", pkg.size), target)
        self.assertEqual(admin.GetJob(pb.GetJobRequest(id=job.id), timeout=t).state, "complete")
        listed = admin.ListJobs(pb.ListJobsRequest(agent="py1", state="complete"), timeout=t)
        self.assertIn(job.id, [j.id for j in listed.jobs])
        for name in AGENTS:
            harness.assert_trees_identical(src, self.c.published(name, "pyapp", "1.0"))

        detail = admin.GetAgent(pb.GetAgentRequest(name="py1"), timeout=t)
        self.assertEqual(detail.inventory_error, "")
        self.assertIn(("pyapp", "1.0"),
                      [(p.name, p.version) for p in detail.inventory.published])

    def test_errors_are_status_codes_naming_the_problem(self):
        # NOT_FOUND, INVALID_ARGUMENT naming the field and ALREADY_EXISTS reach a Python client as codes.
        pb, admin, t = self.pb, self.admin, api_client.CALL_TIMEOUT
        self.assert_rpc_error(grpc.StatusCode.NOT_FOUND,
                              lambda: admin.GetPackage(pb.GetPackageRequest(package="no@1"),
                                                       timeout=t))
        self.assert_rpc_error(grpc.StatusCode.NOT_FOUND,
                              lambda: admin.GetJob(pb.GetJobRequest(id="nosuchjob"), timeout=t))
        self.assert_rpc_error(grpc.StatusCode.NOT_FOUND,
                              lambda: admin.GetAgent(pb.GetAgentRequest(name="nosuch"), timeout=t))
        self.assert_rpc_error(grpc.StatusCode.INVALID_ARGUMENT,
                              lambda: admin.AddAgent(pb.AddAgentRequest(name="bad/name",
                                                                        address="127.0.0.1:1"),
                                                     timeout=t), "name")
        self.assert_rpc_error(grpc.StatusCode.INVALID_ARGUMENT,
                              lambda: admin.Distribute(pb.DistributeRequest(package="no-at-sign"),
                                                       timeout=t), "package")
        entries = [("a.txt", "file", 0o644, b"first content\n")]
        admin.ImportPackage(api_client.upload_requests(pb, "dup", "1", entries), timeout=t)
        other = [("a.txt", "file", 0o644, b"other content\n")]
        self.assert_rpc_error(grpc.StatusCode.ALREADY_EXISTS,
                              lambda: admin.ImportPackage(
                                  api_client.upload_requests(pb, "dup", "1", other), timeout=t),
                              "dup@1")
        self.assert_rpc_error(grpc.StatusCode.INVALID_ARGUMENT,
                              lambda: admin.ImportPackage(api_client.upload_requests(
                                  pb, "evil", "1", [("../escape", "file", 0o644, b"x")]),
                                  timeout=t))

    def test_reflection_lists_the_admin_service_and_health_answers_serving(self):
        # A generic client discovers pkgdist.v1.Admin by reflection, and the health check says SERVING.
        services = api_client.list_services(self.channel)
        print(f"reflection lists: {services}")
        self.assertIn("pkgdist.v1.Admin", services)
        self.assertIn("grpc.health.v1.Health", services)
        self.assertEqual(api_client.health_status(self.channel), api_client.HEALTH_SERVING)

    def test_agent_certificate_is_permission_denied(self):
        # An agent's certificate is not an admin identity: every Admin call is PERMISSION_DENIED.
        with api_client.channel(self.c, "py1") as chan:
            admin = self.stubs.admin(chan)
            self.assert_rpc_error(grpc.StatusCode.PERMISSION_DENIED,
                                  lambda: admin.ListAgents(self.pb.ListAgentsRequest(),
                                                           timeout=api_client.CALL_TIMEOUT))
            self.assert_rpc_error(grpc.StatusCode.PERMISSION_DENIED,
                                  lambda: admin.AddAgent(self.pb.AddAgentRequest(
                                      name="intruder", address="127.0.0.1:1"),
                                      timeout=api_client.CALL_TIMEOUT))
        names = [a.name for a in self.admin.ListAgents(self.pb.ListAgentsRequest(),
                                                       timeout=api_client.CALL_TIMEOUT).agents]
        self.assertNotIn("intruder", names)


if __name__ == "__main__":
    unittest.main()
