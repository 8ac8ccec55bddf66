"""The machine's limit for distributing a package, from its parts, measured
in the same run as pkgdist (bench.py probes every part at the start of each
round of runs, and the limit takes each part's best probe: a limit is a
best case).

Three resources bound a distribution of S bytes to N receivers on this
machine, and the limit is the slowest of the three:

  cores     Per receiver, every byte is encrypted once at the sender, passes
            loopback TCP once, and is decrypted, hashed and written once at
            the receiver. Per receiver and GiB that costs (core-seconds)
                cost = G/aes + G/aes + G/loopback + G/sha256 + G/disk
            where G = 2^30 bytes; aes and sha256 are `openssl speed -evp` on
            16 KiB blocks (one core), aes of the cipher the controller and
            agents negotiate (CIPHER), loopback one TCP stream on 127.0.0.1,
            disk the agent's write path with one writer (below). Spread over
            every core, N receivers' work takes at best
                cores(N) = N * (S / G) * cost / cores   seconds.
  disk      Every agent here writes to the same disk, and a disk is not a
            core: N x S bytes must pass it at the rate N writers get from it,
            each on its own file as N agents write, whatever the cores do:
                disk(N) = N * S / disk_rate(N writers)
  loopback  N streams over 127.0.0.1 move N x S bytes at the rate that
            min(N, cores) streams at once get:
                loopback(N) = N * S / loopback_rate(min(N, cores) streams)

    limit(N) = max(cores(N), disk(N), loopback(N))

The disk is measured on the agent's own write path (agent/staging.cc,
shared/direct_writer.cc): the file is created and truncated to its size,
then written with O_DIRECT from page-aligned buffers by a writer thread, one
write at a time, the agent's 1 MiB chunks gathered into 4 MiB writes; every
16 MiB (half of the controller's default 32 MiB window) a flush task on a
second thread fsyncs the file, appends the chunks' 44-byte records to a
journal and fsyncs that, while the writer goes on with the next writes; a
last flush at the end. Where O_DIRECT is refused (tmpfs before Linux 6.6)
the agent writes through the page cache, and so does the probe.

The write term is in `cost` as the issue states it (the writing thread's
time, as if it held a core); the probes also record their own CPU seconds,
so the report can show how much of a core the write and loopback really
take. The buffered write + fsync rate is measured as well, for the import
(which writes through the page cache) and for comparison; it is not in the
formula, since the agent does not write that way.
"""

import mmap
import os
import queue
import re
import resource
import socket
import statistics
import subprocess
import threading
import time

GiB = 1 << 30
MiB = 1 << 20

# The agent's write path (see the module docstring).
DIRECT_WRITE = 4 * MiB          # DirectWriter::kMaxGather
FLUSH_EVERY = 16 * MiB          # kDefaultWindowBytes / 2 (agent/transfer_session.cc)
CHUNK = MiB                     # kMaxChunkSize: one journal record per chunk
JOURNAL_RECORD = 44             # agent/journal.h

RESOURCES = ("cores", "disk", "loopback")

# The cipher of the controller's connections to agents: TLS 1.3 with
# OpenSSL's default suites, which neither pkgdist nor gRPC changes, so
# TLS_AES_256_GCM_SHA384 (the ServerHello an agent sends the controller
# carries 0x1302; seen with strace on an agent during a distribution).
CIPHER = "aes-256-gcm"


def _cpu_seconds():
    """User + system CPU seconds of this process so far (all its threads)."""
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def openssl_rate(alg, seconds):
    """Bytes per second of `openssl speed -evp ALG` on 16 KiB blocks, one core."""
    r = subprocess.run(["openssl", "speed", "-evp", alg, "-bytes", "16384", "-seconds",
                        str(seconds)], capture_output=True, text=True, timeout=60 + 4 * seconds)
    if r.returncode != 0:
        raise RuntimeError(f"openssl speed {alg} failed: {r.stderr.strip()}")
    lines = [l for l in r.stdout.splitlines() if l.strip()]
    m = re.search(r"([\d.]+)k\s*$", lines[-1])
    if not m:
        raise RuntimeError(f"cannot parse openssl speed output: {lines[-1]!r}")
    return float(m.group(1)) * 1000.0


