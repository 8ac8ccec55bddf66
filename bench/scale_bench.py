"""Scale benchmark (issue 12, "Ready for 10,000 agents"): N agents on this
machine, one package distributed to all of them, while an admin client calls
the status API in a loop.

    bench/scale_bench.py --agents 10000                   # 256 KiB to 10,000 agents
    bench/scale_bench.py --agents 1000 --package-bytes 64MiB --max-concurrent 64
    bench/scale_bench.py --smoke                          # 100 agents, 64 KiB, < 30 s
    bench/scale_bench.py --render A.json B.json ...       # Markdown table of saved runs

Agents are hosted by pkgdist-multi-agent (bench/scale.py): PER_PROCESS real
AgentServers per process, each with its own certificate (pkgdist-make-certs),
root and port on 127.0.0.1. The agents are registered and the package
imported, then the controller is restarted (SIGTERM, same state directory), so
that its transaction counter and RSS start from the distribution: its
`stats:` line at shutdown gives the run's SQLite write transactions. Then
Distribute, and WatchJob until the job is final (the time to complete),
while:
  - a client (Python grpc, response bytes not parsed) calls GetJob of the
    job, ListAgents (one page, page_size 500) and ListJobs (first page) in
    turn, pausing --poll-pause between rounds: median / p99 / max latency;
  - /proc is sampled: the controller's threads, RSS, open descriptors, CPU;
    the hosts' RSS, threads and CPU; the machine's available memory.
Then, for --idle-seconds, the CPU that the N connected but idle agents cost
(keepalive pings on every channel), and 50 of each status call alone: their
latency and controller CPU per call. Then the controller is stopped with
SIGTERM and its log read: every `stats:` line (per minute, and the total at
shutdown), failed attempts.

--reap deletes each agent's published copy as soon as its target is done
(after checking its size), for packages whose N copies would not fit on the
disk; the bytes are still written, fsynced and verified by the agent.

Writes the figures as JSON (--out FILE) and prints a summary. Exits 1 if the
job did not complete or a published copy is missing, or in --smoke if a
measurement is missing; missed goals (RSS <= 100 KiB per agent, p99 <= 100 ms)
are reported, not failed on. Runs the binaries of --bin-dir (default
build/bin) and never builds. Needs Debian's python3 (python3-grpcio): if the
python3 running it has no grpc module, it re-executes itself with
/usr/bin/python3.
"""

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.dirname(HERE)
KiB, MiB = 1 << 10, 1 << 20

try:
    import grpc
except ImportError:
    if os.path.realpath(sys.executable) != os.path.realpath("/usr/bin/python3") and \
            os.access("/usr/bin/python3", os.X_OK):
        os.execv("/usr/bin/python3", ["/usr/bin/python3", *sys.argv])
    raise SystemExit("scale_bench.py needs grpc for Python (Debian: python3-grpcio)")

GOAL_KIB_PER_AGENT = 100
GOAL_P99_MS = 100
STATS_LINE = re.compile(r"stats: (\d+) state store transactions in ([\d.]+) s \(([\d.]+)/s; "
                        r"(\d+) since start\), (\d+) attempts active, (\d+) agents awaited")


def size_arg(text):
    m = re.fullmatch(r"(\d+)\s*(|B|KiB|K|MiB|M|GiB|G)", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 262144, 256KiB, 64MiB)")
    unit = {"": 1, "B": 1, "K": KiB, "KiB": KiB, "M": MiB, "MiB": MiB, "G": 1 << 30,
            "GiB": 1 << 30}[m.group(2)]
    return int(m.group(1)) * unit


