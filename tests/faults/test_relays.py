"""Relays (issue 14, item 2) on real links: each site's agents run in the
site's network namespace behind ONE veth pair to the controller's namespace,
the site's WAN link (netns.Sites), so the counters of that veth say how many
times a package crossed into the site. Per site and job one agent, the
relay, receives the package from the controller; the others (its peers)
fetch their chunks from it (Agent.FetchChunks, inside the site's namespace,
never over the WAN veth), verify each against the controller's manifest and
acknowledge to the controller.

1. 2 sites x 3 agents, 256 MiB to all six: at most 1.05 x the package on
   each WAN veth; the same agents unlabelled, a second package: > 2.5 x.
2. The relay killed -9 mid-transfer: its peers finish from the controller,
   the job completes once it is restarted; the bytes re-sent are reported.
3. The relay's link pulled (iptables DROP on its port in the site's
   namespace, both ways): its peers switch to the controller within the
   detection bound and finish; the rule removed, the job completes.
4. The relay serving a corrupted chunk (a byte flipped in its published copy
   while it was down): the peers refuse it by sha256 and get it from the
   controller.
5. FetchChunks refuses every identity the controller did not name as a peer
   of that package (an agent of another site, the admin, the controller),
   and a peer whose connection to its relay reaches another TLS server (an
   iptables DNAT to a stand-in holding a valid agent certificate) refuses
   the handshake and falls back to the controller.

Every scenario ends with every copy byte-identical to its source. The
agents of a site share the site's address (distinct ports), so "the relay's
link" is its port there. Needs root, `ip netns` and iptables inside a
namespace (as test_site_bandwidth.py); otherwise skipped with the reason.
Teardown stops every process (the stand-ins too), then deletes every
namespace, and with them every veth and iptables rule, whatever happened."""

import contextlib
import hashlib
import json
import os
import re
import signal
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, HERE)
import harness  # noqa: E402
import results  # noqa: E402
from harness import MiB, target  # noqa: E402
from netns import NamespaceTestCase, SitesCluster  # noqa: E402

DETECT_SECONDS = 3          # the controller's --detect-seconds, and the peers' silence bound
SLACK_SECONDS = 3           # on top of it: polling, the engine's pass, a re-sent window
MAX_BACKOFF_SECONDS = 1
BIG = 256 * MiB             # test 1
MAX_WAN_RATIO = 1.05        # of BIG on a site's WAN veth, with a relay
MIN_DIRECT_RATIO = 2.5      # ... without sites (3 agents: ~3 x)
FAULT = 128 * MiB           # tests 2 and 3, paced:
PACE = 24 * MiB             # --max-bytes-per-second: each transfer ~5 s
WINDOW = 8 * MiB            # --window-bytes: acknowledgements every 4 MiB, not every half
                            # of the default window (the fault's moment is seen in time)
CUT_AT = 0.30               # the fault comes once the relay has acknowledged this much
CUT_BEFORE = 0.80           # ... and it must come before this much (still mid-transfer)
SMALL = 16 * MiB            # tests 4 and 5
JOB_TIMEOUT = 120
RELAY_PEER = os.path.join(HERE, "relay_peer.py")


def targets(job):
    return {t["agent"]: t for t in job["targets"]}


def field(job, name):
    return {a: int(t[name]) for a, t in targets(job).items()}


def read_log(c, name):
    with open(c.log_of(name), encoding="utf-8", errors="replace") as f:
        return f.read()


def relays_of(c, job):
    """{site: relay} from the controller's log line for `job`."""
    found = re.findall(rf"job {job}: (\S+) relays \S+ to the \d+ other agent\(s\) of site (\S+)",
                       read_log(c, "controller"))
    return {site: relay for relay, site in found}


def pointed_at(c, job):
    """{peer: relay} for every attempt of `job` the controller started with
    its chunks from a relay (the last such attempt per peer)."""
    found = re.findall(rf"job {job}: sending \S+ to (\S+) \([^)]*\), its chunks from relay (\S+)",
                       read_log(c, "controller"))
    return dict(found)


