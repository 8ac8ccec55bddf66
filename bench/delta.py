"""bench/delta.sh's driver: the delta-transfer benchmark against rsync (issue 13).

Five scenarios on a package of several files of random content, each a
second version (v2) sent to ONE destination that holds the first (v1):

    a  one byte inserted near the start of the largest file
    b  1 % of the bytes changed in 100 scattered places
    c  10 files renamed or moved to another directory, nothing else changed
    d  a second package with another name sharing 50 % of its files
    e  a new, unrelated package

Three contenders: pkgdist with the controller's default chunking, pkgdist
with `--chunking fixed` (fixed 1 MiB chunks), and Debian's rsync daemon on
127.0.0.1 (`rsync -a --delete --stats`, no compression; (d) with
`--copy-dest` naming the first package's directory). A controller without
`--chunking` has fixed chunks only: then the fixed contender runs without
the flag and the default one is reported as not measured.

For every run: the bytes on the wire, both directions, counted by a
forwarder between the two sides (CountingProxy: every byte of TCP payload,
so TLS records, the Offer and the Acks are in); the wall time of
`pkgdistctl distribute --wait` (of the rsync client's run); CPU seconds of
both sides (controller + agent from /proc; the rsync client and the
daemon with its forked children from wait4's rusage). Before each measured
run every file of both sides is written back and dropped from the page
cache, so no contender reads what the preparation left cached. Each
result is compared with its source, byte for byte.

Rounds (--runs) alternate the contenders within each scenario; the report
gives medians. The raw figures go to bench/results/delta-DATE.json, the
table to the delta section of docs/performance.md (delta_report.py).
"""

import argparse
import contextlib
import datetime
import fcntl
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
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.dirname(HERE)
MiB = 1 << 20
GiB = 1 << 30

# Scenario -> (what it is, package name, version on pkgdist, rsync target dir).
SCENARIOS = {
    "a": ("one byte inserted near the start of the largest file", "base", "2a", "base"),
    "b": ("1 % of the bytes changed in 100 scattered places", "base", "2b", "base"),
    "c": ("10 files renamed or moved to another directory", "base", "2c", "base"),
    "d": ("another package name sharing 50 % of its files", "other", "1", "other"),
    "e": ("a new, unrelated package", "fresh", "1", "fresh"),
}
BASE = ("base", "1")
CONTENDERS = ("pkgdist", "pkgdist-fixed", "rsync")
FILES = 24            # files in the package (c moves 10 of them)
LARGEST_SHARE = 4     # the largest file is 1/4 of the package
INSERT_AT = 4096      # (a): offset of the inserted byte
PLACES = 100          # (b)
MOVED = 10            # (c)


def log(msg):
    print(f"[delta {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bin-dir", required=True)
    p.add_argument("--size", type=int, default=GiB)
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--smoke", action="store_true",
                   help="24 MiB unless --size; no docs; raw JSON to a temporary directory")
    p.add_argument("--no-docs", action="store_true")
    p.add_argument("--out", default=os.path.join(SOURCE_DIR, "docs", "performance.md"),
                   help="the page whose delta section is written")
    p.add_argument("--json", help="raw figures (default bench/results/delta-DATE.json)")
    p.add_argument("--command", default="bench/delta.sh")
    a = p.parse_args()
    if a.runs < 1:
        p.error("--runs must be at least 1")
    if a.size < 4 * MiB:
        p.error("--size must be at least 4 MiB")
    return a


# --- the packages ---------------------------------------------------------------


