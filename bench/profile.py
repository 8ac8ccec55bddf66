"""Where the CPU goes: `perf record` on the controller and on one agent
during a distribution, then the hottest symbols of each (`perf report`).
Optional: needs Debian's linux-perf and permission to profile."""

import os
import shutil
import signal
import subprocess


def available():
    return shutil.which("perf") is not None


class Recorder:
    """perf record -p PID into OUT while the `with` block runs."""

    def __init__(self, pid, out):
        self.pid = pid
        self.out = out
        self.proc = None

    def __enter__(self):
        self.proc = subprocess.Popen(["perf", "record", "-q", "-F", "499", "-g", "-p",
                                      str(self.pid), "-o", self.out],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        return self

    def __exit__(self, *exc):
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return False


def top_symbols(data, limit=15, sort="dso,symbol"):
    """[(percent, "dso [.] symbol")] of the hottest self-time symbols (or,
    with sort="dso", the share of each binary or library)."""
    if not os.path.exists(data):
        return []
    r = subprocess.run(["perf", "report", "--stdio", "--no-children", "-g", "none",
                        "--percent-limit", "0.5", "--sort", sort, "-i", data],
                       capture_output=True, text=True, timeout=300)
    rows = []
    for line in r.stdout.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "%" not in line.split()[0]:
            continue
        pct, rest = line.split(None, 1)
        rest = " ".join(rest.split())
        while rest.endswith(" -"):  # empty columns
            rest = rest[:-2]
        rows.append((float(pct.rstrip("%")), rest))
        if len(rows) >= limit:
            break
    return rows
