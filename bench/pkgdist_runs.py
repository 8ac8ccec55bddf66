"""pkgdist's side of the benchmark: import and distribute on one Cluster
(tests/integration/harness.py) on 127.0.0.1, every agent's root on the
same disk as the controller's state directory.

Each distribution gets fresh agents (started and registered for it;
stopped, unregistered and their roots removed after it), so their CPU and
peak RSS are the run's own and the controller holds no more agents in one
run than in another; the controller lives across runs and its peak RSS is
reset before each one.
"""

import contextlib
import hashlib
import json
import os
import shutil
import resource
import signal
import subprocess
import time

import harness
import limit
import procstat

MiB = 1 << 20


def make_random_file(path, size):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, 8 * MiB)
            f.write(os.urandom(n))
            left -= n
    return path


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(4 * MiB):
            h.update(block)
    return h.hexdigest()


def import_package(c, path, name, version, size):
    """Times `pkgdistctl package import`; returns (result dict, seconds)."""
    timeout = 60 + size / (20 * MiB)
    start = time.monotonic()
    rc, out, err = c.ctl_raw("package", "import", path, "--name", name, "--version", version,
                             timeout=timeout)
    elapsed = time.monotonic() - start
    if rc != 0:
        raise RuntimeError(f"package import failed ({rc}): {err.strip()}")
    return json.loads(out), elapsed


def import_local(c, path, name, version, size):
    """Times `pkgdistctl package import --local PATH` (the controller reads
    PATH itself; it must be under its --import-root); returns (result, s)."""
    timeout = 60 + size / (20 * MiB)
    start = time.monotonic()
    rc, out, err = c.ctl_raw("package", "import", "--local", path, "--name", name,
                             "--version", version, timeout=timeout)
    elapsed = time.monotonic() - start
    if rc != 0:
        raise RuntimeError(f"package import --local failed ({rc}): {err.strip()}")
    return json.loads(out), elapsed


def reflink_works(directory):
    """Whether files in `directory` can be cloned (FICLONE): what a local
    import there does instead of copying (probed with cp --reflink=always)."""
    a, b = os.path.join(directory, "reflink-probe-a"), os.path.join(directory, "reflink-probe-b")
    with open(a, "wb") as f:
        f.write(b"x" * 4096)
    try:
        return subprocess.run(["cp", "--reflink=always", a, b], capture_output=True).returncode == 0
    finally:
        for p in (a, b):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)


def _timed_import(c, run):
    """Runs `run()` (an import) measuring the controller's CPU and the
    client's (pkgdistctl, the only child reaped meanwhile)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    meter = procstat.CpuMeter([c.controller.pid]).start()
    info, secs = run()
    ctl_cpu = meter.stop()[c.controller.pid]
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall_s": secs, "chunks": info.get("chunks"), "id": info.get("id"),
            "controller_cpu_s": ctl_cpu,
            "client_cpu_s": (after.ru_utime + after.ru_stime
                             - children.ru_utime - children.ru_stime)}


def measure_import(c, src, size, rounds=1, log=print):
    """The import's speed beside its bounds, in the same run: per round,
    single-core SHA-256 (openssl speed), the disk's write rate in the
    controller's state directory (write `size` bytes in 1 MiB blocks +
    fsync, as dd conv=fsync), a streamed `package import` of `src` and a
    `package import --local` of it (src's directory must be an
    --import-root of the controller). Each import gets its own name@version
    so that neither finds the other's package."""
    out = {"size": size, "rounds": [], "reflink": reflink_works(c.controller_state_dir)}
    for k in range(rounds):
        sha = limit.openssl_rate("sha256", 3)
        os.sync()  # each measurement starts on a disk with no writeback of the one before
        disk = limit.write_rate(c.controller_state_dir, size)
        os.sync()
        log(f"import round {k + 1}/{rounds}: SHA-256 {sha / 1e9:.2f} GB/s, "
            f"disk write+fsync {disk / 1e9:.2f} GB/s")
        streamed = _timed_import(c, lambda: import_package(
            c, src, "bench", "1" if k == 0 else f"1.r{k}", size))
        log(f"  streamed: {streamed['wall_s']:.2f} s")
        os.sync()
        local = _timed_import(c, lambda: import_local(c, src, "bench-local", str(k), size))
        log(f"  --local:  {local['wall_s']:.2f} s")
        if local["id"] == streamed["id"] or local["chunks"] != streamed["chunks"]:
            raise RuntimeError(f"the local import built another manifest: {local} {streamed}")
        out["rounds"].append({"sha256": sha, "disk_write": disk, "streamed": streamed,
                              "local": local})
    return out


def distribute(c, package, names, size, filename, check_sha256=None, around=None):
    """Starts fresh agents `names`, distributes `package` to them and
    measures. Returns a dict of the run's figures. `around(controller_pid,
    agent_pids)`, if given, returns a context manager held during the run
    (a profiler)."""
    for n in names:
        c.start_agent(n)
        c.add_agent(n)
    ctl_pid = c.controller.pid
    agent_pids = [c.agents[n].proc.pid for n in names]
    procstat.reset_peak(ctl_pid)
    meter = procstat.CpuMeter([ctl_pid] + agent_pids).start()
    timeout = 120 + len(names) * size / (10 * MiB)
    held = around(ctl_pid, agent_pids) if around else contextlib.nullcontext()
    with held, procstat.Sampler([ctl_pid]) as sampler:
        start = time.monotonic()
        rc, out, err = c.ctl_raw("distribute", package, "--to", ",".join(names), "--wait",
                                 "--timeout", f"{int(timeout)}s", timeout=timeout + 30)
        elapsed = time.monotonic() - start
    used = meter.stop()
    if rc != 0:
        raise RuntimeError(f"distribute {package} to {len(names)} agents failed ({rc}): "
                           f"{err.strip()}")
    job = harness.parse_json_documents(out, "distribute --wait")
    if isinstance(job, list):
        job = job[-1]
    if job.get("state") != "complete":
        raise RuntimeError(f"job ended {job.get('state')}: {json.dumps(job)[:2000]}")
    name, version = package.split("@")
    for n in names:
        copy = os.path.join(c.published(n, name, version), filename)
        if os.path.getsize(copy) != size:
            raise RuntimeError(f"{copy} has {os.path.getsize(copy)} bytes, expected {size}")
    if check_sha256 and file_sha256(os.path.join(c.published(names[0], name, version),
                                                 filename)) != check_sha256:
        raise RuntimeError(f"{names[0]}'s copy of {package} differs from the source")
    result = {
        "n": len(names),
        "size": size,
        "wall_s": elapsed,
        "controller_cpu_s": used[ctl_pid],
        "agents_cpu_s": sum(used[p] for p in agent_pids),
        "controller_peak_rss_kib": procstat.peak_rss_kib(ctl_pid),
        "controller_max_threads": sampler.max_threads[ctl_pid],
        "agent_peak_rss_kib": [procstat.peak_rss_kib(p) for p in agent_pids],
        "bytes_sent": sum(t.get("bytes_sent", 0) for t in job.get("targets", [])),
    }
    for n in names:
        c.kill(c.agents[n].proc, signal.SIGTERM)
        c.ctl("agent", "remove", n)
        shutil.rmtree(c.agents[n].root, ignore_errors=True)
    return result
