"""A Python gRPC client that talks to pkgdist agents (and the Admin API)
the way the controller does, so tests can send what the controller never
would: chunks before an offer, wrong lengths, flipped bytes, hostile paths.

Stubs are generated at import time from protos/pkgdist/v1/*.proto with
`protoc` and Debian's `grpc_python_plugin` into a temporary directory,
imported, and the directory is deleted again (the modules stay loaded).

    client = AgentClient(agent_address, ca_pem, cert_pem, key_pem)
    m = make_manifest("pkg", "1.0", {"a.bin": data})
    with client.transfer() as t:
        t.send_offer(m)
        need = t.recv()            # a TransferResponse
        t.send_chunk(0, chunk_bytes(m, {"a.bin": data}, 0))
        ...
    code, details = t.status()     # grpc.StatusCode and message at the end

Every wait is bounded: a Transfer call has a deadline (DEFAULT_DEADLINE),
and recv() raises AssertionError on a stream that ends or errors instead
of answering.
"""

import hashlib
import importlib
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading

import grpc

SOURCE_DIR = os.environ.get("PKGDIST_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
PROTO_ROOT = os.path.join(SOURCE_DIR, "protos")
PROTOS = ["pkgdist/v1/manifest.proto", "pkgdist/v1/agent.proto", "pkgdist/v1/controller.proto"]
CHUNK_SIZE = 1 << 20
DEFAULT_DEADLINE = 20.0


def _generate_stubs():
    """Runs protoc + grpc_python_plugin into a temp dir and imports the modules."""
    plugin = shutil.which("grpc_python_plugin")
    protoc = shutil.which("protoc")
    if plugin is None or protoc is None:
        raise AssertionError("protoc and grpc_python_plugin are needed (Debian packages "
                             "protobuf-compiler and protobuf-compiler-grpc)")
    out = tempfile.mkdtemp(prefix="pkgdist-pystubs-")
    try:
        r = subprocess.run([protoc, f"-I{PROTO_ROOT}", f"--python_out={out}",
                            f"--grpc_out={out}", f"--plugin=protoc-gen-grpc={plugin}", *PROTOS],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise AssertionError(f"protoc failed ({r.returncode}): {r.stderr.strip()}")
        sys.path.insert(0, out)
        try:
            mods = {name: importlib.import_module(f"pkgdist.v1.{name}")
                    for name in ("manifest_pb2", "agent_pb2", "agent_pb2_grpc",
                                 "controller_pb2", "controller_pb2_grpc")}
        finally:
            sys.path.remove(out)
        return mods
    finally:
        shutil.rmtree(out, ignore_errors=True)


_MODS = _generate_stubs()
manifest_pb2 = _MODS["manifest_pb2"]
agent_pb2 = _MODS["agent_pb2"]
agent_pb2_grpc = _MODS["agent_pb2_grpc"]
controller_pb2 = _MODS["controller_pb2"]
controller_pb2_grpc = _MODS["controller_pb2_grpc"]


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def channel(address, ca, cert=None, key=None):
    """A TLS channel to `address` trusting the CA file `ca`, presenting the
    client certificate `cert`/`key` (files) if given, none otherwise."""
    creds = grpc.ssl_channel_credentials(
        root_certificates=_read(ca),
        private_key=_read(key) if key else None,
        certificate_chain=_read(cert) if cert else None)
    return grpc.secure_channel(address, creds)


# --- manifests -------------------------------------------------------------


def make_manifest(name, version, files, chunk_size=CHUNK_SIZE):
    """A manifest for {relative path: bytes} (top-level regular files, in
    sorted order), cut into fixed `chunk_size` chunks. A file's sha256 is
    the sha256 of its chunks' digests in order (manifest.proto, FileEntry)."""
    m = manifest_pb2.Manifest(name=name, version=version)
    for i, path in enumerate(sorted(files)):
        data = files[path]
        digests = [hashlib.sha256(data[off:off + chunk_size]).digest()
                   for off in range(0, len(data), chunk_size)]
        m.files.add(path=path, type=manifest_pb2.ENTRY_TYPE_FILE, mode=0o644, size=len(data),
                    sha256=hashlib.sha256(b"".join(digests)).digest())
        for n, digest in enumerate(digests):
            off = n * chunk_size
            m.chunks.add(file=i, offset=off, length=len(data[off:off + chunk_size]),
                         sha256=digest)
        m.total_size += len(data)
    return m


def package_id(m):
    """The package id: sha256 of the manifest's deterministic serialization."""
    return hashlib.sha256(m.SerializeToString(deterministic=True)).digest()


def chunk_bytes(m, files, index):
    """The bytes of chunk `index` of manifest `m` built from `files`."""
    c = m.chunks[index]
    data = files[m.files[c.file].path]
    return data[c.offset:c.offset + c.length]


# --- the Agent API -----------------------------------------------------------


class TransferStream:
    """One Agent.Transfer call driven message by message."""

    def __init__(self, stub, deadline):
        self._requests = queue.Queue()
        self._call = stub.Transfer(iter(self._requests.get, None), timeout=deadline)
        self._responses = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._closed = False

    def _read(self):
        try:
            for resp in self._call:
                self._responses.put(resp)
        except grpc.RpcError:
            pass
        self._responses.put(None)

    def send(self, request):
        self._requests.put(request)

    def send_offer(self, m, pid=None, window_bytes=4 << 20):
        self.send(agent_pb2.TransferRequest(offer=agent_pb2.Offer(
            manifest=m, package_id=package_id(m) if pid is None else pid,
            window_bytes=window_bytes)))

    def send_chunk(self, index, data):
        self.send(agent_pb2.TransferRequest(chunk=agent_pb2.Chunk(index=index, data=data)))

    def send_commit(self):
        self.send(agent_pb2.TransferRequest(commit=agent_pb2.Commit()))

    def recv(self, timeout=DEFAULT_DEADLINE):
        """The next TransferResponse; AssertionError if the stream ends first
        (naming its status) or nothing comes within `timeout` seconds."""
        try:
            resp = self._responses.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no response from the agent within {timeout}s") from None
        if resp is None:
            self._responses.put(None)
            code, details = self.status()
            raise AssertionError(f"the agent ended the stream instead of answering: "
                                 f"{code.name}: {details}")
        return resp

    def recv_until_end(self, timeout=DEFAULT_DEADLINE):
        """Every response until the stream ends; AssertionError if it does
        not end within `timeout` seconds."""
        out = []
        while True:
            try:
                resp = self._responses.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"the stream did not end within {timeout}s; "
                                     f"got {out}") from None
            if resp is None:
                self._responses.put(None)
                return out
            out.append(resp)

    def close(self):
        """Half-closes the request side."""
        if not self._closed:
            self._closed = True
            self._requests.put(None)

    def status(self, timeout=DEFAULT_DEADLINE):
        """(grpc.StatusCode, details) once the call has ended."""
        self.close()
        self._reader.join(timeout)
        if self._reader.is_alive():
            raise AssertionError(f"the Transfer call did not end within {timeout}s")
        return self._call.code(), self._call.details()

    def cancel(self):
        self._call.cancel()
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cancel()
        self._reader.join(DEFAULT_DEADLINE)
        return False


class AgentClient:
    """A client of one agent's Agent service, acting as whoever `cert` names."""

    def __init__(self, address, ca, cert=None, key=None):
        self.channel = channel(address, ca, cert, key)
        self.stub = agent_pb2_grpc.AgentStub(self.channel)

    def transfer(self, deadline=DEFAULT_DEADLINE):
        return TransferStream(self.stub, deadline)

    def inventory(self, timeout=10.0):
        return self.stub.Inventory(agent_pb2.InventoryRequest(), timeout=timeout)

    def remove(self, name, version, timeout=10.0):
        return self.stub.Remove(agent_pb2.RemoveRequest(name=name, version=version),
                                timeout=timeout)

    def close(self):
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def call_code(fn, *args, **kwargs):
    """Calls fn; returns (StatusCode, details): OK if it returned normally."""
    try:
        fn(*args, **kwargs)
    except grpc.RpcError as e:
        return e.code(), e.details()
    return grpc.StatusCode.OK, ""


def publish(client, m, files, timeout=DEFAULT_DEADLINE):
    """Sends package `m` completely (offer, needed chunks, commit) and
    returns the final (StatusCode, details)."""
    with client.transfer(deadline=timeout) as t:
        t.send_offer(m)
        first = t.recv()
        if first.HasField("published"):
            return t.status()
        for i in first.need.indices:
            t.send_chunk(i, chunk_bytes(m, files, i))
        acked = set()
        while len(acked) < len(first.need.indices):
            resp = t.recv()
            acked.update(resp.ack.indices)
        t.send_commit()
        resp = t.recv()
        if not resp.HasField("published"):
            raise AssertionError(f"expected Published after commit, got {resp}")
        return t.status()
