"""Network faults on a real link: the controller and the agent each run in a
network namespace this test creates, joined by a veth pair addressed in
10.231.x.y/30, and the faults are the kernel's own: iptables DROP both ways
(a pulled cable), REJECT --reject-with tcp-reset (a reset), random loss
(-m statistic) and a tbf qdisc (a slow link). Each scenario ends with a
complete, byte-identical package and records its figures.

Needs root, `ip netns` and iptables usable inside a namespace (Debian
packages iproute2 and iptables); otherwise every test is skipped with the
reason. Teardown kills every process and deletes the namespaces (and their
veth pair with them), whatever happened."""

import contextlib
import os
import re
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, HERE)
import harness  # noqa: E402
import results  # noqa: E402
from harness import MiB, target  # noqa: E402
from netns import Link, NamespaceTestCase, NetnsCluster  # noqa: E402

DETECT_SECONDS = 6
SLACK_SECONDS = 3
# A reset is seen when the next segment arrives: below TCP_USER_TIMEOUT (a third
# of the detection bound), so a reset mistaken for a silent drop fails.
RESET_BOUND_SECONDS = 1.5
MAX_BACKOFF_SECONDS = 2
WINDOW = 4 * MiB
RATE = 8 * MiB
SLOW_LINK_BITS = 20_000_000