def parse_args():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin-dir", default=os.path.join(SOURCE_DIR, "build", "bin"))
    p.add_argument("--agents", type=int, default=1000)
    p.add_argument("--per-process", type=int, default=100, help="agents per multi-agent host")
    p.add_argument("--package-bytes", type=size_arg, default=256 * KiB)
    p.add_argument("--max-concurrent", type=int, default=0,
                   help="controller --max-concurrent-transfers (default: the controller's)")
    p.add_argument("--poll-pause", type=float, default=0.1,
                   help="seconds between the status client's rounds")
    p.add_argument("--timeout", type=float, default=3000, help="bound on the distribution, s")
    p.add_argument("--idle-seconds", type=float, default=10,
                   help="after the job: how long to measure the CPU that N connected, idle "
                   "agents cost (keepalive); 0 skips it")
    p.add_argument("--reap", action="store_true",
                   help="delete each published copy once its target is done")
    p.add_argument("--out", help="write the figures here (JSON)")
    p.add_argument("--commit", help="the commit measured, for the record (default: git HEAD "
                   "of the source tree, if it is a clone)")
    p.add_argument("--smoke", action="store_true", help="100 agents, 64 KiB, 50 per process")
    p.add_argument("--render", nargs="+", metavar="JSON", help="print a table of saved runs")
    a = p.parse_args()
    if a.smoke:
        a.agents, a.per_process, a.package_bytes, a.idle_seconds = 100, 50, 64 * KiB, 1
    if a.agents < 1 or a.per_process < 1:
        p.error("--agents and --per-process must be positive")
    return a


def log(msg):
    print(f"[scale {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def raise_fd_limit(needed):
    """Soft RLIMIT_NOFILE up to the hard limit, and the hard one up to
    `needed` if we may (root); children inherit it. Returns (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < needed:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
            return needed, needed
        except (ValueError, OSError):
            pass
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def meminfo_kib(key):
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def machine():
    with open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f
                    if line.startswith("model name")), "unknown")
    return {"cpu": cpu, "nproc": os.cpu_count(),
            "memory_gib": round(meminfo_kib("MemTotal") / (1 << 20), 1),
            "kernel": platform.release(), "pid_max": int(open("/proc/sys/kernel/pid_max").read()),
            "port_range": open("/proc/sys/net/ipv4/ip_local_port_range").read().split()}


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, int(round(q * (len(sorted_values) - 1)))))
    return sorted_values[k]


def latency_summary(samples):
    ms = sorted(s * 1000 for s in samples)
    if not ms:
        return {"calls": 0}
    return {"calls": len(ms), "median_ms": statistics.median(ms), "p99_ms": percentile(ms, 0.99),
            "max_ms": ms[-1]}


class StatusPoller(threading.Thread):
    """An admin client that calls GetJob(job), ListAgents(page_size 500) and
    ListJobs() in turn until stopped, pausing `pause` s after each round.
    Responses are kept as bytes (not parsed), so a latency is the
    controller's work plus the transport, not Python's."""

    def __init__(self, channel, pb, job_id, pause):
        super().__init__(daemon=True)
        raw = lambda method, request_type: channel.unary_unary(  # noqa: E731
            f"/pkgdist.v1.Admin/{method}", request_serializer=request_type.SerializeToString,
            response_deserializer=None)
        self.calls = [("GetJob", raw("GetJob", pb.GetJobRequest), pb.GetJobRequest(id=job_id)),
                      ("ListAgents", raw("ListAgents", pb.ListAgentsRequest),
                       pb.ListAgentsRequest(page_size=500)),
                      ("ListJobs", raw("ListJobs", pb.ListJobsRequest), pb.ListJobsRequest())]
        self.pause = pause
        self.latency = {name: [] for name, _, _ in self.calls}
        self.max_bytes = {name: 0 for name, _, _ in self.calls}
        self.errors = {}
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            for name, call, request in self.calls:
                start = time.monotonic()
                try:
                    response = call(request, timeout=60)
                except grpc.RpcError as e:
                    key = f"{name}: {e.code().name}: {e.details()}"[:300]
                    self.errors[key] = self.errors.get(key, 0) + 1
                    continue
                self.latency[name].append(time.monotonic() - start)
                self.max_bytes[name] = max(self.max_bytes[name], len(response))
            self._halt.wait(self.pause)

    def stop(self):
        self._halt.set()
        self.join()

    def summary(self):
        out = {}
        for name in self.latency:
            out[name] = latency_summary(self.latency[name])
            out[name]["max_response_bytes"] = self.max_bytes[name]
        out["errors"] = self.errors
        return out


class RunSampler(threading.Thread):
    """Every `interval` s: the controller's threads, RSS and open descriptors,
    and the machine's available memory; keeps maxima and a coarse series."""

    def __init__(self, procstat, ctl_pid, host_pids, interval=0.5):
        super().__init__(daemon=True)
        self.procstat, self.ctl, self.hosts, self.interval = procstat, ctl_pid, host_pids, interval
        self.max = {"threads": 0, "rss_kib": 0, "fds": 0}
        self.min_mem_available_kib = meminfo_kib("MemAvailable")
        self.max_hosts_rss_kib = 0
        self.series = []
        self._halt = threading.Event()
        self._t0 = time.monotonic()

    def sample(self):
        ps = self.procstat
        try:
            now = {"threads": ps.threads(self.ctl), "rss_kib": ps.rss_kib(self.ctl),
                   "fds": len(os.listdir(f"/proc/{self.ctl}/fd"))}
        except (OSError, KeyError):
            return
        for k, v in now.items():
            self.max[k] = max(self.max[k], v)
        self.min_mem_available_kib = min(self.min_mem_available_kib, meminfo_kib("MemAvailable"))
        t = time.monotonic() - self._t0
        if not self.series or t - self.series[-1]["t"] >= 5:
            hosts = 0
            for p in self.hosts:
                try:
                    hosts += ps.rss_kib(p)
                except (OSError, KeyError):
                    pass
            self.max_hosts_rss_kib = max(self.max_hosts_rss_kib, hosts)
            self.series.append(dict(now, t=round(t, 1), hosts_rss_kib=hosts))

    def run(self):
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)

    def stop(self):
        self._halt.set()
        self.join()
        self.sample()


