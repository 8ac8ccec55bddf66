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
import signal
import time

import harness
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
