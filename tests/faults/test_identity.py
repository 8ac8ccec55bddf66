"""Identity and access (issue 5): every peer that is not who it must be is
refused, with the expected status code, and the refusals harm nothing.

Real processes over real mutual TLS on 127.0.0.1, certificates made at test
time by certs/gen-dev-certs.sh (second CAs, back-dated certificates) and a
CRL made with `openssl ca -gencrl`."""

import os
import shutil
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agent_client  # noqa: E402
import harness  # noqa: E402
import results  # noqa: E402
from harness import Cluster, MiB, target  # noqa: E402

import grpc  # noqa: E402

TIMEOUT = 30


def gen_certs(out_dir, opts=(), agents=()):
    """Runs certs/gen-dev-certs.sh OPTS OUT_DIR AGENTS."""
    r = subprocess.run(["bash", harness.GEN_CERTS, *opts, out_dir, *agents], capture_output=True,
                       text=True, timeout=60)
    if r.returncode != 0:
        raise AssertionError(f"gen-dev-certs.sh {' '.join(opts)} {out_dir} failed: "
                             f"{r.stderr.strip()}")
    return out_dir


def certs_from_same_ca(c, subdir, opts=(), agents=()):
    """A directory holding the cluster's CA and new certificates made by
    gen-dev-certs.sh OPTS (e.g. back-dated ones): new keys, new serials."""
    out = os.path.join(c.dir, subdir)
    os.makedirs(out, mode=0o700)
    for f in ("ca.pem", "ca.key"):
        shutil.copy2(os.path.join(c.certs, f), out)
    return gen_certs(out, opts, agents)


def ctl_files(c, ca, cert, key, *args):
    """pkgdistctl ARGS with explicit TLS files; returns (rc, stdout, stderr)."""
    argv = [harness.binary("pkgdistctl"), "--controller", c.controller_address, "--ca", ca,
            "--cert", cert, "--key", key, "--output", "json", *args]
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=harness.CTL_TIMEOUT)
    return r.returncode, r.stdout, r.stderr


def serial_of(cert):
    r = subprocess.run(["openssl", "x509", "-in", cert, "-noout", "-serial"], capture_output=True,
                       text=True, timeout=30, check=True)
    return r.stdout.strip().split("=", 1)[1]


def make_crl(work_dir, ca_dir, revoked, crl_dir):
    """Writes a CRL signed by the CA in `ca_dir` revoking the certificate
    files `revoked` into `crl_dir` and hashes the directory (openssl rehash)."""
    os.makedirs(work_dir)
    os.makedirs(crl_dir, exist_ok=True)
    cnf = os.path.join(work_dir, "ca.cnf")
    with open(cnf, "w") as f:
        f.write("[ ca ]\ndefault_ca = dev\n[ dev ]\n"
                f"database = {work_dir}/index.txt\ncrlnumber = {work_dir}/crlnumber\n"
                "default_md = sha256\ndefault_crl_days = 30\n"
                f"certificate = {ca_dir}/ca.pem\nprivate_key = {ca_dir}/ca.key\n")
    open(os.path.join(work_dir, "index.txt"), "w").close()
    with open(os.path.join(work_dir, "crlnumber"), "w") as f:
        f.write("01\n")

    def openssl(*args):
        r = subprocess.run(["openssl", "ca", "-config", cnf, *args], capture_output=True,
                           text=True, timeout=30)
        if r.returncode != 0:
            raise AssertionError(f"openssl ca {' '.join(args)} failed: {r.stderr.strip()}")

    for cert in revoked:
        openssl("-revoke", cert)
    openssl("-gencrl", "-out", os.path.join(crl_dir, "crl.pem"))
    subprocess.run(["openssl", "rehash", crl_dir], check=True, capture_output=True, timeout=30)


