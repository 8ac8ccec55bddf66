"""Signed packages (issue 16): agents that require signatures publish only
what the release owner signed, whatever the controller sends.

The controller is treated as compromised: it alters a package's content in
its store, re-labels other content with an old signature, forges a package
signed with a key of its own, sends an unsigned package, replays an old
correctly signed version after a newer one was published, and sends a
package whose signature has expired. Every agent refuses each with
FAILED_PRECONDITION (DATA_LOSS for altered bytes) and a message naming why,
nothing of it is published or left staged, and the job never reads complete
while the controller keeps retrying. A later correct signature fixes a
refused job without restarting anything. Rotation: a second key is added and
used, the first removed, and packages signed with the first are then
refused, all without restarting the agents."""

import os
import shutil
import sqlite3
import unittest

import harness
from harness import Cluster, target

AGENTS = ["dp1", "dp2", "dp3"]
TIMEOUT = 60


class SignedCluster(Cluster):
    """A cluster whose agents trust the keys in trusted/<agent>/."""

    def trusted_dir(self, agent):
        return os.path.join(self.dir, "trusted", agent)

    def start_signing_agents(self, extra=()):
        for a in AGENTS:
            os.makedirs(self.trusted_dir(a), exist_ok=True)
            self.start_agent(a, extra=["--trusted-keys", self.trusted_dir(a), *extra])
            self.add_agent(a)

    def keygen(self, name):
        prefix = os.path.join(self.dir, "keys", name)
        os.makedirs(os.path.dirname(prefix), exist_ok=True)
        rc, out, err = self.ctl_raw("key", "generate", prefix)
        if rc != 0:
            raise AssertionError(f"key generate {name}: rc {rc}: {err}")
        return prefix + ".key", prefix + ".pub", out.split()[1]

    def trust(self, pub):
        for a in AGENTS:
            shutil.copy(pub, self.trusted_dir(a))

    def distrust(self, pub):
        for a in AGENTS:
            os.remove(os.path.join(self.trusted_dir(a), os.path.basename(pub)))

    def import_signed(self, path, name, version, key, *terms):
        return self.ctl("package", "import", path, "--name", name, "--version", version,
                        "--sign-key", key, *terms, timeout=120)

    def staging_of(self, agent, package_id):
        return os.path.join(self.agents[agent].root, "staging", package_id)


