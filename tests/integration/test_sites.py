"""Per-site bandwidth policy through pkgdistctl against a real controller
and agents (issue 14, item 3): `site set` with a rate, windows, a time zone
and max_transfers is kept across a controller kill -9 and shown by `site
show` and `site list` with the site's agents and the rate in force now; bad
input is refused with a message naming it and changes nothing. A site's
relay (`site set --relay`) is kept likewise, and only an agent of the site
is accepted. What the limits do on the wire is tested in
tests/faults/test_site_bandwidth.py."""

import datetime
import os
import signal
import time
import unittest
import zoneinfo

import harness
from harness import Cluster, MiB

MB = 1_000_000


def site_set(c, name, *flags):
    return c.ctl("site", "set", name, *flags)


def site_show(c, name):
    return c.ctl("site", "show", name)


def site_names(c):
    return sorted(s["name"] for s in c.ctl("site", "list")["sites"])


def normal_window(spec):
    """A window spec with HH:MM written as HH:MM:00 and single spaces (the
    controller may print either)."""
    days, span, rate = spec.split()
    times = [t if t.count(":") == 2 else t + ":00" for t in span.split("-")]
    return f"{days} {'-'.join(times)} {rate}"


# The fields `site set` sets (the rest are measured).
POLICY_FIELDS = ("name", "rate", "windows", "timezone", "max_transfers", "agents")


def policy(site):
    out = {k: site.get(k) for k in POLICY_FIELDS}
    out["windows"] = [normal_window(w) for w in site.get("windows") or []]
    out["agents"] = sorted(site.get("agents") or [])
    return out


WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def rate_now(site_policy, at):
    """The rate a site's windows put in force at `at` (an aware datetime),
    for windows of the form used below ("daily" or "DAY-DAY")."""
    local = at.astimezone(zoneinfo.ZoneInfo(site_policy["timezone"]))
    seconds = local.hour * 3600 + local.minute * 60 + local.second
    for spec in site_policy["windows"]:
        days, span, rate = spec.split()
        begin, end = [sum(int(x) * m for x, m in zip(t.split(":"), (3600, 60, 1)))
                      for t in span.split("-")]
        if days != "daily":
            first, last = [WEEKDAYS.index(d) for d in days.split("-")]
            if not first <= local.weekday() <= last:
                continue
        inside = begin <= seconds < end if begin < end else (seconds >= begin or seconds < end)
        if inside:
            return rate
    return site_policy["rate"]


