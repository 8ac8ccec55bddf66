"""A randomized fault campaign against real pkgdist processes.

Starts a controller and six agents (each agent in a network namespace of its
own, joined to the controller's namespace by a veth pair, when run as root;
all on 127.0.0.1 otherwise), runs an operator's workload (imports of packages
of several shapes, new versions, distributions to overlapping sets of agents,
removals, cancels, retries, deletions) and meanwhile injects faults at random
times drawn from one seed: agent kill -9 and restart, agent SIGSTOP/SIGCONT,
controller kill -9 or SIGTERM and restart, a pulled cable (iptables DROP both
ways), connection resets (REJECT tcp-reset), a slow link (tbf), a full disk
(the agent's root is a tmpfs; a ballast file fills it) and a certificate
rotated on disk. Faults overlap; each kind keeps to one subject at a time.

Everything a client could observe goes into a history (JSON lines, format in
checker.py): every event of the admin API with its receipt time, what an
observer listing each agent's packages/ saw and when, the hash of every tree
the moment it appeared, every fault's start and end, every operator call,
and at the end of each round a snapshot of every job and of every agent's
root. checker.py then checks the history against pkgdist's guarantees.

A campaign is made of rounds: faults and workload for --round-seconds, then
every fault healed, then up to --settle-seconds for every job to finish,
then the snapshot. The run ends after --seconds (at a round's end).

    python3 tests/chaos/campaign.py --seed 42 --seconds 90
    python3 tests/chaos/campaign.py --seed 42 --seconds 90 --keep   # keep the directory

The seed decides the schedule (fault kinds, subjects, hold times, the
workload); the timing of real processes does not replay exactly, but a seed
that found a bug reproduces the same pressure. The binaries are found as the
other tests find them (PKGDIST_BIN_DIR, default build/bin).
"""

import argparse
import json
import os
import queue
import random
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, HERE)
import checker  # noqa: E402
import harness  # noqa: E402
from harness import MiB, binary  # noqa: E402

AGENTS = ["dp1", "dp2", "dp3", "dp4", "dp5", "dp6"]
DETECT_SECONDS = 6
MAX_BACKOFF_SECONDS = 2
WINDOW_BYTES = 4 * MiB
# Paced so that a transfer lasts long enough for faults to land in it.
RATE_BYTES_PER_SECOND = 8 * MiB
AGENT_TMPFS_BYTES = 320 * MiB
AGENT_RESERVE = "16MiB"
SCAN_INTERVAL = 0.05
CONTROLLER_PORT = 7700
AGENT_PORT = 7701
MAX_LIVE_PACKAGES = 7
CMD_TIMEOUT = 30
NS_PREFIX = "pkgdist-chaos"

NET_FAULTS = ("cable", "reset", "slow_link")
# Relative frequency of each fault kind.
FAULT_WEIGHTS = {
    "agent_kill": 3, "agent_stop": 2, "controller_kill": 1, "controller_term": 1,
    "cable": 2, "reset": 2, "slow_link": 1, "disk_full": 1, "cert_rotate": 1,
}
OPERATOR_WEIGHTS = {"import": 3, "distribute": 6, "remove_from": 1, "cancel": 1, "retry": 2}


def run(*cmd, check=True, timeout=CMD_TIMEOUT):
    return harness.run_cmd(*cmd, check=check, timeout=timeout)


def sanitized():
    """Whether the binaries are an AddressSanitizer build (slower: bounds double)."""
    r = run("ldd", binary("pkgdist-controller"), check=False)
    return "libasan" in r.stdout


