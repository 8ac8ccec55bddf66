"""Harness for pkgdist's integration and fault tests.

Runs the real binaries (pkgdist-controller, pkgdist-agent, pkgdistctl) as
processes on 127.0.0.1 over real mutual TLS, with certificates made at test
time by certs/gen-dev-certs.sh, in a temporary directory per cluster.

    with harness.Cluster(agents=["dp1", "dp2"]) as c:
        c.start_controller(detect_seconds=6)
        c.start_agent("dp1")
        c.add_agent("dp1")
        job = c.distribute("pkg@1", ["dp1"])
        c.wait_job(job, lambda j: j["state"] == "complete", 30, "job completes")

Lifetime: every process a Cluster starts is stopped and waited for when the
`with` block ends, whatever happened (stopped ones get SIGCONT first), and
dies with the test runner if that is killed (PR_SET_PDEATHSIG). If the block
ends with an exception, the tails of every process's log are printed first.
A process that exits on its own with a failure status (a crash) makes the
block fail. Set PKGDIST_KEEP_TMP=1 to keep the temporary directory.

The binaries are found in $PKGDIST_BIN_DIR (ctest sets it) and the source
tree in $PKGDIST_SOURCE_DIR (default: two levels above this file).

Waiting is always bounded polling (wait_for); nothing sleeps in place of
synchronisation.
"""

import ctypes
import errno
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time

MiB = 1 << 20

SOURCE_DIR = os.environ.get("PKGDIST_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
BIN_DIR = os.environ.get("PKGDIST_BIN_DIR") or os.path.join(SOURCE_DIR, "build", "bin")
GEN_CERTS = os.path.join(SOURCE_DIR, "certs", "gen-dev-certs.sh")

# Bounds for start-up and for one pkgdistctl call.
START_TIMEOUT = 20.0
CTL_TIMEOUT = 30.0
STOP_GRACE = 3.0
LOG_TAIL_LINES = 40

# Extra flags for every daemon, e.g. PKGDIST_TEST_LOG_LEVEL=debug.
LOG_LEVEL = os.environ.get("PKGDIST_TEST_LOG_LEVEL", "")


# How AddressSanitizer, LeakSanitizer and UndefinedBehaviorSanitizer begin a report.
SANITIZER_REPORT = re.compile(r"ERROR: (Address|Leak|Undefined)Sanitizer|"
                              r"SUMMARY: UndefinedBehaviorSanitizer|: runtime error: ")


class WaitTimeout(AssertionError):
    """A bounded wait ran out; the message names what and the last value seen."""


def wait_for(observe, until=None, timeout=10.0, what="condition", interval=0.1):
    """Calls observe() every `interval` seconds until until(value) is true
    (or the value is truthy, without `until`) and returns that value.
    Raises WaitTimeout after `timeout` seconds naming `what` and the last
    value observed. Exceptions from observe() propagate."""
    deadline = time.monotonic() + timeout
    while True:
        value = observe()
        if (until(value) if until else value):
            return value
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout:.1f}s waiting for {what}; "
                              f"last observed: {_short(value)}")
        time.sleep(interval)


def _short(value, limit=4000):
    text = json.dumps(value, indent=1) if isinstance(value, (dict, list)) else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _tail(path, lines=LOG_TAIL_LINES):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"(cannot read {path}: {e})"
    return "\n".join(data.splitlines()[-lines:])


def run_cmd(*cmd, check=True, timeout=30):
    """Runs a short command (no stdin), capturing its output; raises with its
    stderr when `check` and it fails."""
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {r.returncode}: {r.stderr.strip()}")
    return r