class SitePolicyTest(unittest.TestCase):

    def assert_rate_now(self, c, name, expected_policy):
        before = datetime.datetime.now(datetime.timezone.utc)
        site = site_show(c, name)
        after = datetime.datetime.now(datetime.timezone.utc)
        allowed = {rate_now(expected_policy, before), rate_now(expected_policy, after)}
        self.assertIn(site["rate_now"], allowed, site)
        return site

    def test_site_policy_is_kept_across_a_controller_kill_and_bad_input_is_refused(self):
        # rate, windows, Europe/Berlin, max_transfers: the same after kill -9 and restart;
        # a bad rate, window or timezone is refused with a message and changes nothing.
        agents = ["f1", "f2"]
        with Cluster(agents=agents) as c:
            c.start_controller()
            for a in agents:
                c.start_agent(a)
                c.ctl("agent", "add", a, c.agents[a].address, "--label", "site=fra")
            windows = ["mon-fri 08:00-18:00 10MB/s", "daily 23:30:00-00:30:00 paused"]
            flags = ["--rate", "20MB/s", "--timezone", "Europe/Berlin", "--max-transfers", "2"]
            for w in windows:
                flags += ["--window", w]
            site = site_set(c, "fra", *flags)
            want = {"name": "fra", "rate": "20MB/s", "windows": [normal_window(w) for w in windows],
                    "timezone": "Europe/Berlin", "max_transfers": 2, "agents": agents}
            self.assertEqual(policy(site), want, site)
            self.assert_rate_now(c, "fra", want)
            muc = site_set(c, "muc", "--rate", "paused")
            self.assertEqual((muc["rate"], muc["rate_now"], muc["agents"], muc["timezone"]),
                             ("paused", "paused", [], "UTC"), muc)
            self.assertEqual(site_names(c), ["fra", "muc"])

            c.kill(c.controller, signal.SIGKILL)
            c.restart_controller()
            site = self.assert_rate_now(c, "fra", want)
            self.assertEqual(policy(site), want, f"after kill -9 and restart: {site}")
            self.assertEqual(policy(site_show(c, "muc"))["rate"], "paused")
            self.assertEqual(site_names(c), ["fra", "muc"])

            for bad, words in [(["--rate", "0"], ["rate", "0"]),
                               (["--rate", "10Mb/s"], ["10Mb/s"]),
                               (["--window", "funday 08:00-09:00 1MB/s"], ["funday"]),
                               (["--timezone", "Mars/Olympus"], ["Mars/Olympus"])]:
                rc, out, err = c.ctl_raw("site", "set", "fra", *bad)
                self.assertNotEqual(rc, 0, f"site set fra {bad} was accepted: {out}")
                for word in words:
                    self.assertIn(word.lower(), err.lower(), f"site set fra {bad}: the message "
                                                             f"does not name {word!r}: {err!r}")
                print(f"site set fra {' '.join(bad)}: exit {rc}: {err.strip()}")
                self.assertEqual(policy(site_show(c, "fra")), want, f"changed by {bad}")
            rc, _, err = c.ctl_raw("site", "set", "ber", "--rate", "0")
            self.assertNotEqual(rc, 0, "site set ber --rate 0 was accepted")
            self.assertEqual(site_names(c), ["fra", "muc"], "a refused site set made a site")


class SiteRelayTest(unittest.TestCase):

    def test_a_relay_is_kept_across_a_controller_restart_and_bad_relays_are_refused(self):
        # `site set fra --relay dp1` is shown by site show/list and kept after
        # kill -9 and restart; an unknown agent, one of another site, one with
        # no site and a bad name are refused naming why, changing nothing;
        # --relay auto clears it.
        with Cluster() as c:
            c.start_controller()
            for name, labels in [("dp1", ["--label", "site=fra"]),
                                 ("dp2", ["--label", "site=fra"]),
                                 ("muc1", ["--label", "site=muc"]), ("spare", [])]:
                c.reserve_port(name)
                c.ctl("agent", "add", name, c.agents[name].address, *labels)
            site = site_set(c, "fra", "--relay", "dp1", "--rate", "20MB/s")
            self.assertEqual((site["relay"], site["rate"], sorted(site["agents"])),
                             ("dp1", "20MB/s", ["dp1", "dp2"]), site)

            c.kill(c.controller, signal.SIGKILL)
            c.restart_controller()
            self.assertEqual(site_show(c, "fra")["relay"], "dp1")
            relays = {s["name"]: s["relay"] for s in c.ctl("site", "list")["sites"]}
            self.assertEqual(relays, {"fra": "dp1", "muc": ""})
            rc, table, err = c.ctl_raw("site", "list", output="table")
            self.assertEqual(rc, 0, err)
            self.assertRegex(table, r"(?m)^SITE\s+AGENTS\s+RELAY\s")
            self.assertRegex(table, r"(?m)^fra\s+2\s+dp1\s")
            self.assertRegex(table, r"(?m)^muc\s+1\s+auto\s")

            for relay, words in [("nobody", "agent nobody is not registered"),
                                 ("muc1", "agent muc1 is in site muc, not fra"),
                                 ("spare", "agent spare has no site label"),
                                 ("a/b", 'relay "a/b"')]:
                rc, out, err = c.ctl_raw("site", "set", "fra", "--relay", relay)
                self.assertNotEqual(rc, 0, f"site set fra --relay {relay} was accepted: {out}")
                self.assertIn(words, err, f"--relay {relay}")
                print(f"site set fra --relay {relay}: exit {rc}: {err.strip()}")
                self.assertEqual(site_show(c, "fra")["relay"], "dp1", f"changed by {relay}")

            site = site_set(c, "fra", "--relay", "auto")
            self.assertEqual((site["relay"], site["rate"]), ("", "20MB/s"), site)
            rc, table, err = c.ctl_raw("site", "show", "fra", output="table")
            self.assertEqual(rc, 0, err)
            self.assertRegex(table, r"(?m)^relay:\s+auto$")
            c.kill(c.controller, signal.SIGKILL)
            c.restart_controller()
            self.assertEqual(site_show(c, "fra")["relay"], "")