def netns_problem():
    """Why network namespaces (and tmpfs roots) cannot be used here, or None."""
    if os.geteuid() != 0:
        return f"not root (uid {os.geteuid()})"
    for tool in ("ip", "iptables", "tc", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe = f"{NS_PREFIX}{os.getpid()}-probe"
    r = run("ip", "netns", "add", probe, check=False)
    if r.returncode != 0:
        return f"`ip netns add` fails: {r.stderr.strip()}"
    try:
        r = run("ip", "netns", "exec", probe, "iptables", "-A", "INPUT", "-p", "tcp", "-j",
                "REJECT", "--reject-with", "tcp-reset", check=False)
        if r.returncode != 0:
            return f"iptables does not work in a namespace: {r.stderr.strip()}"
    finally:
        run("ip", "netns", "del", probe, check=False)
    return None


class History:
    """The campaign's history file and its one clock. Thread-safe."""

    def __init__(self, path):
        self.path = path
        self.t0 = time.monotonic()
        self.wall_t0 = time.time()
        self._lock = threading.Lock()
        self._file = open(path, "a", encoding="utf-8")

    def now(self):
        return time.monotonic() - self.t0

    def write(self, type_, t=None, **fields):
        record = {"type": type_, "t": round(self.now() if t is None else t, 4), **fields}
        line = json.dumps(record, sort_keys=True)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()

    def say(self, message):
        print(f"[{self.now():7.2f}s] {message}", flush=True)

    def close(self):
        with self._lock:
            self._file.close()


class Network:
    """Namespaces: the controller's, and one per agent joined to it by a
    veth pair (controller side `v-NAME` at 10.232.I.1, agent side `uplink`
    at 10.232.I.2). Or, without root, plain loopback."""

    def __init__(self, use_netns, agents):
        self.netns = use_netns
        self.agents = list(agents)
        tag = f"{NS_PREFIX}{os.getpid()}"
        self.ns_ctrl = f"{tag}-ctrl" if use_netns else None
        self.ns = {a: f"{tag}-{a}" for a in agents} if use_netns else {}
        self.ip = {a: f"10.232.{i + 1}.2" for i, a in enumerate(agents)}
        self.ip_ctrl_side = {a: f"10.232.{i + 1}.1" for i, a in enumerate(agents)}

    def up(self):
        if not self.netns:
            return
        try:
            run("ip", "netns", "add", self.ns_ctrl)
            run("ip", "-n", self.ns_ctrl, "link", "set", "lo", "up")
            for a in self.agents:
                run("ip", "netns", "add", self.ns[a])
                run("ip", "link", "add", self.veth_ctrl(a), "netns", self.ns_ctrl, "type", "veth",
                    "peer", "name", "uplink", "netns", self.ns[a])
                for ns, dev, ip in ((self.ns_ctrl, self.veth_ctrl(a), self.ip_ctrl_side[a]),
                                    (self.ns[a], "uplink", self.ip[a])):
                    run("ip", "-n", ns, "addr", "add", ip + "/30", "dev", dev)
                    run("ip", "-n", ns, "link", "set", dev, "up")
                run("ip", "-n", self.ns[a], "link", "set", "lo", "up")
            for a in self.agents:
                harness.wait_for(
                    lambda: " UP " in run("ip", "-n", self.ns[a], "-br", "link", "show", "dev",
                                          "uplink").stdout + " ",
                    timeout=10, what=f"{a}'s uplink to be up", interval=0.02)
        except BaseException:
            self.down()
            raise

    def down(self):
        if not self.netns:
            return
        for ns in [self.ns_ctrl, *self.ns.values()]:
            run("ip", "netns", "del", ns, check=False)

    @staticmethod
    def veth_ctrl(agent):
        return f"v-{agent}"[:15]

    def ctrl_prefix(self):
        return ["ip", "netns", "exec", self.ns_ctrl] if self.netns else []

    def agent_prefix(self, agent):
        return ["ip", "netns", "exec", self.ns[agent]] if self.netns else []

    def in_agent_ns(self, agent, *cmd, check=True):
        return run(*self.agent_prefix(agent), *cmd, check=check)

    def in_ctrl_ns(self, *cmd, check=True):
        return run(*self.ctrl_prefix(), *cmd, check=check)


class Spawner:
    """Forks every daemon from one thread that lives as long as the campaign:
    the harness asks the kernel to kill a child when its parent dies
    (PR_SET_PDEATHSIG), and for the kernel the parent is the thread that
    forked, so a daemon restarted by a fault's thread would die with it."""

    def __init__(self):
        self._requests = queue.Queue()
        self._thread = threading.Thread(target=self._serve, name="spawner", daemon=True)
        self._thread.start()

    def _serve(self):
        while True:
            fn, reply = self._requests.get()
            if fn is None:
                return
            try:
                reply.put((fn(), None))
            except BaseException as e:
                reply.put((None, e))

    def call(self, fn):
        reply = queue.Queue()
        self._requests.put((fn, reply))
        value, error = reply.get()
        if error is not None:
            raise error
        return value

    def stop(self):
        self._requests.put((None, None))
        self._thread.join(timeout=10)


class ChaosCluster(harness.Cluster):
    """A harness.Cluster whose controller keeps one address across restarts
    (so the event follower reconnects to it) and whose processes and
    pkgdistctl run in the namespaces of `network`."""

    def __init__(self, network, spawner):
        super().__init__(agents=network.agents)
        self.net = network
        self.spawner = spawner
        self.ctrl_listen_port = CONTROLLER_PORT

    def _new_proc(self, name, argv, log_path):
        return self.spawner.call(lambda: harness.Proc(name, argv, log_path))

    def __enter__(self):
        super().__enter__()
        if not self.net.netns:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self.ctrl_listen_port = s.getsockname()[1]
        return self

    def start_controller(self, extra=(), **opts):
        port_file = os.path.join(self.dir, "controller.port")
        if os.path.exists(port_file):
            os.unlink(port_file)
        argv = [*self.net.ctrl_prefix(), binary("pkgdist-controller"),
                "--listen", f"127.0.0.1:{self.ctrl_listen_port}", "--port-file", port_file,
                "--state-dir", self.controller_state_dir, *self.tls_flags("controller"),
                "--detect-seconds", str(DETECT_SECONDS),
                "--max-backoff-seconds", str(MAX_BACKOFF_SECONDS),
                "--window-bytes", str(WINDOW_BYTES),
                "--max-bytes-per-second", str(RATE_BYTES_PER_SECOND),
                "--cert-refresh-seconds", "1", *extra]
        self.controller, self.controller_port = self._start("controller", argv, port_file)
        return self.controller

    def start_agent(self, name, cert=None, port=None, extra=()):
        agent = self._agent(name)
        if not agent.port:
            agent.port = AGENT_PORT if self.net.netns else self.reserve_port(name)
        host = self.net.ip[name] if self.net.netns else "127.0.0.1"
        port_file = os.path.join(self.dir, f"agent-{name}.port")
        argv = [*self.net.agent_prefix(name), binary("pkgdist-agent"), "--name", name,
                "--listen", f"{host}:{agent.port}", "--port-file", port_file,
                "--root", agent.root, *self.tls_flags(name), "--reserve-bytes", AGENT_RESERVE,
                *extra]
        agent.proc, _ = self._start(f"agent-{name}", argv, port_file)
        return agent.proc

    def agent_address(self, name):
        host = self.net.ip[name] if self.net.netns else "127.0.0.1"
        return f"{host}:{self._agent(name).port}"

    def add_agent(self, name):
        return self.ctl("agent", "add", name, self.agent_address(name))

    def ctl_argv(self, *args):
        return [*self.net.ctrl_prefix(), binary("pkgdistctl"), "--controller",
                f"127.0.0.1:{self.ctrl_listen_port}", *self.tls_flags("admin"),
                "--output", "json", *map(str, args)]

    def ctl_raw(self, *args, timeout=harness.CTL_TIMEOUT, cert="admin", output="json"):
        try:
            r = subprocess.run(self.ctl_argv(*args), stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return 124, "", f"pkgdistctl {' '.join(map(str, args))} did not finish in {timeout}s"
        return r.returncode, r.stdout, r.stderr


class EventFollower:
    """`pkgdistctl events --follow --output json`, every event written to the
    history with its receipt time. pkgdistctl reconnects by itself across a
    controller restart; if it exits anyway it is started again after the
    last sequence received."""

    def __init__(self, cluster, history):
        self.c = cluster
        self.h = history
        self.last_sequence = 0
        self.finished = {}  # job id -> last observed job state
        self.kinds = {}     # job id -> distribute | remove
        self._stop = threading.Event()
        self._proc = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="events", daemon=True)

    def start(self):
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            argv = self.c.ctl_argv("events", "--follow", "--after", self.last_sequence)
            with self._lock:
                if self._stop.is_set():
                    return
                self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                              text=True, preexec_fn=harness._die_with_parent)
            for line in self._proc.stdout:
                t = self.h.now()
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                seq = int(event.get("sequence", 0))
                if seq <= self.last_sequence:
                    continue
                self.last_sequence = seq
                self.h.write("event", t=t, event=event)
                kind = event.get("kind")
                if kind == "job_created":
                    self.kinds[event["job_id"]] = event.get("job_kind", "")
                    self.finished[event["job_id"]] = event.get("state", "pending")
                elif kind == "job_finished":
                    self.finished[event["job_id"]] = event.get("state", "")
                elif kind == "target_changed" and event.get("state") not in (
                        "done", "cancelled", "failed"):
                    self.finished[event["job_id"]] = "in_progress"
            self._proc.wait()
            self._stop.wait(0.5)

    def open_jobs(self):
        return [j for j, s in list(self.finished.items())
                if s not in ("complete", "cancelled", "failed")]

    def stop(self):
        self._stop.set()
        with self._lock:
            if self._proc and self._proc.poll() is None:
                self._proc.terminate()
        self._thread.join(timeout=10)


