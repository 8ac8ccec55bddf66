"""The audit trail and the event stream, end to end (issue 15).

Audit: every mutating call by two admins (alice, bob) leaves exactly one
record naming its caller, a call refused with an agent's certificate and a
failing call leave theirs, the records survive kill -9 of the controller,
`audit list --who/--since` filter, and pages of two list every record once.

Events: a follower leaves mid-job and comes back with its last sequence
number, a `pkgdistctl events --follow` follower rides through a kill -9 and
restart of the controller; together they see every change exactly once, in
order, ending in the states GetJob reports. A follower behind the kept
history gets OUT_OF_RANGE, and SIGTERM ends the controller promptly while a
follower is connected."""

import json
import os
import signal
import socket
import subprocess
import time
import unittest


import api_client
import harness
from harness import Cluster, MiB, wait_for

TIMEOUT = 40
# Transfers paced to take a few seconds, so that there is a "mid-job", with a
# window of one chunk, so that the agent acknowledges every chunk.
RATE = 2 * MiB
WINDOW = MiB
PACKAGE_BYTES = 6 * MiB


class FixedPortCluster(Cluster):
    """A Cluster whose controller listens on the same port at every start,
    so that a follower (which knows one address) can reconnect to it."""

    def start_controller(self, extra=(), **opts):
        if not self.controller_port:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", 0))
                self.controller_port = s.getsockname()[1]
        self._controller_opts = dict(opts, extra=list(extra))
        port_file = os.path.join(self.dir, "controller.port")
        argv = [harness.binary("pkgdist-controller"), "--listen",
                f"127.0.0.1:{self.controller_port}", "--port-file", port_file,
                "--state-dir", self.controller_state_dir, *self.tls_flags("controller")]
        for k, v in opts.items():
            argv += ["--" + k.replace("_", "-"), str(v)]
        self.controller, _ = self._start("controller", argv + list(extra), port_file)
        return self.controller


