"""The Debian packages (packaging/), made by CPack from the build tree the
tests run in (no second build), then installed on this machine.

- Each .deb holds its program in /usr/bin, its unit in /lib/systemd/system,
  its config in /etc/pkgdist (a conffile), a man page, copyright and
  changelog, and nothing else; its control fields name it, this version and
  architecture, and depend on the package of every library the program
  needs (dpkg-shlibdeps); lintian reports no error.
- `dpkg -i`, without network, makes the pkgdist system user and the
  directories with their owners and modes; the installed units verify
  clean; the installed controller and agent, run as pkgdist with the
  installed configs (certificates from certs/gen-dev-certs.sh put in
  /etc/pkgdist/tls/; only the listen addresses and port files overridden),
  serve the installed pkgdistctl, and a package distributed through them
  arrives under /srv/pkgdist.
- An upgrade keeps an edited conffile; `dpkg -r` keeps the configs, the
  controller's state and the published packages; `dpkg -P` deletes them
  and /etc/pkgdist, says so, and removes the enable link of a unit the
  operator enabled. The pkgdist user stays (Debian practice).

Needs root, a plain build (PKGDIST_SANITIZE off) and a machine where no
pkgdist package or directory exists; otherwise every test is skipped with
the reason. Two runs on one machine take turns (a lock file in the temporary
directory). Whatever happens, the packages are purged at the end, the
directories deleted and the pkgdist user deleted if this test made it."""

import fcntl
import grp
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import harness  # noqa: E402

BUILD_DIR = os.environ.get("PKGDIST_BUILD_DIR") or os.path.dirname(harness.BIN_DIR)
SANITIZED = os.environ.get("PKGDIST_SANITIZE", "OFF").upper() in ("ON", "1", "TRUE", "YES")
USER = "pkgdist"
ETC = "/etc/pkgdist"
TLS = "/etc/pkgdist/tls"
UNIT_DIR = "/lib/systemd/system"
WANTS = "/etc/systemd/system/multi-user.target.wants"
DSH_STATE = "/var/lib/systemd/deb-systemd-helper-enabled"
STEP_TIMEOUT = 120
CONTENT = b"published by the installed agent\n"
# Held while a run owns the machine's dpkg state: a second run (another
# checkout on the same machine) waits, then finds the machine clean.
MACHINE_LOCK = os.path.join(tempfile.gettempdir(), "pkgdist-packaging-test.lock")


class Package:
    def __init__(self, name, binary, config, man, unit=None, data_dir=None, data_mode=None):
        self.name = name
        self.binary = binary
        self.config = config
        self.man = man
        self.unit = unit
        self.data_dir = data_dir
        self.data_mode = data_mode

    def files(self):
        """The regular files the .deb must hold, and no others."""
        doc = f"/usr/share/doc/{self.name}"
        files = {f"/usr/bin/{self.binary}", f"{ETC}/{self.config}", self.man,
                 f"{doc}/copyright", f"{doc}/changelog.gz"}
        if self.unit:
            files.add(f"{UNIT_DIR}/{self.unit}")
        return files


PACKAGES = [
    Package("pkgdist-controller", "pkgdist-controller", "controller.toml",
            "/usr/share/man/man8/pkgdist-controller.8.gz", unit="pkgdist-controller.service",
            data_dir="/var/lib/pkgdist", data_mode=0o700),
    Package("pkgdist-agent", "pkgdist-agent", "agent.toml",
            "/usr/share/man/man8/pkgdist-agent.8.gz", unit="pkgdist-agent.service",
            data_dir="/srv/pkgdist", data_mode=0o750),
    Package("pkgdistctl", "pkgdistctl", "pkgdistctl.toml", "/usr/share/man/man1/pkgdistctl.1.gz"),
]
DATA_DIRS = [p.data_dir for p in PACKAGES if p.data_dir]
# What the daemons see: no PKGDIST_* variable of the test's environment.
CLEAN_ENV = ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"]


