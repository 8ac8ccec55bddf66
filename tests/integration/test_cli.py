"""pkgdistctl against a real controller and agents (issue 4): every verb, in
table form (the words and columns a person reads) and with --output json
(the exact field names and values a script relies on), its errors and exit
codes, and where its connection settings come from.

One cluster serves the whole class (certificates and daemons are the slow
part); each test uses its own packages and its own unreachable agents, and
unregisters those agents when it ends, so that `distribute --all` sees only
dp1 and dp2."""

import calendar
import os
import re
import socket
import subprocess
import time
import unittest

import harness
from harness import Cluster, MiB, target

AGENTS = ["dp1", "dp2"]
# Per transfer, so that a 24 MiB transfer lasts about three seconds and can
# be caught half-way, while the other packages (1-2 MiB) take a fraction.
BANDWIDTH = 8 * MiB
# A small window, so the agent acknowledges every 2 MiB and a test can catch a
# transfer part-way (the default, 32 MiB, acknowledges a 24 MiB package only at the end).
WINDOW = 4 * MiB
JOB_TIMEOUT = 30

AGENT_FIELDS = {"name", "address", "connection", "last_contact", "last_error", "labels",
                "rate"}
PACKAGE_FIELDS = {"name", "version", "id", "size", "files", "chunks", "created_at",
                  "signature"}
JOB_FIELDS = {"id", "kind", "package", "state", "created_at", "targets"}
TARGET_FIELDS = {"agent", "state", "attempts", "last_error", "next_attempt_at", "bytes_acked",
                 "bytes_total", "bytes_sent", "bytes_reused", "bytes_from_peer", "updated_at"}
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")

VERBS = [[], ["agent"], ["agent", "add"], ["agent", "list"], ["agent", "show"],
         ["agent", "remove"], ["package"], ["package", "import"], ["package", "list"],
         ["package", "show"], ["package", "delete"], ["package", "remove-from"],
         ["distribute"], ["job"], ["job", "list"], ["job", "status"], ["job", "watch"],
         ["job", "cancel"], ["job", "retry"]]


def parse_time(text):
    """Seconds since the epoch of an RFC 3339 UTC time ("...Z")."""
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?Z$", text)
    if not m:
        raise AssertionError(f"not an RFC 3339 UTC time: {text!r}")
    whole = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S"))
    return whole + float(m.group(2) or 0)


