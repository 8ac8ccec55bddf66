"""certs/gen-dev-certs.sh: the identities, key usages and file modes the
processes rely on, and that running it again never replaces a key or the CA
unless asked."""

import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
import unittest

import harness


def gen(*args):
    return subprocess.run(["bash", harness.GEN_CERTS, *args], capture_output=True, text=True,
                          timeout=60)


def openssl(*args):
    r = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise AssertionError(f"openssl {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def ext(pem, name):
    """The value of one X.509v3 extension, as openssl prints it on one line."""
    lines = openssl("x509", "-in", pem, "-noout", "-ext", name).splitlines()
    return " ".join(line.strip() for line in lines[1:])


def digests(directory):
    out = {}
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), "rb") as f:
            out[name] = hashlib.sha256(f.read()).hexdigest()
    return out


class GenDevCertsTest(unittest.TestCase):

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="pkgdist-certs-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.out = os.path.join(self.dir, "certs")

    def run_ok(self, *args):
        r = gen(*args)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r

    def test_certificates_carry_one_spiffe_identity_and_the_right_usages(self):
        # Each certificate names exactly one SPIFFE ID; server certificates also name loopback.
        r = self.run_ok("--trust-domain", "example.test", self.out, "dp1", "edge-2.b")
        self.assertEqual(r.stdout.strip(), os.path.realpath(self.out))
        self.assertEqual(r.stderr, "")
        want = {
            "controller": ("URI:spiffe://example.test/controller, DNS:localhost, "
                           "IP Address:127.0.0.1",
                           "TLS Web Server Authentication, TLS Web Client Authentication"),
            "admin": ("URI:spiffe://example.test/admin/admin", "TLS Web Client Authentication"),
            "dp1": ("URI:spiffe://example.test/agent/dp1, DNS:dp1, DNS:localhost, "
                    "IP Address:127.0.0.1",
                    "TLS Web Server Authentication, TLS Web Client Authentication"),
            "edge-2.b": ("URI:spiffe://example.test/agent/edge-2.b, DNS:edge-2.b, "
                         "DNS:localhost, IP Address:127.0.0.1",
                         "TLS Web Server Authentication, TLS Web Client Authentication"),
        }
        ca = os.path.join(self.out, "ca.pem")
        self.assertIn("CA:TRUE", ext(ca, "basicConstraints"))
        for stem, (san, eku) in want.items():
            pem = os.path.join(self.out, stem + ".pem")
            key = os.path.join(self.out, stem + ".key")
            self.assertEqual(ext(pem, "subjectAltName"), san)
            self.assertEqual(ext(pem, "extendedKeyUsage"), eku)
            self.assertIn("CA:FALSE", ext(pem, "basicConstraints"))
            text = openssl("x509", "-in", pem, "-noout", "-text")
            self.assertIn("Signature Algorithm: ecdsa-with-SHA256", text)
            self.assertIn("NIST CURVE: P-256", text)
            self.assertEqual(openssl("verify", "-CAfile", ca, pem).strip(), f"{pem}: OK")
            self.assertEqual(openssl("x509", "-in", pem, "-noout", "-pubkey"),
                             openssl("pkey", "-in", key, "-pubout"))
            self.assertEqual(stat.S_IMODE(os.stat(key).st_mode), 0o600, key)
            self.assertEqual(stat.S_IMODE(os.stat(pem).st_mode), 0o644, pem)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(self.out, "ca.key")).st_mode), 0o600)

    def test_running_again_changes_nothing_and_adding_an_agent_reuses_the_ca(self):
        # A second run is a no-op; a later run for a new agent keeps the CA and every key.
        self.run_ok(self.out, "dp1")
        first = digests(self.out)
        self.run_ok(self.out, "dp1")
        self.assertEqual(digests(self.out), first)
        self.run_ok(self.out, "dp1", "dp2")
        second = digests(self.out)
        self.assertEqual({k: v for k, v in second.items() if not k.startswith("dp2.")}, first)
        ca = os.path.join(self.out, "ca.pem")
        dp2 = os.path.join(self.out, "dp2.pem")
        self.assertEqual(openssl("verify", "-CAfile", ca, dp2).strip(), f"{dp2}: OK")

    def test_force_replaces_keys_but_never_the_ca(self):
        # --force issues new leaf keys and certificates under the same CA.
        self.run_ok(self.out, "dp1")
        before = digests(self.out)
        self.run_ok("--force", self.out, "dp1")
        after = digests(self.out)
        for name in ("ca.pem", "ca.key"):
            self.assertEqual(after[name], before[name], name)
        for name in ("controller.key", "admin.key", "dp1.key", "dp1.pem"):
            self.assertNotEqual(after[name], before[name], name)

    def test_changed_identity_reissues_the_certificate_for_the_existing_key(self):
        # Another trust domain re-issues certificates but keeps keys (no --force given).
        self.run_ok(self.out, "dp1")
        before = digests(self.out)
        self.run_ok("--trust-domain", "other.test", self.out, "dp1")
        after = digests(self.out)
        self.assertEqual(after["dp1.key"], before["dp1.key"])
        self.assertNotEqual(after["dp1.pem"], before["dp1.pem"])
        self.assertIn("URI:spiffe://other.test/agent/dp1",
                      ext(os.path.join(self.out, "dp1.pem"), "subjectAltName"))

    def test_invalid_names_are_refused_and_nothing_is_written(self):
        # Agent names follow ValidateName; a bad one fails before any file is made.
        for bad in ("a/b", "-x", "..", "sp ace", "x" * 129, "ca"):
            r = gen(self.out, bad)
            self.assertNotEqual(r.returncode, 0, bad)
            self.assertIn("gen-dev-certs.sh:", r.stderr, bad)
        self.assertFalse(os.path.exists(self.out))
        r = gen("--admin", "bad/admin", self.out)
        self.assertNotEqual(r.returncode, 0)

    def test_admin_name_and_validity_dates_are_configurable(self):
        # --admin names the admin identity; --not-before/--not-after make an expired certificate.
        self.run_ok("--admin", "ci-bot", "--not-before", "20200101000000Z",
                    "--not-after", "20210101000000Z", self.out, "old")
        self.assertEqual(ext(os.path.join(self.out, "ci-bot.pem"), "subjectAltName"),
                         "URI:spiffe://pkgdist.dev/admin/ci-bot")
        dates = openssl("x509", "-in", os.path.join(self.out, "old.pem"), "-noout", "-dates")
        self.assertIn("notBefore=Jan  1 00:00:00 2020 GMT", dates)
        self.assertIn("notAfter=Jan  1 00:00:00 2021 GMT", dates)

    def test_an_agent_without_name_takes_it_from_its_certificate_and_only_an_agent_one(self):
        # No --name: dp1's certificate names it dp1; the admin's names no agent (exit 2).
        self.run_ok(self.out, "dp1")
        root = os.path.join(self.dir, "root")
        port_file = os.path.join(self.dir, "port")

        def agent(stem):
            return [harness.binary("pkgdist-agent"), "--listen", "127.0.0.1:0", "--root", root,
                    "--port-file", port_file, "--ca", os.path.join(self.out, "ca.pem"),
                    "--cert", os.path.join(self.out, f"{stem}.pem"),
                    "--key", os.path.join(self.out, f"{stem}.key")]

        r = subprocess.run(agent("admin"), capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("names spiffe://pkgdist.dev/admin/admin, not an agent: set --name",
                      r.stderr)
        proc = subprocess.Popen(agent("dp1"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        try:
            harness.wait_for(lambda: os.path.exists(port_file), timeout=30,
                             what="the agent's port file")
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=30)
        self.assertEqual(proc.returncode, 0, err)
        self.assertIn("pkgdist-agent dp1 listening", err)

    def test_help_prints_usage(self):
        # -h documents the command line and exits 0.
        r = self.run_ok("-h")
        self.assertIn("usage: gen-dev-certs.sh", r.stdout)


if __name__ == "__main__":
    unittest.main()
