"""Network namespaces for the fault tests: the environment check, clean-up of
namespaces a killed run left behind, and two topologies with a Cluster for
each.

- Link + NetnsCluster: a controller namespace and an agent namespace joined
  by one veth pair (test_network_netns.py).
- Sites + SitesCluster: a controller namespace and one namespace per site,
  each joined to the controller's by ONE veth pair, the site's WAN link;
  every agent of a site runs in the site's namespace on the site's address
  (distinct ports) and is registered with --label site=SITE. The counters of
  the controller-side end of a site's veth are what the site received
  (tx_bytes) and sent (rx_bytes), Ethernet headers included.

Addresses are /30s of 10.231.0.0/16 derived from the pid (8 per pid, as Link
does), so two runs never use the same subnet. Every namespace is named
pkgdist-tPID-..., and remove_stale_namespaces() deletes those whose PID is
gone. Teardown (down(), or leaving the `with` block) deletes every namespace
and with it every veth; the processes are the Cluster's to stop, which must
happen first (use the Cluster inside the topology's `with`, or register the
topology's down() as the earlier cleanup).

Everything here needs root: call environment_problem() first.
"""

import bisect
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import harness  # noqa: E402
from harness import Cluster, binary  # noqa: E402

CMD_TIMEOUT = 15
NS_PREFIX = "pkgdist-t"
# A site's end of its WAN link, inside the site's namespace.
SITE_DEV = "wan"
MAX_SITES = 8


def run(*cmd, check=True):
    """Runs a short command; raises with its stderr when check and it fails."""
    return harness.run_cmd(*cmd, check=check, timeout=CMD_TIMEOUT)


def environment_problem():
    """Why these tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces (running as uid %d)" % os.geteuid()
    for tool, package in (("ip", "iproute2"), ("iptables", "iptables"), ("tc", "iproute2")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian package {package})"
    probe = f"{NS_PREFIX}{os.getpid()}-probe"
    r = run("ip", "netns", "add", probe, check=False)
    if r.returncode != 0:
        return f"`ip netns add` does not work here: {r.stderr.strip()}"
    try:
        for rule in (["-A", "INPUT", "-m", "statistic", "--mode", "random",
                      "--probability", "0.05", "-j", "DROP"],
                     ["-A", "INPUT", "-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"]):
            r = run("ip", "netns", "exec", probe, "iptables", *rule, check=False)
            if r.returncode != 0:
                return (f"iptables does not work inside a network namespace "
                        f"(iptables {' '.join(rule)}): {r.stderr.strip()}")
    finally:
        run("ip", "netns", "del", probe, check=False)
    return None


def remove_stale_namespaces():
    """Deletes namespaces left by an earlier run whose process is gone."""
    r = run("ip", "netns", "list", check=False)
    for line in r.stdout.splitlines():
        m = re.match(rf"({re.escape(NS_PREFIX)}(\d+)-\S+)", line)
        if not m:
            continue
        try:
            os.kill(int(m.group(2)), 0)
        except ProcessLookupError:
            run("ip", "netns", "del", m.group(1), check=False)
        except PermissionError:
            pass


def subnet(slot):
    """The /30 number `slot` (0..16383) of 10.231.0.0/16, as (.1, .2)."""
    third, base = divmod(4 * (slot % 16384), 256)
    return f"10.231.{third}.{base + 1}", f"10.231.{third}.{base + 2}"


def pid_slot(index):
    """The /30 slot of this process's `index`-th subnet (0..7): 8 per pid,
    distinct for pids less than 2048 apart."""
    if not 0 <= index < 8:
        raise ValueError(f"subnet index {index} out of 0..7")
    return (os.getpid() % 2048) * 8 + index


def wait_up(ns, dev):
    harness.wait_for(lambda: " UP " in run("ip", "-n", ns, "-br", "link", "show",
                                           "dev", dev).stdout + " ",
                     timeout=10, what=f"{dev} in {ns} to be up", interval=0.02)


def link_counters(ns, dev):
    """(tx_bytes, rx_bytes) of DEV in namespace NS (one netlink dump)."""
    out = run("ip", "-n", ns, "-s", "-j", "link", "show", "dev", dev).stdout
    stats = json.loads(out)[0]["stats64"]
    return int(stats["tx"]["bytes"]), int(stats["rx"]["bytes"])


# --- one link: controller and agent -------------------------------------------------


class Link:
    """Two namespaces joined by a veth pair: the controller's side at
    .1 and the agent's at .2 of a /30 in 10.231.0.0/16."""

    def __init__(self, index):
        pid = os.getpid()
        tag = f"{pid}-{index}"
        self.ns_ctrl = f"{NS_PREFIX}{tag}-ctrl"
        self.ns_agent = f"{NS_PREFIX}{tag}-agent"
        self.veth_ctrl = f"pd{pid}{index}c"[:15]
        self.veth_agent = f"pd{pid}{index}a"[:15]
        base = 4 * ((pid * 8 + index) % 64)
        third = (pid // 8) % 256
        self.ip_ctrl = f"10.231.{third}.{base + 1}"
        self.ip_agent = f"10.231.{third}.{base + 2}"

    def up(self):
        try:
            run("ip", "netns", "add", self.ns_ctrl)
            run("ip", "netns", "add", self.ns_agent)
            run("ip", "link", "add", self.veth_ctrl, "netns", self.ns_ctrl, "type", "veth",
                "peer", "name", self.veth_agent, "netns", self.ns_agent)
            for ns, dev, ip in ((self.ns_ctrl, self.veth_ctrl, self.ip_ctrl),
                                (self.ns_agent, self.veth_agent, self.ip_agent)):
                run("ip", "-n", ns, "addr", "add", ip + "/30", "dev", dev)
                run("ip", "-n", ns, "link", "set", dev, "up")
                run("ip", "-n", ns, "link", "set", "lo", "up")
            for ns, dev in ((self.ns_ctrl, self.veth_ctrl), (self.ns_agent, self.veth_agent)):
                wait_up(ns, dev)
        except BaseException:
            self.down()
            raise

    def down(self):
        for ns in (self.ns_ctrl, self.ns_agent):
            run("ip", "netns", "del", ns, check=False)

    def in_agent_ns(self, *cmd):
        return run("ip", "netns", "exec", self.ns_agent, *cmd)

    def in_ctrl_ns(self, *cmd):
        return run("ip", "netns", "exec", self.ns_ctrl, *cmd)


def _ctl_in(ns, cluster, args, timeout, cert, output):
    argv = ["ip", "netns", "exec", ns, binary("pkgdistctl"),
            "--controller", cluster.controller_address, *cluster.tls_flags(cert),
            "--output", output, *map(str, args)]
    try:
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"pkgdistctl {' '.join(map(str, args))} did not finish "
                             f"within {timeout}s") from None
    return r.returncode, r.stdout, r.stderr