def closed_port():
    """A port nothing listens on (it was free when picked)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CliTest(unittest.TestCase):
    c = None

    @classmethod
    def setUpClass(cls):
        cls.c = Cluster(agents=AGENTS).__enter__()
        try:
            cls.c.start_controller(max_bytes_per_second=BANDWIDTH, window_bytes=WINDOW)
            for name in AGENTS:
                cls.c.start_agent(name)
                cls.c.add_agent(name)
        except BaseException as e:
            cls.c.__exit__(type(e), e, None)
            raise

    @classmethod
    def tearDownClass(cls):
        cls.c.__exit__(None, None, None)

    # --- helpers ---------------------------------------------------------

    def conn_flags(self, cert="admin"):
        return ["--controller", self.c.controller_address, *self.c.tls_flags(cert)]

    def run_ctl(self, *args, conn=True, env=None, timeout=harness.CTL_TIMEOUT):
        """Runs pkgdistctl ARGS (table output unless ARGS say otherwise) with
        the connection flags unless conn is False; returns the
        CompletedProcess. The environment holds no PKGDIST_* variable and no
        default config file unless `env` adds them."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("PKGDIST_")}
        base["XDG_CONFIG_HOME"] = os.path.join(self.c.dir, "no-config")
        base.update(env or {})
        argv = [harness.binary("pkgdistctl"), *(self.conn_flags() if conn else []),
                *map(str, args)]
        try:
            return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=timeout, env=base)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"pkgdistctl {' '.join(map(str, args))} did not finish "
                                 f"within {timeout}s") from None

    def table(self, *args, **kw):
        """Table output of a pkgdistctl call that must succeed."""
        r = self.run_ctl(*args, **kw)
        self.assertEqual(r.returncode, 0, f"pkgdistctl {' '.join(map(str, args))} failed: "
                                          f"{r.stderr.strip()}")
        return r.stdout

    def json(self, *args, **kw):
        return self.c.ctl(*args, **kw)

    def assert_fails(self, args, rc, *words):
        """pkgdistctl ARGS exits `rc` with every word on its stderr."""
        r = self.run_ctl(*args)
        self.assertEqual(r.returncode, rc, f"pkgdistctl {' '.join(map(str, args))}: expected "
                                           f"exit {rc}, got {r.returncode}; stdout {r.stdout!r} "
                                           f"stderr {r.stderr!r}")
        for w in words:
            self.assertIn(w, r.stderr, f"pkgdistctl {' '.join(map(str, args))}: {w!r} not in "
                                       f"stderr {r.stderr!r}")
        return r

    def file_package(self, name, size, seed):
        """Imports a one-file package NAME@1; returns (its file, import output)."""
        path = harness.make_file_package(os.path.join(self.c.dir, "src", name), name + ".bin",
                                         size, seed)
        return path, self.c.import_package(path, name, "1")

    def unreachable_agent(self, name):
        """Registers NAME at a port nothing listens on; unregistered when the test ends."""
        self.c.ctl("agent", "add", name, f"127.0.0.1:{closed_port()}")
        self.addCleanup(self.c.ctl_raw, "agent", "remove", name)
        return name

    def wait_job(self, job_id, until, what, timeout=JOB_TIMEOUT):
        return self.c.wait_job(job_id, until, timeout, what)

    def assert_job_document(self, job):
        self.assertEqual(set(job), JOB_FIELDS, f"job fields: {job}")
        for t in job["targets"]:
            self.assertEqual(set(t), TARGET_FIELDS, f"target fields: {t}")
            self.assertRegex(t["updated_at"], RFC3339)
        self.assertRegex(job["created_at"], RFC3339)

    # --- tests -----------------------------------------------------------

    def test_help_on_every_verb_exits_zero_and_documents_exit_codes(self):
        # `--help` works on the program and on every verb, without a controller.
        for verb in VERBS:
            r = self.run_ctl(*verb, "--help", conn=False)
            self.assertEqual(r.returncode, 0, f"pkgdistctl {' '.join(verb)} --help: {r.stderr}")
            self.assertIn("Usage", r.stdout, f"pkgdistctl {' '.join(verb)} --help: {r.stdout}")
        top = self.run_ctl("--help", conn=False).stdout
        for word in ["Exit status", "PKGDIST_CONTROLLER", "--config", "agent", "package",
                     "distribute", "job"]:
            self.assertIn(word, top)

    def test_agent_add_list_remove_in_table_and_json(self):
        # add registers (and re-adding updates the address), list shows it, remove cancels its targets.
        c = self.c
        port = closed_port()
        out = self.table("agent", "add", "extra", f"127.0.0.1:{port}")
        self.assertIn("extra", out)
        self.assertIn(f"127.0.0.1:{port}", out)
        self.addCleanup(c.ctl_raw, "agent", "remove", "extra")
        port = closed_port()
        added = self.json("agent", "add", "extra", f"127.0.0.1:{port}")
        self.assertEqual(set(added), AGENT_FIELDS, added)
        self.assertEqual(added["name"], "extra")
        self.assertEqual(added["address"], f"127.0.0.1:{port}")

        listed = self.json("agent", "list")
        self.assertEqual(set(listed), {"agents"})
        by_name = {a["name"]: a for a in listed["agents"]}
        self.assertLessEqual({"dp1", "dp2", "extra"}, set(by_name), listed)
        for a in listed["agents"]:
            self.assertEqual(set(a), AGENT_FIELDS, a)
            self.assertIn(a["connection"], {"idle", "connecting", "ready", "unreachable"}, a)
        self.assertEqual(by_name["dp1"]["address"], c.agents["dp1"].address)
        self.assertEqual(by_name["extra"]["address"], f"127.0.0.1:{port}")
        out = self.table("agent", "list")
        header = out.splitlines()[0].split()
        self.assertEqual(header, ["NAME", "ADDRESS", "LABELS", "CONNECTION", "LAST", "CONTACT",
                                  "LAST", "ERROR"], out)
        for name in ["dp1", "dp2", "extra"]:
            self.assertRegex(out, rf"(?m)^{name}\s+{re.escape(by_name[name]['address'])}\s", out)

        # Removing an agent cancels its unfinished targets with the reason.
        self.file_package("agentrm", 64 * 1024, seed=11)
        job = c.distribute("agentrm@1", ["extra"])
        removed = self.json("agent", "remove", "extra")
        self.assertEqual(removed, {"name": "extra", "cancelled_targets": 1})
        status = c.job(job)
        self.assertEqual(target(status, "extra")["state"], "cancelled", status)
        self.assertEqual(target(status, "extra")["last_error"], "agent removed", status)
        self.assertEqual(status["state"], "cancelled", status)
        self.assertNotIn("extra", [a["name"] for a in self.json("agent", "list")["agents"]])

        self.json("agent", "add", "extra2", f"127.0.0.1:{closed_port()}")
        out = self.table("agent", "remove", "extra2")
        self.assertIn("extra2", out)
        self.assertIn("removed", out)
        self.assertIn("0 unfinished targets cancelled", out)

    def test_agent_show_lists_published_and_partial_packages(self):
        # show fetches the agent's inventory: a published package, and a cancelled transfer as partial.
        c = self.c
        _, small = self.file_package("shown", 300 * 1024, seed=12)
        self.assertEqual(self.run_ctl("distribute", "shown@1", "--to", "dp1", "--wait").returncode,
                         0)
        _, big = self.file_package("halfway", 24 * MiB, seed=13)
        job = c.distribute("halfway@1", ["dp1"])
        self.wait_job(job, lambda j: 0 < target(j, "dp1")["bytes_acked"] < 12 * MiB,
                      "dp1 has acknowledged part of halfway@1")
        cancelled = self.json("job", "cancel", job, "--agent", "dp1")
        self.assertEqual(target(cancelled, "dp1")["state"], "cancelled", cancelled)
        self.assertLess(target(cancelled, "dp1")["bytes_acked"], big["size"],
                        f"the transfer ended before it could be cancelled: {cancelled}")

        detail = self.json("agent", "show", "dp1")
        self.assertEqual(set(detail), AGENT_FIELDS | {"inventory", "inventory_error"}, detail)
        self.assertEqual(detail["name"], "dp1")
        self.assertEqual(detail["address"], c.agents["dp1"].address)
        self.assertEqual(detail["inventory_error"], "")
        self.assertEqual(set(detail["inventory"]), {"published", "partial"})
        published = {p["name"]: p for p in detail["inventory"]["published"]}
        self.assertIn("shown", published, detail)
        self.assertEqual(published["shown"], {"name": "shown", "version": "1",
                                              "id": small["id"], "size": small["size"]})
        partial = {p["name"]: p for p in detail["inventory"]["partial"]}
        self.assertIn("halfway", partial, detail)
        half = partial["halfway"]
        self.assertEqual(set(half), {"name", "version", "id", "bytes_total", "bytes_have",
                                     "chunks_total", "chunks_have"}, half)
        self.assertEqual((half["version"], half["id"], half["bytes_total"], half["chunks_total"]),
                         ("1", big["id"], big["size"], big["chunks"]), half)
        self.assertTrue(0 < half["bytes_have"] < half["bytes_total"], half)
        self.assertTrue(0 < half["chunks_have"] < half["chunks_total"], half)

        out = self.table("agent", "show", "dp1")
        for word in ["name:", "dp1", "address:", "connection:", "PUBLISHED", "VERSION", "SIZE",
                     "PARTIAL", "PROGRESS", "CHUNKS", small["id"][:12], big["id"][:12],
                     f"{half['chunks_have']}/{half['chunks_total']}"]:
            self.assertIn(word, out)
        self.assertRegex(out, r"(?m)^shown\s+1\s")
        self.assertRegex(out, r"(?m)^halfway\s+1\s")

        # An unreachable agent's inventory is empty and says why.
        down = self.unreachable_agent("showdown")
        detail = self.json("agent", "show", down)
        self.assertNotEqual(detail["inventory_error"], "", detail)
        self.assertEqual(detail["inventory"], {"published": [], "partial": []})
        self.assertIn("inventory unavailable", self.table("agent", "show", down))

    def test_package_import_list_show_and_duplicates(self):
        # A file and a directory import; list and show agree; same content again is fine, other content is ALREADY_EXISTS.
        c = self.c
        path, info = self.file_package("single", 1_500_000, seed=21)
        self.assertEqual(set(info), PACKAGE_FIELDS, info)
        self.assertEqual((info["name"], info["version"], info["size"], info["files"]),
                         ("single", "1", 1_500_000, 1))
        self.assertRegex(info["id"], r"^[0-9a-f]{64}$")
        self.assertGreaterEqual(info["chunks"], 1)
        self.assertRegex(info["created_at"], RFC3339)

        tree = harness.make_tree(os.path.join(c.dir, "src", "tree-21"), seed=21,
                                 big_file_bytes=MiB)
        files = {rel: e for rel, e in harness.tree_entries(tree).items()}
        out = self.table("package", "import", tree, "--name", "tree", "--version", "2.0")
        for key in ["package:", "tree@2.0", "id:", "size:", "files:", "chunks:", "created:"]:
            self.assertIn(key, out)
        shown = self.json("package", "show", "tree@2.0")
        self.assertEqual(set(shown), PACKAGE_FIELDS, shown)
        self.assertEqual(shown["size"], sum(e[2] for e in files.values() if e[0] == "file"))
        self.assertGreaterEqual(shown["files"], sum(1 for e in files.values() if e[0] == "file"))
        self.assertLessEqual(shown["files"], len(files))
        self.assertIn(shown["id"], out)
        self.assertIn(f"({shown['size']} bytes)", out)
        self.assertEqual(self.json("package", "show", "single@1"), info)

        listed = self.json("package", "list")
        self.assertEqual(set(listed), {"packages"})
        by_label = {f"{p['name']}@{p['version']}": p for p in listed["packages"]}
        self.assertEqual(by_label.get("single@1"), info, listed)
        self.assertEqual(by_label.get("tree@2.0"), shown, listed)
        out = self.table("package", "list")
        self.assertEqual(out.splitlines()[0].split(),
                         ["NAME", "VERSION", "ID", "SIZE", "FILES", "CHUNKS", "CREATED", "SIGNED"], out)
        self.assertRegex(out, rf"(?m)^single\s+1\s+{info['id'][:12]}\s")
        self.assertRegex(out, rf"(?m)^tree\s+2\.0\s+{shown['id'][:12]}\s")
        out = self.table("package", "show", "single@1")
        self.assertIn(info["id"], out)
        self.assertIn("single@1", out)

        self.assertEqual(c.import_package(path, "single", "1"), info)
        other = harness.make_file_package(os.path.join(c.dir, "src", "single-other"),
                                          "single.bin", 1_500_000, seed=22)
        r = self.assert_fails(["package", "import", other, "--name", "single", "--version", "1"],
                              1, "ALREADY_EXISTS", "single@1")
        self.assertEqual(r.stderr.count("\n"), 1, f"one line on stderr: {r.stderr!r}")
        self.assertEqual(self.json("package", "show", "single@1"), info)

    def test_distribute_to_named_agents_and_to_all_with_wait(self):
        # --to and --all reach the agents byte-identical; --wait exits 0 once the job is complete.
        c = self.c
        tree = harness.make_tree(os.path.join(c.dir, "src", "tree-31"), seed=31,
                                 big_file_bytes=MiB)
        c.import_package(tree, "dist", "1")
        started = self.table("distribute", "dist@1", "--to", "dp1")
        m = re.search(r"job (\S+) started", started)
        self.assertTrue(m, started)
        self.wait_job(m.group(1), lambda j: j["state"] == "complete", "dist@1 reaches dp1")
        harness.assert_trees_identical(tree, c.published("dp1", "dist", "1"))

        r = self.run_ctl("distribute", "dist@1", "--to", "dp1,dp2", "--wait")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("complete", r.stdout)
        harness.assert_trees_identical(tree, c.published("dp2", "dist", "1"))

        c.import_package(tree, "dist", "2")
        final = self.json("distribute", "dist@2", "--all", "--wait", "--timeout", "60s")
        self.assert_job_document(final)
        self.assertEqual(final["state"], "complete", final)
        self.assertEqual(final["package"], "dist@2")
        self.assertEqual(final["kind"], "distribute")
        self.assertEqual(sorted(t["agent"] for t in final["targets"]), AGENTS)
        for t in final["targets"]:
            self.assertEqual((t["state"], t["bytes_acked"]), ("done", t["bytes_total"]), t)
        for name in AGENTS:
            harness.assert_trees_identical(tree, c.published(name, "dist", "2"))

    def test_wait_timeout_exits_4_and_retry_resets_backoff_and_delete_needs_force(self):
        # A target that cannot complete: --wait --timeout exits 4 naming it; retry starts it at once; delete needs --force.
        c = self.c
        lost = self.unreachable_agent("lost")
        self.file_package("stuck", 200 * 1024, seed=41)
        r = self.run_ctl("distribute", "stuck@1", "--to", lost, "--wait", "--timeout", "3s")
        self.assertEqual(r.returncode, 4, f"stdout {r.stdout!r} stderr {r.stderr!r}")
        self.assertIn("timed out", r.stderr)
        self.assertRegex(r.stderr, r"(?m)^lost: \w+.*UNAVAILABLE", r.stderr)
        job = re.search(r"job (\S+) started", r.stdout).group(1)

        status = self.json("job", "status", job)
        self.assert_job_document(status)
        self.assertEqual((status["id"], status["kind"], status["package"], status["state"]),
                         (job, "distribute", "stuck@1", "in_progress"))
        t = target(status, lost)
        self.assertIn(t["state"], {"transferring", "retry_wait"}, t)
        self.assertGreaterEqual(t["attempts"], 1)
        self.assertIn("UNAVAILABLE", t["last_error"])
        self.assertEqual((t["bytes_acked"], t["bytes_total"]), (0, 200 * 1024))
        out = self.table("job", "status", job)
        for word in ["job:", job, "kind:", "package:", "stuck@1", "state:", "in_progress",
                     "(0/1 targets done)", "AGENT", "STATE", "ATTEMPTS", "PROGRESS", "SENT",
                     "NEXT ATTEMPT", "LAST ERROR", "UNAVAILABLE"]:
            self.assertIn(word, out)
        self.assertRegex(out, r"(?m)^lost\s+(transferring|retry_wait)\s+\d+\s")

        # Wait for a backoff long enough that "at once" cannot be the schedule.
        def long_wait(j):
            t = target(j, lost)
            return (t["state"] == "retry_wait" and t["next_attempt_at"] is not None
                    and parse_time(t["next_attempt_at"]) - time.time() >= 3.0)

        before = target(self.wait_job(job, long_wait, "a backoff of 3 s or more", timeout=40), lost)
        retried = self.json("job", "retry", job)
        self.assertEqual(retried["id"], job)
        after = target(self.wait_job(job, lambda j: target(j, lost)["attempts"] > before["attempts"],
                                     "an attempt right after the retry", timeout=2.0), lost)
        self.assertLess(time.time(), parse_time(before["next_attempt_at"]),
                        "the attempt came no sooner than the old schedule")
        if after["next_attempt_at"] is not None:
            self.assertLess(parse_time(after["next_attempt_at"]),
                            parse_time(before["next_attempt_at"]),
                            f"the backoff was not reset: before {before}, after {after}")
        out = self.table("job", "retry", job, "--agent", lost)
        self.assertIn(job, out)
        self.assertRegex(out, r"(?m)^lost\s")

        # The package is needed by the unfinished job: delete refuses unless forced.
        self.assert_fails(["package", "delete", "stuck@1"], 1, "FAILED_PRECONDITION", job)
        deleted = self.json("package", "delete", "stuck@1", "--force")
        self.assertEqual(deleted, {"package": "stuck@1", "deleted": True})
        status = self.json("job", "status", job)
        self.assertEqual(status["state"], "cancelled", status)
        self.assertEqual(target(status, lost)["state"], "cancelled", status)
        self.assertNotIn("stuck", [p["name"] for p in self.json("package", "list")["packages"]])
        self.assert_fails(["package", "show", "stuck@1"], 1, "NOT_FOUND")

    def test_job_cancel_whole_job_and_one_agent(self):
        # cancel ends every unfinished target, or with --agent only that agent's; done targets stay done.
        c = self.c
        lost = self.unreachable_agent("lost2")
        self.file_package("cancelme", 100 * 1024, seed=51)
        whole = c.distribute("cancelme@1", [lost])
        out = self.table("job", "cancel", whole)
        self.assertIn(whole, out)
        self.assertIn("cancelled", out)
        status = c.job(whole)
        self.assertEqual(status["state"], "cancelled", status)
        self.assertEqual(target(status, lost)["last_error"], "cancelled by operator", status)

        partly = c.distribute("cancelme@1", ["dp1", lost])
        self.wait_job(partly, lambda j: target(j, "dp1")["state"] == "done", "dp1 done")
        status = self.json("job", "cancel", partly, "--agent", lost)
        self.assert_job_document(status)
        self.assertEqual(target(status, "dp1")["state"], "done", status)
        self.assertEqual(target(status, lost)["state"], "cancelled", status)
        self.assertEqual(status["state"], "cancelled", status)
        self.assert_fails(["job", "cancel", partly, "--agent", "dp2"], 1, "NOT_FOUND")

    def test_job_watch_status_watch_and_list_filters(self):
        # watch prints JSON lines ending in the final state; list filters by state, package and agent.
        c = self.c
        self.file_package("watched", 2 * MiB, seed=61)
        both = c.distribute("watched@1", AGENTS)
        r = self.run_ctl("--output", "json", "job", "watch", both)
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = [harness.parse_json_documents(l, "job watch line") for l in r.stdout.splitlines()]
        self.assertGreaterEqual(len(lines), 1, r.stdout)
        for doc in lines:
            self.assert_job_document(doc)
            self.assertEqual(doc["id"], both)
            self.assertIn(doc["state"], {"pending", "in_progress", "complete"}, doc)
        self.assertEqual(lines[-1]["state"], "complete", lines[-1])
        self.assertEqual([t["state"] for t in lines[-1]["targets"]], ["done", "done"])
        self.assertNotIn("complete", [d["state"] for d in lines[:-1]],
                         "watch went on after the final state")

        one = c.distribute("watched@1", ["dp1"])
        out = self.table("job", "watch", one)
        self.assertRegex(out.strip().splitlines()[-1],
                         rf"^job {one}: complete \(1/1 targets done\)$", out)
        out = self.table("job", "status", one, "--watch")
        self.assertIn("complete", out)

        by_package = self.json("job", "list", "--package", "watched@1")
        self.assertEqual(set(by_package), {"jobs"})
        self.assertEqual([j["id"] for j in by_package["jobs"]], [one, both], "newest first")
        for j in by_package["jobs"]:
            self.assert_job_document(j)
        ids = lambda *f: [j["id"] for j in self.json("job", "list", "--package", "watched@1",
                                                      *f)["jobs"]]
        self.assertEqual(ids("--state", "complete"), [one, both])
        self.assertEqual(ids("--state", "in_progress"), [])
        self.assertEqual(ids("--agent", "dp2"), [both])
        self.assertEqual(ids("--agent", "dp1", "--state", "complete"), [one, both])
        states = {j["state"] for j in self.json("job", "list", "--state", "complete")["jobs"]}
        self.assertEqual(states, {"complete"})
        out = self.table("job", "list", "--package", "watched@1")
        self.assertEqual(out.splitlines()[0].split(),
                         ["ID", "KIND", "PACKAGE", "STATE", "DONE", "CREATED"], out)
        self.assertRegex(out, rf"(?m)^{both}\s+distribute\s+watched@1\s+complete\s+2/2\s")
        self.assertRegex(out, rf"(?m)^{one}\s+distribute\s+watched@1\s+complete\s+1/1\s")

    def test_remove_from_deletes_the_agents_copy_as_a_job(self):
        # remove-from deletes the published copy on the named agents only, tracked as a remove job.
        c = self.c
        self.file_package("removed", 500 * 1024, seed=71)
        self.assertEqual(self.run_ctl("distribute", "removed@1", "--to", "dp1,dp2",
                                      "--wait").returncode, 0)
        self.assertTrue(os.path.isdir(c.published("dp1", "removed", "1")))
        job = self.json("package", "remove-from", "removed@1", "--from", "dp1")["id"]
        status = self.wait_job(job, lambda j: j["state"] == "complete", "removal from dp1")
        self.assert_job_document(status)
        self.assertEqual((status["kind"], status["package"]), ("remove", "removed@1"))
        self.assertEqual([(t["agent"], t["state"]) for t in status["targets"]], [("dp1", "done")])
        self.assertFalse(os.path.exists(c.published("dp1", "removed", "1")),
                         "dp1 still has its copy")
        self.assertTrue(os.path.isdir(c.published("dp2", "removed", "1")), "dp2 lost its copy")
        names = [p["name"] for p in self.json("agent", "show", "dp1")["inventory"]["published"]]
        self.assertNotIn("removed", names)

        r = self.run_ctl("package", "remove-from", "removed@1", "--from", "dp2", "--wait")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("remove removed@1", r.stdout)
        self.assertFalse(os.path.exists(c.published("dp2", "removed", "1")),
                         "dp2 still has its copy")
        self.assertEqual(len(self.json("job", "list", "--package", "removed@1")["jobs"]), 3)

    def test_errors_exit_1_with_the_status_code_and_the_field(self):
        # Unknown objects are NOT_FOUND, malformed requests INVALID_ARGUMENT naming the field.
        self.file_package("errs", 10 * 1024, seed=81)
        for args in (["package", "show", "nosuch@1"], ["package", "delete", "nosuch@1"],
                     ["agent", "show", "nosuch"], ["agent", "remove", "nosuch"],
                     ["job", "status", "nosuchjob"], ["job", "cancel", "nosuchjob"],
                     ["job", "retry", "nosuchjob"], ["job", "watch", "nosuchjob"],
                     ["distribute", "nosuch@1", "--to", "dp1"],
                     ["distribute", "errs@1", "--to", "nosuch"],
                     ["package", "remove-from", "nosuch@1", "--from", "dp1"]):
            r = self.assert_fails(args, 1, "NOT_FOUND")
            self.assertEqual(r.stderr.count("\n"), 1, f"{args}: one line on stderr: {r.stderr!r}")
        self.assert_fails(["agent", "add", "bad/name", "127.0.0.1:1"], 1, "INVALID_ARGUMENT",
                          "name")
        self.assert_fails(["agent", "add", "okname", "no-port"], 1, "INVALID_ARGUMENT",
                          "address")
        # Malformed arguments the CLI can check itself are usage errors (exit 2).
        self.assert_fails(["package", "show", "no-version"], 2, "NAME@VERSION")
        self.assert_fails(["distribute", "errs@1"], 2, "--to")

    def test_connection_settings_from_env_and_config_file_flags_winning(self):
        # Flags win over PKGDIST_* variables, which win over the config file (--config or the default path).
        c = self.c
        good, bad = c.controller_address, f"127.0.0.1:{closed_port()}"
        ca = os.path.join(c.certs, "ca.pem")
        env = {"PKGDIST_CONTROLLER": good, "PKGDIST_CA": ca,
               "PKGDIST_CERT": c.cert("admin"), "PKGDIST_KEY": c.key("admin")}
        r = self.run_ctl("agent", "list", conn=False, env=dict(env, PKGDIST_OUTPUT="json"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("dp1", [a["name"] for a in harness.parse_json_documents(r.stdout)["agents"]])

        # A config file with paths relative to itself.
        conf_dir = os.path.join(c.dir, "conf")
        os.makedirs(conf_dir, exist_ok=True)

        def write_config(path, controller, certs="../certs"):
            with open(path, "w") as f:
                f.write(f'# pkgdistctl settings\ncontroller = "{controller}"\n'
                        f'ca = "{certs}/ca.pem"\ncert = "{certs}/admin.pem"\n'
                        f'key = "{certs}/admin.key"\n')

        good_conf, bad_conf = os.path.join(conf_dir, "good.toml"), os.path.join(conf_dir, "bad.toml")
        write_config(good_conf, good)
        write_config(bad_conf, bad)
        out = self.table("--config", good_conf, "agent", "list", conn=False)
        self.assertRegex(out, r"(?m)^dp1\s")
        # The default path, $XDG_CONFIG_HOME/pkgdist/pkgdistctl.toml.
        xdg = os.path.join(c.dir, "xdg")
        os.makedirs(os.path.join(xdg, "pkgdist"), exist_ok=True)
        write_config(os.path.join(xdg, "pkgdist", "pkgdistctl.toml"), good, certs=c.certs)
        out = self.table("agent", "list", conn=False, env={"XDG_CONFIG_HOME": xdg})
        self.assertRegex(out, r"(?m)^dp1\s")

        # The environment wins over the file, the flag over the environment.
        out = self.table("--config", bad_conf, "agent", "list", conn=False,
                         env={"PKGDIST_CONTROLLER": good})
        self.assertRegex(out, r"(?m)^dp1\s")
        r = self.run_ctl("--config", good_conf, "agent", "list", conn=False,
                         env={"PKGDIST_CONTROLLER": bad})
        self.assertEqual(r.returncode, 1, f"the environment's unreachable controller was not "
                                          f"used: {r.stdout!r} {r.stderr!r}")
        self.assertIn("UNAVAILABLE", r.stderr)
        out = self.table("--controller", good, "agent", "list", conn=False,
                         env=dict(env, PKGDIST_CONTROLLER=bad))
        self.assertRegex(out, r"(?m)^dp1\s")
        r = self.run_ctl("--output", "table", "agent", "list", conn=False,
                         env=dict(env, PKGDIST_OUTPUT="json"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.stdout.startswith("NAME"), f"--output table lost to the env: {r.stdout}")

        # Without any source of a setting: a usage error naming where to give it.
        r = self.run_ctl("agent", "list", conn=False)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("PKGDIST_CONTROLLER", r.stderr)


if __name__ == "__main__":
    unittest.main()
