"""Prometheus metrics and JSON logs (issue 15): Debian's real Prometheus
server scrapes a controller and two agents during a distribution, and PromQL
through its HTTP API sees the package's bytes sent and received and its
targets done; `promtool check metrics` finds nothing to say about either
program's /metrics; the README's metric table is what the programs serve;
a bad --metrics-listen stops a program at start; with --log-format json
every log line is one JSON object, and the lines of a distribution carry its
job, agent and package."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import unittest
import urllib.parse
import urllib.request

import harness
from harness import Cluster, MiB, wait_for

AGENTS = ["dp1", "dp2"]
PACKAGE_BYTES = 12 * MiB + 12345  # a partial last chunk too
JOB_TIMEOUT = 30
SCRAPE_TIMEOUT = 20
README = os.path.join(harness.SOURCE_DIR, "README.md")
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

PROMETHEUS = shutil.which("prometheus", path="/usr/bin:/usr/sbin:" + os.environ.get("PATH", ""))
PROMTOOL = shutil.which("promtool", path="/usr/bin:/usr/sbin:" + os.environ.get("PATH", ""))


def free_port():
    """A port free when picked (Prometheus cannot report a port 0 back)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode("utf-8")


def read_text(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def read_port_file(path):
    try:
        with open(path) as f:
            text = f.read().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


class MetricsCluster(Cluster):
    """A Cluster whose controller and agents serve metrics on 127.0.0.1:0."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.metrics_ports = {}  # "controller" or agent name -> port

    def _metrics_flags(self, who):
        path = os.path.join(self.dir, f"{who}.metrics-port")
        if os.path.exists(path):
            os.unlink(path)
        return path, ["--metrics-listen", "127.0.0.1:0", "--metrics-port-file", path]

    def _wait_metrics_port(self, who, path, proc):
        def observe():
            if not proc.alive():
                raise AssertionError(f"{who} {proc.describe_exit()}:\n{proc.tail()}")
            return read_port_file(path)
        self.metrics_ports[who] = wait_for(observe, timeout=harness.START_TIMEOUT,
                                           what=f"{who} to write {path}", interval=0.02)

    def start_controller(self, extra=(), **opts):
        path, flags = self._metrics_flags("controller")
        proc = super().start_controller(extra=[*flags, *extra], **opts)
        self._wait_metrics_port("controller", path, proc)
        return proc

    def start_agent(self, name, extra=(), **kwargs):
        path, flags = self._metrics_flags(name)
        proc = super().start_agent(name, extra=[*flags, *extra], **kwargs)
        self._wait_metrics_port(name, path, proc)
        return proc

    def metrics_text(self, who):
        return http_get(f"http://127.0.0.1:{self.metrics_ports[who]}/metrics")


class Prometheus:
    """Debian's prometheus on 127.0.0.1, scraping `targets` ({job: [port]})
    every second, with its storage in `directory`. Started as one of the
    cluster's processes, so it is stopped with them whatever happens; stop()
    stops it now and removes its directory."""

    def __init__(self, cluster, directory, targets):
        self.cluster = cluster
        self.dir = directory
        os.makedirs(os.path.join(directory, "data"))
        self.port = free_port()
        jobs = "".join(
            f"  - job_name: {job}\n    static_configs:\n      - targets: "
            f"[{', '.join(repr(f'127.0.0.1:{p}') for p in ports)}]\n"
            for job, ports in targets.items())
        config = os.path.join(directory, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                    "  evaluation_interval: 1s\nscrape_configs:\n" + jobs)
        argv = [PROMETHEUS, f"--config.file={config}",
                f"--storage.tsdb.path={os.path.join(directory, 'data')}",
                f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"]
        log_path = cluster.log_of("prometheus")
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        self.proc = harness.Proc("prometheus", argv, log_path)
        cluster.procs.append(self.proc)
        wait_for(self._ready, timeout=SCRAPE_TIMEOUT, what="prometheus to be ready")

    def _ready(self):
        if not self.proc.alive():
            raise AssertionError(f"prometheus {self.proc.describe_exit()}:\n{self.proc.tail()}")
        try:
            http_get(f"http://127.0.0.1:{self.port}/-/ready", timeout=1)
            return True
        except OSError:
            return False

    def query(self, promql, at=None):
        """The result vector of an instant query: [(labels, value)]."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(params)
        body = json.loads(http_get(url))
        if body.get("status") != "success" or body["data"]["resultType"] != "vector":
            raise AssertionError(f"query {promql!r} failed: {body}")
        return [(r["metric"], float(r["value"][1])) for r in body["data"]["result"]]

    def scalar(self, promql, at=None):
        """The single value of an instant query (fails on 0 or 2+ series)."""
        result = self.query(promql, at)
        if len(result) != 1:
            raise AssertionError(f"{promql!r} returned {len(result)} series: {result}")
        return result[0][1]

    def scraped_since(self, when, targets):
        """True once every one of `targets` scrape targets has a sample newer than `when`."""
        stamps = [v for _, v in self.query("timestamp(up)")]
        return len(stamps) == targets and min(stamps) > when

    def stop(self):
        if self.proc.alive():
            self.cluster.kill(self.proc, signal.SIGTERM)
        shutil.rmtree(self.dir, ignore_errors=True)


def served_types(text):
    """{name: type} from the # TYPE lines of a /metrics page."""
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE))