class Observer:
    """Lists each agent's packages/ every SCAN_INTERVAL and records each change;
    hashes every tree the moment it appears and compares it with its source."""

    def __init__(self, cluster, history, sources):
        self.c = cluster
        self.h = history
        self.sources = sources  # "name@version" -> tree entries (set by the operator)
        self._stop = threading.Event()
        self._verify = queue.Queue()
        self.scans = 0      # scans of every agent done so far
        self._threads = [threading.Thread(target=self._scan_loop, name="observer", daemon=True),
                         threading.Thread(target=self._verify_loop, name="verifier", daemon=True)]

    def start(self):
        for t in self._threads:
            t.start()

    def _listing(self, agent):
        root = os.path.join(self.c._agent(agent).root, "packages")
        found = set()
        try:
            names = os.listdir(root)
        except FileNotFoundError:
            return found
        for name in names:
            try:
                for version in os.listdir(os.path.join(root, name)):
                    found.add(f"{name}@{version}")
            except (FileNotFoundError, NotADirectoryError):
                pass
        return found

    def _scan_loop(self):
        last = {a: None for a in self.c.net.agents}
        last_t = {a: None for a in self.c.net.agents}
        while not self._stop.is_set():
            for a in self.c.net.agents:
                t = self.h.now()
                seen = self._listing(a)
                if seen != last[a]:
                    self.h.write("scan", t=t, prev_t=last_t[a], agent=a, packages=sorted(seen))
                    for pkg in seen - (last[a] or set()):
                        self._verify.put((a, pkg))
                    last[a] = seen
                last_t[a] = t
            self.scans += 1
            self._stop.wait(SCAN_INTERVAL)

    def _verify_loop(self):
        while not self._stop.is_set() or not self._verify.empty():
            try:
                agent, pkg = self._verify.get(timeout=0.2)
            except queue.Empty:
                continue
            self.verify(agent, pkg)
            self._verify.task_done()

    def verify(self, agent, pkg):
        name, version = pkg.split("@", 1)
        path = self.c.published(agent, name, version)
        try:
            entries = tree_entries(path)
            problems = compare(self.sources.get(pkg), entries, pkg)
        except FileNotFoundError:
            problems = ["vanished"]
        vanished = not os.path.isdir(path)
        self.h.write("verify", agent=agent, package=pkg, ok=not problems,
                     vanished=bool(problems) and vanished, problems=problems[:10])

    def wait_scans(self, n=2, timeout=10):
        start = self.scans
        harness.wait_for(lambda: self.scans >= start + n, timeout=timeout,
                         what="the observer to scan again", interval=0.02)

    def drain(self, timeout=120):
        harness.wait_for(lambda: self._verify.unfinished_tasks == 0, timeout=timeout,
                         what="the verifier to hash every tree it saw appear", interval=0.05)

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)