def _thread_files(pid, filename):
    """(thread name, contents of /proc/PID/task/TID/FILENAME) for each thread
    of `pid` that still exists."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/{filename}") as f:
                yield name, f.read()
        except OSError:
            continue


def thread_cpu_s(pid):
    """CPU seconds of each thread of `pid`, summed by thread name."""
    out = {}
    for name, stat in _thread_files(pid, "stat"):
        rest = stat.rsplit(")", 1)[1].split()
        out[name] = out.get(name, 0) + (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")
    return out


def thread_sched_s(pid):
    """Per thread name: [seconds on a CPU, seconds runnable but waiting for one]
    (/proc/PID/task/TID/schedstat), summed over the threads of that name."""
    out = {}
    for name, schedstat in _thread_files(pid, "schedstat"):
        try:
            run_ns, wait_ns = (int(x) for x in schedstat.split()[:2])
        except ValueError:
            continue
        acc = out.setdefault(name, [0.0, 0.0])
        acc[0] += run_ns / 1e9
        acc[1] += wait_ns / 1e9
    return out


def sched_delta(after, before):
    return {k: [round(v[0] - before.get(k, [0, 0])[0], 2), round(v[1] - before.get(k, [0, 0])[1], 2)]
            for k, v in sorted(after.items(), key=lambda kv: -kv[1][0])}


def controller_log_since_last_start(c):
    """The lines the controller's current (last) run wrote to its log."""
    with open(c.log_of("controller"), encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("=== ")]
    return lines[starts[-1] + 1:] if starts else lines


def read_log(lines):
    stats = []
    failed, errors = 0, {}
    for line in lines:
        m = STATS_LINE.search(line)
        if m:
            stats.append({"at": line.split(" ", 1)[0], "transactions": int(m.group(1)),
                          "seconds": float(m.group(2)), "per_s": float(m.group(3)),
                          "since_start": int(m.group(4)), "active": int(m.group(5)),
                          "awaited": int(m.group(6))})
        if " attempt " in line and " failed: " in line:
            failed += 1
            why = re.sub(r"\d+", "N", line.split(" failed: ", 1)[1].split(" (next:")[0])[:200]
            errors[why] = errors.get(why, 0) + 1
    warnings = sum(1 for line in lines if " warning " in line or " error " in line)
    return stats, failed, errors, warnings


class Reaper:
    """Deletes an agent's published copy once its target is done (--reap)."""

    def __init__(self, c, name, version, filename, size):
        self.c, self.name, self.version, self.filename, self.size = c, name, version, filename, size
        self.reaped, self.bad = set(), []

    def __call__(self, done_agents):
        for a in done_agents:
            if a in self.reaped:
                continue
            root = self.c.published(a, self.name, self.version)
            try:
                got = os.path.getsize(os.path.join(root, self.filename))
            except OSError as e:
                self.bad.append(f"{a}: {e}")
                got = None
            if got is not None and got != self.size:
                self.bad.append(f"{a}: {got} bytes, expected {self.size}")
            shutil.rmtree(root, ignore_errors=True)
            self.reaped.add(a)


