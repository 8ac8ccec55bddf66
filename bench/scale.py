"""Scale: COUNT agents on this machine, a small package distributed to all.

Agents are hosted by pkgdist-multi-agent (the real AgentServer, several per
process, each with its own name, certificate, root and port), PER_PROCESS
of them per process. Measures certificate generation, registration, the
distribution's wall time, the controller's maximum thread count and its RSS
growth per agent.
"""

import concurrent.futures
import os
import subprocess
import time

import harness
import pkgdist_runs
import procstat

MiB = 1 << 20


def _start_hosts(c, names, per_process):
    hosts = []
    for i in range(0, len(names), per_process):
        group = names[i:i + per_process]
        ports_file = os.path.join(c.dir, f"hosts-{i // per_process}.ports")
        argv = [harness.binary("pkgdist-multi-agent"), "--certs", c.certs,
                "--roots", os.path.join(c.dir, "agents"), "--ports-file", ports_file, *group]
        log = os.path.join(c.dir, "logs", f"multi-agent-{i // per_process}.log")
        os.makedirs(os.path.dirname(log), exist_ok=True)
        proc = harness.Proc(f"multi-agent-{i // per_process}", argv, log)
        c.procs.append(proc)
        hosts.append((proc, ports_file))
    for proc, ports_file in hosts:
        def read_ports(proc=proc, ports_file=ports_file):
            if not proc.alive():
                raise AssertionError(f"{proc.name} {proc.describe_exit()}:\n{proc.tail()}")
            return os.path.exists(ports_file)
        harness.wait_for(read_ports, timeout=120, interval=0.1, what=f"{proc.name} to listen")
        with open(ports_file) as f:
            for line in f:
                name, port = line.split()
                c._agent(name).port = int(port)
    return [p for p, _ in hosts]


def run(c, count, per_process, package_bytes=256 * 1024):
    names = [f"s{i:04d}" for i in range(count)]
    start = time.monotonic()
    r = subprocess.run(["bash", harness.GEN_CERTS, "--trust-domain", c.trust_domain, c.certs,
                        *names], capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise RuntimeError(f"gen-dev-certs.sh failed: {r.stderr.strip()}")
    certs_s = time.monotonic() - start

    start = time.monotonic()
    hosts = _start_hosts(c, names, per_process)
    hosts_s = time.monotonic() - start
    ctl = c.controller.pid
    rss_before = procstat.rss_kib(ctl)
    with procstat.Sampler([ctl], interval=0.1) as sampler:
        start = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(c.add_agent, names))
        register_s = time.monotonic() - start
        path = pkgdist_runs.make_random_file(os.path.join(c.dir, "scale-src", "small.bin"),
                                             package_bytes)
        pkgdist_runs.import_package(c, path, "scale", "1", package_bytes)
        start = time.monotonic()
        rc, out, err = c.ctl_raw("distribute", "scale@1", "--to", ",".join(names), "--wait",
                                 "--timeout", "1200s", timeout=1300)
        wall = time.monotonic() - start
    job = harness.parse_json_documents(out, "distribute --wait") if out.strip() else {}
    if isinstance(job, list):
        job = job[-1]
    done = sum(1 for t in job.get("targets", []) if t.get("state") == "done")
    published = sum(1 for n in names
                    if os.path.exists(os.path.join(c.published(n, "scale", "1"), "small.bin")))
    host_rss = sum(procstat.rss_kib(p.pid) for p in hosts)
    host_threads = sum(procstat.threads(p.pid) for p in hosts)
    return {
        "agents": count,
        "per_process": per_process,
        "package_bytes": package_bytes,
        "certs_s": certs_s,
        "hosts_start_s": hosts_s,
        "register_s": register_s,
        "complete": rc == 0 and job.get("state") == "complete" and published == count,
        "exit_code": rc,
        "error": err.strip()[-500:],
        "done_targets": done,
        "published": published,
        "wall_s": wall,
        "controller_max_threads": sampler.max_threads[ctl],
        "controller_rss_before_kib": rss_before,
        "controller_max_rss_kib": sampler.max_rss_kib[ctl],
        "controller_kib_per_agent": (sampler.max_rss_kib[ctl] - rss_before) / count,
        "host_rss_kib_per_agent": host_rss / count,
        "host_threads_per_agent": host_threads / count,
    }