def tree_entries(root):
    """harness.tree_entries as lists (JSON), raising FileNotFoundError if root
    or anything under it vanished while it was read."""
    if not os.path.isdir(root):
        raise FileNotFoundError(root)

    def fail(e):
        raise e
    entries = {}
    for dirpath, dirnames, filenames in os.walk(root, onerror=fail):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                entries[rel] = ["symlink", None, None, os.readlink(full)]
            elif stat.S_ISDIR(st.st_mode):
                entries[rel] = ["dir", oct(stat.S_IMODE(st.st_mode)), None, None]
            elif stat.S_ISREG(st.st_mode):
                entries[rel] = ["file", oct(stat.S_IMODE(st.st_mode)), st.st_size,
                                harness._sha256(full)]
            else:
                entries[rel] = ["other", oct(st.st_mode), None, None]
    return entries


def compare(source, copy, pkg):
    if source is None:
        return [f"no source recorded for {pkg}"]
    return harness.tree_differences(source, copy)


class Operator:
    """The workload: what an operator and a build pipeline do, from `rng`."""

    def __init__(self, cluster, history, events, rng, work_dir):
        self.c = cluster
        self.h = history
        self.events = events
        self.rng = rng
        self.dir = work_dir
        self.sources = {}      # name@version -> tree entries
        self.live = []         # name@version that may be distributed, oldest first
        self.retiring = []     # removed from every agent; deleted next round
        self.versions = {}     # name -> latest version number
        self.counter = 0

    def call(self, action, *args, timeout=harness.CTL_TIMEOUT):
        rc, out, err = self.c.ctl_raw(*args, timeout=timeout)
        result = None
        if rc == 0:
            try:
                result = harness.parse_json_documents(out)
            except AssertionError:
                result = None
        self.h.write("op", action=action, args=[str(a) for a in args], ok=rc == 0,
                     result=result if isinstance(result, dict) else None,
                     error="" if rc == 0 else (err.strip() or out.strip())[-300:])
        return result if rc == 0 else None

    def make_source(self):
        """A new package or a new version of one: returns (name, version, path)."""
        self.counter += 1
        shape = self.rng.choice(["tree", "file", "many", "next"] if self.live else
                                ["tree", "file", "many"])
        seed = self.rng.randrange(1 << 30)
        if shape == "next":
            base = self.rng.choice(self.live)
            name = base.split("@")[0]
            version = str(self.versions[name] + 1)
            path = os.path.join(self.dir, "src", f"{name}@{version}")
            shutil.copytree(os.path.join(self.dir, "src", base), path, symlinks=True)
            files = sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs
                           if not os.path.islink(os.path.join(d, f)))
            rng = random.Random(seed)
            for f in rng.sample(files, min(3, len(files))):
                with open(f, "r+b") as fh:  # a changed region inside the file
                    size = os.path.getsize(f)
                    fh.seek(rng.randrange(max(1, size)))
                    fh.write(rng.randbytes(rng.randint(1, 64 * 1024)))
            harness.write_random_file(os.path.join(path, f"added-{version}.bin"),
                                      rng.randint(1, 2 * MiB), rng)
        else:
            name = f"{shape}{self.counter}"
            version = "1"
            path = os.path.join(self.dir, "src", f"{name}@{version}")
            rng = random.Random(seed)
            if shape == "tree":
                harness.make_tree(path, seed, big_file_bytes=rng.randint(1, 12) * MiB)
            elif shape == "file":
                os.makedirs(path)
                harness.write_random_file(os.path.join(path, "image.bin"),
                                          rng.randint(1 * MiB, 24 * MiB), rng)
            else:
                for i in range(rng.randint(150, 400)):
                    harness.write_random_file(os.path.join(path, f"d{i % 17}", f"f{i}.txt"),
                                              rng.randint(0, 8192), rng)
        return name, version, path

    def do_import(self):
        if len(self.live) >= MAX_LIVE_PACKAGES:
            return
        name, version, path = self.make_source()
        tree = tree_entries(path)
        result = self.call("import", "package", "import", path, "--name", name, "--version",
                           version, timeout=120)
        if result and result.get("id"):
            pkg = f"{name}@{version}"
            self.sources[pkg] = tree
            self.h.write("source", package=pkg, id=result["id"], tree=tree)
            self.live.append(pkg)
            self.versions[name] = int(version)
        else:
            shutil.rmtree(path, ignore_errors=True)

    def pick_agents(self):
        n = self.rng.randint(1, len(self.c.net.agents))
        return sorted(self.rng.sample(self.c.net.agents, n))

    def act(self):
        action = self.rng.choices(list(OPERATOR_WEIGHTS), weights=OPERATOR_WEIGHTS.values())[0]
        if action == "import" or not self.live:
            self.do_import()
        elif action == "distribute":
            pkg = self.rng.choice(self.live)
            self.call("distribute", "distribute", pkg, "--to", ",".join(self.pick_agents()))
        elif action == "remove_from":
            pkg = self.rng.choice(self.live)
            self.call("remove_from", "package", "remove-from", pkg, "--from",
                      ",".join(self.pick_agents()))
        else:
            jobs = self.events.open_jobs()
            if not jobs:
                return
            job = self.rng.choice(jobs)
            if action == "cancel":
                if self.rng.random() < 0.5:
                    self.call("cancel", "job", "cancel", job, "--agent",
                              self.rng.choice(self.c.net.agents))
                else:
                    self.call("cancel", "job", "cancel", job)
            else:
                self.call("retry", "job", "retry", job)

    def housekeeping(self):
        """At a round's start: delete what was retired last round, retire
        the oldest package if there are too many (removed from every agent,
        so that the agents' disks do not fill with old versions)."""
        for pkg in list(self.retiring):
            if self.call("delete_package", "package", "delete", pkg) is not None:
                self.retiring.remove(pkg)
                shutil.rmtree(os.path.join(self.dir, "src", pkg), ignore_errors=True)
        while len(self.live) > MAX_LIVE_PACKAGES - 2:
            pkg = self.live.pop(0)
            self.call("remove_from", "package", "remove-from", pkg, "--all")
            self.retiring.append(pkg)


