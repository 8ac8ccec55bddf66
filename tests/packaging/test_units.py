"""The systemd units and default config files of packaging/, as shipped.

The units: `systemd-analyze verify` reports nothing (in a temporary root
holding this machine's units, the built binaries at /usr/bin and ours, so
it works before anything is installed and whether or not systemd runs), and
`systemd-analyze security --offline=yes` scores each at most 2.0. Their
contract with the packages is pinned: Type=notify, the pkgdist user, the
config file, the one directory each may write.

The configs: each program accepts its default config file, and the file
with every commented default uncommented too (the program stops at the
missing certificate, after its config was read). They point the
certificates at /etc/pkgdist/tls/ and metrics at loopback."""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import harness  # noqa: E402

PACKAGING = os.path.join(harness.SOURCE_DIR, "packaging")
MAX_EXPOSURE = 2.0

# unit -> (program, the directory it may write, its config file)
UNITS = {
    "pkgdist-controller.service": ("pkgdist-controller", "/var/lib/pkgdist", "controller.toml"),
    "pkgdist-agent.service": ("pkgdist-agent", "/srv/pkgdist", "agent.toml"),
}
# config file -> (program, its certificate stem in /etc/pkgdist/tls, metrics address)
CONFIGS = {
    "controller.toml": ("pkgdist-controller", "controller", "127.0.0.1:9470"),
    "agent.toml": ("pkgdist-agent", "agent", "127.0.0.1:9471"),
    "pkgdistctl.toml": ("pkgdistctl", "admin", None),
}


def unit_path(unit):
    return os.path.join(PACKAGING, "systemd", unit)


def unit_settings(unit):
    """The [Service] settings of a unit file: key -> list of values."""
    settings, section = {}, None
    with open(unit_path(unit)) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("["):
                section = line
            elif section == "[Service]":
                key, _, value = line.partition("=")
                settings.setdefault(key, []).append(value)
    return settings


def exposure(unit):
    """systemd-analyze security --offline=yes's overall score of a unit file."""
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager",
                        unit_path(unit)], capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout)
    if not m:
        raise AssertionError(f"no exposure score for {unit} (exit {r.returncode}): "
                             f"{r.stdout[-2000:]} {r.stderr[-2000:]}")
    return float(m.group(1)), r.stdout


class UnitFilesTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        if shutil.which("systemd-analyze") is None:
            raise AssertionError("systemd-analyze is missing (Debian package systemd; "
                                 "scripts/setup.sh installs it)")

    def test_verify_reports_nothing(self):
        # Every unit file setting is known and valid, ExecStart exists.
        root = tempfile.mkdtemp(prefix="pkgdist-units-")
        self.addCleanup(shutil.rmtree, root, ignore_errors=True)
        os.makedirs(os.path.join(root, "usr", "bin"))
        os.makedirs(os.path.join(root, "usr", "lib", "systemd"))
        os.symlink("usr/lib", os.path.join(root, "lib"))
        system = os.path.join(root, "usr", "lib", "systemd", "system")
        shutil.copytree("/usr/lib/systemd/system", system, symlinks=True)
        for unit, (program, _, _) in UNITS.items():
            shutil.copy(harness.binary(program), os.path.join(root, "usr", "bin", program))
            shutil.copy(unit_path(unit), os.path.join(system, unit))
        r = subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={root}", *UNITS],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual((r.returncode, r.stdout + r.stderr), (0, ""))

    def test_exposure_is_at_most_2_for_both_units(self):
        # The hardening, measured: systemd's own score, 0 (best) to 10.
        for unit in UNITS:
            with self.subTest(unit=unit):
                score, report = exposure(unit)
                print(f"{unit}: exposure {score}", flush=True)
                self.assertLessEqual(score, MAX_EXPOSURE, report)

    def test_units_run_their_program_as_pkgdist_writing_one_directory(self):
        # What the packages' maintainer scripts and configs rely on.
        for unit, (program, writes, config) in UNITS.items():
            with self.subTest(unit=unit):
                s = unit_settings(unit)
                self.assertEqual(s["ExecStart"],
                                 [f"/usr/bin/{program} --config /etc/pkgdist/{config}"])
                self.assertEqual(s["Type"], ["notify"])
                self.assertEqual(s["User"], ["pkgdist"])
                self.assertEqual(s["Restart"], ["on-failure"])
                self.assertEqual(s["ProtectSystem"], ["strict"])
                self.assertEqual(s["ReadWritePaths"], [writes])
                self.assertEqual(s["CapabilityBoundingSet"], [""])
                self.assertNotIn("IPAddressDeny", s, "the agent serves, the controller dials: "
                                 "both need the network")


class DefaultConfigTest(unittest.TestCase):

    def run_with_config(self, program, text):
        """Runs PROGRAM with a config holding TEXT, /etc/pkgdist moved to a
        temporary directory (which has the directories the config names but
        no certificates). Returns (exit status, stderr)."""
        etc = tempfile.mkdtemp(prefix="pkgdist-config-")
        self.addCleanup(shutil.rmtree, etc, ignore_errors=True)
        for sub in ("tls/crl", "trusted-keys"):
            os.makedirs(os.path.join(etc, sub))
        path = os.path.join(etc, "config.toml")
        with open(path, "w") as f:
            f.write(text.replace("/etc/pkgdist/", etc + "/"))
        args = ["agent", "list"] if program == "pkgdistctl" else []
        env = {k: v for k, v in os.environ.items() if not k.startswith("PKGDIST_")}
        r = subprocess.run([harness.binary(program), "--config", path, *args], env=env,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
        return r.returncode, r.stderr.replace(etc + "/", "/etc/pkgdist/")

    def test_defaults_and_every_commented_default_are_accepted(self):
        # The programs read them to the end and stop only at the missing CA file.
        for name, (program, _, _) in CONFIGS.items():
            with open(os.path.join(PACKAGING, "config", name)) as f:
                shipped = f.read()
            uncommented = re.sub(r"(?m)^# ([a-z-]+ = )", r"\1", shipped)
            self.assertGreater(uncommented.count("\n# "), 0)
            for label, text in (("as shipped", shipped), ("uncommented", uncommented)):
                with self.subTest(config=name, text=label):
                    rc, err = self.run_with_config(program, text)
                    self.assertNotEqual(rc, 0)
                    self.assertIn("/etc/pkgdist/tls/ca.pem", err)
                    self.assertNotIn("config file", err)
                    self.assertIsNone(harness.SANITIZER_REPORT.search(err), err)

    def test_certificates_in_etc_pkgdist_tls_and_metrics_on_loopback(self):
        # The default configs as README's "Install as a service" describes them.
        for name, (_, stem, metrics) in CONFIGS.items():
            with self.subTest(config=name):
                with open(os.path.join(PACKAGING, "config", name), "rb") as f:
                    config = tomllib.load(f)
                self.assertEqual(config["ca"], "/etc/pkgdist/tls/ca.pem")
                self.assertEqual(config["cert"], f"/etc/pkgdist/tls/{stem}.pem")
                self.assertEqual(config["key"], f"/etc/pkgdist/tls/{stem}.key")
                self.assertEqual(config.get("metrics-listen"), metrics)


if __name__ == "__main__":
    unittest.main()