def admin_channel(c):
    """A mutual-TLS channel to the controller as admin, taking a whole job's status."""
    def read(path):
        with open(path, "rb") as f:
            return f.read()
    creds = grpc.ssl_channel_credentials(read(os.path.join(c.certs, "ca.pem")),
                                         read(c.key("admin")), read(c.cert("admin")))
    return grpc.secure_channel(c.controller_address, creds,
                               options=[("grpc.max_receive_message_length", 256 * MiB),
                                        ("grpc.max_send_message_length", 64 * MiB)])


def run(a):
    os.environ["PKGDIST_BIN_DIR"] = os.path.abspath(a.bin_dir)
    os.environ["PKGDIST_SOURCE_DIR"] = SOURCE_DIR
    sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "integration"))
    import api_client
    import harness
    import pkgdist_runs
    import procstat
    import scale

    fd_soft, fd_hard = raise_fd_limit(a.agents + 4096)
    r = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
         "command": " ".join(["bench/scale_bench.py", *sys.argv[1:]]), "machine": machine(),
         "commit": a.commit or subprocess.run(
             ["git", "-C", SOURCE_DIR, "rev-parse", "--short", "HEAD"], capture_output=True,
             text=True).stdout.strip() or None,
         "load_before": os.getloadavg(), "agents": a.agents, "per_process": a.per_process,
         "package_bytes": a.package_bytes, "max_concurrent": a.max_concurrent or None,
         "poll_pause_s": a.poll_pause, "reap": a.reap, "rlimit_nofile": [fd_soft, fd_hard]}
    stubs = api_client.Stubs()
    try:
        with harness.Cluster() as c:
            if a.smoke:
                r["certs_checked"] = scale.check_certs_match_script(c)
                log(f"pkgdist-make-certs matches gen-dev-certs.sh ({', '.join(r['certs_checked'])})")
            names = scale.agent_names(a.agents)
            r["certs_s"] = scale.make_agent_certs(c, names)
            log(f"{a.agents} agent certificates in {r['certs_s']:.1f} s")
            opts = {"max_concurrent_transfers": a.max_concurrent} if a.max_concurrent else {}
            c.start_controller(**opts)

            start = time.monotonic()
            hosts = scale.start_hosts(c, names, a.per_process, timeout=600)
            r["hosts_start_s"] = time.monotonic() - start
            log(f"{len(hosts)} hosts listening in {r['hosts_start_s']:.1f} s")

            channel = admin_channel(c)
            admin, pb = stubs.admin(channel), stubs.pb
            start = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda n: admin.AddAgent(pb.AddAgentRequest(
                    name=n, address=c.agents[n].address), timeout=60), names))
            r["register_s"] = time.monotonic() - start
            log(f"registered in {r['register_s']:.1f} s (AddAgent, 8 at a time)")
            channel.close()

            src = pkgdist_runs.make_random_file(os.path.join(c.dir, "scale-src", "pkg.bin"),
                                                a.package_bytes)
            pkgdist_runs.import_package(c, src, "scale", "1", a.package_bytes)
            os.unlink(src)

            # A fresh controller process for the distribution alone.
            c.kill(c.controller, signal.SIGTERM, timeout=120)
            c.restart_controller()
            ctl = c.controller.pid
            channel = admin_channel(c)
            admin = stubs.admin(channel)
            admin.ListAgents(pb.ListAgentsRequest(page_size=1), timeout=60)  # connected
            rss_before = procstat.rss_kib(ctl)
            r["controller_rss_before_kib"] = rss_before
            r["controller_threads_before"] = procstat.threads(ctl)
            host_pids = [p.pid for p in hosts]
            cpu = procstat.CpuMeter([ctl] + host_pids).start()
            threads_cpu_before = thread_cpu_s(ctl)
            sched_before = sched_last = thread_sched_s(ctl)
            r["sched_series"] = []
            sampler = RunSampler(procstat, ctl, host_pids)
            sampler.start()
            reaper = Reaper(c, "scale", "1", "pkg.bin", a.package_bytes) if a.reap else None

            log(f"distributing {a.package_bytes} bytes to {a.agents} agents")
            start = time.monotonic()
            job = admin.Distribute(pb.DistributeRequest(package="scale@1", agents=names),
                                   timeout=120)
            r["distribute_call_s"] = time.monotonic() - start
            poller = StatusPoller(channel, pb, job.id, a.poll_pause)
            poller.start()
            progress, last, deadline = [], None, start + a.timeout
            next_log = start + 30
            try:
                for status in admin.WatchJob(pb.GetJobRequest(id=job.id), timeout=a.timeout):
                    last = status
                    now = time.monotonic()
                    done = [t.agent for t in status.targets if t.state == "done"]
                    progress.append((round(now - start, 2), len(done)))
                    if reaper:
                        reaper(done)
                    if now >= next_log:
                        log(f"  {now - start:.0f} s: {len(done)}/{a.agents} done")
                        next_log = now + 30
                        # Each thread's time on a CPU and waiting for one, per 30 s.
                        sched_now = thread_sched_s(ctl)
                        r["sched_series"].append({"t": round(now - start), "done": len(done),
                                                  "threads": sched_delta(sched_now, sched_last)})
                        sched_last = sched_now
                    if now > deadline:
                        break
            except grpc.RpcError as e:
                r["watch_error"] = f"{e.code().name}: {e.details()}"
            wall = time.monotonic() - start
            poller.stop()
            sampler.stop()
            used = cpu.stop()
            # Where the controller's CPU went, by thread name ("pkgdist-control" is the
            # engine's thread, "grpcpp_sync_ser" the admin API's, "nexting_thread" and
            # "event_engine" gRPC's polling of the agents' connections).
            by_thread = {k: round(v - threads_cpu_before.get(k, 0), 2)
                         for k, v in sorted(thread_cpu_s(ctl).items(), key=lambda kv: -kv[1])}
            # Threads that ended during the run (gRPC's sync-server threads come and go)
            # count only in the process's total.
            by_thread["(ended threads)"] = round(used[ctl] - sum(by_thread.values()), 2)
            r["controller_thread_cpu_s"] = by_thread
            # [on a CPU, runnable but waiting for a CPU] seconds, by thread name: the
            # rest of a thread's wall time it was blocked (I/O, a lock, a timer).
            r["controller_thread_sched_s"] = sched_delta(thread_sched_s(ctl), sched_before)
            r["wall_s"] = wall
            r["job_state"] = last.state if last else None
            r["done_targets"] = sum(1 for t in last.targets if t.state == "done") if last else 0
            r["target_states"] = {}
            for t in (last.targets if last else []):
                r["target_states"][t.state] = r["target_states"].get(t.state, 0) + 1
            r["attempts"] = sum(t.attempts for t in last.targets) if last else 0
            r["bytes_sent"] = sum(t.bytes_sent for t in last.targets) if last else 0
            # Time at which 10 %, 50 %, 90 % and every target were done.
            r["done_at_s"] = {}
            for q in (0.1, 0.5, 0.9, 1.0):
                need = max(1, int(q * a.agents))
                hit = next((t for t, n in progress if n >= need), None)
                r["done_at_s"][f"{int(q * 100)}%"] = hit
            log(f"job {r['job_state']}: {r['done_targets']}/{a.agents} done in {wall:.1f} s")

            r["latency"] = poller.summary()
            r["controller_cpu_s"] = used[ctl]
            r["hosts_cpu_s"] = sum(used[p] for p in host_pids)
            r["controller_max_threads"] = sampler.max["threads"]
            r["controller_max_rss_kib"] = sampler.max["rss_kib"]
            r["controller_max_fds"] = sampler.max["fds"]
            r["controller_rss_after_kib"] = procstat.rss_kib(ctl)
            r["controller_kib_per_agent"] = (sampler.max["rss_kib"] - rss_before) / a.agents
            r["controller_kib_per_agent_after"] = (r["controller_rss_after_kib"]
                                                   - rss_before) / a.agents
            r["hosts_rss_kib"] = sum(procstat.rss_kib(p) for p in host_pids)
            r["hosts_max_rss_kib"] = sampler.max_hosts_rss_kib
            r["hosts_threads"] = sum(procstat.threads(p) for p in host_pids)
            r["min_mem_available_kib"] = sampler.min_mem_available_kib
            r["series"] = sampler.series
            if a.idle_seconds > 0:
                # Nothing runs now but the agents' connections: what they cost by themselves.
                idle = procstat.CpuMeter([ctl] + host_pids).start()
                idle_threads = thread_cpu_s(ctl)
                time.sleep(a.idle_seconds)
                used_idle = idle.stop()
                r["idle"] = {
                    "seconds": a.idle_seconds, "controller_cpu_s": used_idle[ctl],
                    "hosts_cpu_s": sum(used_idle[p] for p in host_pids),
                    "controller_thread_cpu_s": {
                        k: round(v - idle_threads.get(k, 0), 2) for k, v in
                        sorted(thread_cpu_s(ctl).items(), key=lambda kv: -kv[1])
                        if v - idle_threads.get(k, 0) > 0}}
                log(f"idle {a.idle_seconds:.0f} s with {a.agents} agents connected: controller "
                    f"{used_idle[ctl]:.1f} CPU-s, hosts {r['idle']['hosts_cpu_s']:.1f} CPU-s")
            # Each status call alone on a quiet controller: its latency and CPU cost.
            r["quiet_calls"] = {}
            quiet = StatusPoller(channel, pb, job.id, 0)
            for name, call, request in quiet.calls:
                meter = procstat.CpuMeter([ctl]).start()
                took = []
                for _ in range(50):
                    start = time.monotonic()
                    call(request, timeout=60)
                    took.append(time.monotonic() - start)
                r["quiet_calls"][name] = dict(latency_summary(took),
                                              controller_cpu_ms=meter.stop()[ctl] * 1000 / 50)
            channel.close()
            own = resource.getrusage(resource.RUSAGE_SELF)
            r["bench_process_cpu_s"] = own.ru_utime + own.ru_stime

            start = time.monotonic()
            c.kill(c.controller, signal.SIGTERM, timeout=300)
            r["controller_stop_s"] = time.monotonic() - start
            stats, failed, errors, warnings = read_log(controller_log_since_last_start(c))
            r["stats_lines"] = stats
            r["failed_attempts_logged"] = failed
            r["failure_reasons"] = errors
            r["controller_warnings"] = warnings
            if stats:
                total = stats[-1]["since_start"]
                r["transactions"] = total
                r["transactions_per_s"] = total / wall
                r["max_minute_per_s"] = max((s["per_s"] for s in stats[:-1]), default=None)
            if reaper:
                r["published"] = len(reaper.reaped) - len(reaper.bad)
                r["reap_problems"] = reaper.bad[:20]
            else:
                r["published"] = scale.published_count(c, names, "scale", "1", "pkg.bin",
                                                       a.package_bytes)
            r["complete"] = r["job_state"] == "complete" and r["published"] == a.agents
            r["load_after"] = os.getloadavg()
    finally:
        stubs.close()
    r["goals"] = {
        "kib_per_agent": {"goal": GOAL_KIB_PER_AGENT,
                          "met": r.get("controller_kib_per_agent", 1e9) <= GOAL_KIB_PER_AGENT},
        "p99_ms": {"goal": GOAL_P99_MS,
                   "met": all((r["latency"][k].get("p99_ms") or 1e9) <= GOAL_P99_MS
                              for k in ("GetJob", "ListAgents", "ListJobs"))},
    }
    return r