def run(argv, timeout=STEP_TIMEOUT, check=True, **kw):
    """Runs argv; returns the CompletedProcess (text). With check, a non-zero
    exit fails naming the command and its output."""
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r


def dpkg_status(package):
    """dpkg's state of a package: "installed", "config-files", "not-installed"..."""
    r = run(["dpkg-query", "-W", "-f=${db:Status-Status}", package], check=False)
    return r.stdout.strip() or "not-installed"


def user_exists():
    try:
        pwd.getpwnam(USER)
        return True
    except KeyError:
        return False


def project_version():
    with open(os.path.join(BUILD_DIR, "CMakeCache.txt")) as f:
        m = re.search(r"^CMAKE_PROJECT_VERSION:STATIC=(\S+)$", f.read(), re.M)
    if not m:
        raise AssertionError(f"no CMAKE_PROJECT_VERSION in {BUILD_DIR}/CMakeCache.txt")
    return m.group(1)


def take_machine_lock():
    """Waits (bounded) for MACHINE_LOCK; returns the open file holding it."""
    f = open(MACHINE_LOCK, "a")

    def locked():
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    try:
        harness.wait_for(locked, timeout=150, interval=0.5,
                         what=f"another packaging test to release {MACHINE_LOCK}")
    except BaseException:
        f.close()
        raise
    return f


def environment_problem():
    """Why the packages cannot be installed here, or None."""
    if SANITIZED:
        return ("this is a sanitizer build: an ASan binary is not what gets packaged "
                "(the plain build's run of scripts/test.sh tests the packages)")
    if os.geteuid() != 0:
        return "needs root (it installs the packages with dpkg -i)"
    return None


def installation_problem():
    """Why installing here would touch a real installation, or None."""
    for p in PACKAGES:
        status = dpkg_status(p.name)
        if status != "not-installed":
            return (f"{p.name} is {status} on this machine, and this test installs and purges "
                    f"the packages (dpkg -P {' '.join(q.name for q in PACKAGES)} to run it)")
    for path in (ETC, *DATA_DIRS):
        if os.path.lexists(path):
            return f"{path} exists (a pkgdist installation?); this test would delete it"
    return None


def build_debs(out_dir, *cpack_args):
    """cpack with the build tree's CPackConfig.cmake; returns {package: .deb path}."""
    run(["cpack", "--config", os.path.join(BUILD_DIR, "CPackConfig.cmake"), "-B", out_dir,
         *cpack_args])
    debs = {}
    for name in os.listdir(out_dir):
        m = re.match(r"^([a-z-]+)_[^_]+_[^_]+\.deb$", name)
        if m:
            debs[m.group(1)] = os.path.join(out_dir, name)
    return debs


def mode_owner(path):
    st = os.lstat(path)
    return (stat.S_IMODE(st.st_mode), pwd.getpwuid(st.st_uid).pw_name,
            grp.getgrgid(st.st_gid).gr_name)


class DebPackagesTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.lock = None
        cls.problem = environment_problem()
        if not cls.problem:
            cls.lock = take_machine_lock()
            cls.problem = installation_problem()
        if cls.problem:
            # ctest reports the test as skipped on this line (tests/packaging/CMakeLists.txt).
            print(f"packaging tests skipped: {cls.problem}", flush=True)
            cls.release_lock()
            return
        for tool in ("cpack", "dpkg-deb", "dpkg-shlibdeps", "lintian", "readelf", "setpriv",
                     "unshare", "systemd-analyze"):
            if shutil.which(tool) is None:
                raise AssertionError(f"{tool} is missing (scripts/setup.sh installs it)")
        cls.tmp = tempfile.mkdtemp(prefix="pkgdist-debs-")
        try:
            cls.debs = build_debs(os.path.join(cls.tmp, "dist"))
            if sorted(cls.debs) != sorted(p.name for p in PACKAGES):
                raise AssertionError(f"cpack made {sorted(cls.debs)}")
        except BaseException:
            shutil.rmtree(cls.tmp, ignore_errors=True)
            cls.release_lock()
            raise

    @classmethod
    def tearDownClass(cls):
        if not cls.problem:
            shutil.rmtree(cls.tmp, ignore_errors=True)
        cls.release_lock()

    @classmethod
    def release_lock(cls):
        if cls.lock is not None:
            cls.lock.close()
            cls.lock = None

    def setUp(self):
        if self.problem:
            self.skipTest(self.problem)

    # --- the .deb files ---------------------------------------------------

    def test_each_deb_holds_its_program_unit_config_and_docs_only(self):
        # Binaries in /usr/bin, units in /lib/systemd/system, conffiles in /etc/pkgdist.
        for p in PACKAGES:
            with self.subTest(package=p.name):
                listing = run(["dpkg-deb", "-c", self.debs[p.name]]).stdout.splitlines()
                files = {}
                for line in listing:
                    perms, owner, _, _, _, path = line.split(None, 5)
                    if perms.startswith("-"):
                        files[path.removeprefix(".")] = (perms, owner)
                self.assertEqual(set(files), p.files())
                for path, (perms, owner) in files.items():
                    self.assertEqual(owner, "root/root", path)
                    self.assertEqual(perms, "-rwxr-xr-x" if "/bin/" in path else "-rw-r--r--",
                                     path)
                self.assertFalse([line for line in listing if " ./srv" in line or
                                  " ./var" in line], "state directories are made by postinst")

                control = os.path.join(self.tmp, "control-" + p.name)
                run(["dpkg-deb", "-e", self.debs[p.name], control])
                with open(os.path.join(control, "conffiles")) as f:
                    self.assertEqual(f.read(), f"{ETC}/{p.config}\n")
                scripts = {"postinst", "prerm", "postrm"} if p.unit else {"postrm"}
                self.assertEqual(set(os.listdir(control)) - {"control", "md5sums", "conffiles"},
                                 scripts)
                for script in scripts:
                    self.assertEqual(mode_owner(os.path.join(control, script))[0], 0o755)
                    run(["sh", "-n", os.path.join(control, script)])

    def test_control_fields_name_the_package_and_every_library_it_needs(self):
        # Depends holds the package of each NEEDED library (dpkg-shlibdeps ran).
        arch = run(["dpkg", "--print-architecture"]).stdout.strip()
        for p in PACKAGES:
            with self.subTest(package=p.name):
                deb = self.debs[p.name]
                fields = {}
                for line in run(["dpkg-deb", "-f", deb]).stdout.splitlines():
                    if not line.startswith(" ") and ":" in line:
                        key, _, value = line.partition(":")
                        fields[key] = value.strip()
                self.assertEqual(fields["Package"], p.name)
                self.assertEqual(fields["Version"], project_version())
                self.assertEqual(fields["Architecture"], arch)
                self.assertRegex(fields["Maintainer"], r"^[^<>]+ <[^@<>\s]+@[^<>\s]+>$")
                self.assertTrue(fields["Description"])
                depends = {re.split(r"[\s(]", d.strip())[0]
                           for d in fields["Depends"].split(",")}
                needed = self.library_packages(deb, p.binary)
                self.assertGreater(len(needed), 3)
                # A library's shlibs may name a package it Provides
                # (libspdlog1.10 provides libspdlog1.10-fmt9).
                missing = [name for name, provides in needed.items()
                           if not ({name} | provides) & depends]
                self.assertEqual(missing, [], f"Depends: {fields['Depends']}")
                if p.unit:
                    self.assertIn("adduser", depends)
                    self.assertIn("libsystemd0", depends)

    def library_packages(self, deb, binary):
        """The Debian packages holding the libraries the binary in `deb` needs:
        {package: the names it Provides}."""
        root = tempfile.mkdtemp(dir=self.tmp)
        run(["dpkg-deb", "-x", deb, root])
        binary_path = os.path.join(root, "usr", "bin", binary)
        dynamic = run(["readelf", "-d", binary_path]).stdout
        sonames = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+)\]", dynamic)
        resolved = dict(re.findall(r"^\s*(\S+) => (/\S+)", run(["ldd", binary_path]).stdout,
                                   re.M))
        paths = []
        for soname in sonames:
            self.assertIn(soname, resolved, f"{binary} needs {soname}, which ldd cannot find")
            path = os.path.realpath(resolved[soname])
            # usrmerge: dpkg knows a file by the path its package shipped.
            paths += [path, path.replace("/usr/lib/", "/lib/", 1)]
        owners = run(["dpkg", "-S", *paths], check=False).stdout
        packages = {line.split(":")[0] for line in owners.splitlines() if ": /" in line}
        self.assertTrue(packages, f"dpkg -S found no package for {sonames}")
        provides = {}
        for line in run(["dpkg-query", "-W", "-f=${Package}\t${Provides}\n",
                         *packages]).stdout.splitlines():
            name, _, names = line.partition("\t")
            provides[name] = {re.split(r"[\s(]", n.strip())[0] for n in names.split(",")
                              if n.strip()}
        return provides

    def test_lintian_reports_no_errors(self):
        # Warnings are printed; an error (E:) fails.
        r = run(["lintian", "--display-info", *self.debs.values()], check=False)
        tags = [line for line in r.stdout.splitlines() if re.match(r"^[EWIPX]: ", line)]
        counts = {k: sum(line.startswith(k) for line in tags) for k in "EWI"}
        print(f"lintian: {counts['E']} errors, {counts['W']} warnings, {counts['I']} info",
              flush=True)
        for line in tags:
            print("  " + line, flush=True)
        self.assertEqual([line for line in tags if line.startswith("E: ")], [])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    # --- installed on this machine -----------------------------------------

    def test_install_serve_upgrade_remove_purge(self):
        # The whole life of an installation, then the machine as it was.
        self.user_existed = user_exists()
        self.procs = []
        self.run_dir = None
        self.addCleanup(self.restore_machine)
        self.install()
        self.check_user_and_directories()
        self.serve_a_distribution()
        self.upgrade_keeps_an_edited_conffile()
        self.remove_keeps_configs_state_and_content()
        self.purge_deletes_them_and_says_so()

    def install(self):
        """dpkg -i of all three, in a network namespace of its own: nothing
        may come from the network."""
        offline = run(["unshare", "--net", "true"], check=False).returncode == 0
        if not offline:
            print("note: unshare --net is not permitted here; installing with network", flush=True)
        r = run([*(["unshare", "--net"] if offline else []), "dpkg", "-i", *self.debs.values()])
        for p in PACKAGES:
            self.assertEqual(dpkg_status(p.name), "installed", r.stdout)

    def check_user_and_directories(self):
        user = pwd.getpwnam(USER)
        self.assertLess(user.pw_uid, 1000, "a system user")
        self.assertEqual(grp.getgrgid(user.pw_gid).gr_name, USER)
        self.assertEqual(user.pw_shell, "/usr/sbin/nologin")
        self.assertFalse(os.path.exists(user.pw_dir), user.pw_dir)
        for p in PACKAGES:
            if p.data_dir:
                self.assertEqual(mode_owner(p.data_dir), (p.data_mode, USER, USER))
            conffiles = run(["dpkg-query", "-W", "-f=${Conffiles}", p.name]).stdout
            self.assertIn(f"{ETC}/{p.config} ", conffiles)
            self.assertEqual(mode_owner(f"{ETC}/{p.config}"), (0o644, "root", "root"))
        self.assertEqual(mode_owner(ETC), (0o755, "root", "root"))
        self.assertEqual(mode_owner(TLS), (0o755, "root", "root"))
        # The installed units, with their binaries and man pages in place.
        units = [f"{UNIT_DIR}/{p.unit}" for p in PACKAGES if p.unit]
        r = run(["systemd-analyze", "verify", *units], check=False)
        self.assertEqual((r.returncode, r.stdout + r.stderr), (0, ""))

    def install_certificates(self):
        """A development CA and certificates, under the names the default
        configs use; the daemons' keys owned by pkgdist, mode 0600."""
        certs = os.path.join(self.tmp, "certs")
        run(["bash", harness.GEN_CERTS, certs, "dp1"], timeout=60)
        for source, target, owner, mode in (
                ("ca.pem", "ca.pem", "root", 0o644),
                ("controller.pem", "controller.pem", "root", 0o644),
                ("controller.key", "controller.key", USER, 0o600),
                ("dp1.pem", "agent.pem", "root", 0o644),
                ("dp1.key", "agent.key", USER, 0o600),
                ("admin.pem", "admin.pem", "root", 0o644),
                ("admin.key", "admin.key", "root", 0o600)):
            run(["install", "-m", f"{mode:o}", "-o", owner, "-g", owner,
                 os.path.join(certs, source), os.path.join(TLS, target)])

    def start_as_pkgdist(self, name, argv):
        """Starts an installed daemon as the pkgdist user with a clean
        environment (as its unit does); returns (Proc, port)."""
        if self.run_dir is None:  # the daemons' port files; self.tmp is root's
            self.run_dir = tempfile.mkdtemp(prefix="pkgdist-run-")
            shutil.chown(self.run_dir, USER, USER)
        run_dir = self.run_dir
        port_file = os.path.join(run_dir, name + ".port")
        log = os.path.join(self.tmp, name + ".log")
        proc = harness.Proc(name, [*CLEAN_ENV, "setpriv", f"--reuid={USER}", f"--regid={USER}",
                                   "--init-groups", "--pdeathsig=KILL", *argv,
                                   "--listen", "127.0.0.1:0", "--port-file", port_file,
                                   "--metrics-listen", "127.0.0.1:0"], log)
        self.procs.append(proc)

        def port():
            if not proc.alive():
                raise AssertionError(f"{name} {proc.describe_exit()}:\n{proc.tail()}")
            try:
                with open(port_file) as f:
                    return int(f.read().strip() or 0)
            except FileNotFoundError:
                return 0

        return proc, harness.wait_for(port, timeout=harness.START_TIMEOUT,
                                      what=f"{name} to write {port_file}")

    def ctl(self, controller_port, *args):
        return run([*CLEAN_ENV, "/usr/bin/pkgdistctl", "--config", f"{ETC}/pkgdistctl.toml",
                    "--controller", f"127.0.0.1:{controller_port}", *args],
                   timeout=harness.CTL_TIMEOUT + 60)

    def serve_a_distribution(self):
        """The installed programs, with the installed configs, distribute a package."""
        self.install_certificates()
        controller, cport = self.start_as_pkgdist(
            "controller", ["/usr/bin/pkgdist-controller", "--config", f"{ETC}/controller.toml"])
        # No name set anywhere: the agent takes dp1 from its certificate.
        agent, aport = self.start_as_pkgdist(
            "agent", ["/usr/bin/pkgdist-agent", "--config", f"{ETC}/agent.toml"])
        source = os.path.join(self.tmp, "demo")
        os.makedirs(source)
        with open(os.path.join(source, "hello.txt"), "wb") as f:
            f.write(CONTENT)
        self.ctl(cport, "agent", "add", "dp1", f"127.0.0.1:{aport}")
        self.ctl(cport, "package", "import", source, "--name", "demo", "--version", "1.0")
        self.ctl(cport, "distribute", "demo@1.0", "--to", "dp1", "--wait", "--timeout", "60s")
        published = "/srv/pkgdist/packages/demo/1.0/hello.txt"
        with open(published, "rb") as f:
            self.assertEqual(f.read(), CONTENT)
        self.assertEqual(mode_owner(published)[1], USER)
        self.assertTrue(os.path.exists("/var/lib/pkgdist/state.db"))
        for proc in (controller, agent):
            proc.expected_exit = True
            proc.popen.send_signal(signal.SIGTERM)
            self.assertEqual(proc.popen.wait(timeout=harness.START_TIMEOUT), 0, proc.tail())
        # The operator enables the agent (README); a purge must take the link away.
        run(["systemctl", "enable", "pkgdist-agent.service"])
        self.assertTrue(os.path.islink(f"{WANTS}/pkgdist-agent.service"))

    def upgrade_keeps_an_edited_conffile(self):
        """A newer pkgdist-agent over an edited agent.toml keeps the edit."""
        config = f"{ETC}/agent.toml"
        with open(config, "a") as f:
            f.write('name = "dp1"  # set by the operator\n')
        with open(config) as f:
            edited = f.read()
        newer = build_debs(os.path.join(self.tmp, "newer"), "-D", "CPACK_COMPONENTS_ALL=agent",
                           "-D", f"CPACK_DEBIAN_PACKAGE_VERSION={project_version()}+upgrade")
        run(["dpkg", "-i", newer["pkgdist-agent"]])
        self.assertEqual(run(["dpkg-query", "-W", "-f=${Version}", "pkgdist-agent"]).stdout,
                         f"{project_version()}+upgrade")
        with open(config) as f:
            self.assertEqual(f.read(), edited)
        self.assertEqual([n for n in os.listdir(ETC) if ".dpkg-" in n], [])

    def remove_keeps_configs_state_and_content(self):
        r = run(["dpkg", "-r", *(p.name for p in PACKAGES)])
        for p in PACKAGES:
            self.assertEqual(dpkg_status(p.name), "config-files", r.stdout)
            self.assertFalse(os.path.exists(f"/usr/bin/{p.binary}"))
            self.assertTrue(os.path.exists(f"{ETC}/{p.config}"))
            if p.unit:
                self.assertFalse(os.path.exists(f"{UNIT_DIR}/{p.unit}"))
        self.assertTrue(os.path.exists("/var/lib/pkgdist/state.db"))
        with open("/srv/pkgdist/packages/demo/1.0/hello.txt", "rb") as f:
            self.assertEqual(f.read(), CONTENT)
        self.assertTrue(os.path.exists(f"{TLS}/agent.key"))

    def purge_deletes_them_and_says_so(self):
        r = run(["dpkg", "-P", *(p.name for p in PACKAGES)])
        for p in PACKAGES:
            self.assertEqual(dpkg_status(p.name), "not-installed")
        for path in (*DATA_DIRS, ETC):
            self.assertFalse(os.path.lexists(path), path)
            self.assertRegex(r.stdout, rf"purged {re.escape(path)} \(")
        self.assertFalse(os.path.lexists(f"{WANTS}/pkgdist-agent.service"))
        for p in PACKAGES:
            if p.unit:
                self.assertFalse(os.path.exists(f"{DSH_STATE}/{p.unit}.dsh-also"))
        self.assertTrue(user_exists(), "a purge keeps the pkgdist user (Debian practice)")

    def restore_machine(self):
        """Stops what this test started, purges what is left, deletes the
        directories and the pkgdist user if this test made them."""
        for proc in self.procs:
            if proc.alive():
                proc.expected_exit = True
                proc.popen.kill()
                proc.popen.wait()
        if self.run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        left = [p.name for p in PACKAGES if dpkg_status(p.name) != "not-installed"]
        if left:
            run(["dpkg", "-P", *left], check=False)
        for path in (*DATA_DIRS, ETC, f"{WANTS}/pkgdist-agent.service"):
            if os.path.islink(path) or os.path.isfile(path):
                os.unlink(path)
            elif os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
        if not self.user_existed and user_exists():
            run(["userdel", USER], check=False)
            try:
                grp.getgrnam(USER)
                run(["groupdel", USER], check=False)
            except KeyError:
                pass


if __name__ == "__main__":
    unittest.main()