class Faults:
    """Injects faults at random times; each kind has one subject at a time
    and every subject one fault of a category (process, network, disk,
    certificate) at a time, so that every fault can be undone."""

    def __init__(self, cluster, history, rng, kinds):
        self.c = cluster
        self.h = history
        self.rng = rng
        self.kinds = kinds
        self.counter = 0
        self.busy = set()           # (subject, category)
        self.lock = threading.Lock()
        self.threads = []
        self.failures = []
        # Held while an agent's certificate files are swapped or it starts.
        self.cert_locks = {a: threading.Lock() for a in cluster.net.agents}
        self.controller_lock = threading.Lock()

    @staticmethod
    def category(kind):
        if kind in NET_FAULTS:
            return "net"
        if kind in ("disk_full", "cert_rotate"):
            return kind
        return "proc"

    def inject_one(self):
        kind = self.rng.choices(self.kinds, weights=[FAULT_WEIGHTS[k] for k in self.kinds])[0]
        subject = "controller" if kind.startswith("controller") else self.rng.choice(
            self.c.net.agents)
        hold = self.rng.uniform(*{"agent_kill": (0.2, 3), "agent_stop": (1, 9),
                                  "controller_kill": (0.2, 3), "controller_term": (0.2, 2),
                                  "cable": (2, 12), "reset": (0.3, 2.5),
                                  "slow_link": (3, 12), "disk_full": (2, 8),
                                  "cert_rotate": (0, 0)}[kind])
        key = (subject, self.category(kind))
        with self.lock:
            if key in self.busy:
                return
            self.busy.add(key)
            self.counter += 1
            fault_id = self.counter
        t = threading.Thread(target=self._run, args=(fault_id, kind, subject, hold, key),
                             name=f"fault-{fault_id}", daemon=True)
        self.threads.append(t)
        t.start()

    def _run(self, fault_id, kind, subject, hold, key):
        try:
            undo = getattr(self, "_" + kind)(subject, fault_id, hold)
            if hold:
                time.sleep(hold)  # the fault's duration, drawn from the seed
            if undo:
                undo()
        except BaseException as e:  # a fault that cannot be undone fails the campaign
            self.failures.append(f"fault {fault_id} {kind} on {subject}: {e}\n"
                                 + traceback.format_exc())
            self.h.say(f"fault {fault_id} ({kind} {subject}) could not be applied or undone: {e}")
        finally:
            self.h.write("fault_end", id=fault_id)
            with self.lock:
                self.busy.discard(key)

    def _start(self, fault_id, kind, subject, detail=""):
        self.h.write("fault_start", id=fault_id, kind=kind, subject=subject, detail=detail)
        self.h.say(f"fault {fault_id}: {kind} {subject} {detail}".rstrip())

    # --- the faults: each applies itself and returns its undo -------------

    def _agent_kill(self, a, fault_id, hold):
        self._start(fault_id, "agent_kill", a)
        self.c.kill(self.c.agents[a].proc, signal.SIGKILL)
        return lambda: self._start_agent(a)

    def _start_agent(self, a):
        with self.cert_locks[a]:
            self.c.restart_agent(a)

    def _agent_stop(self, a, fault_id, hold):
        self._start(fault_id, "agent_stop", a)
        proc = self.c.agents[a].proc
        self.c.kill(proc, signal.SIGSTOP)
        return lambda: self.c.kill(proc, signal.SIGCONT)

    def _controller_kill(self, _, fault_id, hold):
        return self._controller_down(fault_id, "controller_kill", signal.SIGKILL)

    def _controller_term(self, _, fault_id, hold):
        return self._controller_down(fault_id, "controller_term", signal.SIGTERM)

    def _controller_down(self, fault_id, kind, sig):
        self._start(fault_id, kind, "controller")
        self.controller_lock.acquire()
        try:
            proc = self.c.controller
            self.c.kill(proc, sig, timeout=90)
            if sig == signal.SIGTERM and proc.returncode() != 0:
                raise AssertionError(f"the controller exited {proc.describe_exit()} on SIGTERM")
        except BaseException:
            self.controller_lock.release()
            raise

        def undo():
            try:
                self.c.start_controller()
            finally:
                self.controller_lock.release()
        return undo

    def _cable(self, a, fault_id, hold):
        self._start(fault_id, "cable", a, f"{hold:.1f}s")
        rules = [["INPUT", "-i", "uplink", "-j", "DROP"], ["OUTPUT", "-o", "uplink", "-j", "DROP"]]
        for r in rules:
            self.c.net.in_agent_ns(a, "iptables", "-A", *r)
        return lambda: [self.c.net.in_agent_ns(a, "iptables", "-D", *r) for r in rules]

    def _reset(self, a, fault_id, hold):
        self._start(fault_id, "reset", a, f"{hold:.1f}s")
        rule = ["INPUT", "-i", "uplink", "-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"]
        self.c.net.in_agent_ns(a, "iptables", "-A", *rule)
        return lambda: self.c.net.in_agent_ns(a, "iptables", "-D", *rule)

    def _slow_link(self, a, fault_id, hold):
        rate = self.rng.choice(["4mbit", "16mbit", "40mbit"])
        self._start(fault_id, "slow_link", a, f"{rate} {hold:.1f}s")
        dev = self.c.net.veth_ctrl(a)
        self.c.net.in_ctrl_ns("tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate,
                              "burst", "32kbit", "latency", "400ms")
        return lambda: self.c.net.in_ctrl_ns("tc", "qdisc", "del", "dev", dev, "root")

    def _disk_full(self, a, fault_id, hold):
        self._start(fault_id, "disk_full", a, f"{hold:.1f}s")
        ballast = os.path.join(self.c._agent(a).root, "ballast")
        fill_disk(ballast)
        return lambda: os.unlink(ballast)

    def _cert_rotate(self, a, fault_id, hold):
        self._start(fault_id, "cert_rotate", a)
        out = os.path.join(self.c.dir, f"rotated-{fault_id}")
        os.makedirs(out, mode=0o700)
        for f in ("ca.pem", "ca.key"):
            shutil.copy2(os.path.join(self.c.certs, f), out)
        run("bash", harness.GEN_CERTS, "--trust-domain", self.c.trust_domain, out, a, timeout=60)
        with self.cert_locks[a]:
            for ext in ("key", "pem"):  # new key first, then its certificate, each atomic
                tmp = os.path.join(self.c.certs, f"{a}.{ext}.new")
                shutil.copy2(os.path.join(out, f"{a}.{ext}"), tmp)
                os.replace(tmp, os.path.join(self.c.certs, f"{a}.{ext}"))
        shutil.rmtree(out, ignore_errors=True)
        return None

    def join(self):
        for t in self.threads:
            t.join(timeout=120)
            if t.is_alive():
                self.failures.append(f"{t.name} did not end within 120 s")
        self.threads = [t for t in self.threads if t.is_alive()]