class NetnsCluster(Cluster):
    """A Cluster whose controller and pkgdistctl run in the controller's
    namespace and whose agents run in the agent's namespace, on the veth
    addresses."""

    def __init__(self, link, agents):
        super().__init__(agents=agents)
        self.link = link

    def start_controller(self, extra=(), **opts):
        port_file = os.path.join(self.dir, "controller.port")
        argv = ["ip", "netns", "exec", self.link.ns_ctrl, binary("pkgdist-controller"),
                "--listen", f"{self.link.ip_ctrl}:0", "--port-file", port_file,
                "--state-dir", os.path.join(self.dir, "controller-state"),
                *self.tls_flags("controller")]
        for k, v in opts.items():
            argv += ["--" + k.replace("_", "-"), str(v)]
        self.controller, self.controller_port = self._start("controller", argv + list(extra),
                                                            port_file)
        return self.controller

    @property
    def controller_address(self):
        return f"{self.link.ip_ctrl}:{self.controller_port}"

    def start_agent(self, name, cert=None, port=None, extra=()):
        agent = self._agent(name)
        port_file = os.path.join(self.dir, f"agent-{name}.port")
        argv = ["ip", "netns", "exec", self.link.ns_agent, binary("pkgdist-agent"),
                "--name", name, "--listen", f"{self.link.ip_agent}:{agent.port}",
                "--port-file", port_file, "--root", agent.root, *self.tls_flags(name), *extra]
        agent.proc, agent.port = self._start(f"agent-{name}", argv, port_file)
        return agent.proc

    def add_agent(self, name):
        return self.ctl("agent", "add", name, f"{self.link.ip_agent}:{self._agent(name).port}")

    def ctl_raw(self, *args, timeout=harness.CTL_TIMEOUT, cert="admin", output="json"):
        return _ctl_in(self.link.ns_ctrl, self, args, timeout, cert, output)


# --- sites: a controller and N sites, each behind one WAN link ------------------------