def log_text(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def expect_refusal_logged(c, who, why):
    """The controller logged a refused handshake naming `who` and `why`."""
    def logged():
        return any("refused TLS handshake" in line and who in line and why in line
                   for line in log_text(c.log_of("controller")).splitlines())
    harness.wait_for(logged, timeout=5,
                     what=f"the controller logs the refused handshake of {who or 'a client'}: {why}")


class IdentityTest(unittest.TestCase):

    def test_agent_with_another_agents_certificate_is_refused_until_it_restarts_with_its_own(self):
        # dp1 answering with dp2's certificate: retry_wait with the mismatch, retried, then done.
        with Cluster(agents=["dp1", "dp2"]) as c:
            c.start_controller(max_backoff_seconds=1)
            c.start_agent("dp1", cert="dp2")
            c.add_agent("dp1")
            path = harness.make_file_package(os.path.join(c.dir, "src"), "f.bin", 2 * MiB, 51)
            c.import_package(path, "pkg", "1.0")
            job = c.distribute("pkg@1.0", ["dp1"])
            expected = "identity mismatch: expected dp1, certificate names dp2"
            status = c.wait_job(
                job, lambda j: (target(j, "dp1")["state"] == "retry_wait"
                                and expected in target(j, "dp1")["last_error"]
                                and int(target(j, "dp1")["attempts"]) >= 3),
                TIMEOUT, "dp1 refused three times with an identity mismatch")
            t = target(status, "dp1")
            self.assertEqual(int(t["bytes_sent"]), 0)
            self.assertFalse(os.path.exists(c.published("dp1", "pkg", "1.0")))
            refused_attempts = int(t["attempts"])

            c.kill(c.agents["dp1"].proc)
            c.start_agent("dp1", cert="dp1")
            status = c.wait_job(job, lambda j: j["state"] == "complete", TIMEOUT,
                                "the job completes once dp1 presents its own certificate")
            harness.assert_trees_identical(os.path.dirname(path), c.published("dp1", "pkg", "1.0"))
            results.record("agent presents another agent's certificate, then restarts with its own",
                           f"refused ({expected}), retried, complete and identical after restart",
                           tried=refused_attempts, refused_attempts=refused_attempts,
                           bytes_sent_while_refused=0)

    def test_admin_api_refuses_agent_cert_foreign_ca_expired_cert_and_no_cert(self):
        # Each wrong client identity is refused with its status code; the controller keeps serving.
        with Cluster(agents=["dp1"]) as c:
            c.start_controller()
            ca = os.path.join(c.certs, "ca.pem")
            outcomes = {}

            rc, out, err = c.ctl_raw("agent", "list", cert="dp1")
            self.assertEqual(rc, 1, f"agent certificate on the admin API: {out} {err}")
            self.assertIn("PERMISSION_DENIED", err)
            self.assertIn("spiffe://pkgdist.dev/agent/dp1", err)
            outcomes["agent certificate"] = "PERMISSION_DENIED"
            harness.wait_for(lambda: "refused call from" in log_text(c.log_of("controller")),
                             timeout=5, what="the controller logs who was refused")

            other = os.path.join(c.dir, "other-ca")
            gen_certs(other, ["--trust-domain", "pkgdist.dev"])
            rc, out, err = ctl_files(c, ca, os.path.join(other, "admin.pem"),
                                     os.path.join(other, "admin.key"), "agent", "list")
            self.assertEqual(rc, 1, f"certificate of a second CA: {out} {err}")
            self.assertIn("UNAVAILABLE", err)
            outcomes["certificate from a second CA"] = "UNAVAILABLE (handshake)"
            expect_refusal_logged(c, "spiffe://pkgdist.dev/admin/admin",
                                  "unable to get local issuer certificate")

            expired = certs_from_same_ca(c, "expired", ["--not-before", "20200101000000Z",
                                                            "--not-after", "20200102000000Z"])
            self.assertNotEqual(serial_of(os.path.join(expired, "admin.pem")),
                                serial_of(c.cert("admin")))
            rc, out, err = ctl_files(c, ca, os.path.join(expired, "admin.pem"),
                                     os.path.join(expired, "admin.key"), "agent", "list")
            self.assertEqual(rc, 1, f"expired admin certificate: {out} {err}")
            self.assertIn("UNAVAILABLE", err)
            outcomes["expired admin certificate"] = "UNAVAILABLE (handshake)"
            expect_refusal_logged(c, "spiffe://pkgdist.dev/admin/admin", "certificate has expired")

            ch = agent_client.channel(c.controller_address, ca)
            try:
                stub = agent_client.controller_pb2_grpc.AdminStub(ch)
                code, details = agent_client.call_code(
                    stub.ListAgents, agent_client.controller_pb2.ListAgentsRequest(), timeout=10)
            finally:
                ch.close()
            self.assertEqual(code, grpc.StatusCode.UNAVAILABLE, details)
            outcomes["no client certificate"] = code.name
            expect_refusal_logged(c, "", "the client presented no certificate")

            self.assertEqual(c.ctl("agent", "list"), {"agents": []})
            self.assertTrue(c.controller.alive())
            log = log_text(c.log_of("controller"))
            print("controller log lines about refusals:\n  " + "\n  ".join(
                line for line in log.splitlines()
                if "refused" in line or "andshake" in line or "verify" in line))
            for what, outcome in outcomes.items():
                results.record(f"admin API called with {what}", f"refused: {outcome}",
                               ok=True)

    def test_agent_refuses_admin_and_agent_certificates_with_permission_denied(self):
        # Only the controller identity may call an agent: admin and dp2 certificates are denied.
        with Cluster(agents=["dp1", "dp2"]) as c:
            c.start_agent("dp1")
            ca = os.path.join(c.certs, "ca.pem")
            for who in ("admin", "dp2"):
                with agent_client.AgentClient(c.agents["dp1"].address, ca, c.cert(who),
                                              c.key(who)) as client:
                    code, details = agent_client.call_code(client.inventory)
                    self.assertEqual(code, grpc.StatusCode.PERMISSION_DENIED, details)
                    self.assertIn("may not call", details)
                    code, details = agent_client.call_code(client.remove, "x", "1")
                    self.assertEqual(code, grpc.StatusCode.PERMISSION_DENIED, details)
                    with client.transfer() as t:
                        m = agent_client.make_manifest("x", "1", {"a": b"a"})
                        t.send_offer(m)
                        code, details = t.status()
                    self.assertEqual(code, grpc.StatusCode.PERMISSION_DENIED, details)
                results.record(f"agent called with the {who} certificate (Inventory, Remove, "
                               "Transfer)", "PERMISSION_DENIED", tried=3)
            with agent_client.AgentClient(c.agents["dp1"].address, ca, c.cert("controller"),
                                          c.key("controller")) as client:
                inv = client.inventory()
                self.assertEqual(len(inv.published), 0)
            self.assertIn("refused call from", log_text(c.log_of("agent-dp1")))
            self.assertEqual(os.listdir(os.path.join(c.agents["dp1"].root, "staging")), [])

    def test_revoked_certificates_are_refused_and_a_rotated_agent_certificate_is_used_without_restart(self):
        # A CRL revokes dp1's first certificate and one admin; replacing dp1's files lets it in.
        with Cluster(agents=["dp1"]) as c:
            gen_certs(c.certs, ["--admin", "revoked"])
            crl_dir = os.path.join(c.dir, "crl")
            make_crl(os.path.join(c.dir, "ca-db"), c.certs,
                     [c.cert("dp1"), c.cert("revoked")], crl_dir)
            rotated = certs_from_same_ca(c, "rotated", agents=["dp1"])
            old_serial, new_serial = serial_of(c.cert("dp1")), serial_of(
                os.path.join(rotated, "dp1.pem"))
            self.assertNotEqual(old_serial, new_serial)

            c.start_controller(max_backoff_seconds=1, extra=["--crl-dir", crl_dir])
            rc, out, err = c.ctl_raw("agent", "list", cert="revoked")
            self.assertEqual(rc, 1, f"revoked admin certificate: {out} {err}")
            self.assertIn("UNAVAILABLE", err)
            expect_refusal_logged(c, "spiffe://pkgdist.dev/admin/revoked", "certificate revoked")
            results.record("admin API called with a revoked certificate (CRL directory)",
                           "refused: UNAVAILABLE (handshake)")

            c.start_agent("dp1")
            c.add_agent("dp1")
            path = harness.make_file_package(os.path.join(c.dir, "src"), "f.bin", MiB + 5, 52)
            c.import_package(path, "pkg", "1.0")
            job = c.distribute("pkg@1.0", ["dp1"])
            status = c.wait_job(job, lambda j: int(target(j, "dp1")["attempts"]) >= 2
                                and target(j, "dp1")["state"] == "retry_wait", TIMEOUT,
                                "the revoked agent certificate refused twice")
            t = target(status, "dp1")
            print(f"revoked dp1 (serial {old_serial}): {t['last_error']!r}")
            self.assertEqual(int(t["bytes_sent"]), 0)
            self.assertFalse(os.path.exists(c.published("dp1", "pkg", "1.0")))
            results.record("agent presents a revoked certificate (controller CRL directory)",
                           "refused, target retry_wait, 0 bytes sent",
                           tried=int(t["attempts"]))

            # Rotation: new key first, then the certificate, each by an atomic rename.
            for ext in ("key", "pem"):
                tmp = os.path.join(c.certs, f"dp1.{ext}.new")
                shutil.copy2(os.path.join(rotated, f"dp1.{ext}"), tmp)
                os.replace(tmp, os.path.join(c.certs, f"dp1.{ext}"))
            status = c.wait_job(job, lambda j: j["state"] == "complete", TIMEOUT,
                                "the job completes once dp1's rotated certificate is picked up")
            self.assertTrue(c.agents["dp1"].proc.alive())
            self.assertEqual(len([p for p in c.procs if p.name == "agent-dp1"]), 1,
                             "the agent was restarted")
            harness.assert_trees_identical(os.path.dirname(path), c.published("dp1", "pkg", "1.0"))
            results.record("agent certificate and key replaced on disk (new serial), no restart",
                           "new connections use the new certificate: complete, bytes identical")


if __name__ == "__main__":
    unittest.main()