def summary(r):
    lat = r.get("latency", {})
    lines = [f"{r['agents']} agents x {r['package_bytes']} bytes ({r['per_process']} per host, "
             f"max concurrent {r['max_concurrent'] or 'default'}): "
             f"{'complete' if r.get('complete') else 'NOT complete'} in {r.get('wall_s', 0):.1f} s "
             f"({r.get('done_targets')} done, {r.get('published')} published, "
             f"{r.get('attempts')} attempts)",
             f"  certs {r['certs_s']:.1f} s, hosts {r['hosts_start_s']:.1f} s, "
             f"register {r['register_s']:.1f} s",
             f"  controller: max {r.get('controller_max_threads')} threads, "
             f"RSS {r.get('controller_rss_before_kib', 0) / 1024:.0f} -> max "
             f"{r.get('controller_max_rss_kib', 0) / 1024:.0f} MiB "
             f"({r.get('controller_kib_per_agent', 0):.0f} KiB/agent), max "
             f"{r.get('controller_max_fds')} fds, {r.get('controller_cpu_s', 0):.1f} CPU-s "
             f"({', '.join(f'{k} {v:.1f}' for k, v in list(r.get('controller_thread_cpu_s', {}).items())[:4])})",
             f"  SQLite: {r.get('transactions')} write transactions, "
             f"{r.get('transactions_per_s') or 0:.1f}/s over the run",
             f"  hosts: {r.get('hosts_rss_kib', 0) / 1024:.0f} MiB, {r.get('hosts_threads')} "
             f"threads, {r.get('hosts_cpu_s', 0):.1f} CPU-s"]
    for k in ("GetJob", "ListAgents", "ListJobs"):
        s = lat.get(k, {})
        if s.get("calls"):
            lines.append(f"  {k}: {s['calls']} calls, median {s['median_ms']:.1f} ms, "
                         f"p99 {s['p99_ms']:.1f} ms, max {s['max_ms']:.1f} ms, "
                         f"{s['max_response_bytes']} bytes")
    for k, q in r.get("quiet_calls", {}).items():
        lines.append(f"  {k} alone: median {q['median_ms']:.1f} ms, {q['controller_cpu_ms']:.1f} ms "
                     f"of controller CPU per call")
    if lat.get("errors"):
        lines.append(f"  status call errors: {lat['errors']}")
    if r.get("failure_reasons"):
        lines.append(f"  failed attempts: {r['failed_attempts_logged']}: {r['failure_reasons']}")
    return "\n".join(lines)


