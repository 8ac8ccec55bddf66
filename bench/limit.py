"""The machine's limit for distributing a package, from its parts.

Per receiver, one GiB costs (in core-seconds):
    cost = G/aes + G/aes + G/loopback + G/sha256 + G/write
(encrypt at the sender, loopback TCP, decrypt at the receiver, SHA-256 at
the receiver, write + fsync), where G = 2^30 bytes and each rate is bytes
per second on one core: aes and sha256 from `openssl speed -evp` on 16 KiB
blocks, loopback from one TCP stream on 127.0.0.1 (1 MiB sends), write from
writing and fsyncing a file on the agents' disk. With every core busy and no
extra copies, S bytes to N receivers take at best
    limit(N) = N * (S / G) * cost / cores  seconds.
"""

import mmap
import os
import re
import socket
import subprocess
import threading
import time

GiB = 1 << 30
MiB = 1 << 20


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


def loopback_rate(total_bytes):
    """Bytes per second of one TCP stream over 127.0.0.1 (wall clock)."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    received = [0]

    def sink():
        conn, _ = srv.accept()
        buf = bytearray(MiB)
        view = memoryview(buf)
        with conn:
            while True:
                n = conn.recv_into(view)
                if n == 0:
                    break
                received[0] += n

    t = threading.Thread(target=sink)
    t.start()
    block = memoryview(os.urandom(MiB))
    with socket.create_connection(("127.0.0.1", port)) as c:
        start = time.monotonic()
        sent = 0
        while sent < total_bytes:
            c.sendall(block)
            sent += len(block)
        c.shutdown(socket.SHUT_WR)
        t.join()
        elapsed = time.monotonic() - start
    srv.close()
    return received[0] / elapsed


def write_rate(directory, total_bytes, direct=False):
    """Bytes per second of writing a new file in 1 MiB blocks and fsyncing it.
    With `direct`, in 4 MiB blocks through O_DIRECT: how fast the disk itself
    takes data, past the page cache, as the agent writes chunks (its writer
    gathers consecutive 1 MiB chunks into writes of up to 4 MiB); None where
    O_DIRECT is refused."""
    path = os.path.join(directory, "write-probe.bin")
    size = 4 * MiB if direct else MiB
    block = mmap.mmap(-1, size)  # page-aligned, as O_DIRECT requires
    block.write(os.urandom(size))
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (os.O_DIRECT if direct else 0)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError:
        if direct:
            return None
        raise
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


def measure(directory, quick=False):
    """Measures every part; returns a dict of rates (bytes/s) and the cost."""
    seconds = 1 if quick else 3
    probe = 64 * MiB if quick else 2 * GiB
    rates = {
        "aes128gcm": openssl_rate("aes-128-gcm", seconds),
        "sha256": openssl_rate("sha256", seconds),
        "loopback": loopback_rate(probe),
        "write": write_rate(directory, probe // 2),
        "write_direct": write_rate(directory, probe // 2, direct=True),
    }
    cost = (2 * GiB / rates["aes128gcm"] + GiB / rates["loopback"] + GiB / rates["sha256"]
            + GiB / rates["write"])  # write_direct is reported, not part of the formula
    return {"rates": rates, "cost_core_s_per_gib": cost, "cores": os.cpu_count()}


def with_direct_write(limit):
    """The limit with the disk's O_DIRECT rate in place of write + fsync (the
    agent writes chunks past the page cache), or None if it was not measured."""
    rates = limit["rates"]
    if not rates.get("write_direct"):
        return None
    cost = limit["cost_core_s_per_gib"] - GiB / rates["write"] + GiB / rates["write_direct"]
    return dict(limit, cost_core_s_per_gib=cost)


def limit_seconds(limit, size_bytes, n):
    return n * (size_bytes / GiB) * limit["cost_core_s_per_gib"] / limit["cores"]