def loopback_rate(total_bytes, streams=1):
    """Aggregate bytes per second (wall clock) of `streams` TCP streams over
    127.0.0.1 at once, total_bytes among them in 1 MiB sends; returns
    (rate, CPU seconds this process spent moving them)."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(streams)
    port = srv.getsockname()[1]
    received = [0] * streams
    block = memoryview(os.urandom(MiB))
    each = max(MiB, total_bytes // streams // MiB * MiB)

    def sink(i, conn):
        view = memoryview(bytearray(MiB))
        with conn:
            while True:
                n = conn.recv_into(view)
                if n == 0:
                    break
                received[i] += n

    def source(c):
        sent = 0
        while sent < each:
            c.sendall(block)
            sent += len(block)
        c.shutdown(socket.SHUT_WR)

    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(streams)]
    sinks = [threading.Thread(target=sink, args=(i, srv.accept()[0])) for i in range(streams)]
    sources = [threading.Thread(target=source, args=(c,)) for c in clients]
    cpu = _cpu_seconds()
    start = time.monotonic()
    for t in sinks + sources:
        t.start()
    for t in sinks + sources:
        t.join()
    elapsed = time.monotonic() - start
    cpu = _cpu_seconds() - cpu
    for c in clients:
        c.close()
    srv.close()
    return sum(received) / elapsed, cpu


def write_rate(directory, total_bytes):
    """Bytes per second of writing a new file through the page cache in 1 MiB
    blocks and fsyncing it (how the import writes; not the agent's path)."""
    path = os.path.join(directory, "write-probe.bin")
    block = os.urandom(MiB)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    start = time.monotonic()
    try:
        written = 0
        while written < total_bytes:
            written += os.write(fd, block)
        os.fsync(fd)
    finally:
        os.close(fd)
        os.unlink(path)
    return written / (time.monotonic() - start)


class _AgentWriter:
    """One agent's write path to its own file (module docstring): a writer
    thread issuing 4 MiB O_DIRECT writes one at a time, and a flush thread
    that fsyncs the file and appends + fsyncs journal records every 16 MiB
    while the writer goes on."""

    def __init__(self, directory, index, size, block, direct):
        self.path = os.path.join(directory, f"agent-write-probe-{index}.bin")
        self.journal = self.path + ".journal"
        self.size = size
        self.block = block
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        self.fd = os.open(self.path, flags, 0o600)  # the staging file, as PrepareFile makes it
        os.ftruncate(self.fd, size)
        self.dfd = os.open(self.path, os.O_WRONLY | os.O_DIRECT) if direct else self.fd
        self.jfd = os.open(self.journal, flags | os.O_APPEND, 0o600)
        self.flushes = queue.Queue()
        self.error = None
        self.writer = threading.Thread(target=self._write)
        self.flusher = threading.Thread(target=self._flush)

    def start(self):
        self.flusher.start()
        self.writer.start()

    def join(self):
        self.writer.join()
        self.flusher.join()
        if self.error:
            raise self.error

    def close(self):
        for fd in {self.fd, self.dfd, self.jfd}:
            os.close(fd)
        os.unlink(self.path)
        os.unlink(self.journal)

    def _write(self):
        try:
            offset = unflushed = 0
            while offset < self.size:
                n = os.pwrite(self.dfd, self.block, offset)
                if n != len(self.block):
                    raise OSError(f"short write: {n} of {len(self.block)} bytes")
                offset += n
                unflushed += n
                if unflushed >= FLUSH_EVERY or offset >= self.size:
                    self.flushes.put(unflushed // CHUNK)  # every write before it is done
                    unflushed = 0
        except OSError as e:
            self.error = e
        finally:
            self.flushes.put(None)

    def _flush(self):
        while (chunks := self.flushes.get()) is not None:
            if self.error:
                continue
            try:
                os.fsync(self.fd)  # the data (and the extents O_DIRECT allocated)
                os.write(self.jfd, bytes(chunks * JOURNAL_RECORD))
                os.fsync(self.jfd)
            except OSError as e:
                self.error = e


def agent_write_rate(directory, total_bytes, writers=1):
    """Aggregate bytes per second of `writers` agents' write paths at once,
    each to its own file of total_bytes / writers (module docstring); returns
    (rate, CPU seconds this process spent, whether O_DIRECT was used)."""
    block = mmap.mmap(-1, DIRECT_WRITE)  # page-aligned, as O_DIRECT requires
    block.write(os.urandom(DIRECT_WRITE))
    each = max(FLUSH_EVERY, total_bytes // writers // DIRECT_WRITE * DIRECT_WRITE)
    direct = True
    try:
        probe = os.path.join(directory, "agent-write-probe-direct")
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o600))
    except OSError:
        direct = False  # the agent falls back to buffered writes here too
    finally:
        if os.path.exists(probe):
            os.unlink(probe)
    ws = [_AgentWriter(directory, i, each, block, direct) for i in range(writers)]
    try:
        cpu = _cpu_seconds()
        start = time.monotonic()
        for w in ws:
            w.start()
        for w in ws:
            w.join()
        elapsed = time.monotonic() - start
        cpu = _cpu_seconds() - cpu
    finally:
        for w in ws:
            w.close()
    return writers * each / elapsed, cpu, direct


def measure(directory, ns, cores=None, quick=False):
    """One probe of every part, for distributions to each N in `ns`: a dict
    of rates (bytes/s), the disk's rate with each N writers and loopback's
    with each min(N, cores) streams (keys are strings, as in JSON), and the
    probes' own CPU in core-seconds per GiB."""
    cores = cores or os.cpu_count()
    seconds = 1 if quick else 3
    probe = 64 * MiB if quick else 2 * GiB
    out = {"rates": {"aes": openssl_rate(CIPHER, seconds),
                     "sha256": openssl_rate("sha256", seconds)},
           "disk": {}, "loopback": {}, "cpu_s_per_gib": {}}
    for k in sorted({1} | {min(n, cores) for n in ns}):
        rate, cpu = loopback_rate(probe, k)
        out["loopback"][str(k)] = rate
        out["cpu_s_per_gib"][f"loopback_{k}"] = cpu / (probe / GiB)
    for w in sorted({1} | set(ns)):
        rate, cpu, direct = agent_write_rate(directory, probe // 2, w)
        out["disk"][str(w)] = rate
        out["cpu_s_per_gib"][f"disk_{w}"] = cpu / (probe / 2 / GiB)
        out["direct"] = direct
    out["rates"]["write_buffered"] = write_rate(directory, probe // 2)
    out["rates"]["loopback"] = out["loopback"]["1"]
    out["rates"]["disk"] = out["disk"]["1"]
    return out


def combine(probes, cores=None):
    """The limit from several probes (measure()): each part at its best rate
    over the probes (a limit is a best case), the spread kept beside it."""
    cores = cores or os.cpu_count()

    def best(get):
        values = [get(p) for p in probes]
        return {"best": max(values), "min": min(values), "median": statistics.median(values)}

    lim = {"probes": probes, "cores": cores, "cipher": CIPHER,
           "direct": all(p.get("direct") for p in probes),
           "rates": {k: best(lambda p, k=k: p["rates"][k]) for k in probes[0]["rates"]},
           "disk": {k: best(lambda p, k=k: p["disk"][k]) for k in probes[0]["disk"]},
           "loopback": {k: best(lambda p, k=k: p["loopback"][k]) for k in probes[0]["loopback"]},
           "cpu_s_per_gib": {k: statistics.median(p["cpu_s_per_gib"][k] for p in probes)
                             for k in probes[0]["cpu_s_per_gib"]}}
    lim["cost_core_s_per_gib"] = cost_terms(lim)["total"]
    return lim


def rate(lim, key):
    """The rate the limit uses for part `key` (aes, sha256, loopback, disk)."""
    return lim["rates"][key]["best"]


def cost_terms(lim):
    """Core-seconds per GiB per receiver of each part of `cost`, and their sum."""
    t = {"encrypt": GiB / rate(lim, "aes"), "loopback": GiB / rate(lim, "loopback"),
         "decrypt": GiB / rate(lim, "aes"), "sha256": GiB / rate(lim, "sha256"),
         "write": GiB / rate(lim, "disk")}
    t["total"] = sum(t.values())
    return t


def bounds(lim, size_bytes, n):
    """Seconds each resource needs at best for `size_bytes` to `n` receivers."""
    streams = str(min(n, lim["cores"]))
    return {
        "cores": n * (size_bytes / GiB) * lim["cost_core_s_per_gib"] / lim["cores"],
        "disk": n * size_bytes / lim["disk"][str(n)]["best"],
        "loopback": n * size_bytes / lim["loopback"][streams]["best"],
    }


def limit_seconds(lim, size_bytes, n):
    """limit(N): the slowest resource's bound; returns (seconds, resource)."""
    b = bounds(lim, size_bytes, n)
    which = max(RESOURCES, key=lambda k: b[k])
    return b[which], which
