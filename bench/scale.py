"""Scale: COUNT agents on this machine, a small package distributed to all.

Agents are hosted by pkgdist-multi-agent (the real AgentServer, several per
process, each with its own name, certificate, root and port), PER_PROCESS
of them per process. run() (bench/run.sh's scale row) measures certificate
generation, registration, the distribution's wall time, the controller's
maximum thread count and its RSS growth per agent. The pieces are also
used by bench/scale_bench.py, the 10,000-agent benchmark.
"""

import concurrent.futures
import os
import re
import shutil
import subprocess
import tempfile
import time

import harness
import pkgdist_runs
import procstat

MiB = 1 << 20


def agent_names(count):
    """s0000, s0001, ... (wider when COUNT needs it)."""
    width = max(4, len(str(count - 1)))
    return [f"s{i:0{width}d}" for i in range(count)]


def make_agent_certs(c, names):
    """Certificates for `names` in the cluster's certs dir, by
    pkgdist-make-certs (which reuses the CA there); returns seconds."""
    names_file = os.path.join(c.dir, "agent-names.txt")
    with open(names_file, "w") as f:
        f.write("".join(n + "\n" for n in names))
    start = time.monotonic()
    r = subprocess.run([harness.binary("pkgdist-make-certs"), "--trust-domain", c.trust_domain,
                        "--names-file", names_file, c.certs], capture_output=True, text=True,
                       timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"pkgdist-make-certs failed ({r.returncode}): {r.stderr.strip()}")
    return time.monotonic() - start


def _masked_text(pem):
    """`openssl x509 -text` without what differs between any two issues of a
    certificate: serial, dates, public key, key identifier, signature."""
    text = subprocess.run(["openssl", "x509", "-in", pem, "-noout", "-text"], check=True,
                          capture_output=True, text=True).stdout
    out, skip = [], None
    for line in text.splitlines():
        if skip == "next":
            skip = None
            continue
        if skip == "block":
            if line.strip().startswith("ASN1 OID"):
                skip = None
            else:
                continue
        if re.search(r"Serial Number:|Subject Key Identifier:|Authority Key Identifier:", line):
            skip = "next"
        elif "pub:" in line:
            skip = "block"
            continue
        elif "Not Before" in line or "Not After" in line:
            continue
        elif "Signature Value" in line:
            break
        out.append(line)
    return out


def check_certs_match_script(c, name="cmp-agent"):
    """Issues NAME with certs/gen-dev-certs.sh and with pkgdist-make-certs
    under one CA and fails unless `openssl verify -CAfile` accepts the
    tool's certificates and they say what the script's say (subject, issuer,
    every extension and its criticality; the authority key id must be the
    CA's). Returns the stems compared."""
    work = tempfile.mkdtemp(prefix="pkgdist-certcheck-")
    try:
        script_dir, tool_dir = os.path.join(work, "script"), os.path.join(work, "tool")
        subprocess.run(["bash", harness.GEN_CERTS, "--trust-domain", c.trust_domain, script_dir,
                        name], check=True, capture_output=True, timeout=60)
        os.makedirs(tool_dir, mode=0o700)
        for f in ("ca.pem", "ca.key"):
            shutil.copy2(os.path.join(script_dir, f), tool_dir)
        subprocess.run([harness.binary("pkgdist-make-certs"), "--trust-domain", c.trust_domain,
                        tool_dir, name], check=True, capture_output=True, timeout=60)
        problems = []
        stems = ["controller", "admin", name]
        for stem in stems:
            pem = os.path.join(tool_dir, stem + ".pem")
            r = subprocess.run(["openssl", "verify", "-CAfile", os.path.join(tool_dir, "ca.pem"),
                                pem], capture_output=True, text=True)
            if r.returncode != 0:
                problems.append(f"openssl verify {stem}.pem: {r.stdout.strip()} {r.stderr.strip()}")
            if _masked_text(pem) != _masked_text(os.path.join(script_dir, stem + ".pem")):
                problems.append(f"{stem}.pem differs from gen-dev-certs.sh's")
            aki = [subprocess.run(["openssl", "x509", "-in", p, "-noout", "-ext",
                                   "authorityKeyIdentifier"], capture_output=True,
                                  text=True).stdout for p in
                   (pem, os.path.join(script_dir, stem + ".pem"))]
            if aki[0] != aki[1] or not aki[0]:
                problems.append(f"{stem}.pem: authority key id {aki[0]!r} != {aki[1]!r}")
            mode = os.stat(os.path.join(tool_dir, stem + ".key")).st_mode & 0o777
            if mode != 0o600:
                problems.append(f"{stem}.key has mode {mode:o}")
        if problems:
            raise AssertionError("pkgdist-make-certs vs gen-dev-certs.sh:\n  " +
                                 "\n  ".join(problems))
        return stems
    finally:
        shutil.rmtree(work, ignore_errors=True)


def start_hosts(c, names, per_process, timeout=300):
    """Starts pkgdist-multi-agent processes, PER_PROCESS agents each, and
    waits until every agent listens; records each agent's port. Returns the
    host Procs."""
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
    deadline = time.monotonic() + timeout
    for proc, ports_file in hosts:
        def read_ports(proc=proc, ports_file=ports_file):
            if not proc.alive():
                raise AssertionError(f"{proc.name} {proc.describe_exit()}:\n{proc.tail()}")
            return os.path.exists(ports_file)
        harness.wait_for(read_ports, timeout=max(1.0, deadline - time.monotonic()),
                         interval=0.1, what=f"{proc.name} to listen")
        with open(ports_file) as f:
            for line in f:
                name, port = line.split()
                c._agent(name).port = int(port)
    return [p for p, _ in hosts]


def register(c, names, threads=4):
    """`pkgdistctl agent add` for every name; returns seconds."""
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(c.add_agent, names))
    return time.monotonic() - start


def published_count(c, names, name, version, filename, size):
    """How many of `names` have published NAME@VERSION/FILENAME of SIZE bytes."""
    n = 0
    for a in names:
        try:
            n += os.path.getsize(os.path.join(c.published(a, name, version), filename)) == size
        except OSError:
            pass
    return n


def run(c, count, per_process, package_bytes=256 * 1024):
    names = agent_names(count)
    certs_s = make_agent_certs(c, names)

    start = time.monotonic()
    hosts = start_hosts(c, names, per_process)
    hosts_s = time.monotonic() - start
    ctl = c.controller.pid
    rss_before = procstat.rss_kib(ctl)
    with procstat.Sampler([ctl], interval=0.1) as sampler:
        register_s = register(c, names)
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
    published = published_count(c, names, "scale", "1", "small.bin", package_bytes)
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