class NetworkNamespaceTest(NamespaceTestCase):

    def setUp(self):
        super().setUp()
        self.link = Link(self.next_index())
        self.link.up()
        # Cleanups run last-in first-out: the cluster (processes) is stopped
        # before the namespaces are deleted.
        self.addCleanup(self.link.down)

    @contextlib.contextmanager
    def cluster(self, **controller_opts):
        with NetnsCluster(self.link, ["dp1"]) as c:
            c.start_controller(window_bytes=WINDOW, max_backoff_seconds=MAX_BACKOFF_SECONDS,
                               detect_seconds=DETECT_SECONDS, **controller_opts)
            c.start_agent("dp1")
            c.add_agent("dp1")
            yield c

    def iptables(self, *rule):
        self.link.in_agent_ns("iptables", *rule)

    def fault_then_recover(self, fig, name, size, rules, detect_bound):
        """Starts a paced transfer, adds iptables `rules` in the agent's
        namespace once a fifth is acknowledged, waits until the attempt breaks
        (within detect_bound), removes the rules, waits until it completes
        identical. Fills fig with detect_s, reconnect_s and resent_bytes."""
        with self.cluster(max_bytes_per_second=RATE) as c:
            src = self.package(c, name, size, 21)
            job = c.distribute(f"{name}@1.0", ["dp1"])
            status = c.wait_job(job, lambda j: (target(j, "dp1")["state"] == "transferring"
                                                and int(target(j, "dp1")["bytes_acked"]) >= size // 5),
                                30, "dp1 transferring with a fifth acknowledged")
            attempts = int(target(status, "dp1")["attempts"])
            for rule in rules:
                self.iptables("-A", *rule)
            cut_at = time.monotonic()
            status = c.wait_attempt_ended(job, "dp1", attempts, detect_bound + 20,
                                          "the controller to notice the fault")
            detect_s = time.monotonic() - cut_at
            t = target(status, "dp1")
            acked = int(t["bytes_acked"])
            print(f"{name}: detected after {detect_s:.2f}s (bound {detect_bound}s): state "
                  f"{t['state']}, last_error {t['last_error']!r}")
            fig.update(detect_s=round(detect_s, 2), outcome=f"detected ({t['state']})")
            self.assertIn(t["state"], ("retry_wait", "transferring"))
            self.assertTrue(t["last_error"], "the broken attempt left no error")
            self.assertLessEqual(detect_s, detect_bound)

            for rule in rules:
                self.iptables("-D", *rule)
            restored_at = time.monotonic()
            c.wait_job(job, lambda j: (j["state"] == "complete"
                                       or (target(j, "dp1")["state"] == "transferring"
                                           and int(target(j, "dp1")["bytes_acked"]) > acked)),
                       40, "the transfer to move again after the rules are removed",
                       interval=0.05)
            reconnect_s = time.monotonic() - restored_at
            status = c.wait_job(job, lambda j: j["state"] == "complete", 60, "the job completes")
            harness.assert_trees_identical(src, c.published("dp1", name, "1.0"))
            sent = int(target(status, "dp1")["bytes_sent"])
            print(f"{name}: moving again {reconnect_s:.2f}s after the rules were removed; "
                  f"complete, bytes_sent {sent} for {size}")
            fig.update(reconnect_s=round(reconnect_s, 2), resent_bytes=sent - size)
            self.assertLessEqual(sent, size + WINDOW, "more than one window re-sent")
            return detect_s

    def test_pulled_cable_is_detected_within_bound_and_completes_after_reconnect(self):
        # iptables DROP both ways in the agent's namespace: retry_wait within 6+3 s; removed: complete.
        dev = self.link.veth_agent
        with results.recorded("netns: pulled cable (iptables DROP both ways), then plugged in") as fig:
            detect_s = self.fault_then_recover(
                fig, "cable", 24 * MiB, [["INPUT", "-i", dev, "-j", "DROP"],
                                         ["OUTPUT", "-o", dev, "-j", "DROP"]],
                DETECT_SECONDS + SLACK_SECONDS)
            fig["outcome"] = (f"retry_wait in {detect_s:.1f}s (bound {DETECT_SECONDS}+"
                              f"{SLACK_SECONDS}s); bytes identical after reconnect")

    def test_reset_connection_fails_fast_and_completes_after_rule_removed(self):
        # REJECT --reject-with tcp-reset both ways: the attempt fails in seconds, then completes.
        dev = self.link.veth_agent
        # RST segments themselves pass: REJECT drops an RST (it never answers one),
        # which would turn the resets the rules send into a silent drop.
        reject = ["-p", "tcp", "!", "--tcp-flags", "RST", "RST",
                  "-j", "REJECT", "--reject-with", "tcp-reset"]
        with results.recorded("netns: connection reset (iptables REJECT tcp-reset), then removed") as fig:
            detect_s = self.fault_then_recover(
                fig, "reset", 24 * MiB, [["INPUT", "-i", dev, *reject],
                                         ["OUTPUT", "-o", dev, *reject]],
                RESET_BOUND_SECONDS)
            fig["outcome"] = (f"failed fast in {detect_s:.1f}s (bound {RESET_BOUND_SECONDS}s); "
                              f"bytes identical after the rule was removed")

    def test_transfer_over_link_losing_5_percent_of_packets_completes_identical(self):
        # 5% random DROP both ways (-m statistic) for the whole transfer: complete, identical.
        dev, size = self.link.veth_agent, 16 * MiB
        loss = ["-m", "statistic", "--mode", "random", "--probability", "0.05", "-j", "DROP"]
        with results.recorded("netns: 5% random packet loss both ways (iptables -m statistic)") as fig, \
                self.cluster() as c:
            src = self.package(c, "lossy", size, 22)
            self.iptables("-A", "INPUT", "-i", dev, *loss)
            self.iptables("-A", "OUTPUT", "-o", dev, *loss)
            started = time.monotonic()
            job = c.distribute("lossy@1.0", ["dp1"])
            status = c.wait_job(job, lambda j: j["state"] == "complete", 90, "the job completes")
            elapsed = time.monotonic() - started
            harness.assert_trees_identical(src, c.published("dp1", "lossy", "1.0"))
            dropped = self.dropped_packets()
            t = target(status, "dp1")
            print(f"lossy: {size} bytes in {elapsed:.2f}s ({size / elapsed / MiB:.2f} MiB/s), "
                  f"{t['attempts']} attempt(s), {dropped} packets dropped by the rules")
            fig.update(throughput_mib_s=round(size / elapsed / MiB, 2), dropped_packets=dropped,
                       attempts=int(t["attempts"]), resent_bytes=int(t["bytes_sent"]) - size,
                       outcome=f"bytes identical; {dropped} packets dropped, "
                               f"{t['attempts']} attempt(s)")
            self.assertGreater(dropped, 0, "the loss rules dropped nothing")

    def dropped_packets(self):
        """Packets dropped by the DROP rules of the agent's namespace."""
        out = self.link.in_agent_ns("iptables", "-L", "-n", "-v", "-x").stdout
        return sum(int(line.split()[0]) for line in out.splitlines()
                   if re.match(r"\s*\d+\s+\d+\s+DROP\b", line))

    def test_transfer_over_20_mbit_link_completes_identical_at_link_speed(self):
        # tbf 20mbit on the controller's side of the veth (the data direction): complete, slow.
        size = 8 * MiB
        with results.recorded("netns: slow link (tbf 20mbit)") as fig, self.cluster() as c:
            src = self.package(c, "slow", size, 23)
            self.link.in_ctrl_ns("tc", "qdisc", "add", "dev", self.link.veth_ctrl, "root", "tbf",
                                 "rate", "20mbit", "burst", "32kbit", "latency", "50ms")
            started = time.monotonic()
            job = c.distribute("slow@1.0", ["dp1"])
            c.wait_job(job, lambda j: j["state"] == "complete", 60, "the job completes")
            elapsed = time.monotonic() - started
            harness.assert_trees_identical(src, c.published("dp1", "slow", "1.0"))
            throughput = size / elapsed
            link_bytes = SLOW_LINK_BITS / 8
            print(f"slow: {size} bytes in {elapsed:.2f}s = {throughput / MiB:.2f} MiB/s "
                  f"(link {link_bytes / MiB:.2f} MiB/s)")
            fig.update(throughput_mib_s=round(throughput / MiB, 2),
                       outcome=f"bytes identical at {throughput / MiB:.2f} MiB/s "
                               f"({throughput / link_bytes:.0%} of the link)")
            self.assertLessEqual(throughput, link_bytes * 1.05, "faster than the shaped link")


if __name__ == "__main__":
    unittest.main()