def _write(path, data_or_size, rng, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        if isinstance(data_or_size, int):
            left = data_or_size
            while left > 0:
                n = min(left, 4 * MiB)
                f.write(rng.randbytes(n))
                left -= n
        else:
            f.write(data_or_size)
    os.chmod(path, mode)


def _link(src_root, dst_root, rel):
    """dst_root/rel as a hard link of src_root/rel: same bytes, same mtime."""
    dst = os.path.join(dst_root, rel)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    os.link(os.path.join(src_root, rel), dst)


def layout(size, rng):
    """{relative path: size}: FILES files in a few directories, the largest
    (data/largest.bin) a quarter of `size`, the others of varied sizes."""
    largest = size // LARGEST_SHARE
    dirs = ["bin", "lib", "lib/plugins", "share/assets", "share/data", "etc"]
    weights = [rng.uniform(0.5, 1.5) for _ in range(FILES - 1)]
    rest = size - largest
    sizes = [int(rest * w / sum(weights)) for w in weights]
    sizes[-1] += rest - sum(sizes)
    files = {"data/largest.bin": largest}
    for i, s in enumerate(sizes):
        files[f"{dirs[i % len(dirs)]}/part-{i:02d}.bin"] = s
    return files


def make_trees(work, size, seed=13):
    """Writes v1 and every scenario's v2 under work/src; unchanged files are
    hard links of v1's. Returns (trees {key: dir}, facts {scenario: dict},
    v1's layout {path: size})."""
    rng = random.Random(seed)
    files = layout(size, rng)
    root = os.path.join(work, "src")
    trees = {k: os.path.join(root, k) for k in ("base", *SCENARIOS)}
    base = trees["base"]
    for rel, n in files.items():
        _write(os.path.join(base, rel), n, rng)
    facts = {}

    # (a) one byte inserted near the start of the largest file.
    big = "data/largest.bin"
    for rel in files:
        if rel != big:
            _link(base, trees["a"], rel)
    with open(os.path.join(base, big), "rb") as f:
        data = f.read()
    _write(os.path.join(trees["a"], big), data[:INSERT_AT] + b"\x5a" + data[INSERT_AT:], rng)
    del data
    facts["a"] = {"new_bytes": 1, "new_what": "the inserted byte"}

    # (b) 1 % changed in PLACES places, none spanning two files or overlapping.
    place = max(1, size // 100 // PLACES)
    names = list(files)
    chosen = {}
    while sum(len(v) for v in chosen.values()) < PLACES:
        rel = rng.choices(names, weights=[files[n] for n in names])[0]
        if files[rel] <= place:
            continue
        off = rng.randrange(0, files[rel] - place)
        if all(off + place <= o or o + place <= off for o in chosen.get(rel, [])):
            chosen.setdefault(rel, []).append(off)
    for rel in files:
        dst = os.path.join(trees["b"], rel)
        if rel not in chosen:
            _link(base, trees["b"], rel)
            continue
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(os.path.join(base, rel), dst)
        with open(dst, "r+b") as f:
            for off in chosen[rel]:
                f.seek(off)
                f.write(rng.randbytes(place))
    facts["b"] = {"new_bytes": place * PLACES, "new_what": f"{PLACES} places of {place} bytes",
                  "files_changed": len(chosen)}

    # (c) 5 files renamed in place, 5 moved to another directory.
    movable = [r for r in files if r != big]
    moved = set(rng.sample(movable, MOVED))
    for i, rel in enumerate(sorted(moved)):
        d, name = os.path.split(rel)
        new = (os.path.join(d, "renamed-" + name) if i % 2 == 0
               else os.path.join("moved", d.replace("/", "-"), name))
        dst = os.path.join(trees["c"], new)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.link(os.path.join(base, rel), dst)
    for rel in files:
        if rel not in moved:
            _link(base, trees["c"], rel)
    facts["c"] = {"new_bytes": sum(files[r] for r in moved),
                  "new_what": f"the {MOVED} moved files (their content is not new)"}

    # (d) another package: half of the files, the largest but v1's largest
    # (about half of the bytes), are v1's files at the same paths; the rest
    # fresh content.
    shared = set(sorted(movable, key=lambda r: -files[r])[:len(files) // 2])
    shared_bytes = sum(files[r] for r in shared)
    for rel, n in files.items():
        if rel in shared:
            _link(base, trees["d"], rel)
        else:
            _write(os.path.join(trees["d"], rel), n, rng)
    facts["d"] = {"new_bytes": size - shared_bytes,
                  "new_what": f"the {len(files) - len(shared)} files not shared "
                              f"({100 * (size - shared_bytes) / size:.0f} % of the bytes)",
                  "shared_files": len(shared), "files": len(files)}

    # (e) unrelated content, same shape.
    for rel, n in files.items():
        _write(os.path.join(trees["e"], rel), n, rng)
    facts["e"] = {"new_bytes": size, "new_what": "all of it"}

    # Every file written for a v2 (not a link of v1's) is 10 s newer than v1:
    # one of v1's size and second would look unchanged to rsync's quick check.
    newer = max(os.stat(os.path.join(base, rel)).st_mtime_ns for rel in files) + 10 * 10**9
    for k, t in trees.items():
        for d, _, names in os.walk(t):
            os.chmod(d, 0o755)
            for name in names:
                path = os.path.join(d, name)
                if k != "base" and os.stat(path).st_nlink == 1:
                    os.utime(path, ns=(newer, newer))
    for k in SCENARIOS:
        facts[k]["package_bytes"] = tree_bytes(trees[k])
    return trees, facts, files


def tree_bytes(root):
    return sum(os.lstat(os.path.join(d, f)).st_size for d, _, fs in os.walk(root) for f in fs)


def evict(*roots):
    """Writes back and drops from the page cache every regular file under roots."""
    for root in roots:
        for d, _, names in os.walk(root):
            for name in names:
                path = os.path.join(d, name)
                if not stat.S_ISREG(os.lstat(path).st_mode):
                    continue
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
                try:
                    os.fdatasync(fd)
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)


# --- counting the wire ------------------------------------------------------------


class CountingProxy:
    """Forwards every connection made to 127.0.0.1:port to 127.0.0.1:upstream,
    counting the TCP payload each way. Bytes move kernel-side (splice through
    a pipe), so the forwarder costs little CPU. A byte is counted when read,
    before it is delivered. Thread-safe counters; stop() ends everything."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.to_server = 0   # client -> upstream (controller -> agent, rsync client -> daemon)
        self.to_client = 0
        self.connections = 0
        self._lock = threading.Lock()
        self._socks = []
        self._pumps = []
        self._stopping = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def counts(self):
        with self._lock:
            return self.to_server, self.to_client

    def wait_idle(self, timeout=10.0):
        """Waits until every connection has ended both ways."""
        deadline = time.monotonic() + timeout
        while any(t.is_alive() for t in list(self._pumps)):
            if time.monotonic() > deadline:
                raise AssertionError("counting proxy: a connection is still open")
            time.sleep(0.01)

    def stop(self):
        self._stopping.set()
        self._acceptor.join()
        self._listener.close()
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        for t in list(self._pumps):
            t.join(5)
        for s in socks:
            s.close()

    def _accept(self):
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except socket.timeout:
                continue
            client.setblocking(True)
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream))
            except OSError:
                client.close()
                continue
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.connections += 1
                self._socks += [client, server]
            for src, dst, up in ((client, server, True), (server, client, False)):
                t = threading.Thread(target=self._pump, args=(src, dst, up), daemon=True)
                self._pumps.append(t)
                t.start()

    def _pump(self, src, dst, up):
        r, w = os.pipe()
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, MiB)
        try:
            while True:
                n = os.splice(src.fileno(), w, MiB)
                if n == 0:
                    break
                with self._lock:
                    if up:
                        self.to_server += n
                    else:
                        self.to_client += n
                while n:
                    n -= os.splice(r, dst.fileno(), n)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
            os.close(r)
            os.close(w)


# --- pkgdist ----------------------------------------------------------------------


def chunking_flag(bin_dir):
    """Whether this pkgdist-controller has --chunking."""
    r = subprocess.run([os.path.join(bin_dir, "pkgdist-controller"), "--help"],
                       capture_output=True, text=True, timeout=30)
    return "--chunking" in r.stdout


class Pkgdist:
    """One contender: a Cluster whose controller imported every package."""

    def __init__(self, harness, stack, key, opts, agents, trees):
        import procstat
        self.h, self.procstat, self.key, self.trees = harness, procstat, key, trees
        self.c = stack.enter_context(harness.Cluster(agents=agents))
        self.c.start_controller(log_level="warn", **opts)
        self.imports = []
        for name, version, tree in [(*BASE, "base")] + [(s[1], s[2], k) for k, s in
                                                        SCENARIOS.items()]:
            self._import(trees[tree], name, version)

    def _import(self, tree, name, version):
        pid = self.c.controller.pid
        meter = self.procstat.CpuMeter([pid]).start()
        start = time.monotonic()
        info = self.c.ctl("package", "import", tree, "--name", name, "--version", version,
                          timeout=60 + tree_bytes(tree) / (10 * MiB))
        self.imports.append({"package": f"{name}@{version}", "wall_s": time.monotonic() - start,
                             "controller_cpu_s": meter.stop()[pid],
                             "chunks": info.get("chunks"), "bytes": tree_bytes(tree)})

    def _distribute(self, package, agent, size):
        timeout = 120 + 2 * size / (10 * MiB)
        rc, out, err = self.c.ctl_raw("distribute", package, "--to", agent, "--wait",
                                      "--timeout", f"{int(timeout)}s", timeout=timeout + 30)
        if rc != 0:
            raise AssertionError(f"distribute {package} to {agent} failed ({rc}): {err.strip()}")
        job = self.h.parse_json_documents(out, "distribute --wait")
        job = job[-1] if isinstance(job, list) else job
        if job.get("state") != "complete":
            raise AssertionError(f"job ended {job.get('state')}: {json.dumps(job)[:2000]}")
        return self.h.target(job, agent)

    def run(self, scenario, agent, size):
        """v1 to a fresh agent (not measured), then v2 measured through a proxy."""
        _, name, version, _ = SCENARIOS[scenario]
        c = self.c
        c.start_agent(agent)
        with CountingProxy(c.agents[agent].port) as proxy:
            c.ctl("agent", "add", agent, proxy.address)
            self._distribute("@".join(BASE), agent, size)
            evict(c.controller_state_dir, c.agents[agent].root)
            pids = [c.controller.pid, c.agents[agent].proc.pid]
            before = proxy.counts()
            meter = self.procstat.CpuMeter(pids).start()
            start = time.monotonic()
            t = self._distribute(f"{name}@{version}", agent, size)
            wall = time.monotonic() - start
            used = meter.stop()
            after = proxy.counts()
        self.h.assert_trees_identical(self.trees[scenario], c.published(agent, name, version))
        c.kill(c.agents[agent].proc, signal.SIGTERM)
        c.ctl("agent", "remove", agent)
        shutil.rmtree(c.agents[agent].root, ignore_errors=True)
        return {"to_receiver": after[0] - before[0], "to_sender": after[1] - before[1],
                "wall_s": wall, "cpu_sender_s": used[pids[0]], "cpu_receiver_s": used[pids[1]],
                "bytes_sent": t.get("bytes_sent"), "bytes_reused": t.get("bytes_reused"),
                "identical": True}


# --- rsync ------------------------------------------------------------------------

RSYNCD_CONF = """use chroot = no
munge symlinks = no
numeric ids = yes
uid = 0
gid = 0
read only = no
list = no
log file = {log}

[dst]
  path = {path}
"""


def _die_with_parent():
    import ctypes
    ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _listening(port):
    with open("/proc/net/tcp") as f:
        return any(fields[1] == f"0100007F:{port:04X}" and fields[3] == "0A"
                   for fields in (line.split() for line in list(f)[1:]))


class RsyncDaemon:
    """`rsync --daemon --no-detach` on 127.0.0.1 serving one writable module
    `dst` at `path`; stop() returns the CPU seconds of the daemon and of every
    child it forked and reaped (wait4's rusage)."""

    def __init__(self, work, path):
        conf = os.path.join(work, "rsyncd.conf")
        with open(conf, "w") as f:
            f.write(RSYNCD_CONF.format(log=os.path.join(work, "rsyncd.log"), path=path))
        with socket.create_server(("127.0.0.1", 0)) as s:
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            ["rsync", "--daemon", "--no-detach", f"--config={conf}", "--address=127.0.0.1",
             f"--port={self.port}"], stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + 10
        while not _listening(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"rsync daemon did not listen on {self.port}")
            time.sleep(0.01)

    def stop(self):
        import procstat
        deadline = time.monotonic() + 10
        while procstat.children(self.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        self.proc.send_signal(signal.SIGTERM)
        _, _, ru = os.wait4(self.proc.pid, 0)
        self.proc.returncode = 0
        return ru.ru_utime + ru.ru_stime

    def kill(self):
        if self.proc.returncode is None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def parse_rsync_stats(text):
    """--stats' 'Name: 1,234 bytes' lines as {name: int}."""
    out = {}
    for m in re.finditer(r"^([A-Z][A-Za-z ]+): ([\d,]+)", text, re.M):
        out[m.group(1).strip().lower().replace(" ", "_")] = int(m.group(2).replace(",", ""))
    return out


def run_rsync(harness, work, scenario, trees):
    """A destination holding v1 (a copy with v1's mtimes), then v2 pushed into
    it through a CountingProxy. (d) goes to a new directory beside v1 with
    --copy-dest=../base: the closest standard option to reusing another
    package's files (they are copied locally, as pkgdist's agent copies)."""
    target = SCENARIOS[scenario][3]
    run_dir = os.path.join(work, "rsync-run")
    module = os.path.join(run_dir, "module")
    shutil.copytree(trees["base"], os.path.join(module, "base"), symlinks=True)
    extra = ["--copy-dest=../base"] if scenario == "d" else []
    evict(module, trees[scenario])
    daemon = RsyncDaemon(run_dir, module)
    try:
        with CountingProxy(daemon.port) as proxy:
            out_path = os.path.join(run_dir, "client.out")
            with open(out_path, "w+") as out:
                start = time.monotonic()
                client = subprocess.Popen(
                    ["rsync", "-a", "--delete", "--stats", *extra, trees[scenario] + "/",
                     f"rsync://127.0.0.1:{proxy.port}/dst/{target}/"],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
                _, status, ru = os.wait4(client.pid, 0)
                wall = time.monotonic() - start
                client.returncode = os.waitstatus_to_exitcode(status)
                out.seek(0)
                text = out.read()
            if client.returncode != 0:
                raise AssertionError(f"rsync exited {client.returncode}: {text[-2000:]}")
            proxy.wait_idle()
            up, down = proxy.counts()
        daemon_cpu = daemon.stop()
    finally:
        daemon.kill()
    harness.assert_trees_identical(trees[scenario], os.path.join(module, target))
    shutil.rmtree(run_dir)
    stats = parse_rsync_stats(text)
    seen = stats.get("total_bytes_sent", 0) + stats.get("total_bytes_received", 0)
    if up + down < seen:
        raise AssertionError(f"the proxy counted {up + down} bytes, rsync itself {seen}")
    return {"to_receiver": up, "to_sender": down, "wall_s": wall,
            "cpu_sender_s": ru.ru_utime + ru.ru_stime, "cpu_receiver_s": daemon_cpu,
            "rsync_stats": stats, "options": ["-a", "--delete", "--stats", *extra],
            "identical": True}


# --- the run ----------------------------------------------------------------------


def _cmd(*argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        return ""


def machine(work):
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    src, fstype = (_cmd("findmnt", "-n", "-o", "SOURCE,FSTYPE", "-T", work).split() + ["?", "?"])[:2]
    dev = _cmd("lsblk", "-dno", "SIZE,ROTA,MODEL", src).split(None, 2) if src.startswith("/dev/") else []
    disk = f"{src} ({fstype}"
    if dev:
        disk += f", {dev[0]}, {'rotational' if dev[1:2] == ['1'] else 'non-rotational'} per lsblk"
        disk += f", {dev[2]}" if len(dev) > 2 else ""
    disk += ")"
    import platform
    return {"cpu": cpu, "nproc": os.cpu_count(), "memory": f"{mem_kib / (1 << 20):.1f} GiB",
            "kernel": platform.release(), "disk": disk,
            "rsync": _cmd("rsync", "--version").splitlines()[0:1] or ["?"]}


def commit():
    rev = _cmd("git", "-C", SOURCE_DIR, "rev-parse", "--short", "HEAD") or "unknown"
    dirty = _cmd("git", "-C", SOURCE_DIR, "status", "--porcelain", "--untracked-files=no")
    return rev + (" with uncommitted changes" if dirty else "")


def binaries(bin_dir):
    st = os.stat(os.path.join(bin_dir, "pkgdist-controller"))
    built = datetime.datetime.fromtimestamp(st.st_mtime, datetime.timezone.utc)
    # Relative to the source tree where it is inside it: docs name no
    # machine's absolute paths.
    where = os.path.abspath(bin_dir)
    rel = os.path.relpath(where, SOURCE_DIR)
    shown = rel if not rel.startswith("..") else os.path.basename(where)
    return f"{shown} (controller built {built.strftime('%Y-%m-%d %H:%M UTC')})"


def check(r):
    """Measurement sanity: traffic both ways in every run, and (e), where
    nothing can be reused, costs at least the package's bytes."""
    for run in r["runs"]:
        if run["to_receiver"] <= 0 or run["to_sender"] <= 0:
            raise AssertionError(f"no traffic counted one way: {run}")
        if run["scenario"] == "e" and run["to_receiver"] < r["scenarios"]["e"]["package_bytes"]:
            raise AssertionError(f"(e) sent fewer bytes than the package has: {run}")


def main():
    a = parse_args()
    if a.smoke and a.size == GiB:
        a.size = 24 * MiB
    os.environ["PKGDIST_BIN_DIR"] = os.path.abspath(a.bin_dir)
    os.environ["PKGDIST_SOURCE_DIR"] = SOURCE_DIR
    sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "integration"))
    import harness  # noqa: E402  (needs the environment above)
    import delta_report
    if shutil.which("rsync") is None:
        raise SystemExit("rsync is not installed (scripts/setup.sh installs it)")

    has_flag = chunking_flag(a.bin_dir)
    now = datetime.datetime.now(datetime.timezone.utc)
    r = {"date": now.strftime("%Y-%m-%d %H:%M UTC"), "command": a.command, "commit": commit(),
         "bin_dir": binaries(a.bin_dir), "size": a.size, "rounds": a.runs,
         "chunking_flag": has_flag,
         "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg()), "runs": []}
    r["contenders"] = {
        "pkgdist": {"label": "pkgdist (default chunking)", "opts": {}} if has_flag else
        {"label": "pkgdist (default chunking)", "skipped": "this controller has no --chunking: "
         "its only chunking is fixed 1 MiB, measured as pkgdist --chunking fixed"},
        "pkgdist-fixed": {"label": "pkgdist --chunking fixed",
                          "opts": {"chunking": "fixed"} if has_flag else {},
                          "note": None if has_flag else "run without the flag (absent: fixed is "
                          "the only chunking)"},
        "rsync": {"label": "rsync daemon", "opts": None},
    }
    agents = [f"{s}{k}" for k in range(a.runs) for s in SCENARIOS]
    work = tempfile.mkdtemp(prefix="pkgdist-delta-")
    try:
        r["machine"] = machine(work)
        log(f"writing v1 and the five v2s of {a.size} bytes")
        trees, r["scenarios"], files = make_trees(work, a.size)
        for k, s in SCENARIOS.items():
            r["scenarios"][k]["title"] = s[0]
        r["files"] = len(files)
        r["largest_file"] = max(files.values())
        with contextlib.ExitStack() as stack:
            sides = {}
            for key in ("pkgdist", "pkgdist-fixed"):
                if "skipped" not in r["contenders"][key]:
                    log(f"{key}: controller, importing 6 packages")
                    sides[key] = Pkgdist(harness, stack, key, r["contenders"][key]["opts"],
                                         agents, trees)
                    r["contenders"][key]["imports"] = sides[key].imports
            for k in range(a.runs):
                for s in SCENARIOS:
                    for key in CONTENDERS:
                        if "skipped" in r["contenders"][key]:
                            continue
                        log(f"round {k + 1}/{a.runs} ({s}) {key}")
                        run = (run_rsync(harness, work, s, trees) if key == "rsync"
                               else sides[key].run(s, f"{s}{k}", a.size))
                        run.update(round=k, scenario=s, contender=key)
                        r["runs"].append(run)
                        log(f"  wire {(run['to_receiver'] + run['to_sender']) / MiB:.2f} MiB, "
                            f"{run['wall_s']:.2f} s, CPU {run['cpu_sender_s']:.2f} + "
                            f"{run['cpu_receiver_s']:.2f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    r["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    check(r)

    text = delta_report.render(r)
    print(text)
    if a.smoke:
        with tempfile.TemporaryDirectory(prefix="pkgdist-delta-smoke-") as d:
            raw = os.path.join(d, "delta.json")
            with open(raw, "w") as f:
                json.dump(r, f, indent=1)
            delta_report.write_section(os.path.join(d, "performance.md"), text)
            with open(os.path.join(d, "performance.md")) as f:
                if "| (e) |" not in f.read():
                    raise SystemExit("the written section has no results table")
        log("smoke: every result identical to its source; the table renders")
        return
    raw = a.json or os.path.join(HERE, "results", f"delta-{now.strftime('%Y-%m-%d')}.json")
    os.makedirs(os.path.dirname(os.path.abspath(raw)), exist_ok=True)
    with open(raw, "w") as f:
        json.dump(r, f, indent=1)
    if not a.no_docs:
        delta_report.write_section(a.out, text)
        log(f"wrote the delta section of {a.out}")
    log(f"raw figures: {raw}")


if __name__ == "__main__":
    main()