def fill_disk(path):
    """Writes `path` until its file system is full (ENOSPC, down to 512-byte
    writes); returns the bytes written."""
    written = 0
    block = b"\0" * MiB
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while len(block) >= 512:
            try:
                written += os.write(fd, block)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                block = block[:len(block) // 4]
    finally:
        os.close(fd)
    return written


def _die_with_parent():
    """preexec_fn: the child gets SIGKILL when the test runner dies."""
    parent = os.getppid()
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    PR_SET_PDEATHSIG = 1
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


def binary(name):
    """The path of a built binary; fails clearly if it is not built."""
    path = os.path.join(BIN_DIR, name)
    if not os.access(path, os.X_OK):
        raise AssertionError(f"{name} is not built (looked in {BIN_DIR}; set PKGDIST_BIN_DIR)")
    return path


class Proc:
    """One started process: its argv, log file and exit status."""

    def __init__(self, name, argv, log_path):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.stopped = False
        self.expected_exit = False
        with open(log_path, "ab") as log:
            log.write(f"=== {time.strftime('%H:%M:%S')} start: {' '.join(argv)}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        self.pid = self.popen.pid

    def alive(self):
        return self.popen.poll() is None

    def returncode(self):
        return self.popen.poll()

    def tail(self, lines=LOG_TAIL_LINES):
        return _tail(self.log_path, lines)

    def describe_exit(self):
        rc = self.popen.poll()
        if rc is None:
            return "running"
        if rc < 0:
            return f"killed by {signal.Signals(-rc).name}"
        return f"exited with status {rc}"

    def __repr__(self):
        return f"<{self.name} pid {self.pid} {self.describe_exit()}>"


class CtlError(AssertionError):
    """pkgdistctl exited non-zero; carries its exit status and output."""

    def __init__(self, args, rc, stdout, stderr):
        super().__init__(f"pkgdistctl {' '.join(args)} exited {rc}: {stderr.strip() or stdout.strip()}")
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr


class Agent:
    """What the cluster knows about one agent: its port, root and process."""

    def __init__(self, name, root):
        self.name = name
        self.root = root
        self.port = 0
        self.proc = None
        self.cert = name
        self.extra = []

    @property
    def address(self):
        if not self.port:
            raise AssertionError(f"agent {self.name} has no port yet (start or reserve it first)")
        return f"127.0.0.1:{self.port}"


class Cluster:
    """A controller, agents and their certificates in one temporary directory.

    Not thread-safe: drive it from the test's thread."""

    def __init__(self, agents=(), trust_domain="pkgdist.dev"):
        self.initial_agents = list(agents)
        self.trust_domain = trust_domain
        self.dir = None
        self.certs = None
        self.procs = []
        self.agents = {}
        self.controller = None
        self.controller_port = 0
        self._controller_opts = {}
        self._counter = 0

    # --- lifetime --------------------------------------------------------

    def __enter__(self):
        self.dir = tempfile.mkdtemp(prefix="pkgdist-test-")
        self.certs = os.path.join(self.dir, "certs")
        try:
            self.make_certs(*self.initial_agents)
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        crashed = [p for p in self.procs if not p.alive() and not p.expected_exit
                   and p.returncode() != 0]
        if exc_type is not None or crashed:
            self.print_logs()
        self._stop_all()
        reports = self.sanitizer_reports()
        if reports and exc_type is None:
            self.print_logs()
        if os.environ.get("PKGDIST_KEEP_TMP"):
            print(f"keeping {self.dir}", file=sys.stderr)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
        if exc_type is None and crashed:
            raise AssertionError("process(es) exited on their own with a failure: "
                                 + ", ".join(repr(p) for p in crashed))
        if exc_type is None and reports:
            raise AssertionError("sanitizer report(s) in process logs:\n" + "\n".join(reports))
        return False

    def sanitizer_reports(self):
        """Lines of every process log in which ASan, LSan or UBSan reported an
        error (a sanitized build writes them to stderr, i.e. the log, often
        only at exit), each prefixed with the log's name."""
        found = []
        for log_path in dict.fromkeys(p.log_path for p in self.procs):
            try:
                with open(log_path, encoding="utf-8", errors="replace") as f:
                    for line in f:
                        if SANITIZER_REPORT.search(line):
                            found.append(f"{os.path.basename(log_path)}: {line.rstrip()}")
            except FileNotFoundError:
                pass
        return found

    def _stop_all(self):
        live = [p for p in self.procs if p.alive()]
        for p in live:
            p.expected_exit = True
            try:
                if p.stopped:
                    p.popen.send_signal(signal.SIGCONT)
                    p.stopped = False
                p.popen.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + STOP_GRACE
        for p in live:
            try:
                p.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.popen.kill()
                p.popen.wait()

    def print_logs(self, lines=LOG_TAIL_LINES):
        """Prints the tail of every process's log to stderr."""
        runs = {}
        for p in self.procs:
            runs.setdefault(p.log_path, []).append(p)
        for log_path, procs in runs.items():
            states = ", ".join(f"run {i + 1} {p.describe_exit()}" for i, p in enumerate(procs))
            print(f"\n----- {procs[0].name} ({states}): last {lines} lines of "
                  f"{os.path.basename(log_path)} -----\n{_tail(log_path, lines)}",
                  file=sys.stderr)
        sys.stderr.flush()

    # --- certificates ----------------------------------------------------

    def make_certs(self, *agent_names):
        """Creates (or completes) the CA, controller, admin and agent certificates."""
        r = subprocess.run(["bash", GEN_CERTS, "--trust-domain", self.trust_domain, self.certs,
                            *agent_names], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise AssertionError(f"gen-dev-certs.sh failed ({r.returncode}): {r.stderr.strip()}")

    def cert(self, stem):
        return os.path.join(self.certs, stem + ".pem")

    def key(self, stem):
        return os.path.join(self.certs, stem + ".key")

    def tls_flags(self, stem):
        return ["--ca", os.path.join(self.certs, "ca.pem"), "--cert", self.cert(stem),
                "--key", self.key(stem)]

    # --- processes -------------------------------------------------------

    def _start(self, name, argv, port_file):
        """Starts a daemon and waits for it to write its port file."""
        if os.path.exists(port_file):
            os.unlink(port_file)
        log_path = os.path.join(self.dir, "logs", name + ".log")
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        proc = self._new_proc(name, argv, log_path)
        self.procs.append(proc)

        def read_port():
            if not proc.alive():
                raise AssertionError(f"{name} {proc.describe_exit()} before writing its port "
                                     f"file; last lines of its log:\n{proc.tail()}")
            try:
                with open(port_file) as f:
                    text = f.read().strip()
            except FileNotFoundError:
                return None
            m = re.search(r"(\d+)$", text)  # "PORT" or "HOST:PORT"
            return int(m.group(1)) if m and int(m.group(1)) > 0 else None

        try:
            port = wait_for(read_port, timeout=START_TIMEOUT, interval=0.02,
                            what=f"{name} to write {port_file}")
        except WaitTimeout as e:
            raise AssertionError(f"{e}\nlast lines of {name}'s log:\n{proc.tail()}") from None
        return proc, port

    def _new_proc(self, name, argv, log_path):
        """Starts the process. (A subclass that starts processes from short-lived
        threads overrides this: PR_SET_PDEATHSIG fires when the *thread* that
        forked the child ends.)"""
        return Proc(name, argv, log_path)

    def start_controller(self, extra=(), wrapper=(), **opts):
        """Starts pkgdist-controller on 127.0.0.1:0 with the state dir of this
        cluster. Keyword options become flags: detect_seconds=6 gives
        --detect-seconds 6. `wrapper` is an argv prefix that execs the
        controller (e.g. fiu-run -x -f FIFO), so the Proc's pid is the
        controller's. Returns its Proc; the address is controller_address."""
        if self.controller and self.controller.alive():
            raise AssertionError("the controller is already running")
        self._controller_opts = dict(opts, extra=list(extra), wrapper=list(wrapper))
        state_dir = self.controller_state_dir
        port_file = os.path.join(self.dir, "controller.port")
        argv = [*wrapper, binary("pkgdist-controller"), "--listen", "127.0.0.1:0",
                "--port-file", port_file, "--state-dir", state_dir,
                *self.tls_flags("controller")]
        if LOG_LEVEL and "log_level" not in opts:
            argv += ["--log-level", LOG_LEVEL]
        for k, v in opts.items():
            argv += ["--" + k.replace("_", "-"), str(v)]
        argv += list(extra)
        self.controller, self.controller_port = self._start("controller", argv, port_file)
        return self.controller

    def restart_controller(self, **changes):
        """Starts the controller again with the options of the last start, on
        the same state dir (and a new port). `changes` override those options
        (extra=, wrapper= or a flag); a flag given as None is dropped, e.g.
        restart_controller(max_bytes_per_second=None, wrapper=())."""
        opts = dict(self._controller_opts)
        opts.update(changes)
        extra = opts.pop("extra", [])
        wrapper = opts.pop("wrapper", [])
        opts = {k: v for k, v in opts.items() if v is not None}
        if wrapper:  # (only then: subclasses' start_controller may not take it)
            opts["wrapper"] = wrapper
        return self.start_controller(extra=extra, **opts)

    @property
    def controller_state_dir(self):
        """The controller's --state-dir (state.db and its package store)."""
        return os.path.join(self.dir, "controller-state")

    @property
    def controller_address(self):
        return f"127.0.0.1:{self.controller_port}"

    def _agent(self, name):
        if name not in self.agents:
            self.agents[name] = Agent(name, os.path.join(self.dir, "agents", name))
        return self.agents[name]

    def reserve_port(self, name):
        """Picks a free port for an agent that is registered before it runs.
        (The port is free when picked; nothing holds it until the agent starts.)"""
        agent = self._agent(name)
        if not agent.port:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", 0))
                agent.port = s.getsockname()[1]
        return agent.port

    def start_agent(self, name, cert=None, port=None, extra=()):
        """Starts pkgdist-agent NAME presenting certs/(cert or NAME).pem. It
        listens on `port`, else on the port it had before (reserved or from an
        earlier run, which the controller has registered), else on a new one.
        Its root is ROOT/agents/NAME whichever run it is."""
        agent = self._agent(name)
        if agent.proc and agent.proc.alive():
            raise AssertionError(f"agent {name} is already running")
        agent.cert = cert or name
        agent.extra = list(extra)
        if port is not None:
            agent.port = port
        port_file = os.path.join(self.dir, f"agent-{name}.port")
        argv = [binary("pkgdist-agent"), "--name", name,
                "--listen", f"127.0.0.1:{agent.port}", "--port-file", port_file,
                "--root", agent.root, *self.tls_flags(agent.cert)]
        if LOG_LEVEL:
            argv += ["--log-level", LOG_LEVEL]
        argv += agent.extra
        agent.proc, got = self._start(f"agent-{name}", argv, port_file)
        if agent.port and got != agent.port:
            raise AssertionError(f"agent {name} listens on {got}, expected {agent.port}")
        agent.port = got
        return agent.proc

    def restart_agent(self, name):
        """Starts agent NAME again with the certificate, port and flags it had."""
        agent = self.agents[name]
        return self.start_agent(name, cert=agent.cert, extra=agent.extra)

    def kill(self, proc, sig=signal.SIGKILL, timeout=10.0):
        """Sends `sig` to `proc`. SIGKILL/SIGTERM wait for the exit; SIGSTOP
        and SIGCONT are tracked so teardown can resume a stopped process."""
        if not proc.alive():
            raise AssertionError(f"cannot signal {proc!r}: not running")
        if sig in (signal.SIGKILL, signal.SIGTERM):
            proc.expected_exit = True
        proc.popen.send_signal(sig)
        if sig == signal.SIGSTOP:
            proc.stopped = True
        elif sig == signal.SIGCONT:
            proc.stopped = False
        elif sig in (signal.SIGKILL, signal.SIGTERM):
            proc.stopped = False
            try:
                proc.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"{proc.name} did not exit {timeout}s after {sig.name}") from None

    def log_of(self, name):
        """The log file path of process `name` ("controller", "agent-dp1")."""
        return os.path.join(self.dir, "logs", name + ".log")

    # --- pkgdistctl ------------------------------------------------------

    def ctl_raw(self, *args, timeout=CTL_TIMEOUT, cert="admin", output="json"):
        """Runs pkgdistctl --output OUTPUT (json unless told) ARGS; returns
        (rc, stdout, stderr)."""
        argv = [binary("pkgdistctl"), "--controller", self.controller_address,
                *self.tls_flags(cert), "--output", output, *map(str, args)]
        try:
            r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"pkgdistctl {' '.join(map(str, args))} did not finish "
                                 f"within {timeout}s") from None
        return r.returncode, r.stdout, r.stderr

    def ctl(self, *args, timeout=CTL_TIMEOUT, cert="admin"):
        """Runs pkgdistctl --output json ARGS and returns its parsed output
        (one document, or a list if it printed several). Raises CtlError
        with stderr on a non-zero exit."""
        rc, out, err = self.ctl_raw(*args, timeout=timeout, cert=cert)
        if rc != 0:
            raise CtlError([str(a) for a in args], rc, out, err)
        return parse_json_documents(out, f"pkgdistctl {' '.join(map(str, args))}")

    def add_agent(self, name):
        """Registers agent NAME at its (started or reserved) address."""
        return self.ctl("agent", "add", name, self._agent(name).address)

    def import_package(self, path, name, version):
        return self.ctl("package", "import", path, "--name", name, "--version", version,
                        timeout=120)

    def distribute(self, package, agents):
        """Starts a distribution; returns the job id."""
        out = self.ctl("distribute", package, "--to", ",".join(agents))
        return out["id"]

    def job(self, job_id):
        return self.ctl("job", "status", job_id)

    def job_list(self):
        """`job list` as a list of job documents (accepts a list, a
        {"jobs": [...]} document or one document per job)."""
        out = self.ctl("job", "list")
        if isinstance(out, dict):
            out = out["jobs"] if "jobs" in out else [out]
        return out

    def wait_job(self, job_id, until, timeout, what, interval=0.1):
        """Polls `job status` until until(status); returns that status."""
        return wait_for(lambda: self.job(job_id), until, timeout=timeout,
                        what=f"job {job_id}: {what}", interval=interval)

    def wait_attempt_ended(self, job_id, agent, attempts, timeout, what):
        """Polls until `agent`'s attempt number `attempts` has ended (the target
        left `transferring`, or a later attempt began); returns that status."""
        return self.wait_job(
            job_id, lambda j: (target(j, agent)["state"] != "transferring"
                               or int(target(j, agent)["attempts"]) > attempts),
            timeout, what, interval=0.05)

    def published(self, agent, name, version):
        """Where agent AGENT publishes NAME@VERSION."""
        return os.path.join(self._agent(agent).root, "packages", name, version)


def parse_json_documents(text, what="output"):
    """One JSON document, or a list of them if `text` holds several."""
    decoder = json.JSONDecoder()
    docs, pos = [], 0
    text = text.strip()
    while pos < len(text):
        try:
            doc, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise AssertionError(f"{what} printed invalid JSON ({e}): {text[:2000]!r}") from None
        docs.append(doc)
        pos = end
        while pos < len(text) and text[pos].isspace():
            pos += 1
    if not docs:
        raise AssertionError(f"{what} printed nothing")
    return docs[0] if len(docs) == 1 else docs


def target(job, agent):
    """The target of `job` (a status document) for `agent`."""
    for t in job.get("targets", []):
        if t.get("agent") == agent:
            return t
    raise AssertionError(f"job {job.get('id')} has no target {agent}: {_short(job)}")


def targets_in(job, state):
    return [t["agent"] for t in job.get("targets", []) if t.get("state") == state]


# --- packages ------------------------------------------------------------


def write_random_file(path, size, rng, mode=0o644):
    """Writes `size` pseudo-random bytes from `rng` (random.Random)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, 4 * MiB)
            f.write(rng.randbytes(n))
            left -= n
    os.chmod(path, mode)
    return path


def make_tree(root, seed, big_file_bytes=3 * MiB):
    """A package tree with nested directories, an empty file, an empty
    directory, an executable (0755), a 0640 file, in-tree symlinks (to a file
    and to a directory), files around chunk-size boundaries and one file of
    `big_file_bytes`. Deterministic for a given seed. Returns root."""
    rng = random.Random(seed)
    os.makedirs(root)

    def w(rel, size, mode=0o644):
        write_random_file(os.path.join(root, rel), size, rng, mode)

    with open(os.path.join(root, "README.txt"), "w") as f:
        f.write(f"pkgdist test package, seed {seed}\n")
    os.chmod(os.path.join(root, "README.txt"), 0o644)
    script = os.path.join(root, "bin", "tool")
    os.makedirs(os.path.dirname(script))
    with open(script, "w") as f:
        f.write("#!/bin/sh\necho tool\n")
    os.chmod(script, 0o755)
    w("lib/libfoo.so.1.2.3", rng.randint(100_000, 300_000))
    os.symlink("libfoo.so.1.2.3", os.path.join(root, "lib", "libfoo.so.1"))
    os.symlink("../lib", os.path.join(root, "bin", "lib"))
    w("share/doc/a/b/c/deep.txt", rng.randint(1, 5000))
    w("conf/secret.conf", 300, 0o640)
    open(os.path.join(root, "share", "empty-file"), "wb").close()
    os.chmod(os.path.join(root, "share", "empty-file"), 0o644)
    os.makedirs(os.path.join(root, "var", "empty-dir"))
    for i, size in enumerate([1, MiB - 1, MiB, MiB + 1, rng.randint(0, 200_000),
                              rng.randint(0, 200_000)]):
        w(f"data/parts/part-{i:02d}.bin", size)
    w("data/big.bin", big_file_bytes)
    for d, _, _ in os.walk(root):
        os.chmod(d, 0o755)
    return root


def make_file_package(dir_path, filename, size, seed):
    """A directory holding one file of `size` random bytes; returns the
    file's path (import that path for a single-file package)."""
    os.makedirs(dir_path, exist_ok=True)
    return write_random_file(os.path.join(dir_path, filename), size, random.Random(seed))


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(MiB)
            if not block:
                return h.hexdigest()
            h.update(block)


def tree_entries(root):
    """{relative path: (type, mode, size, sha256 or link target)} for
    everything under root (root itself excluded); symlinks are not followed."""
    entries = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                entries[rel] = ("symlink", None, None, os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                entries[rel] = ("dir", oct(stat.S_IMODE(st.st_mode)), None, None)
            elif stat.S_ISREG(st.st_mode):
                entries[rel] = ("file", oct(stat.S_IMODE(st.st_mode)), st.st_size, _sha256(full))
            else:
                entries[rel] = ("other", oct(st.st_mode), None, None)
    return entries


def tree_differences(a, b):
    """What differs between two tree_entries() results (source a, copy b),
    one line per path; entries compare as sequences (tuples or JSON lists)."""
    problems = []
    for rel in sorted(set(a) | set(b)):
        if rel not in b:
            problems.append(f"missing in copy: {rel} {tuple(a[rel][:3])}")
        elif rel not in a:
            problems.append(f"extra in copy: {rel} {tuple(b[rel][:3])}")
        elif list(a[rel]) != list(b[rel]):
            problems.append(f"differs: {rel}: source {tuple(a[rel])} != copy {tuple(b[rel])}")
    return problems


def assert_trees_identical(src, dst):
    """Fails unless dst holds exactly src's paths with the same types, modes,
    symlink targets and bytes (sha256)."""
    if not os.path.isdir(dst):
        raise AssertionError(f"{dst} does not exist or is not a directory")
    problems = tree_differences(tree_entries(src), tree_entries(dst))
    if problems:
        shown = "\n  ".join(problems[:30])
        more = f"\n  ... and {len(problems) - 30} more" if len(problems) > 30 else ""
        raise AssertionError(f"{dst} is not identical to {src}:\n  {shown}{more}")
