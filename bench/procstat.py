"""Per-process measurements from /proc: CPU seconds, peak RSS, threads.

cpu_seconds() is utime + stime; peak_rss_kib() is VmHWM, which
reset_peak() restarts from the current RSS (writes 5 to clear_refs), so a
long-lived process's peak can be measured per run. Sampler records the
maximum thread count and RSS of a set of processes while a run goes on.
"""

import os
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    # Fields 14 and 15 of stat(5); rest starts at field 3.
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def status_field(pid, key):
    """An integer field of /proc/PID/status (kB for Vm* fields)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(f"{key} not in /proc/{pid}/status")


def peak_rss_kib(pid):
    return status_field(pid, "VmHWM")


def rss_kib(pid):
    return status_field(pid, "VmRSS")


def threads(pid):
    return status_field(pid, "Threads")


def reset_peak(pid):
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def children(pid):
    """Direct children of pid."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if ppid == pid:
            out.append(int(entry))
    return out


class Sampler:
    """Samples max Threads and max VmRSS of `pids` every `interval` s."""

    def __init__(self, pids, interval=0.05):
        self.pids = list(pids)
        self.interval = interval
        self.max_threads = {p: 0 for p in self.pids}
        self.max_rss_kib = {p: 0 for p in self.pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for p in self.pids:
                try:
                    self.max_threads[p] = max(self.max_threads[p], threads(p))
                    self.max_rss_kib[p] = max(self.max_rss_kib[p], rss_kib(p))
                except (OSError, KeyError):
                    pass
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        return False


class CpuMeter:
    """CPU seconds used by `pids` between start() and stop()."""

    def __init__(self, pids):
        self.pids = list(pids)
        self.before = {}
        self.used = {}

    def start(self):
        self.before = {p: cpu_seconds(p) for p in self.pids}
        return self

    def stop(self):
        self.used = {p: cpu_seconds(p) - self.before[p] for p in self.pids}
        return self.used


def _task_cpu(pid):
    """{tid: (thread name, CPU seconds)} of pid's threads now."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                text = f.read()
        except OSError:
            continue  # it exited meanwhile
        name = text[text.index("(") + 1:text.rindex(")")]
        rest = text.rsplit(")", 1)[1].split()
        out[int(tid)] = (name, (int(rest[11]) + int(rest[12])) / CLK_TCK)
    return out


class ThreadCpu:
    """CPU seconds per thread name of `pid` while the `with` block runs,
    sampled every `interval` s (a thread that starts and ends between two
    samples is missed; one that ends counts up to its last sample).
    by_name() sums the threads of one name (gRPC's pollers, for one)."""

    def __init__(self, pid, interval=0.05):
        self.pid = pid
        self.interval = interval
        self.first = {}
        self.last = {}
        self._started = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self):
        for tid, (name, cpu) in _task_cpu(self.pid).items():
            self.first.setdefault(tid, (name, cpu if self._started else 0.0))
            self.last[tid] = (name, cpu)

    def _run(self):
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self):
        self._started = True
        self._sample()  # threads alive now count from here
        self._started = False  # later ones count from 0
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()
        return False

    def by_name(self):
        out = {}
        for tid, (name, cpu) in self.last.items():
            out[name] = out.get(name, 0.0) + cpu - self.first[tid][1]
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def wall():
    return time.monotonic()