class Sites:
    """The controller's namespace and, per site, a namespace joined to it by
    one veth pair: `w{i}-{site}` in the controller's namespace at .1 and
    `wan` in the site's at .2 of the site's /30. The agents of a site share
    its address.

        with Sites({"fra": ["f1", "f2"], "muc": ["m1"]}, index=1) as sites:
            tx, rx = sites.counters("fra")

    `index` tells apart topologies of one process (namespace names); the
    subnets are the process's 8 (pid_slot), so at most 8 sites."""

    def __init__(self, sites, index=0):
        self.sites = {site: list(agents) for site, agents in dict(sites).items()}
        if not 0 < len(self.sites) <= MAX_SITES:
            raise ValueError(f"between 1 and {MAX_SITES} sites, got {len(self.sites)}")
        self.site_of_agent = {}
        for site, agents in self.sites.items():
            if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", site):
                raise ValueError(f"site name {site!r}: lower-case letters, digits and '-'")
            for a in agents:
                if a in self.site_of_agent:
                    raise ValueError(f"agent {a} is in sites {self.site_of_agent[a]} and {site}")
                self.site_of_agent[a] = site
        tag = f"{NS_PREFIX}{os.getpid()}-s{index}"
        self.ns_ctrl = f"{tag}-ctrl"
        self.ns = {}
        self.veth_ctrl = {}
        self.ip_ctrl = {}
        self.ip = {}
        for i, site in enumerate(self.sites):
            self.ns[site] = f"{tag}-{site}"
            self.veth_ctrl[site] = f"w{i}-{site}"[:15]
            self.ip_ctrl[site], self.ip[site] = subnet(pid_slot(i))

    def __enter__(self):
        self.up()
        return self

    def __exit__(self, *exc):
        self.down()
        return False

    @property
    def agents(self):
        return list(self.site_of_agent)

    def site_of(self, agent):
        try:
            return self.site_of_agent[agent]
        except KeyError:
            raise AssertionError(f"agent {agent} is in no site of {self.sites}") from None

    def up(self):
        try:
            run("ip", "netns", "add", self.ns_ctrl)
            run("ip", "-n", self.ns_ctrl, "link", "set", "lo", "up")
            for site in self.sites:
                ns, dev = self.ns[site], self.veth_ctrl[site]
                run("ip", "netns", "add", ns)
                run("ip", "link", "add", dev, "netns", self.ns_ctrl, "type", "veth",
                    "peer", "name", SITE_DEV, "netns", ns)
                for n, d, ip in ((self.ns_ctrl, dev, self.ip_ctrl[site]),
                                 (ns, SITE_DEV, self.ip[site])):
                    run("ip", "-n", n, "addr", "add", ip + "/30", "dev", d)
                    run("ip", "-n", n, "link", "set", d, "up")
                run("ip", "-n", ns, "link", "set", "lo", "up")
            for site in self.sites:
                wait_up(self.ns_ctrl, self.veth_ctrl[site])
                wait_up(self.ns[site], SITE_DEV)
        except BaseException:
            self.down()
            raise

    def down(self):
        """Deletes every namespace (their veths go with them); never raises
        for one that is already gone."""
        for ns in [*self.ns.values(), self.ns_ctrl]:
            run("ip", "netns", "del", ns, check=False)

    def counters(self, site):
        """(tx_bytes, rx_bytes) of the controller's end of SITE's WAN link:
        tx is what went to the site."""
        return link_counters(self.ns_ctrl, self.veth_ctrl[site])

    def tx_bytes(self, site):
        return self.counters(site)[0]

    def rx_bytes(self, site):
        return self.counters(site)[1]

    def in_ctrl_ns(self, *cmd, check=True):
        return run("ip", "netns", "exec", self.ns_ctrl, *cmd, check=check)

    def in_site_ns(self, site, *cmd, check=True):
        return run("ip", "netns", "exec", self.ns[site], *cmd, check=check)

    def sampler(self, site, interval=0.25):
        """A CounterSampler of SITE's WAN link (use it in a `with`)."""
        return CounterSampler(lambda: self.counters(site), interval,
                              f"{self.veth_ctrl[site]} in {self.ns_ctrl}")