class AgentAndEgressLimitTest(unittest.TestCase):

    def test_an_agent_limit_and_the_egress_limit_hold_and_are_kept(self):
        # egress 16MB/s over two agents, one of them held at 4MB/s by its own
        # limit: the times to complete say so; both limits survive a restart.
        agents = ["a1", "a2"]
        with Cluster(agents=agents) as c:
            c.start_controller()
            for a in agents:
                c.start_agent(a)
                c.add_agent(a)
            egress = c.ctl("egress", "set", "--rate", "16MB/s")
            self.assertEqual(egress["rate"], "16MB/s", egress)
            a1 = c.ctl("agent", "set", "a1", "--rate", "4MB/s")
            self.assertEqual(a1["rate"], "4MB/s", a1)
            rates = {a["name"]: a["rate"] for a in c.ctl("agent", "list")["agents"]}
            self.assertEqual(rates, {"a1": "4MB/s", "a2": "unlimited"})
            src = harness.make_file_package(os.path.join(c.dir, "p"), "p.bin", 24 * MiB, 5)
            c.import_package(src, "p", "1.0")
            started = time.monotonic()
            job = c.distribute("p@1.0", agents)
            done_at = {}

            def progress():
                status = c.job(job)
                for t in status["targets"]:
                    if t["state"] == "done" and t["agent"] not in done_at:
                        done_at[t["agent"]] = time.monotonic() - started
                return status

            c.wait_job(job, lambda j: progress()["state"] == "complete", 60, "p@1.0 to a1, a2")
            size = 24 * MiB
            # a2 gets what a1 leaves of 16MB/s (12MB/s) until it is done; a1 gets 4MB/s.
            print(f"a1 done after {done_at['a1']:.1f}s, a2 after {done_at['a2']:.1f}s")
            self.assertGreater(done_at["a1"], 0.8 * size / (4 * MB), "a1 went faster than 4MB/s")
            self.assertGreater(done_at["a2"], 0.8 * size / (12 * MB), "a2 beat the egress limit")
            self.assertLess(done_at["a2"], done_at["a1"], "a2 was held like a1")
            for a in agents:
                harness.assert_trees_identical(os.path.dirname(src), c.published(a, "p", "1.0"))
            egress = c.ctl("egress", "show")
            self.assertEqual(egress["bytes_sent"], 2 * size, egress)

            c.kill(c.controller, signal.SIGKILL)
            c.restart_controller()
            self.assertEqual(c.ctl("egress", "show")["rate"], "16MB/s")
            self.assertEqual(c.ctl("agent", "show", "a1")["rate"], "4MB/s")
            for bad in (["egress", "set", "--rate", "fast"], ["agent", "set", "a1", "--rate", "0"],
                        ["agent", "set", "nobody", "--rate", "1MB/s"]):
                rc, out, err = c.ctl_raw(*bad)
                self.assertNotEqual(rc, 0, f"{bad} was accepted: {out}")
                self.assertTrue(err.strip(), f"{bad}: no message")
                print(f"{' '.join(bad)}: exit {rc}: {err.strip()}")
            self.assertEqual(c.ctl("agent", "show", "a1")["rate"], "4MB/s")


if __name__ == "__main__":
    unittest.main()