fill_disk = harness.fill_disk


def snapshot_agent(cluster, agent):
    root = cluster._agent(agent).root
    published = {}
    pkgs = os.path.join(root, "packages")
    for name in sorted(os.listdir(pkgs)) if os.path.isdir(pkgs) else []:
        for version in sorted(os.listdir(os.path.join(pkgs, name))):
            published[f"{name}@{version}"] = tree_entries(os.path.join(pkgs, name, version))

    def listdir(sub):
        d = os.path.join(root, sub)
        return sorted(os.listdir(d)) if os.path.isdir(d) else []
    tmp_files = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir.split(os.sep)[0] in ("packages", "staging"):
            continue
        for f in filenames:
            if ".tmp" in f:
                tmp_files.append(os.path.normpath(os.path.join(rel_dir, f)))
    return dict(published=published, staging=listdir("staging"), trash=listdir("trash"),
                tmp_files=tmp_files)


class Campaign:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.slow = sanitized()
        self.settle_bound = args.settle_seconds * (2 if self.slow else 1)
        problem = netns_problem()
        self.mode = "loopback" if problem or args.loopback else "netns"
        self.why_loopback = problem or ("--loopback" if args.loopback else "")
        self.kinds = [k for k in FAULT_WEIGHTS if self.mode == "netns"
                      or k not in (*NET_FAULTS, "disk_full")]

    def run(self):
        a = self.args
        work = a.dir or tempfile.mkdtemp(prefix="pkgdist-chaos-")
        os.makedirs(work, exist_ok=True)
        history_path = a.history or os.path.join(work, "history.jsonl")
        h = History(history_path)
        print(f"chaos: seed {a.seed}, mode {self.mode}"
              + (f" (network and disk faults off: {self.why_loopback})" if self.why_loopback
                 else "") + f", history {history_path}", flush=True)
        print(f"chaos: replay with: python3 tests/chaos/campaign.py --seed {a.seed} "
              f"--seconds {a.seconds} --round-seconds {a.round_seconds}", flush=True)
        h.write("campaign", t=0.0, wall_t0=h.wall_t0, seed=a.seed, mode=self.mode, agents=AGENTS,
                window_bytes=WINDOW_BYTES, settle_bound_s=self.settle_bound,
                scan_interval_s=SCAN_INTERVAL, fault_kinds=self.kinds, sanitized=self.slow)
        net = Network(self.mode == "netns", AGENTS)
        mounts = []
        failures = []
        spawner = Spawner()
        # The cluster's directory (logs, roots, the controller's state) is
        # deleted here, after the tmpfs roots are unmounted, and only if the
        # campaign passed; the harness must not delete it on its own.
        os.environ["PKGDIST_KEEP_TMP"] = "1"
        cluster_dir = None
        try:
            net.up()
            with ChaosCluster(net, spawner) as c:
                cluster_dir = c.dir
                for agent in AGENTS:
                    root = c._agent(agent).root
                    os.makedirs(root)
                    if self.mode == "netns":
                        run("mount", "-t", "tmpfs", "-o", f"size={AGENT_TMPFS_BYTES},mode=0700",
                            "tmpfs", root)
                        mounts.append(root)
                c.start_controller()
                for agent in AGENTS:
                    c.start_agent(agent)
                    c.add_agent(agent)
                failures = self.rounds(c, h, work)
                if not failures:
                    failures += [f"process {p!r} exited on its own"
                                 for p in c.procs if not p.alive() and not p.expected_exit]
        finally:
            for root in mounts:
                if run("umount", root, check=False).returncode:
                    run("umount", "-l", root, check=False)
            net.down()
            spawner.stop()
            h.close()
        records = checker.load(history_path)
        result = checker.check(records)
        if result.violations or failures:
            print(f"chaos: process logs, agent roots and controller state kept in {cluster_dir}",
                  flush=True)
        elif cluster_dir:
            shutil.rmtree(cluster_dir, ignore_errors=True)
        return result, failures, work, history_path

    def rounds(self, c, h, work):
        a = self.args
        events = EventFollower(c, h)
        events.start()
        op = Operator(c, h, events, random.Random(self.rng.randrange(1 << 30)), work)
        observer = Observer(c, h, op.sources)
        observer.start()
        faults = Faults(c, h, random.Random(self.rng.randrange(1 << 30)), self.kinds)
        failures = []
        end = time.monotonic() + a.seconds
        round_no = 0
        try:
            while not failures:
                round_no += 1
                h.write("round_start", round=round_no)
                h.say(f"round {round_no}: faults and workload for {a.round_seconds} s")
                op.housekeeping()
                for _ in range(3):
                    op.do_import()
                next_fault = time.monotonic() + self.rng.expovariate(1 / a.fault_interval)
                next_op = time.monotonic()
                fault_end = time.monotonic() + a.round_seconds
                while time.monotonic() < fault_end and not faults.failures:
                    now = time.monotonic()
                    if now >= next_fault:
                        faults.inject_one()
                        next_fault = now + self.rng.expovariate(1 / a.fault_interval)
                    if now >= next_op:
                        op.act()
                        next_op = time.monotonic() + self.rng.uniform(0.2, 1.5)
                    time.sleep(max(0.0, min(next_fault, next_op, fault_end) - time.monotonic()))
                faults.join()
                failures += faults.failures
                if failures:
                    break
                h.write("faults_healed", round=round_no)
                h.say(f"round {round_no}: every fault healed; waiting up to "
                      f"{self.settle_bound:.0f} s for every job to finish")
                settled = self.settle(c, events)
                observer.wait_scans()
                observer.drain()
                jobs = c.ctl("job", "list")
                h.write("final_jobs", round=round_no,
                        jobs=jobs.get("jobs", []) if isinstance(jobs, dict) else jobs)
                for agent in AGENTS:
                    h.write("final_agent", round=round_no, agent=agent,
                            **snapshot_agent(c, agent))
                h.write("round_end", round=round_no, settled=settled)
                h.say(f"round {round_no}: {'settled' if settled else 'NOT settled'}")
                if time.monotonic() + a.round_seconds / 2 > end:
                    break
        finally:
            observer.stop()
            events.stop()
        return failures

    def settle(self, c, events):
        """Waits (bounded) until the API shows every job final."""
        def open_jobs():
            rc, out, _ = c.ctl_raw("job", "list")
            if rc != 0:
                return None
            jobs = harness.parse_json_documents(out).get("jobs", [])
            return [j["id"] for j in jobs if j["state"] not in ("complete", "cancelled", "failed")]
        try:
            harness.wait_for(open_jobs, lambda v: v == [], timeout=self.settle_bound,
                             what="every job to finish", interval=0.25)
            return True
        except harness.WaitTimeout:
            return False