def render(paths):
    """A Markdown table of saved runs, one row each."""
    def f(x, fmt="{:.0f}"):
        return "-" if x is None else fmt.format(x)
    head = ["agents x package", "commit", "max concurrent", "completes", "wall s",
            "ctrl max threads", "ctrl max fds", "ctrl RSS before / max MiB", "ctrl KiB / agent",
            "SQLite tx (tx/s)", "GetJob p50 / p99 ms", "ListAgents p50 / p99 ms",
            "ListJobs p50 / p99 ms", "hosts MiB", "certs s"]
    rows = []
    for p in paths:
        with open(p) as fh:
            r = json.load(fh)
        size = r["package_bytes"]
        size_s = f"{size // MiB} MiB" if size >= MiB else f"{size // KiB} KiB"
        lat = r.get("latency", {})
        cells = [f"{r['agents']:,} x {size_s}", r.get("commit") or "-",
                 r.get("max_concurrent") or "64 (default)",
                 "yes" if r.get("complete") else f"NO ({r.get('done_targets')} done)",
                 f(r.get("wall_s"), "{:.1f}"), f(r.get("controller_max_threads")),
                 f(r.get("controller_max_fds")),
                 f"{f(r.get('controller_rss_before_kib', 0) / 1024)} / "
                 f"{f(r.get('controller_max_rss_kib', 0) / 1024)}",
                 f(r.get("controller_kib_per_agent")),
                 f"{r.get('transactions')} ({f(r.get('transactions_per_s'), '{:.0f}')})"]
        for k in ("GetJob", "ListAgents", "ListJobs"):
            s = lat.get(k, {})
            cells.append(f"{f(s.get('median_ms'), '{:.1f}')} / {f(s.get('p99_ms'), '{:.1f}')}")
        cells += [f(r.get("hosts_rss_kib", 0) / 1024), f(r.get("certs_s"), "{:.1f}")]
        rows.append(cells)
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]
    return "\n".join(out)


def main():
    a = parse_args()
    if a.render:
        print(render(a.render))
        return
    r = run(a)
    print(summary(r), flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(r, f, indent=1)
        log(f"wrote {a.out}")
    if not r.get("complete"):
        raise SystemExit(f"the distribution did not complete: job {r.get('job_state')}, "
                         f"{r.get('published')}/{a.agents} published")
    if a.smoke:
        missing = [k for k in ("GetJob", "ListAgents", "ListJobs")
                   if not r["latency"][k].get("calls")]
        if missing or "transactions" not in r or r["latency"]["errors"]:
            raise SystemExit(f"smoke: no latency for {missing}, or no stats line "
                             f"({'transactions' in r}), or call errors {r['latency']['errors']}")


if __name__ == "__main__":
    main()