def make_admin_certs(c, *names):
    for name in names:
        r = subprocess.run(["bash", harness.GEN_CERTS, "--trust-domain", c.trust_domain,
                            "--admin", name, c.certs], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise AssertionError(f"gen-dev-certs.sh --admin {name} failed: {r.stderr.strip()}")


def audit(c, *args):
    return c.ctl("audit", "list", *args)["records"]


def start_follower(c, name, *args):
    """`pkgdistctl events --output json ARGS` as a process of the cluster;
    its stdout and stderr go to its log."""
    argv = [harness.binary("pkgdistctl"), "--controller", c.controller_address,
            *c.tls_flags("admin"), "--output", "json", "events", *map(str, args)]
    proc = harness.Proc(name, argv, c.log_of(name))
    c.procs.append(proc)
    return proc


def follower_events(proc):
    """The events a follower printed so far (its JSON lines)."""
    with open(proc.log_path, encoding="utf-8", errors="replace") as f:
        return [json.loads(line) for line in f if line.startswith("{")]


def event_dict(e):
    """A WatchEvents message as the CLI prints it (the fields the test reads)."""
    d = {"sequence": e.sequence, "kind": e.kind, "job_id": e.job_id, "agent": e.agent,
         "state": e.state, "target": None}
    if e.HasField("target"):
        d["target"] = {"state": e.target.state, "attempts": e.target.attempts,
                       "last_error": e.target.last_error}
    return d


class AuditTrailTest(unittest.TestCase):

    def test_every_mutating_call_is_recorded_once_with_its_caller_and_survives_kill9(self):
        # Thirteen calls by alice, bob and an agent: thirteen records, in order.
        with Cluster(agents=["dp1", "dp2"]) as c:
            make_admin_certs(c, "alice", "bob")
            c.start_controller()
            for name in ("dp1", "dp2"):
                c.start_agent(name)
            src = harness.make_tree(os.path.join(c.dir, "src"), seed=3, big_file_bytes=64 << 10)
            key = os.path.join(c.dir, "keys", "release")
            os.makedirs(os.path.dirname(key))
            rc, _, err = c.ctl_raw("key", "generate", key)
            self.assertEqual(rc, 0, err)
            addr = {n: c.agents[n].address for n in ("dp1", "dp2")}

            def ok(who, *args):
                return c.ctl(*args, cert=who, timeout=60)

            def fails(who, *args):
                rc, out, err = c.ctl_raw(*args, cert=who)
                self.assertEqual(rc, 1, f"pkgdistctl {args} as {who}: {out} {err}")
                return err

            ok("alice", "agent", "add", "dp1", addr["dp1"])
            ok("bob", "agent", "add", "dp2", addr["dp2"])
            ok("alice", "package", "import", src, "--name", "app", "--version", "1.0")
            ok("bob", "package", "sign", "app@1.0", "--key", key + ".key", "--source", src)
            job = ok("alice", "distribute", "app@1.0", "--to", "dp1,dp2", "--wait")["id"]
            self.assertIn("NOT_FOUND", fails("bob", "distribute", "nope@1.0", "--to", "dp1"))
            self.assertIn("PERMISSION_DENIED",
                          fails("dp1", "distribute", "app@1.0", "--to", "dp1"))
            ok("alice", "job", "retry", job)
            removal = ok("bob", "package", "remove-from", "app@1.0", "--from", "dp2", "--wait")
            ok("alice", "job", "cancel", removal["id"])
            ok("bob", "job", "delete", job)
            ok("alice", "agent", "remove", "dp2")
            ok("bob", "package", "delete", "app@1.0", "--force")
            expected = [
                ("admin/alice", "AddAgent", "OK"), ("admin/bob", "AddAgent", "OK"),
                ("admin/alice", "ImportPackage", "OK"), ("admin/bob", "SignPackage", "OK"),
                ("admin/alice", "Distribute", "OK"), ("admin/bob", "Distribute", "NOT_FOUND"),
                ("agent/dp1", "Distribute", "PERMISSION_DENIED"),
                ("admin/alice", "RetryJob", "OK"), ("admin/bob", "RemoveFromAgents", "OK"),
                ("admin/alice", "CancelJob", "OK"), ("admin/bob", "DeleteJob", "OK"),
                ("admin/alice", "RemoveAgent", "OK"), ("admin/bob", "DeletePackage", "OK")]

            records = audit(c)
            got = [(r["identity"].split("/", 3)[3], r["method"], r["code"]) for r in records]
            self.assertEqual(got, expected)
            for r in records:
                self.assertTrue(r["identity"].startswith(f"spiffe://{c.trust_domain}/"), r)
                self.assertIn("127.0.0.1", r["peer"], r)
            self.assertEqual(records[0]["request"], f"agent=dp1 address={addr['dp1']}")
            self.assertIn(f"job {job} created", records[4]["message"])
            self.assertEqual(records[5]["message"], "package nope@1.0 is not imported")
            self.assertIn("may not call this service", records[6]["message"])
            self.assertEqual(records[10]["request"], f"job={job}")

            # kill -9: every record was committed with its call.
            c.kill(c.controller)
            c.restart_controller()
            self.assertEqual(audit(c), records)

            self.assertEqual([r["method"] for r in audit(c, "--who", "bob")],
                             [m for who, m, _ in expected if who == "admin/bob"])
            self.assertEqual([r["code"] for r in audit(c, "--who", "agent/dp1")],
                             ["PERMISSION_DENIED"])
            since = records[7]["time"]
            self.assertEqual(audit(c, "--since", since),
                             [r for r in records if r["time"] >= since])
            self.assertEqual(audit(c, "--since", "1h"), records)
            self.assertEqual(audit(c, "--since", "2099-01-01T00:00:00Z"), [])
            rc, table, _ = c.ctl_raw("audit", "list", "--who", "alice", output="table")
            self.assertEqual(rc, 0)
            lines = table.splitlines()
            self.assertTrue(lines[0].startswith("TIME") and "WHO" in lines[0], table)
            self.assertEqual(len(lines), 1 + [who for who, _, _ in expected].count("admin/alice"),
                             table)
            self.assertTrue(all("admin/alice" in line for line in lines[1:]), table)

            # Pages of two through the API: every record once, in order.
            stubs = api_client.Stubs()
            try:
                with api_client.admin_channel(c) as chan:
                    admin = stubs.admin(chan)
                    seqs, token, pages = [], "", 0
                    while True:
                        page = admin.ListAudit(stubs.pb.ListAuditRequest(page_size=2,
                                                                         page_token=token),
                                               timeout=api_client.CALL_TIMEOUT)
                        self.assertLessEqual(len(page.records), 2)
                        seqs += [r.sequence for r in page.records]
                        pages += 1
                        token = page.next_page_token
                        if not token:
                            break
            finally:
                stubs.close()
            self.assertEqual(seqs, [r["sequence"] for r in records])
            self.assertEqual(pages, 7)


class EventStreamTest(unittest.TestCase):

    def test_followers_see_every_change_once_across_a_disconnect_and_a_restart(self):
        # Follower A leaves mid-job; B (pkgdistctl events --follow) picks up at
        # A's last sequence and survives kill -9 + restart of the controller.
        with FixedPortCluster(agents=["dp1", "dp2"]) as c:
            c.start_controller(max_bytes_per_second=RATE, window_bytes=WINDOW)
            for name in ("dp1", "dp2"):
                c.start_agent(name)
                c.add_agent(name)
            path = harness.make_file_package(os.path.join(c.dir, "pkg"), "payload.bin",
                                             PACKAGE_BYTES, seed=5)
            c.import_package(path, "big", "1.0")
            stubs = api_client.Stubs()
            try:
                with api_client.admin_channel(c) as chan:
                    admin = stubs.admin(chan)
                    stream = admin.WatchEvents(stubs.pb.WatchEventsRequest(from_now=True),
                                               timeout=TIMEOUT)
                    first = next(stream)
                    self.assertEqual(first.kind, "caught_up")
                    job = c.distribute("big@1.0", ["dp1", "dp2"])
                    a_events, started = [], set()
                    for e in stream:
                        a_events.append(event_dict(e))
                        if e.kind == "target_changed" and e.state == "transferring":
                            started.add(e.agent)
                        if started == {"dp1", "dp2"}:
                            break
                    stream.cancel()
            finally:
                stubs.close()
            self.assertEqual(started, {"dp1", "dp2"}, "follower A's stream ended early")
            last_a = a_events[-1]["sequence"]

            follower = start_follower(c, "follower-b", "--follow", "--after", last_a)
            c.wait_job(job, lambda j: any(t["state"] == "transferring" and
                                          0 < t["bytes_acked"] < t["bytes_total"]
                                          for t in j["targets"]),
                       TIMEOUT, "a transfer is part-way", interval=0.05)
            c.kill(c.controller)
            c.restart_controller()
            final = c.wait_job(job, lambda j: j["state"] == "complete", TIMEOUT, "job completes")
            b_events = wait_for(lambda: follower_events(follower),
                                lambda evs: any(e["kind"] == "job_finished" and
                                                e["job_id"] == job for e in evs),
                                timeout=TIMEOUT, what="follower B to see the job finish")
            self.assertTrue(follower.alive(), follower.tail())
            self.assertIn("reconnecting after sequence", follower.tail())
            c.kill(follower, signal.SIGTERM)

            events = a_events + b_events
            seqs = [e["sequence"] for e in events]
            print(f"{len(a_events)} events before the disconnect, {len(b_events)} after "
                  f"(sequences {seqs[0]}..{seqs[-1]})")
            self.assertEqual(seqs, list(range(first.sequence + 1, seqs[-1] + 1)),
                             "every event exactly once, in order")
            last_state = {}
            for e in events:
                if e["kind"] == "target_changed" and e["job_id"] == job:
                    last_state[e["agent"]] = e["target"]
            for t in final["targets"]:
                got = last_state[t["agent"]]
                self.assertEqual((got["state"], got["attempts"], got["last_error"]),
                                 (t["state"], t["attempts"], t["last_error"]), t["agent"])
            kinds = [(e["kind"], e["state"]) for e in events if e["job_id"] == job]
            self.assertIn(("job_created", "pending"), kinds)
            self.assertIn(("target_changed", "retry_wait"), kinds,
                          "the restart's recovery of interrupted transfers is an event")
            self.assertEqual(kinds[-1], ("job_finished", "complete"))

    def test_sigterm_ends_followers_promptly_and_a_follower_behind_the_history_is_told(self):
        # A connected follower does not hold up SIGTERM; with --event-history 5
        # an older sequence is OUT_OF_RANGE saying what to do.
        with FixedPortCluster(agents=[]) as c:
            c.start_controller()
            for i in range(10):
                c.ctl("agent", "add", f"node-{i}", f"127.0.0.1:{20000 + i}")
            newest = c.ctl("events")[-1]["sequence"]
            follower = start_follower(c, "follower", "--follow", "--after", newest)
            c.ctl("agent", "add", "late", "127.0.0.1:30000")
            wait_for(lambda: follower_events(follower),
                     lambda evs: any(e["agent"] == "late" for e in evs),
                     timeout=TIMEOUT, what="the follower to print the new agent")
            began = time.monotonic()
            c.kill(c.controller, signal.SIGTERM)
            took = time.monotonic() - began
            print(f"SIGTERM with a follower connected: exited in {took:.2f}s")
            self.assertEqual(c.controller.returncode(), 0)
            self.assertLess(took, 4.0, "the controller waited for the event stream")
            wait_for(lambda: follower.tail(), lambda t: "shutting down" in t,
                     timeout=TIMEOUT, what="the follower to say the controller stopped")
            c.kill(follower, signal.SIGTERM)

            c.restart_controller(event_history=5)
            newest = c.ctl("events")  # the 5 kept events, then exits
            self.assertEqual(len(newest), 5)
            seqs = [e["sequence"] for e in newest]
            self.assertEqual(seqs, list(range(seqs[0], seqs[0] + 5)))
            rc, out, err = c.ctl_raw("events", "--after", "1")
            self.assertEqual(rc, 1, out)
            self.assertIn("OUT_OF_RANGE", err)
            self.assertIn(f"the oldest kept is {seqs[0]}", err)
            self.assertIn("Re-read the state", err)
            rc, out, err = c.ctl_raw("events", "--follow", "--after", seqs[-1] + 100)
            self.assertEqual(rc, 1, out)
            self.assertIn("beyond the newest event", err)


if __name__ == "__main__":
    unittest.main()
