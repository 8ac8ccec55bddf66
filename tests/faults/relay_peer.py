"""Stand-ins for a site's agents in the relay tests (test_relays.py), run as
processes of their own inside a network namespace (`ip netns exec NS
python3 relay_peer.py ...`), since a namespace is per process:

- `probe`: calls Agent.FetchChunks on a relay once per identity given
  (--as NAME=CERT,KEY), asking for the first chunks of a package, and
  prints one JSON line per call: {"as", "code", "details", "chunks",
  "bytes", "sha256"}; sha256 is that of the bytes served, in order.
- `impostor`: a gRPC server with a valid certificate (--cert/--key, an
  agent's, but not the relay's) that would serve FetchChunks to anyone.
  It writes its port to --port-file once it listens and appends a line to
  --calls for every FetchChunks call it receives, then keeps the caller
  waiting (a Waiting message every second, for at most --hold seconds).
  The peer that reaches it instead of its relay must refuse the handshake,
  so --calls stays empty.
"""

import argparse
import hashlib
import json
import os
import sys
import threading
import time
from concurrent import futures

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import grpc  # noqa: E402
from agent_client import agent_pb2, agent_pb2_grpc  # noqa: E402


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def probe(args):
    indices = [int(i) for i in args.indices.split(",")]
    pid = bytes.fromhex(args.package_id)
    for who in args.identities:
        name, files = who.split("=", 1)
        cert, key = files.split(",", 1)
        creds = grpc.ssl_channel_credentials(root_certificates=_read(args.ca),
                                             private_key=_read(key), certificate_chain=_read(cert))
        # The relay's certificate names it (DNS:NAME), not the site's address.
        ch = grpc.secure_channel(args.address, creds,
                                 options=[("grpc.ssl_target_name_override", args.server_name)])
        stub = agent_pb2_grpc.AgentStub(ch)
        out = {"as": name, "code": "OK", "details": "", "chunks": 0, "bytes": 0}
        digest = hashlib.sha256()
        try:
            for resp in stub.FetchChunks(agent_pb2.FetchChunksRequest(package_id=pid,
                                                                      indices=indices),
                                         timeout=args.timeout):
                if resp.HasField("chunk"):
                    out["chunks"] += max(1, resp.chunk.count)
                    out["bytes"] += len(resp.chunk.data)
                    digest.update(resp.chunk.data)
        except grpc.RpcError as e:
            out["code"], out["details"] = e.code().name, e.details() or ""
        finally:
            ch.close()
        out["sha256"] = digest.hexdigest()
        print(json.dumps(out), flush=True)
    return 0


class Impostor(agent_pb2_grpc.AgentServicer):
    def __init__(self, calls_path, hold):
        self.calls_path = calls_path
        self.hold = hold
        self.lock = threading.Lock()

    def FetchChunks(self, request, context):
        with self.lock, open(self.calls_path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"peer": context.peer(), "indices": len(request.indices),
                                "auth": {k: [v.decode(errors="replace") for v in vs]
                                         for k, vs in context.auth_context().items()}}) + "\n")
        deadline = time.monotonic() + self.hold
        while context.is_active() and time.monotonic() < deadline:
            yield agent_pb2.FetchChunksResponse(waiting=agent_pb2.Waiting())
            time.sleep(1)


def impostor(args):
    ca, key, cert = _read(args.ca), _read(args.key), _read(args.cert)
    open(args.calls, "a").close()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    agent_pb2_grpc.add_AgentServicer_to_server(Impostor(args.calls, args.hold), server)
    creds = grpc.ssl_server_credentials([(key, cert)], root_certificates=ca,
                                        require_client_auth=True)
    port = server.add_secure_port(f"{args.host}:0", creds)
    if port == 0:
        print(f"cannot listen on {args.host}", file=sys.stderr)
        return 1
    server.start()
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{port}\n")
    os.replace(tmp, args.port_file)
    print(f"impostor listening on {args.host}:{port} as {args.cert}", flush=True)
    server.wait_for_termination()
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("probe")
    p.add_argument("--address", required=True)
    p.add_argument("--server-name", required=True, help="the relay's name (its certificate's DNS)")
    p.add_argument("--ca", required=True)
    p.add_argument("--as", dest="identities", action="append", required=True,
                   help="NAME=CERT,KEY: call as this certificate (repeatable)")
    p.add_argument("--package-id", required=True, help="hex")
    p.add_argument("--indices", default="0,1,2,3")
    p.add_argument("--timeout", type=float, default=10.0)
    i = sub.add_parser("impostor")
    i.add_argument("--host", required=True)
    i.add_argument("--ca", required=True)
    i.add_argument("--cert", required=True)
    i.add_argument("--key", required=True)
    i.add_argument("--port-file", required=True)
    i.add_argument("--calls", required=True)
    i.add_argument("--hold", type=float, default=60.0)
    args = ap.parse_args(argv)
    return probe(args) if args.cmd == "probe" else impostor(args)


if __name__ == "__main__":
    sys.exit(main())