def summary(f):
    """One line of the campaign's figures, for scripts/test.sh's output."""
    med, p99 = f.get("recovery_median_s"), f.get("recovery_p99_s")
    return (f"{f.get('rounds')} rounds, {f.get('faults_total')} faults ("
            + ", ".join(f"{k} {v}" for k, v in sorted(f.get("faults_by_kind", {}).items()))
            + f"), {sum(f.get('jobs', {}).values())} jobs, "
            f"{(f.get('bytes_moved') or 0) / MiB:.0f} MiB moved "
            f"({(f.get('bytes_resent') or 0) / MiB:.1f} MiB re-sent), "
            f"{f.get('published_verified')} trees verified as they appeared, last fault to "
            f"every job finished: median {med if med is not None else '-'} s, p99 "
            f"{p99 if p99 is not None else '-'} s; {f.get('violations')} violations")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=None, help="schedule seed (default: fresh)")
    p.add_argument("--seconds", type=float, default=90, help="campaign length (whole rounds)")
    p.add_argument("--round-seconds", type=float, default=45, help="faults per round")
    p.add_argument("--fault-interval", type=float, default=2.5,
                   help="mean seconds between fault starts")
    p.add_argument("--settle-seconds", type=float, default=60,
                   help="bound after the last fault for every job to finish (x2 under ASan)")
    p.add_argument("--loopback", action="store_true", help="no namespaces even as root")
    p.add_argument("--dir", help="work directory (default: a new temporary one)")
    p.add_argument("--history", help="history file (default: DIR/history.jsonl)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--figures", help="append the run's figures (JSON) to this file")
    args = p.parse_args(argv)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 31)
    return args


def main(argv=None):
    args = parse_args(argv)
    result, failures, work, history = Campaign(args).run()
    figures = dict(result.figures)
    print("chaos: figures " + json.dumps(figures, sort_keys=True), flush=True)
    print(f"chaos: summary: seed {args.seed}, {summary(figures)}", flush=True)
    for v in result.violations:
        print(f"chaos: VIOLATION {v.rule} ({v.subject}, t={v.t}): {v.message}", flush=True)
    for f in failures:
        print(f"chaos: FAILURE {f}", flush=True)
    if args.figures:
        with open(args.figures, "a", encoding="utf-8") as f:
            f.write(json.dumps({"seed": args.seed, "figures": figures,
                                "failures": failures}, sort_keys=True) + "\n")
    bad = bool(result.violations or failures)
    if bad:
        print(f"chaos: FAILED with seed {args.seed}; replay: python3 tests/chaos/campaign.py "
              f"--seed {args.seed} --seconds {args.seconds} --round-seconds "
              f"{args.round_seconds} --keep (history kept in {history})", flush=True)
    elif not args.keep and not args.dir:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