class CounterSampler:
    """Reads (tx, rx) from `read` every `interval` seconds on a thread of its
    own, as (monotonic time, tx, rx) samples; the time of a sample is the
    middle of its read. Start and stop it with `with`."""

    def __init__(self, read, interval=0.25, what="counters"):
        self.read = read
        self.interval = interval
        self.what = what
        self._lock = threading.Lock()
        self._samples = []
        self._error = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"sampler {what}", daemon=True)

    def __enter__(self):
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)
        return False

    def _sample(self):
        before = time.monotonic()
        tx, rx = self.read()
        after = time.monotonic()
        with self._lock:
            self._samples.append(((before + after) / 2, tx, rx))

    def _loop(self):
        next_at = time.monotonic() + self.interval
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            try:
                self._sample()
            except BaseException as e:  # reported by the next call from the test's thread
                with self._lock:
                    self._error = e
                return
            next_at += self.interval
            if next_at < time.monotonic():  # fell behind (a slow read): no burst to catch up
                next_at = time.monotonic() + self.interval

    def samples(self):
        with self._lock:
            if self._error is not None:
                raise AssertionError(f"reading {self.what} failed: {self._error}")
            return list(self._samples)

    def last(self):
        return self.samples()[-1]

    def wait_until(self, t, what, slack=5.0):
        """Waits until a sample at or after monotonic time `t` exists."""
        return harness.wait_for(lambda: self.last()[0] >= t,
                                timeout=max(0.0, t - time.monotonic()) + slack,
                                what=f"a sample of {self.what} at or after {what}",
                                interval=0.05)

    def tx_at(self, t):
        return self.value_at(t, 1)

    def tx_after(self, t):
        """tx of the first sample taken at or after t (not interpolated: for a
        total that must include everything sent before t)."""
        for when, tx, _ in self.samples():
            if when >= t:
                return tx
        raise AssertionError(f"{self.what}: no sample after t={t:.2f}")

    def rx_at(self, t):
        return self.value_at(t, 2)

    def value_at(self, t, column):
        """Counter `column` (1 tx, 2 rx) at time t, interpolated between the
        samples around it; fails if t is outside the samples."""
        samples = self.samples()
        times = [s[0] for s in samples]
        if not samples or t < times[0] or t > times[-1]:
            span = f"{times[0]:.2f}..{times[-1]:.2f}" if samples else "none"
            raise AssertionError(f"{self.what}: no samples around t={t:.2f} (have {span})")
        i = bisect.bisect_left(times, t)
        if times[i] == t:
            return float(samples[i][column])
        (t0, *v0), (t1, *v1) = samples[i - 1], samples[i]
        a, b = v0[column - 1], v1[column - 1]
        return a + (b - a) * (t - t0) / (t1 - t0)

    def tx_rate(self, start, end):
        """Bytes per second sent to the site between two times."""
        return (self.tx_at(end) - self.tx_at(start)) / (end - start)

    def tx_rate_inside(self, start, end):
        """Bytes per second sent between the first sample at or after `start`
        and the last at or before `end`, not interpolated: for a quiet span
        whose edges are steps (a pause), where interpolating across an edge
        would count bytes from outside it."""
        inside = [(t, tx) for t, tx, _ in self.samples() if start <= t <= end]
        if len(inside) < 2:
            raise AssertionError(f"{self.what}: fewer than 2 samples in {start:.2f}..{end:.2f}")
        (t0, tx0), (t1, tx1) = inside[0], inside[-1]
        return (tx1 - tx0) / (t1 - t0)

    def first_time_tx_above(self, baseline, delta):
        """The time of the first sample whose tx exceeds baseline + delta, or None."""
        for t, tx, _ in self.samples():
            if tx > baseline + delta:
                return t
        return None

    def window_rates(self, start, end, width):
        """(window start, tx bytes/s) of every `width`-second window inside
        [start, end], one starting at each sample (and one ending at `end`)."""
        starts = [t for t, _, _ in self.samples() if start <= t <= end - width]
        if not starts or starts[-1] < end - width:
            starts.append(end - width)
        return [(s, self.tx_rate(s, s + width)) for s in starts]


