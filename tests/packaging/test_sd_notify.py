"""sd_notify, as the Type=notify units rely on it: the built controller and
agent, given $NOTIFY_SOCKET (a datagram socket this test binds, as systemd
does), send READY=1 once they serve and STOPPING=1 when SIGTERM arrives,
then exit 0.

"Once they serve" is checked three ways: when READY=1 is read, the port
file exists and the port accepts connections (the controller answers an
admin call), and the kernel's receive time of the datagram is not before
the port file was written."""

import os
import signal
import socket
import struct
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import harness  # noqa: E402
from harness import Cluster  # noqa: E402

# SO_TIMESTAMPNS (Linux asm-generic; Python's socket module lacks the name):
# every datagram carries its receive time as a struct timespec.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
TIMESPEC = struct.Struct("@qq")
WAIT = harness.START_TIMEOUT


class NotifySocket:
    """A bound AF_UNIX datagram socket: what systemd gives a Type=notify
    service as $NOTIFY_SOCKET."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.bind(path)

    def close(self):
        self.sock.close()

    def receive(self, proc, timeout, what):
        """The next message as (its lines, kernel receive time in ns). Fails
        if `proc` exits first or nothing arrives within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            self.sock.settimeout(0.05)
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(TIMESPEC.size))
            except socket.timeout:
                if not proc.alive():
                    raise AssertionError(f"{proc.name} {proc.describe_exit()} before sending "
                                         f"{what}; its log:\n{proc.tail()}") from None
                if time.monotonic() >= deadline:
                    raise AssertionError(f"no {what} from {proc.name} within {timeout}s; "
                                         f"its log:\n{proc.tail()}") from None
                continue
            stamp = next((TIMESPEC.unpack(d[:TIMESPEC.size]) for level, kind, d in ancillary
                          if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS), None)
            if stamp is None:
                raise AssertionError("the datagram carries no receive time")
            return data.decode().split("\n"), stamp[0] * 10**9 + stamp[1]


class SdNotifyTest(unittest.TestCase):

    def start(self, c, name, argv, port_file):
        """Starts argv with $NOTIFY_SOCKET set (through env(1), which execs it:
        the pid is the program's) and returns (its Proc, the socket)."""
        notify = NotifySocket(os.path.join(c.dir, f"{name}.notify"))
        self.addCleanup(notify.close)
        log = os.path.join(c.dir, "logs", f"{name}.log")
        os.makedirs(os.path.dirname(log), exist_ok=True)
        proc = harness.Proc(name, ["env", f"NOTIFY_SOCKET={notify.path}", *argv], log)
        c.procs.append(proc)
        return proc, notify

    def check_ready_then_stopping(self, proc, notify, port_file, serves):
        """READY=1 once the port file exists and serves(port) holds; then, after
        SIGTERM, STOPPING=1 and exit status 0."""
        lines, received = notify.receive(proc, WAIT, "READY=1")
        self.assertEqual(lines, ["READY=1"])
        self.assertTrue(os.path.exists(port_file), "READY=1 came before the port file")
        self.assertLessEqual(os.stat(port_file).st_mtime_ns, received,
                             "the port file was written after READY=1 was sent")
        with open(port_file) as f:
            port = int(f.read())
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        serves(port)

        sent = time.time_ns()
        proc.expected_exit = True
        proc.popen.send_signal(signal.SIGTERM)
        lines, received = notify.receive(proc, WAIT, "STOPPING=1")
        self.assertEqual(lines, ["STOPPING=1"])
        self.assertGreaterEqual(received, sent)
        self.assertEqual(proc.popen.wait(timeout=WAIT), 0, proc.tail())

    def test_controller_notifies_ready_once_serving_and_stopping_on_sigterm(self):
        # The admin API answers when READY=1 arrives.
        with Cluster() as c:
            port_file = os.path.join(c.dir, "controller.port")
            argv = [harness.binary("pkgdist-controller"), "--listen", "127.0.0.1:0",
                    "--port-file", port_file, "--state-dir", c.controller_state_dir,
                    *c.tls_flags("controller")]
            proc, notify = self.start(c, "controller", argv, port_file)

            def answers(port):
                c.controller_port = port
                self.assertEqual(c.ctl("agent", "list").get("agents", []), [])

            self.check_ready_then_stopping(proc, notify, port_file, answers)

    def test_agent_notifies_ready_once_serving_and_stopping_on_sigterm(self):
        # The agent's port accepts connections when READY=1 arrives.
        with Cluster(agents=["dp1"]) as c:
            port_file = os.path.join(c.dir, "agent.port")
            argv = [harness.binary("pkgdist-agent"), "--name", "dp1", "--listen", "127.0.0.1:0",
                    "--port-file", port_file, "--root", os.path.join(c.dir, "root"),
                    *c.tls_flags("dp1")]
            proc, notify = self.start(c, "agent-dp1", argv, port_file)
            self.check_ready_then_stopping(proc, notify, port_file, lambda port: None)


if __name__ == "__main__":
    unittest.main()
