"""An agent that accepts every call and never answers one.

A TLS server with an agent's certificate that speaks just enough HTTP/2 to
keep a gRPC connection up: it sends its SETTINGS, acknowledges the client's,
answers PINGs (so keepalive never closes the connection) and ignores every
stream. A call to it stays in flight until its deadline or until the caller
cancels it, however long that is, which a SIGSTOPped agent does not do
reliably: its TLS handshake never completes, so gRPC gives up on the
connection after its connect timeout and later calls fail fast.

Binds 127.0.0.1:0; close() stops it and closes every connection."""

import socket
import ssl
import struct
import threading

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS, PING = 0x4, 0x6
ACK = 0x1


def frame(kind, flags, payload=b"", stream=0):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


class BlackHole:
    def __init__(self, cert, key):
        self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._ctx.load_cert_chain(cert, key)
        self._ctx.set_alpn_protocols(["h2"])
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.calls = 0  # HEADERS frames seen: calls that went unanswered
        self._lock = threading.Lock()
        self._conns = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def _accept(self):
        while True:
            try:
                raw, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                if self._closed:
                    raw.close()
                    return
                self._conns.append(raw)
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw):
        try:
            conn = self._ctx.wrap_socket(raw, server_side=True)
            with self._lock:
                self._conns.append(conn)
            if self._read_exactly(conn, len(PREFACE)) != PREFACE:
                return
            conn.sendall(frame(SETTINGS, 0))
            while True:
                header = self._read_exactly(conn, 9)
                length = int.from_bytes(header[:3], "big")
                kind, flags = header[3], header[4]
                payload = self._read_exactly(conn, length)
                if kind == SETTINGS and not flags & ACK:
                    conn.sendall(frame(SETTINGS, ACK))
                elif kind == PING and not flags & ACK:
                    conn.sendall(frame(PING, ACK, payload))
                elif kind == 0x1:  # HEADERS: a call, never answered
                    with self._lock:
                        self.calls += 1
        except (OSError, ssl.SSLError, EOFError):
            pass  # the caller hung up, or close()
        finally:
            raw.close()

    @staticmethod
    def _read_exactly(conn, n):
        data = b""
        while len(data) < n:
            part = conn.recv(n - len(data))
            if not part:
                raise EOFError
            data += part
        return data

    def close(self):
        with self._lock:
            self._closed = True
            conns, self._conns = self._conns, []
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        except OSError:
            pass
        self._listener.close()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()