class SitesCluster(Cluster):
    """A Cluster on a Sites topology: the controller (on 127.0.0.1) and
    pkgdistctl run in the controller's namespace, so only controller-agent
    traffic crosses a WAN link; each agent runs in its site's namespace on
    the site's address, and add_agent registers it with --label site=SITE."""

    def __init__(self, sites):
        super().__init__(agents=sites.agents)
        self.sites = sites

    def start_controller(self, extra=(), wrapper=(), **opts):
        if self.controller and self.controller.alive():
            raise AssertionError("the controller is already running")
        self._controller_opts = dict(opts, extra=list(extra), wrapper=list(wrapper))
        port_file = os.path.join(self.dir, "controller.port")
        argv = ["ip", "netns", "exec", self.sites.ns_ctrl, *wrapper,
                binary("pkgdist-controller"), "--listen", "127.0.0.1:0",
                "--port-file", port_file, "--state-dir", self.controller_state_dir,
                *self.tls_flags("controller")]
        if harness.LOG_LEVEL and "log_level" not in opts:
            argv += ["--log-level", harness.LOG_LEVEL]
        for k, v in opts.items():
            argv += ["--" + k.replace("_", "-"), str(v)]
        argv += list(extra)
        self.controller, self.controller_port = self._start("controller", argv, port_file)
        return self.controller

    def agent_address(self, name):
        agent = self._agent(name)
        if not agent.port:
            raise AssertionError(f"agent {name} has no port yet (start it first)")
        return f"{self.sites.ip[self.sites.site_of(name)]}:{agent.port}"

    def start_agent(self, name, cert=None, port=None, extra=()):
        site = self.sites.site_of(name)
        agent = self._agent(name)
        if agent.proc and agent.proc.alive():
            raise AssertionError(f"agent {name} is already running")
        agent.cert = cert or name
        agent.extra = list(extra)
        if port is not None:
            agent.port = port
        port_file = os.path.join(self.dir, f"agent-{name}.port")
        argv = ["ip", "netns", "exec", self.sites.ns[site], binary("pkgdist-agent"),
                "--name", name, "--listen", f"{self.sites.ip[site]}:{agent.port}",
                "--port-file", port_file, "--root", agent.root, *self.tls_flags(agent.cert)]
        if harness.LOG_LEVEL:
            argv += ["--log-level", harness.LOG_LEVEL]
        argv += agent.extra
        agent.proc, got = self._start(f"agent-{name}", argv, port_file)
        if agent.port and got != agent.port:
            raise AssertionError(f"agent {name} listens on {got}, expected {agent.port}")
        agent.port = got
        return agent.proc

    def add_agent(self, name, *labels):
        """Registers NAME at its site's address with --label site=SITE (and
        any further KEY=VALUE `labels`)."""
        flags = []
        for label in (f"site={self.sites.site_of(name)}", *labels):
            flags += ["--label", label]
        return self.ctl("agent", "add", name, self.agent_address(name), *flags)

    def start_all_agents(self):
        """Starts and registers every agent of every site."""
        for name in self.sites.agents:
            self.start_agent(name)
            self.add_agent(name)

    def ctl_raw(self, *args, timeout=harness.CTL_TIMEOUT, cert="admin", output="json"):
        return _ctl_in(self.sites.ns_ctrl, self, args, timeout, cert, output)

    def start_helper(self, name, argv, port_file, site=None):
        """Starts a helper process (a stand-in server) in SITE's namespace,
        or the controller's if None, and waits until it writes its port to
        `port_file`; it is stopped with the cluster's other processes and
        logs to logs/NAME.log. Returns (Proc, port)."""
        ns = self.sites.ns[site] if site is not None else self.sites.ns_ctrl
        return self._start(name, ["ip", "netns", "exec", ns, *argv], port_file)


class NamespaceTestCase(unittest.TestCase):
    """A test case that needs network namespaces: skipped, with the reason on
    the line ctest's SKIP_REGULAR_EXPRESSION matches, where they cannot be
    made; otherwise namespaces left by an earlier run are deleted first.
    `next_index()` numbers each test's topology."""
    problem = None
    _counter = 0

    @classmethod
    def setUpClass(cls):
        cls.problem = environment_problem()
        if cls.problem:
            # ctest reports the test as skipped on this line (tests/faults/CMakeLists.txt).
            print(f"network namespace tests skipped: {cls.problem}", flush=True)
        else:
            remove_stale_namespaces()

    def setUp(self):
        if self.problem:
            self.skipTest(self.problem)

    def package(self, c, name, size, seed):
        """Imports a one-file package name@1.0 of `size` random bytes; returns
        the directory it came from."""
        path = harness.make_file_package(os.path.join(c.dir, "src-" + name), name + ".bin",
                                         size, seed)
        info = c.import_package(path, name, "1.0")
        self.assertEqual(int(info["size"]), size)
        return os.path.dirname(path)

    def topology(self, sites):
        """A Sites topology brought up now and deleted when the test ends,
        after the cluster (a `with` inside the test) has stopped every
        process."""
        topo = Sites(sites, index=self.next_index())
        topo.up()
        self.addCleanup(topo.down)
        return topo

    @staticmethod
    def next_index():
        NamespaceTestCase._counter += 1
        return NamespaceTestCase._counter
