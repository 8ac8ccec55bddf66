"""A Python client of the controller's Admin API built only from protos/ and
Debian's python3-grpcio: no C++ code of ours is involved.

    stubs = api_client.Stubs()          # protoc + grpc_python_plugin into a temp dir
    try:
        with api_client.admin_channel(cluster) as channel:
            admin = stubs.admin(channel)
            admin.ListAgents(stubs.pb.ListAgentsRequest())
    finally:
        stubs.close()

The reflection and health services are called without their .proto files:
the requests are hand-encoded protobuf bytes sent with the generic
channel.unary_unary / channel.stream_stream, and the answers are decoded
with the small wire-format reader below (enough to find the fields we read).
"""

import glob
import importlib
import os
import shutil
import subprocess
import sys
import tempfile

import grpc

import harness

REFLECTION_METHOD = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
HEALTH_CHECK_METHOD = "/grpc.health.v1.Health/Check"
HEALTH_SERVING = 1  # grpc.health.v1.HealthCheckResponse.ServingStatus.SERVING

# Bound on one unary call of the tests.
CALL_TIMEOUT = 20.0


class Stubs:
    """Python stubs generated from protos/pkgdist/v1/*.proto at construction,
    into a temporary directory put on sys.path; close() removes both."""

    def __init__(self):
        protoc = shutil.which("protoc")
        plugin = shutil.which("grpc_python_plugin")
        if not protoc or not plugin:
            raise AssertionError("protoc and grpc_python_plugin are needed (Debian packages "
                                 "protobuf-compiler and protobuf-compiler-grpc)")
        protos = os.path.join(harness.SOURCE_DIR, "protos")
        sources = sorted(glob.glob(os.path.join(protos, "pkgdist", "v1", "*.proto")))
        if not sources:
            raise AssertionError(f"no .proto files under {protos}/pkgdist/v1")
        self.dir = tempfile.mkdtemp(prefix="pkgdist-pystubs-")
        r = subprocess.run([protoc, "-I", protos, f"--python_out={self.dir}",
                            f"--grpc_out={self.dir}", f"--plugin=protoc-gen-grpc={plugin}",
                            *sources], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise AssertionError(f"protoc failed ({r.returncode}): {r.stderr.strip()}")
        sys.path.insert(0, self.dir)
        importlib.invalidate_caches()
        self.pb = importlib.import_module("pkgdist.v1.controller_pb2")
        self.grpc = importlib.import_module("pkgdist.v1.controller_pb2_grpc")
        self.manifest = importlib.import_module("pkgdist.v1.manifest_pb2")

    def admin(self, channel):
        return self.grpc.AdminStub(channel)

    def close(self):
        if self.dir in sys.path:
            sys.path.remove(self.dir)
        for name in [m for m in sys.modules if m == "pkgdist" or m.startswith("pkgdist.")]:
            del sys.modules[name]
        shutil.rmtree(self.dir, ignore_errors=True)


def channel(cluster, stem="admin"):
    """A mutual-TLS channel to the cluster's controller presenting
    certs/STEM.pem (the controller's certificate carries IP:127.0.0.1)."""

    def read(path):
        with open(path, "rb") as f:
            return f.read()

    creds = grpc.ssl_channel_credentials(
        root_certificates=read(os.path.join(cluster.certs, "ca.pem")),
        private_key=read(cluster.key(stem)),
        certificate_chain=read(cluster.cert(stem)))
    return grpc.secure_channel(cluster.controller_address, creds)


def admin_channel(cluster):
    return channel(cluster, "admin")


def upload_requests(pb, name, version, entries, end=True):
    """The ImportPackage request stream for `entries`, a list of
    (path, type, mode, content bytes or link target): header, then each
    entry followed by its content in pieces of at most 256 KiB, then the
    end message unless end is False."""
    yield pb.ImportPackageRequest(header=pb.ImportHeader(name=name, version=version))
    for path, etype, mode, content in entries:
        if etype == "file":
            yield pb.ImportPackageRequest(entry=pb.ImportEntry(
                path=path, type=1, mode=mode, size=len(content)))
            for off in range(0, len(content), 256 * 1024):
                yield pb.ImportPackageRequest(data=pb.ImportData(data=content[off:off + 256 * 1024]))
        elif etype == "dir":
            yield pb.ImportPackageRequest(entry=pb.ImportEntry(path=path, type=2, mode=mode))
        elif etype == "symlink":
            yield pb.ImportPackageRequest(entry=pb.ImportEntry(path=path, type=3, mode=0o777,
                                                               link_target=content))
        else:
            raise ValueError(f"unknown entry type {etype}")
    if end:
        yield pb.ImportPackageRequest(end=pb.ImportEnd())


# --- protobuf wire format, just enough for reflection and health ----------


def _varint(data, pos):
    value, shift = 0, 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def decode_fields(data):
    """[(field number, wire type, value)] of one message: ints for varints,
    bytes for length-delimited fields (fixed32/64 are skipped)."""
    fields, pos = [], 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            value = bytes(data[pos:pos + length])
            if len(value) != length:
                raise ValueError("truncated length-delimited field")
            pos += length
        elif wire == 1:
            pos += 8
            continue
        elif wire == 5:
            pos += 4
            continue
        else:
            raise ValueError(f"unsupported wire type {wire}")
        fields.append((number, wire, value))
    return fields


def _identity(b):
    return b


def list_services(chan, timeout=CALL_TIMEOUT):
    """Service names from grpc.reflection.v1alpha ServerReflectionInfo with
    a list_services request (ServerReflectionRequest field 7 = "")."""
    call = chan.stream_stream(REFLECTION_METHOD, request_serializer=_identity,
                              response_deserializer=_identity)
    responses = list(call(iter([b"\x3a\x00"]), timeout=timeout))
    names = []
    for response in responses:
        for number, wire, value in decode_fields(response):
            if number == 7 and wire == 2:  # error_response
                raise AssertionError(f"reflection answered an error: {decode_fields(value)}")
            if number != 6 or wire != 2:  # list_services_response
                continue
            for n, w, service in decode_fields(value):  # repeated ServiceResponse service = 1
                if n == 1 and w == 2:
                    for sn, sw, name in decode_fields(service):  # string name = 1
                        if sn == 1 and sw == 2:
                            names.append(name.decode())
    return names


def health_status(chan, service="", timeout=CALL_TIMEOUT):
    """grpc.health.v1.Health/Check's status (1 = SERVING) for `service`."""
    call = chan.unary_unary(HEALTH_CHECK_METHOD, request_serializer=_identity,
                            response_deserializer=_identity)
    encoded = service.encode()
    request = b"" if not encoded else b"\x0a" + bytes([len(encoded)]) + encoded
    response = call(request, timeout=timeout)
    for number, wire, value in decode_fields(response):
        if number == 1 and wire == 0:
            return value
    return 0  # UNKNOWN: proto3 leaves a zero enum out
