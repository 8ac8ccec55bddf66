"""The peers users could pick instead: Debian's nginx over HTTPS (2
workers, certificate from the dev CA) and N concurrent curl clients, each
writing the file to its own file on the agents' disk and hashing it as it
arrives, then fsyncing it. Two clients, which differ in the hasher only:

    sha256sum  curl -sS --fail --cacert ca.pem URL | tee OUT | sha256sum
    openssl    curl -sS --fail --cacert ca.pem URL | tee OUT | openssl dgst -sha256 -r
    (then, for both)  sync OUT

coreutils' sha256sum has its own SHA-256 (no SHA extensions; about a
quarter of OpenSSL's speed on the machines we measured), OpenSSL's uses
the CPU's: the second is the strongest pipeline a user could assemble from
standard tools, and the benchmark reports both. Each run's figures name
their client (`peer`).
"""

import os
import shutil
import socket
import subprocess
import time

import procstat

NGINX = "/usr/sbin/nginx"

CONF = """daemon off;
master_process on;
worker_processes 2;
user root;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  sendfile on;
  client_body_temp_path {dir}/tmp-body;
  proxy_temp_path {dir}/tmp-proxy;
  fastcgi_temp_path {dir}/tmp-fastcgi;
  uwsgi_temp_path {dir}/tmp-uwsgi;
  scgi_temp_path {dir}/tmp-scgi;
  types {{ application/octet-stream bin; }}
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    root {www};
  }}
}}
"""

# The hasher of each client; its output's first field is the digest.
HASHERS = {"sha256sum": "sha256sum", "openssl": "openssl dgst -sha256 -r"}
CLIENT = ("set -o pipefail; curl -sS --fail --cacert \"$1\" \"$2\" | tee \"$3\" | {hasher}"
          " | cut -d' ' -f1 > \"$3.sha256\" && sync \"$3\"")


def available():
    """The clients that can run here (nginx and curl are needed for any)."""
    if not os.access(NGINX, os.X_OK) or shutil.which("curl") is None:
        return []
    return [name for name, cmd in HASHERS.items() if shutil.which(cmd.split()[0])]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nginx:
    """nginx serving `file_path` over HTTPS on 127.0.0.1; a context manager."""

    def __init__(self, workdir, file_path, cert, key):
        self.dir = os.path.join(workdir, "nginx")
        self.www = os.path.join(self.dir, "www")
        os.makedirs(self.www)
        self.name = os.path.basename(file_path)
        os.link(file_path, os.path.join(self.www, self.name))
        self.port = _free_port()
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(CONF.format(dir=self.dir, port=self.port, cert=cert, key=key, www=self.www))
        self.argv = [NGINX, "-p", self.dir, "-c", conf, "-e", os.path.join(self.dir, "error.log")]
        self.proc = None

    @property
    def url(self):
        return f"https://127.0.0.1:{self.port}/{self.name}"

    def pids(self):
        return [self.proc.pid] + procstat.children(self.proc.pid)

    def __enter__(self):
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("nginx did not listen within 10 s") from None
                time.sleep(0.05)

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return False


def run(nginx, ca, out_dir, n, expected_sha256, size, hasher="sha256sum"):
    """N clients of kind `hasher` (HASHERS) fetch the file at once; returns
    wall time, CPU (nginx's and the clients') and nginx's peak RSS."""
    client = CLIENT.format(hasher=HASHERS[hasher])
    os.makedirs(out_dir, exist_ok=True)
    server_pids = nginx.pids()
    meter = procstat.CpuMeter(server_pids).start()
    for p in server_pids:
        procstat.reset_peak(p)
    before = os.times()
    start = time.monotonic()
    clients = [subprocess.Popen(["bash", "-c", client, "peer", ca, nginx.url,
                                 os.path.join(out_dir, f"copy-{i}.bin")])
               for i in range(n)]
    codes = [c.wait(timeout=3600) for c in clients]
    elapsed = time.monotonic() - start
    after = os.times()
    used = meter.stop()
    peak = max(procstat.peak_rss_kib(p) for p in server_pids)
    if any(codes):
        raise RuntimeError(f"a curl | {hasher} client failed: exit codes {codes}")
    for i in range(n):
        path = os.path.join(out_dir, f"copy-{i}.bin")
        with open(path + ".sha256") as f:
            got = f.read().strip()
        if got != expected_sha256 or os.path.getsize(path) != size:
            raise RuntimeError(f"peer ({hasher}) copy {i} differs: sha256 {got}")
    shutil.rmtree(out_dir)
    return {
        "peer": hasher,
        "n": n,
        "size": size,
        "wall_s": elapsed,
        "server_cpu_s": sum(used.values()),
        "client_cpu_s": (after.children_user - before.children_user)
        + (after.children_system - before.children_system),
        "server_peak_rss_kib": peak,
    }
