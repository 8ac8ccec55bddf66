"""Network faults between the controller and an agent, injected by a TCP
proxy (tcp_proxy.py) through which the controller reaches the agent: the
connection dropped at a random byte, a silent stall (a pulled cable),
delay, and a throttled link. The agent is registered at the proxy's
address; the controller checks the agent's certificate, not its address.
Each scenario ends with a complete, byte-identical package and records its
figures (results.record) for docs/reliability.md."""

import contextlib
import os
import random
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, HERE)
import harness  # noqa: E402
import results  # noqa: E402
from harness import Cluster, MiB, target  # noqa: E402
from tcp_proxy import TcpProxy  # noqa: E402

# The controller's window of unacknowledged bytes (--window-bytes).
WINDOW = 4 * MiB
DETECT_SECONDS = 6
SLACK_SECONDS = 3
MAX_BACKOFF_SECONDS = 2


def seed_from_env():
    seed = int(os.environ.get("PKGDIST_TEST_SEED", time.time_ns() % (1 << 32)))
    print(f"seed {seed} (set PKGDIST_TEST_SEED to repeat)")
    return seed


class NetworkProxyTest(unittest.TestCase):

    @contextlib.contextmanager
    def proxied(self, **controller_opts):
        """A controller, agent dp1, and a proxy in front of dp1 at which dp1
        is registered. Yields (cluster, proxy)."""
        with Cluster(agents=["dp1"]) as c, contextlib.ExitStack() as stack:
            c.start_controller(window_bytes=WINDOW, max_backoff_seconds=MAX_BACKOFF_SECONDS,
                               **controller_opts)
            c.start_agent("dp1")
            proxy = stack.enter_context(TcpProxy(("127.0.0.1", c.agents["dp1"].port)))
            c.ctl("agent", "add", "dp1", proxy.address)
            yield c, proxy

    def package(self, c, name, size, seed):
        path = harness.make_file_package(os.path.join(c.dir, "src-" + name), name + ".bin",
                                         size, seed)
        info = c.import_package(path, name, "1.0")
        self.assertEqual(int(info["size"]), size)
        return os.path.dirname(path)

    def complete_and_identical(self, c, job, src, name, timeout):
        status = c.wait_job(job, lambda j: j["state"] == "complete", timeout,
                            "the job completes")
        harness.assert_trees_identical(src, c.published("dp1", name, "1.0"))
        return target(status, "dp1")

    def test_connection_dropped_at_random_bytes_three_times_resends_at_most_a_window_per_drop(self):
        # Three drops (FIN, RST, RST) at random byte offsets of one 48 MiB transfer.
        size, drops = 48 * MiB, 3
        seed = seed_from_env()
        rng = random.Random(seed)
        schedule = [(rng.randint(MiB, 8 * MiB), rst) for rst in (False, True, True)]
        scenario = "proxy: connection dropped at a random byte (FIN, then RST), 48 MiB transfer"
        with results.recorded(scenario, tried=drops) as fig, self.proxied() as (c, proxy):
            src = self.package(c, "dropped", size, seed)
            proxy.drop_schedule(schedule)
            started = time.monotonic()
            job = c.distribute("dropped@1.0", ["dp1"])
            if not proxy.wait_dropped(drops, 60):
                self.fail(f"only {len(proxy.drops)} of {drops} drops happened in 60 s "
                          f"(schedule {schedule}, {proxy.bytes_up} bytes forwarded)")
            t = self.complete_and_identical(c, job, src, "dropped", 60)
            elapsed = time.monotonic() - started
            sent = int(t["bytes_sent"])
            reconnects = [min((o for o in proxy.opened if o > at), default=at) - at
                          for at, _ in proxy.drops]
            print(f"drops after {[n for n, _ in schedule]} bytes; complete in {elapsed:.2f}s, "
                  f"{t['attempts']} attempts, bytes_sent {sent}, re-sent {sent - size} "
                  f"(bound {drops} x {WINDOW}); reconnects {[f'{r:.2f}' for r in reconnects]}s")
            fig.update(resent_bytes=sent - size, window_bytes=WINDOW,
                       reconnect_s=round(max(reconnects), 2), total_s=round(elapsed, 2),
                       outcome=f"bytes identical; {sent - size} bytes re-sent for {drops} drops "
                               f"(bound {drops} windows of {WINDOW})")
            self.assertEqual(t["state"], "done")
            self.assertGreaterEqual(sent, size)
            self.assertLessEqual(sent, size + drops * WINDOW,
                                 "more than one window re-sent per dropped connection")

    def test_silent_stall_is_detected_within_bound_and_transfer_resumes_after_restore(self):
        # A stalled link (sockets open, nothing moves): retry_wait within 6+3 s, then complete.
        size, rate = 32 * MiB, 8 * MiB
        scenario = "proxy: silent stall (pulled cable, sockets stay open), then restored"
        with results.recorded(scenario) as fig, self.proxied(detect_seconds=DETECT_SECONDS,
                                                     max_bytes_per_second=rate) as (c, proxy):
            src = self.package(c, "stalled", size, 11)
            job = c.distribute("stalled@1.0", ["dp1"])
            status = c.wait_job(job, lambda j: (target(j, "dp1")["state"] == "transferring"
                                                and int(target(j, "dp1")["bytes_acked"]) >= size // 5),
                                30, "dp1 transferring with a fifth acknowledged")
            attempts = int(target(status, "dp1")["attempts"])
            proxy.stall()
            stalled_at = time.monotonic()
            status = c.wait_attempt_ended(job, "dp1", attempts, DETECT_SECONDS + SLACK_SECONDS + 20,
                                          "the controller to notice the stalled link")
            detect_s = time.monotonic() - stalled_at
            t = target(status, "dp1")
            acked = int(t["bytes_acked"])
            print(f"stall detected after {detect_s:.2f}s (bound {DETECT_SECONDS}+{SLACK_SECONDS}s): "
                  f"state {t['state']}, last_error {t['last_error']!r}")
            fig.update(detect_s=round(detect_s, 2), outcome=f"detected ({t['state']})")
            self.assertIn(t["state"], ("retry_wait", "transferring"))
            self.assertTrue(t["last_error"], "the broken attempt left no error")
            self.assertLessEqual(detect_s, DETECT_SECONDS + SLACK_SECONDS)

            proxy.resume()
            restored_at = time.monotonic()
            c.wait_job(job, lambda j: (j["state"] == "complete"
                                       or (target(j, "dp1")["state"] == "transferring"
                                           and int(target(j, "dp1")["bytes_acked"]) > acked)),
                       30, "the transfer to move again after the link is restored", interval=0.05)
            reconnect_s = time.monotonic() - restored_at
            t = self.complete_and_identical(c, job, src, "stalled", 60)
            print(f"moving again {reconnect_s:.2f}s after restore; complete, bytes_sent "
                  f"{t['bytes_sent']} for {size}")
            fig.update(reconnect_s=round(reconnect_s, 2),
                       resent_bytes=int(t["bytes_sent"]) - size,
                       outcome=f"retry_wait in {detect_s:.1f}s (bound {DETECT_SECONDS}+"
                               f"{SLACK_SECONDS}s); bytes identical after restore")

    def run_shaped(self, scenario, name, size, shape, expect):
        """Distributes `size` bytes through a proxy shaped by shape(proxy);
        returns the throughput in bytes/s after checking expect(throughput)."""
        with results.recorded(scenario) as fig, self.proxied() as (c, proxy):
            src = self.package(c, name, size, 13)
            shape(proxy)
            started = time.monotonic()
            job = c.distribute(f"{name}@1.0", ["dp1"])
            t = self.complete_and_identical(c, job, src, name, 60)
            elapsed = time.monotonic() - started
            throughput = size / elapsed
            print(f"{scenario}: {size} bytes in {elapsed:.2f}s = {throughput / MiB:.2f} MiB/s, "
                  f"bytes_sent {t['bytes_sent']}")
            fig.update(throughput_mib_s=round(throughput / MiB, 2),
                       resent_bytes=int(t["bytes_sent"]) - size,
                       outcome=f"bytes identical at {throughput / MiB:.1f} MiB/s")
            expect(throughput)
            return throughput

    def test_transfer_through_20ms_delay_per_chunk_completes_identical(self):
        # 20 ms of one-way delay on every chunk of data, both ways: still complete.
        self.run_shaped("proxy: 20 ms delay per chunk of data, both ways", "delayed", 16 * MiB,
                        lambda p: p.set_delay(0.020), lambda tp: None)

    def test_transfer_through_link_throttled_to_8_mib_per_second_completes_identical(self):
        # An 8 MiB/s link: complete, and no faster than the link (the throttle held).
        rate = 8 * MiB
        self.run_shaped("proxy: link throttled to 8 MiB/s", "throttled", 24 * MiB,
                        lambda p: p.set_rate(rate),
                        lambda tp: self.assertLessEqual(tp, rate * 1.1,
                                                        "faster than the throttled link"))


if __name__ == "__main__":
    unittest.main()