def fallbacks(c, agent, label, relay):
    """The lines of AGENT's log where chunks of LABEL did not come from RELAY."""
    return re.findall(rf"transfer of {re.escape(label)}: \d+ of \d+ chunks \(\d+ bytes\) did not "
                      rf"come from {relay}: ([^\n]*); asking the controller",
                      read_log(c, f"agent-{agent}"))


def wan_ratio(wire, size):
    return round(wire / size, 4)


class RelayTest(NamespaceTestCase):

    @contextlib.contextmanager
    def cluster(self, topo, **opts):
        """A SitesCluster on `topo`, its controller and every agent started and
        registered with --label site=SITE."""
        with SitesCluster(topo) as c:
            c.start_controller(**{"detect_seconds": DETECT_SECONDS,
                                  "max_backoff_seconds": MAX_BACKOFF_SECONDS, **opts})
            c.start_all_agents()
            yield c

    @contextlib.contextmanager
    def iptables(self, topo, site, rules, table="filter"):
        """Adds iptables `rules` in SITE's namespace; deletes them on exit (and
        the namespace's deletion would, whatever happens)."""
        added = []
        try:
            for rule in rules:
                topo.in_site_ns(site, "iptables", "-t", table, "-A", *rule)
                added.append(rule)
            yield
        finally:
            for rule in reversed(added):
                topo.in_site_ns(site, "iptables", "-t", table, "-D", *rule, check=False)

    def wait_complete(self, c, job, what, timeout=JOB_TIMEOUT, interval=0.1):
        status = c.wait_job(job, lambda j: j["state"] in ("complete", "failed", "cancelled"),
                            timeout, what, interval=interval)
        self.assertEqual(status["state"], "complete", status)
        return status

    def assert_copies(self, c, src, agents, name, version="1.0"):
        """Every agent's copy of name@version is identical to `src` (hashed once)."""
        want = harness.tree_entries(src)
        for a in agents:
            copy = c.published(a, name, version)
            self.assertTrue(os.path.isdir(copy), f"{a} has not published {name}@{version}")
            problems = harness.tree_differences(want, harness.tree_entries(copy))
            self.assertFalse(problems, f"{copy} is not identical to {src}:\n  "
                             + "\n  ".join(problems[:30]))

    def run_timed(self, c, topo, package, agents):
        """Distributes `package` to `agents`; returns (status, seconds from
        distribute to complete, {site: bytes sent to it on its WAN veth})."""
        tx0 = {s: topo.tx_bytes(s) for s in topo.sites}
        started = time.monotonic()
        job = c.distribute(package, agents)
        status = self.wait_complete(c, job, f"{package} completes", interval=0.25)
        elapsed = time.monotonic() - started
        wire = {s: topo.tx_bytes(s) - tx0[s] for s in topo.sites}
        return job, status, elapsed, wire

    # --- 1 ----------------------------------------------------------------------

    def test_a_package_crosses_each_sites_wan_link_once(self):
        # 2 sites x 3 agents, 256 MiB: <= 1.05 x it on each WAN veth through a relay,
        # > 2.5 x with the agents unlabelled; identical everywhere; times reported.
        sites = {"fra": ["f1", "f2", "f3"], "muc": ["m1", "m2", "m3"]}
        topo = self.topology(sites)
        scenario = "relays: 256 MiB to 2 sites x 3 agents, bytes on each site's WAN veth"
        with results.recorded(scenario) as fig, self.cluster(topo) as c:
            agents = topo.agents
            src = self.package(c, "big", BIG, 61)
            job, status, with_s, wire = self.run_timed(c, topo, "big@1.0", agents)
            self.assert_copies(c, src, agents, "big")
            relays = relays_of(c, job)
            self.assertEqual(sorted(relays), sorted(sites), f"a relay per site: {relays}")
            sent, peer = field(status, "bytes_sent"), field(status, "bytes_from_peer")
            for site, members in sites.items():
                relay = relays[site]
                self.assertIn(relay, members)
                self.assertGreaterEqual(sent[relay], BIG, status)
                for a in members:
                    if a != relay:
                        self.assertEqual((sent[a], peer[a]), (0, BIG),
                                         f"{a}: every chunk from relay {relay}, none from "
                                         f"the controller (bytes_sent, bytes_from_peer): {status}")
                        self.assertEqual(fallbacks(c, a, "big@1.0", relay), [])
            ratios = {s: wan_ratio(w, BIG) for s, w in wire.items()}
            print(f"with sites: complete in {with_s:.2f} s; relays {relays}; WAN veth bytes "
                  f"{wire} = x{ratios} the package")
            fig.update(complete_with_sites_s=round(with_s, 2),
                       **{f"wan_ratio_{s}_sites": r for s, r in ratios.items()})
            for s, r in ratios.items():
                self.assertLessEqual(r, MAX_WAN_RATIO, f"site {s}: {wire[s]} bytes on its WAN "
                                                       f"veth for a {BIG}-byte package")

            # The same agents with no site: every agent from the controller.
            for a in agents:
                c.ctl("agent", "label", a, "site-")
            src2 = self.package(c, "plain", BIG, 62)
            job2, status2, without_s, wire2 = self.run_timed(c, topo, "plain@1.0", agents)
            self.assert_copies(c, src2, agents, "plain")
            self.assertEqual(relays_of(c, job2), {})
            self.assertEqual(set(field(status2, "bytes_from_peer").values()), {0}, status2)
            ratios2 = {s: wan_ratio(w, BIG) for s, w in wire2.items()}
            print(f"without sites: complete in {without_s:.2f} s; WAN veth bytes {wire2} = "
                  f"x{ratios2} the package")
            fig.update(complete_without_sites_s=round(without_s, 2),
                       **{f"wan_ratio_{s}_direct": r for s, r in ratios2.items()})
            for s, r in ratios2.items():
                self.assertGreater(r, MIN_DIRECT_RATIO, f"site {s} without relays: {wire2[s]} "
                                                        "bytes on its WAN veth")
            fig["outcome"] = (f"with relays x{max(ratios.values()):.3f} the package per WAN link, "
                              f"{with_s:.1f}s; without x{min(ratios2.values()):.2f}, "
                              f"{without_s:.1f}s; bytes identical")

    # --- 2 and 3: the relay fails mid-transfer ----------------------------------

    def start_paced(self, c, topo, name, seed):
        """Distributes a FAULT package to site fra (f1 its relay) and waits
        until the relay has acknowledged CUT_AT of it and both peers have
        acknowledged chunks from it. Returns (src, job, status, tx0)."""
        src = self.package(c, name, FAULT, seed)
        c.ctl("site", "set", "fra", "--relay", "f1")
        tx0 = topo.tx_bytes("fra")
        job = c.ctl("distribute", f"{name}@1.0", "--select", "site=fra")["id"]

        def ready(j):
            t = targets(j)
            return (int(t["f1"]["bytes_acked"]) >= CUT_AT * FAULT
                    and all(int(t[p]["bytes_from_peer"]) > 0 for p in ("f2", "f3")))
        status = c.wait_job(job, ready, 30, f"relay f1 {CUT_AT:.0%} acknowledged, f2 and f3 "
                                            "fetching from it", interval=0.05)
        self.assertLess(int(target(status, "f1")["bytes_acked"]), CUT_BEFORE * FAULT,
                        f"the relay was nearly done before the fault: {status}")
        self.assertEqual(relays_of(c, job), {"fra": "f1"})
        self.assertEqual(pointed_at(c, job), {"f2": "f1", "f3": "f1"})
        print("fault at: " + ", ".join(f"{a} acked {int(t['bytes_acked']) / MiB:.1f} MiB "
                                        f"({int(t['bytes_from_peer']) / MiB:.1f} from peer)"
                                        for a, t in targets(status).items()))
        return src, job, status, tx0

    def peers_finish(self, c, job, before, cut, relay_down, what):
        """Waits until f2 and f3 are done while `relay_down()` holds; returns
        the status and the seconds from `cut` (monotonic) until each peer got
        bytes from the controller beyond those in `before` (its status just
        before the fault), and until it was done."""
        sent0 = field(before, "bytes_sent")
        took_over, done = {}, {}

        def observe():
            j = c.job(job)
            now = time.monotonic() - cut
            for p in ("f2", "f3"):
                t = target(j, p)
                if p not in took_over and int(t["bytes_sent"]) > sent0[p]:
                    took_over[p] = now
                if p not in done and t["state"] == "done":
                    done[p] = now
            self.assertNotEqual(target(j, "f1")["state"], "done", f"{what}: the relay done? {j}")
            self.assertTrue(relay_down(), f"{what}: the fault ended early")
            return j
        status = harness.wait_for(observe, lambda j: len(done) == 2, timeout=60,
                                  what=f"{what}: f2 and f3 done", interval=0.1)
        return status, took_over, done

    def assert_switched(self, took_over, what):
        """Both peers got bytes from the controller within the detection bound."""
        self.assertEqual(sorted(took_over), ["f2", "f3"], took_over)
        for p, s in took_over.items():
            self.assertLessEqual(s, DETECT_SECONDS + SLACK_SECONDS, f"{p} waited {s:.1f}s for "
                                 f"{what} (bound {DETECT_SECONDS}+{SLACK_SECONDS}s)")

    def check_fallback(self, c, job, label, status):
        for p in ("f2", "f3"):
            why = fallbacks(c, p, label, "f1")
            self.assertTrue(why, f"{p}'s log says nothing of chunks not coming from f1")
            t = target(status, p)
            self.assertGreater(int(t["bytes_from_peer"]), 0, status)
            self.assertGreater(int(t["bytes_sent"]), 0, status)
            self.assertGreaterEqual(int(t["bytes_from_peer"]) + int(t["bytes_sent"]), FAULT, status)
            print(f"{p}: {int(t['bytes_from_peer']) / MiB:.1f} MiB from f1, "
                  f"{int(t['bytes_sent']) / MiB:.1f} MiB from the controller; why: {why[-1]}")
        self.assertRegex(read_log(c, "controller"),
                         rf"job {job}: f[23] could not fetch from relay f1")

    def resent(self, c, topo, job, status, tx0, fig):
        sent = sum(field(status, "bytes_sent").values())
        wire = topo.tx_bytes("fra") - tx0
        print(f"re-sent: bytes_sent {field(status, 'bytes_sent')} = {sent} for a {FAULT}-byte "
              f"package: {sent - FAULT} beyond one package; WAN veth {wire} bytes "
              f"(x{wire / FAULT:.3f})")
        fig.update(resent_bytes=sent - FAULT, wan_bytes=wire,
                   wan_ratio=wan_ratio(wire, FAULT))
        # A peer gets from the controller what it had not got from the relay (and at
        # most a window more); the relay, the package and the window it lost.
        for p in ("f2", "f3"):
            t = target(status, p)
            self.assertLessEqual(int(t["bytes_sent"]) + int(t["bytes_from_peer"]),
                                 FAULT + WINDOW, f"{p}: {t}")
        self.assertLessEqual(int(target(status, "f1")["bytes_sent"]), FAULT + 2 * WINDOW, status)
        return sent - FAULT, wire

    def test_relay_killed_mid_transfer_its_peers_finish_and_the_job_completes(self):
        # kill -9 of the relay with its peers fetching: they finish from the controller,
        # the restarted relay completes; all identical; bytes re-sent reported.
        topo = self.topology({"fra": ["f1", "f2", "f3"]})
        scenario = "relays: the relay killed -9 mid-transfer (30 % acked), peers fetching"
        with results.recorded(scenario) as fig, \
                self.cluster(topo, max_bytes_per_second=PACE, window_bytes=WINDOW) as c:
            src, job, before, tx0 = self.start_paced(c, topo, "killed", 71)
            relay = c.agents["f1"].proc
            cut = time.monotonic()
            c.kill(relay)
            status, took_over, done = self.peers_finish(c, job, before, cut,
                                                        lambda: not relay.alive(), "relay killed")
            print(f"relay killed: peers got bytes from the controller after {took_over} s, "
                  f"done after {done} s")
            fig.update(peers_switch_s=round(max(took_over.values()), 2))
            self.assert_switched(took_over, "its dead relay")
            self.check_fallback(c, job, "killed@1.0", status)
            c.restart_agent("f1")
            status = self.wait_complete(c, job, "the job completes with f1 restarted")
            self.assert_copies(c, src, topo.agents, "killed")
            resent, wire = self.resent(c, topo, job, status, tx0, fig)
            fig.update(peers_done_s=round(max(done.values()), 2))
            fig["outcome"] = (f"peers finished {max(done.values()):.1f}s after the kill; complete "
                              f"after the restart; {resent / MiB:.1f} MiB re-sent; identical")

    def test_relay_link_pulled_its_peers_switch_within_the_detection_bound(self):
        # iptables DROP of the relay's port both ways: peers get bytes from the controller
        # within detect + slack and finish; the rule removed, the job completes identical.
        topo = self.topology({"fra": ["f1", "f2", "f3"]})
        scenario = "relays: the relay's link pulled (iptables DROP) mid-transfer, peers fetching"
        with results.recorded(scenario) as fig, \
                self.cluster(topo, max_bytes_per_second=PACE, window_bytes=WINDOW) as c:
            src, job, before, tx0 = self.start_paced(c, topo, "pulled", 72)
            port = str(c.agents["f1"].port)
            rules = [["INPUT", "-p", "tcp", "--dport", port, "-j", "DROP"],
                     ["OUTPUT", "-p", "tcp", "--sport", port, "-j", "DROP"]]
            cut = [True]
            cut_at = time.monotonic()
            with self.iptables(topo, "fra", rules):
                status, took_over, done = self.peers_finish(c, job, before, cut_at,
                                                            lambda: cut[0], "link pulled")
                cut[0] = False
            restored = time.monotonic()
            print(f"link pulled: peers got bytes from the controller after {took_over} s "
                  f"(bound {DETECT_SECONDS}+{SLACK_SECONDS}), done after {done} s")
            fig.update(peers_switch_s=round(max(took_over.values()), 2),
                       peers_done_s=round(max(done.values()), 2))
            self.assert_switched(took_over, "its silent relay")
            self.check_fallback(c, job, "pulled@1.0", status)
            status = self.wait_complete(c, job, "the job completes with f1's link back")
            print(f"complete {time.monotonic() - restored:.2f} s after the rule was removed")
            self.assert_copies(c, src, topo.agents, "pulled")
            resent, wire = self.resent(c, topo, job, status, tx0, fig)
            fig["outcome"] = (f"peers from the controller after {max(took_over.values()):.1f}s "
                              f"(bound {DETECT_SECONDS + SLACK_SECONDS}s); complete once "
                              f"plugged in; {resent / MiB:.1f} MiB re-sent; identical")

    # --- 4 ----------------------------------------------------------------------

    def test_peers_refuse_a_corrupted_chunk_from_the_relay_and_get_it_from_the_controller(self):
        # A byte flipped in the relay's published copy: its peers refuse the chunk by sha256,
        # fetch the rest from the controller; their copies are identical to the source.
        topo = self.topology({"fra": ["f1", "f2", "f3"]})
        scenario = "relays: the relay serves a chunk with a flipped byte"
        with results.recorded(scenario) as fig, self.cluster(topo) as c:
            src = self.package(c, "bent", SMALL, 73)
            c.ctl("site", "set", "fra", "--relay", "f1")
            job = c.distribute("bent@1.0", ["f1"])
            self.wait_complete(c, job, "bent@1.0 on f1 only")
            self.assert_copies(c, src, ["f1"], "bent")

            c.kill(c.agents["f1"].proc, signal.SIGTERM)
            copy = os.path.join(c.published("f1", "bent", "1.0"), "bent.bin")
            with open(copy, "r+b") as f:
                f.seek(SMALL // 2)
                byte = f.read(1)
                f.seek(SMALL // 2)
                f.write(bytes([byte[0] ^ 0xFF]))
            c.restart_agent("f1")
            # The relay must be reachable when the job starts: a relay whose first
            # attempt fails is not used for that job.
            harness.wait_for(lambda: c.ctl("agent", "show", "f1")["connection"] == "ready",
                             timeout=20, what="the controller's channel to f1 ready")

            job = c.ctl("distribute", "bent@1.0", "--select", "site=fra")["id"]
            status = self.wait_complete(c, job, "bent@1.0 to site fra")
            # (A peer started after the other one reported the bad chunk goes to the
            # controller directly: the engine stops pointing the job's peers at f1.)
            pointed = pointed_at(c, job)
            self.assertTrue(pointed, "no peer was sent to relay f1: nothing tested")
            self.assertEqual(set(pointed.values()), {"f1"}, pointed)
            self.assertRegex(read_log(c, "agent-f1"), r"transfer of bent@1\.0 from \S+: already "
                                                      r"published")
            refused = {}
            for p in pointed:
                why = fallbacks(c, p, "bent@1.0", "f1")
                self.assertTrue(any("sha256" in w for w in why),
                                f"{p} did not refuse a chunk from f1 by its sha256: {why}")
                refused[p] = why[-1]
                t = target(status, p)
                self.assertGreater(int(t["bytes_sent"]), 0, status)
                self.assertGreaterEqual(int(t["bytes_sent"]) + int(t["bytes_from_peer"]),
                                        SMALL, status)
                self.assertLessEqual(int(t["bytes_sent"]) + int(t["bytes_from_peer"]),
                                     SMALL + MiB, f"{p} got chunks twice: {status}")
            print(f"refused: {refused}; " + ", ".join(
                f"{p}: {int(target(status, p)['bytes_from_peer'])} B from f1, "
                f"{int(target(status, p)['bytes_sent'])} B from the controller"
                for p in ("f2", "f3")))
            self.assertGreater(int(target(status, "f2")["bytes_sent"]), 0)
            self.assertGreater(int(target(status, "f3")["bytes_sent"]), 0)
            # The peers' copies are good; the relay's own copy stays damaged (it answered
            # "already published" without reading it again): a known limit, not checked.
            self.assert_copies(c, src, ["f2", "f3"], "bent")
            fig.update(from_controller_bytes=sum(int(target(status, p)["bytes_sent"])
                                        for p in ("f2", "f3")))
            fig["outcome"] = "peers refused the flipped chunk by sha256, took it from the " \
                             "controller; their copies identical"

    # --- 5 ----------------------------------------------------------------------

    def probe(self, c, topo, relay, package_id, identities):
        """FetchChunks on RELAY for the package's first chunks, once as each
        of `identities` (certificate stems), from the controller's namespace
        (it reaches every site). Returns {identity: result}."""
        argv = [sys.executable, RELAY_PEER, "probe", "--address", c.agent_address(relay),
                "--server-name", relay,
                "--ca", os.path.join(c.certs, "ca.pem"), "--package-id", package_id]
        for who in identities:
            argv += ["--as", f"{who}={c.cert(who)},{c.key(who)}"]
        r = harness.run_cmd("ip", "netns", "exec", topo.ns_ctrl, *argv, timeout=60)
        return {d["as"]: d for d in map(json.loads, r.stdout.splitlines())}

    def test_only_named_peers_may_fetch_and_a_peer_accepts_only_its_relay(self):
        # A peer whose connection to its relay reaches a server with another agent's valid
        # certificate refuses the handshake and falls back; FetchChunks refuses an agent of
        # another site, the admin and the controller (PERMISSION_DENIED); a named peer gets chunks.
        topo = self.topology({"ber": ["a1"], "fra": ["f1", "f2", "f3"]})
        scenario = "relays: a peer's relay connection redirected to another agent's TLS server; " \
                   "FetchChunks by unnamed identities"
        with results.recorded(scenario) as fig, self.cluster(topo) as c:
            src = self.package(c, "guarded", SMALL, 74)
            pid = c.ctl("package", "show", "guarded@1.0")["id"]
            c.ctl("site", "set", "fra", "--relay", "f1")
            ip, port = c.agent_address("f1").rsplit(":", 1)
            calls = os.path.join(c.dir, "impostor-calls.jsonl")
            _, fake = c.start_helper(
                "impostor", [sys.executable, RELAY_PEER, "impostor", "--host", ip,
                             "--ca", os.path.join(c.certs, "ca.pem"), "--cert", c.cert("f2"),
                             "--key", c.key("f2"), "--port-file",
                             os.path.join(c.dir, "impostor.port"), "--calls", calls],
                os.path.join(c.dir, "impostor.port"), site="fra")
            # Connections made in fra's namespace (the peers') to the relay go to the
            # impostor; the controller's come in from the WAN veth and are not touched.
            dnat = ["OUTPUT", "-p", "tcp", "-d", ip, "--dport", port, "-j", "DNAT",
                    "--to-destination", f"{ip}:{fake}"]

            def no_calls():
                with open(calls, encoding="utf-8") as f:
                    got = f.read()
                self.assertEqual(got, "", "the impostor was asked for chunks")
                return True
            with self.iptables(topo, "fra", [dnat], table="nat"):
                job = c.ctl("distribute", "guarded@1.0", "--select", "site=fra")["id"]
                status = c.wait_job(job, lambda j: no_calls() and j["state"] in (
                    "complete", "failed", "cancelled"), JOB_TIMEOUT, "guarded@1.0 to site fra")
                self.assertEqual(status["state"], "complete", status)
                counters = topo.in_site_ns("fra", "iptables", "-t", "nat", "-L", "OUTPUT",
                                           "-n", "-v", "-x").stdout
            redirected = [int(line.split()[0]) for line in counters.splitlines()
                          if f"to:{ip}:{fake}" in line]
            self.assertTrue(redirected and redirected[0] > 0,
                            f"no connection was redirected to the impostor:\n{counters}")
            pointed = pointed_at(c, job)
            self.assertTrue(pointed, "no peer was sent to relay f1: nothing tested")
            self.assertEqual(set(pointed.values()), {"f1"}, pointed)
            no_calls()
            why = {}
            for p in pointed:
                why[p] = fallbacks(c, p, "guarded@1.0", "f1")
                self.assertTrue(why[p], f"{p}'s log says nothing of chunks not coming from f1")
            self.assertEqual(set(field(status, "bytes_from_peer").values()), {0}, status)
            self.assert_copies(c, src, ["f1", "f2", "f3"], "guarded")
            print(f"impostor: {redirected[0]} connection(s) redirected to it, no FetchChunks "
                  f"call; peers: {why}")

            # The grant outlives the job (until f1 restarts): only f2 and f3 are named.
            got = self.probe(c, topo, "f1", pid, ["a1", "admin", "controller", "f2"])
            print("FetchChunks on f1: " + "; ".join(f"{w}: {r['code']} {r['details']}"
                                                    for w, r in got.items()))
            self.assertEqual(got["a1"]["code"], "PERMISSION_DENIED", got["a1"])
            self.assertIn(f"agent a1 is not named as a peer for package {pid}",
                          got["a1"]["details"])
            for who in ("admin", "controller"):
                self.assertEqual(got[who]["code"], "PERMISSION_DENIED", got[who])
                self.assertEqual(got[who]["chunks"], 0, got[who])
            ok = got["f2"]
            self.assertEqual((ok["code"], ok["chunks"]), ("OK", 4), ok)
            with open(os.path.join(src, "guarded.bin"), "rb") as f:
                head = f.read(ok["bytes"])
            self.assertEqual(ok["sha256"], hashlib.sha256(head).hexdigest(),
                             "f1 served f2 other bytes than the package's first chunks")
            fig.update(redirected_connections=redirected[0])
            fig["outcome"] = ("peer refused the impostor's handshake (0 calls), took the package "
                              "from the controller, identical; a1/admin/controller "
                              "PERMISSION_DENIED, f2 served")


if __name__ == "__main__":
    unittest.main()