class SignedPackagesTest(unittest.TestCase):

    def assert_refused_everywhere(self, c, package, message, code="FAILED_PRECONDITION",
                                  cancel=True):
        """Distributes `package` to every agent and waits until each target's
        attempts have ended twice with `code` and `message`, the job never
        reading complete meanwhile; then checks nothing of it was published or
        (for a signature refusal) left staged, and cancels the job unless told
        not to (it then keeps retrying)."""
        name, version = package.split("@")
        package_id = c.ctl("package", "show", package)["id"]
        job = c.distribute(package, AGENTS)

        def refused_twice(j):
            self.assertNotEqual(j["state"], "complete", f"{package} read complete: {j}")
            return all(int(target(j, a)["attempts"]) >= 2
                       and target(j, a)["state"] != "transferring"
                       and target(j, a)["last_error"].startswith(code)
                       and message in target(j, a)["last_error"] for a in AGENTS)

        status = c.wait_job(job, refused_twice, TIMEOUT,
                            f"every agent refuses {package} with {code} ... {message!r}")
        for a in AGENTS:
            self.assertNotIn(target(status, a)["state"], ("done",), f"{a}: {status}")
            self.assertFalse(os.path.exists(c.published(a, name, version)),
                             f"{a} published {package}")
            if code == "FAILED_PRECONDITION":
                self.assertFalse(os.path.exists(c.staging_of(a, package_id)),
                                 f"{a} kept staging of refused {package}")
        if cancel:
            c.ctl("job", "cancel", job)
        self.assertNotEqual(c.job(job)["state"], "complete")
        return job

    def distribute_and_complete(self, c, package, src):
        name, version = package.split("@")
        job = c.distribute(package, AGENTS)
        c.wait_job(job, lambda j: j["state"] == "complete", TIMEOUT, f"{package} complete")
        for a in AGENTS:
            harness.assert_trees_identical(src, c.published(a, name, version))

    def test_a_compromised_controller_cannot_get_content_published(self):
        with SignedCluster(agents=AGENTS) as c:
            c.start_controller(max_backoff_seconds=1)
            release_key, release_pub, release_id = c.keygen("release")
            attacker_key, _, attacker_id = c.keygen("attacker")
            c.start_signing_agents()
            c.trust(release_pub)
            pids = {a: c.agents[a].proc.pid for a in AGENTS}
            src = {v: os.path.join(c.dir, "src", v) for v in ("1", "2", "3", "4", "5")}
            for i, (v, path) in enumerate(sorted(src.items())):
                harness.make_tree(path, seed=100 + i, big_file_bytes=2 * harness.MiB)

            # The release owner signed 1.0 (sequence 10) long ago and now 2.0
            # (sequence 20), which every agent publishes.
            c.import_signed(src["1"], "app", "1.0", release_key, "--sequence", "10")
            info = c.import_signed(src["2"], "app", "2.0", release_key, "--sequence", "20")
            self.assertEqual(info["signature"]["key_id"], release_id)
            self.assertEqual(info["signature"]["sequence"], 20)
            self.distribute_and_complete(c, "app@2.0", src["2"])

            # (c) Unsigned.
            c.import_package(src["3"], "app", "3.0")
            self.assertIsNone(c.ctl("package", "show", "app@3.0")["signature"])
            unsigned_job = self.assert_refused_everywhere(
                c, "app@3.0", "is unsigned and this agent requires signatures", cancel=False)

            # (b) Forged: signed with the controller's (attacker's) own key.
            c.import_signed(src["4"], "evil", "1.0", attacker_key)
            self.assert_refused_everywhere(
                c, "evil@1.0", f"signed by key {attacker_id}, which this agent does not trust")

            # (d) Replay: 1.0 is correctly signed, but older than 2.0.
            self.assert_refused_everywhere(c, "app@1.0", "refused as a rollback")

            # (e) Expired.
            rc, _, err = c.ctl_raw("package", "import", src["4"], "--name", "app",
                                   "--version", "4.0", "--sign-key", release_key,
                                   "--sequence", "40", "--expires", "2020-01-01T00:00:00Z")
            self.assertEqual(rc, 0, err)
            self.assertIn("already past", err)
            self.assert_refused_everywhere(c, "app@4.0", "expired at 2020-01-01T00:00:00.000Z")

            # (a) Content altered in the controller's store after a signed
            # import: the bytes fail the signed manifest's hashes.
            info = c.import_signed(src["5"], "app", "5.0", release_key, "--sequence", "50")
            tree = os.path.join(c.controller_state_dir, "packages", info["id"], "tree")
            victim = os.path.join(tree, "data", "big.bin")
            self.assertTrue(os.path.isfile(victim), f"expected {victim} in the store")
            with open(victim, "r+b") as f:
                f.seek(1000)
                byte = f.read(1)
                f.seek(1000)
                f.write(bytes([byte[0] ^ 0x20]))
            self.assert_refused_everywhere(c, "app@5.0", "failed its sha256 check", code="DATA_LOSS")

            # (a') ... and content altered consistently, with a new manifest
            # under the old name@version carrying the old signature (written
            # straight into the controller's database, as an intruder would).
            old_id = info["id"]
            db = sqlite3.connect(os.path.join(c.controller_state_dir, "state.db"))
            try:
                (old_signature,) = db.execute("SELECT signature FROM packages WHERE id = ?",
                                              (old_id,)).fetchone()
                self.assertGreater(len(old_signature), 64)
                c.ctl("package", "delete", "app@5.0", "--force")
                new_info = c.import_package(src["4"], "app", "5.0")
                self.assertNotEqual(new_info["id"], old_id)
                with db:
                    db.execute("UPDATE packages SET signature = ? WHERE id = ?",
                               (old_signature, new_info["id"]))
            finally:
                db.close()
            self.assertEqual(c.ctl("package", "show", "app@5.0")["signature"]["sequence"], 50)
            self.assert_refused_everywhere(
                c, "app@5.0", f"the signature is for package id {old_id}")

            # What the agents have is 2.0 only, and no agent was restarted.
            for a in AGENTS:
                self.assertEqual(sorted(os.listdir(os.path.join(c.agents[a].root, "packages"))),
                                 ["app"])
                self.assertEqual(os.listdir(os.path.join(c.agents[a].root, "packages", "app")),
                                 ["2.0"])
                self.assertEqual(c.agents[a].proc.pid, pids[a])

            # A correct signature fixes the unsigned job, still retrying all
            # along: signed after the fact, checked against the owner's tree.
            signed = c.ctl("package", "sign", "app@3.0", "--key", release_key,
                           "--source", src["3"], "--sequence", "30")
            self.assertEqual(signed["signature"]["sequence"], 30)
            c.wait_job(unsigned_job, lambda j: j["state"] == "complete", TIMEOUT,
                       "app@3.0 complete once signed")
            for a in AGENTS:
                harness.assert_trees_identical(src["3"], c.published(a, "app", "3.0"))

    def test_keys_rotate_without_restarting_agents(self):
        with SignedCluster(agents=AGENTS) as c:
            c.start_controller(max_backoff_seconds=1)
            first_key, first_pub, first_id = c.keygen("first")
            second_key, second_pub, _ = c.keygen("second")
            c.start_signing_agents()
            c.trust(first_pub)
            pids = {a: c.agents[a].proc.pid for a in AGENTS}
            src = {v: os.path.join(c.dir, "src", v) for v in ("1", "2", "3")}
            for i, (v, path) in enumerate(sorted(src.items())):
                harness.make_tree(path, seed=200 + i, big_file_bytes=harness.MiB)

            c.import_signed(src["1"], "rot", "1", first_key)
            self.distribute_and_complete(c, "rot@1", src["1"])

            c.trust(second_pub)
            c.import_signed(src["2"], "rot", "2", second_key)
            self.distribute_and_complete(c, "rot@2", src["2"])

            c.distrust(first_pub)
            c.import_signed(src["3"], "rot", "3", first_key)
            self.assert_refused_everywhere(
                c, "rot@3", f"signed by key {first_id}, which this agent does not trust")
            for a in AGENTS:
                self.assertEqual(c.agents[a].proc.pid, pids[a], f"{a} was restarted")


if __name__ == "__main__":
    unittest.main()