def readme_metrics():
    """{name: type} from the table of the README's "### Metrics" section."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    m = re.search(r"^### Metrics\n(.*?)(?=^##)", text, re.MULTILINE | re.DOTALL)
    if not m:
        raise AssertionError("README.md has no \"### Metrics\" section")
    rows = {}
    for line in m.group(1).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].startswith("`pkgdist_"):
            continue
        name = cells[0].strip("`")
        if name in rows:
            raise AssertionError(f"README lists {name} twice")
        rows[name] = cells[1]
    if not rows:
        raise AssertionError("the README's Metrics section has no table of pkgdist_ metrics")
    return rows


@unittest.skipUnless(PROMETHEUS and PROMTOOL,
                     "needs Debian's prometheus package (prometheus, promtool)")
class PrometheusScrapeTest(unittest.TestCase):

    def test_prometheus_sees_the_package_bytes_sent_received_and_the_targets_done(self):
        # A real Prometheus scrapes all three during a distribution; PromQL
        # sees the package's size sent and received, and the targets done.
        started = time.monotonic()
        with MetricsCluster(agents=AGENTS) as c:
            c.start_controller()
            for name in AGENTS:
                c.start_agent(name)
                c.add_agent(name)
            path = harness.make_file_package(os.path.join(c.dir, "src"), "payload.bin",
                                             PACKAGE_BYTES, seed=15)
            chunks = c.import_package(path, "payload", "1.0")["chunks"]
            prom = Prometheus(c, os.path.join(c.dir, "prometheus"), {
                "pkgdist-controller": [c.metrics_ports["controller"]],
                "pkgdist-agent": [c.metrics_ports[a] for a in AGENTS]})
            try:
                up = wait_for(lambda: prom.query("up == 1"), lambda r: len(r) == 3,
                              timeout=SCRAPE_TIMEOUT, what="prometheus to scrape all three")
                self.assertEqual({m["job"] for m, _ in up}, {"pkgdist-controller", "pkgdist-agent"})
                sent_before = prom.scalar("pkgdist_controller_sent_bytes_total")
                received_before = prom.scalar("sum(pkgdist_agent_received_bytes_total)")

                job = c.distribute("payload@1.0", AGENTS)
                c.wait_job(job, lambda j: j["state"] == "complete", JOB_TIMEOUT, "job completes")
                done_at = time.time()
                wait_for(lambda: prom.scraped_since(done_at, 3), timeout=SCRAPE_TIMEOUT,
                         what="a scrape of every target after the job completed")
                # Evaluated at the newest scrape: every target's latest sample
                # at or before it came after the job completed.
                at = max(v for _, v in prom.query("timestamp(up)"))
                q = lambda e: prom.scalar(e, at=at)  # noqa: E731

                expected = len(AGENTS) * PACKAGE_BYTES
                sent = q("pkgdist_controller_sent_bytes_total") - sent_before
                resent = q("pkgdist_controller_resent_bytes_total")
                received = q("sum(pkgdist_agent_received_bytes_total)") - received_before
                reused = q("sum(pkgdist_agent_reused_bytes_total)")
                # increase() at a series' own last sample extrapolates
                # nothing (its first sample is 0), so it is the exact delta.
                increases = {}
                for series in ("pkgdist_controller_sent_bytes_total",
                               "pkgdist_agent_received_bytes_total"):
                    increases[series] = 0.0
                    for labels, stamp in prom.query(f"timestamp({series})", at=at):
                        selector = f'{series}{{instance="{labels["instance"]}"}}'
                        increases[series] += prom.scalar(f"increase({selector}[5m])", at=stamp)
                print(f"package {PACKAGE_BYTES} B to {len(AGENTS)} agents: sent {sent:.0f}, "
                      f"re-sent {resent:.0f}, received {received:.0f}, reused {reused:.0f}; "
                      f"increase(): {increases}")
                # Every byte of the package went to each agent once and
                # arrived; re-sends and reuse explain any difference (there
                # are none on a clean run to fresh agents).
                self.assertEqual(sent - resent, expected)
                self.assertEqual(received, sent)
                self.assertEqual(received + reused, expected + resent)
                self.assertAlmostEqual(increases["pkgdist_controller_sent_bytes_total"], sent,
                                       delta=0.001 * expected)
                self.assertAlmostEqual(increases["pkgdist_agent_received_bytes_total"], received,
                                       delta=0.001 * expected)
                self.assertEqual(q("pkgdist_controller_acked_bytes_total"), expected)
                self.assertEqual(q("pkgdist_controller_acked_chunks_total"), len(AGENTS) * chunks)
                # The targets and the job by state, counted at scrape time.
                self.assertEqual(q('pkgdist_controller_targets{state="done"}'), len(AGENTS))
                self.assertEqual(q('sum(pkgdist_controller_targets{state!="done"})'), 0)
                self.assertEqual(q('pkgdist_controller_jobs{state="complete"}'), 1)
                self.assertEqual(q('sum(pkgdist_controller_agents)'), len(AGENTS))
                self.assertEqual(q('pkgdist_controller_attempts_total{kind="distribute"}'),
                                 len(AGENTS))
                self.assertEqual(q("sum(pkgdist_controller_attempt_failures_total)"), 0)
                self.assertEqual(q('pkgdist_controller_transfer_duration_seconds_count'
                                   '{outcome="published"}'), len(AGENTS))
                self.assertEqual(q('pkgdist_controller_admin_calls_total'
                                   '{method="Distribute",code="ok"}'), 1)
                self.assertEqual(q('pkgdist_controller_admin_calls_total'
                                   '{method="AddAgent",code="ok"}'), len(AGENTS))
                self.assertGreater(q("pkgdist_controller_store_transaction_duration_seconds_count"), 0)
                self.assertEqual(q("pkgdist_controller_store_failing"), 0)
                # The agents' side.
                self.assertEqual(q('sum(pkgdist_agent_transfers_total{code="ok"})'), len(AGENTS))
                self.assertEqual(q("sum(pkgdist_agent_transfers_active)"), 0)
                self.assertEqual(q("sum(pkgdist_agent_hash_mismatches_total)"), 0)
                self.assertGreaterEqual(
                    q("min(pkgdist_agent_journal_fsync_duration_seconds_count)"), 1)
                self.assertGreater(q("min(pkgdist_agent_free_bytes)"), PACKAGE_BYTES)
            finally:
                prom.stop()
            self.assertFalse(os.path.exists(prom.dir))
        print(f"test took {time.monotonic() - started:.1f}s")

    def test_promtool_finds_nothing_to_say_about_either_metrics_page(self):
        # `promtool check metrics` is silent on the controller's and an agent's /metrics.
        with MetricsCluster(agents=["dp1"]) as c:
            c.start_controller()
            c.start_agent("dp1")
            c.add_agent("dp1")
            for who in ("controller", "dp1"):
                text = c.metrics_text(who)
                r = subprocess.run([PROMTOOL, "check", "metrics"], input=text,
                                   capture_output=True, text=True, timeout=30)
                self.assertEqual((r.returncode, r.stdout + r.stderr), (0, ""),
                                 f"promtool on {who}'s /metrics")


class MetricsListTest(unittest.TestCase):

    def test_readme_lists_exactly_the_metrics_served_with_their_types(self):
        # The README's table names every pkgdist_ family the two programs serve, with its type.
        documented = readme_metrics()
        with MetricsCluster(agents=["dp1"]) as c:
            c.start_controller()
            c.start_agent("dp1")
            c.add_agent("dp1")  # also makes an admin call
            served = {}
            for who in ("controller", "dp1"):
                served.update({n: t for n, t in served_types(c.metrics_text(who)).items()
                               if n.startswith("pkgdist_")})
        missing = sorted(set(served) - set(documented))
        extra = sorted(set(documented) - set(served))
        wrong = sorted(f"{n}: README {documented[n]}, served {served[n]}"
                       for n in set(served) & set(documented) if documented[n] != served[n])
        self.assertEqual((missing, extra, wrong), ([], [], []),
                         "served but not in the README / in the README but not served / "
                         "types that differ")

    def test_unusable_metrics_address_stops_the_program_at_start(self):
        # A malformed address or a port in use: exit status 2 and one clear line, no crash.
        with MetricsCluster(agents=["dp1"]) as c:
            taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            try:
                port = taken.getsockname()[1]
                cases = [("localhost:9464", "expected IP:PORT"),
                         (f"127.0.0.1:{port}", "Address already in use")]
                for address, why in cases:
                    runs = {
                        "controller": [harness.binary("pkgdist-controller"), "--listen",
                                       "127.0.0.1:0", "--state-dir",
                                       os.path.join(c.dir, "state"),
                                       *c.tls_flags("controller")],
                        "agent": [harness.binary("pkgdist-agent"), "--name", "dp1", "--listen",
                                  "127.0.0.1:0", "--root", os.path.join(c.dir, "root"),
                                  *c.tls_flags("dp1")],
                    }
                    for who, argv in runs.items():
                        r = subprocess.run([*argv, "--metrics-listen", address],
                                           capture_output=True, text=True, timeout=20,
                                           stdin=subprocess.DEVNULL)
                        self.assertEqual(r.returncode, 2, f"{who} {address}: {r.stderr}")
                        self.assertIn(why, r.stderr, f"{who} {address}")
                        self.assertIn(address, r.stderr, f"{who} {address}")
            finally:
                taken.close()


class JsonLogTest(unittest.TestCase):

    def test_every_log_line_is_json_and_a_distributions_lines_name_job_agent_package(self):
        # With --log-format json each line of both logs is one object with
        # time, level and message; the distribution's lines carry its fields.
        with Cluster(agents=["dp1"]) as c:
            c.start_controller(log_format="json")
            c.start_agent("dp1", extra=["--log-format", "json"])
            c.add_agent("dp1")
            path = harness.make_file_package(os.path.join(c.dir, "src"), "f.bin", 3 * MiB,
                                             seed=16)
            c.import_package(path, "logged", "1.0")
            job = c.distribute("logged@1.0", ["dp1"])
            c.wait_job(job, lambda j: j["state"] == "complete", JOB_TIMEOUT, "job completes")
            logs = {"controller": c.log_of("controller"), "dp1": c.log_of("agent-dp1")}
            # The controller logs "done" once the target's record is written,
            # which `job status` may show a moment before.
            wait_for(lambda: f"job {job}: dp1 done" in read_text(logs["controller"]),
                     timeout=10, what="the controller to log the target done")
            c.kill(c.agents["dp1"].proc, signal.SIGTERM)
            c.kill(c.controller, signal.SIGTERM)

            records = {}
            for who, log in logs.items():
                records[who] = []
                with open(log, encoding="utf-8") as f:
                    for n, line in enumerate(f, 1):
                        if line.startswith("=== "):  # the harness's start marker
                            continue
                        try:
                            r = json.loads(line)
                        except json.JSONDecodeError as e:
                            self.fail(f"{who} log line {n} is not JSON ({e}): {line!r}")
                        self.assertIsInstance(r, dict, line)
                        self.assertTrue(RFC3339_UTC.match(r.get("time", "")), line)
                        self.assertIn(r.get("level"), {"trace", "debug", "info", "warning",
                                                       "error", "critical"}, line)
                        self.assertIsInstance(r.get("message"), str, line)
                        records[who].append(r)
                self.assertTrue(records[who], f"{who} logged nothing")

            fields = {"job": job, "agent": "dp1", "package": "logged@1.0"}

            def carries(who, pattern):
                lines = [r for r in records[who] if re.search(pattern, r["message"])]
                self.assertTrue(lines, f"no {who} line matches {pattern!r}")
                for r in lines:
                    self.assertEqual({k: r.get(k) for k in fields}, fields, r)

            carries("controller", rf"^job {job}: sending logged@1\.0 to dp1")
            carries("controller", rf"^job {job}: dp1 done$")
            carries("dp1", r"^transfer of logged@1\.0 from .*: need \d+ of \d+ chunks")
            carries("dp1", r"^published logged@1\.0 ")
            # Lines about no job carry no job key.
            start = [r for r in records["controller"] if "listening on" in r["message"]]
            self.assertTrue(start)
            self.assertNotIn("job", start[0])


if __name__ == "__main__":
    unittest.main()
