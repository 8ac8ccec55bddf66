"""A fault-injecting TCP proxy for pkgdist's network fault tests.

The proxy listens on 127.0.0.1:0 and forwards every connection to one
upstream address (an agent). While it runs, a test can:

    drop_after(n, rst)  close the connection(s) once n more bytes went
                        client -> upstream (a random offset chosen by the
                        test); rst=True resets both sides (SO_LINGER 0),
                        else both are closed with FIN;
    drop_schedule(list) several drops, [(n, rst), ...], each n bytes after
                        the previous one (so a test need not race the
                        transfer to arm the next);
    drop_now(rst)       the same as drop_after, at once;
    stall()             stop forwarding both ways and hold new connections,
                        keeping every socket open: a pulled cable;
    set_delay(s)        deliver every chunk of data `s` seconds after it was
                        read (one-way latency, pipelined: throughput is not
                        divided by the delay);
    set_rate(bps)       throttle each direction of each connection to `bps`
                        bytes per second (token bucket);
    resume()            undo stall(), delay and rate: normal forwarding.

    with TcpProxy(("127.0.0.1", agent_port)) as proxy:
        register the agent at proxy.address; proxy.stall(); ...

Lifetime: the proxy's threads (one acceptor, four per connection: a reader
and a writer each way) poll their sockets with a short timeout and exit when
the connection ends or the proxy stops. stop() (called by the context
manager) closes every socket and joins every thread within a bound, and
raises if a thread is still alive then. Memory is bounded: each direction
queues at most QUEUE_CHUNKS chunks of at most CHUNK bytes.

Thread-safe: the control methods may be called from any thread.
"""

import queue
import socket
import struct
import threading
import time

CHUNK = 256 * 1024
QUEUE_CHUNKS = 64
POLL_S = 0.05
JOIN_TIMEOUT_S = 5.0


class _Link:
    """One proxied connection: the client socket, the upstream socket and
    the four threads that move bytes between them."""

    def __init__(self, proxy, client):
        self.proxy = proxy
        self.client = client
        self.upstream = None
        self.closed = threading.Event()
        self.threads = []

    def close(self, rst=False):
        """Closes both sockets (with RST if rst); idempotent."""
        with self.proxy._lock:
            if self.closed.is_set():
                return
            self.closed.set()
        for s in (self.client, self.upstream):
            if s is None:
                continue
            try:
                if rst:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                else:
                    s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass


class TcpProxy:
    """See the module comment."""

    def __init__(self, upstream, listen_host="127.0.0.1", connect_timeout=5.0):
        self.upstream = upstream
        self.connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._stopping = False
        self._stalled = False
        self._delay = 0.0
        self._rate = 0
        self._drop_at = None  # bytes_up value at which to drop
        self._drop_rst = False
        self._schedule = []    # drops armed after the current one
        self._links = []
        self._threads = []
        self.bytes_up = 0      # client -> upstream, forwarded
        self.bytes_down = 0    # upstream -> client, forwarded
        self.connections = 0
        self.drops = []        # (monotonic time, bytes_up) of each drop
        self.opened = []       # monotonic time each upstream connection opened
        self._dropped = threading.Condition(self._lock)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((listen_host, 0))
        self._listener.listen(64)
        self._listener.settimeout(POLL_S)
        self.address = "%s:%d" % self._listener.getsockname()
        self.port = self._listener.getsockname()[1]
        self._spawn(self._accept_loop, "proxy-accept")

    # --- lifetime ----------------------------------------------------------

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def stop(self):
        """Closes everything and joins every thread (bounded)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            links = list(self._links)
        for link in links:
            link.close(rst=True)
        try:
            self._listener.close()
        except OSError:
            pass
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in threads if t.is_alive()]
        if alive:
            raise AssertionError(f"tcp proxy threads still running after stop: {alive}")

    # --- control -----------------------------------------------------------

    def stall(self):
        """Stops forwarding in both directions, keeping sockets open."""
        with self._cond:
            self._stalled = True
            self._cond.notify_all()

    def resume(self):
        """Forwards normally again: no stall, no delay, no throttle, no armed drop."""
        with self._cond:
            self._stalled = False
            self._delay = 0.0
            self._rate = 0
            self._drop_at = None
            self._schedule = []
            self._cond.notify_all()

    def set_delay(self, seconds):
        with self._cond:
            self._delay = float(seconds)
            self._cond.notify_all()

    def set_rate(self, bytes_per_second):
        """0 removes the throttle."""
        with self._cond:
            self._rate = int(bytes_per_second)
            self._cond.notify_all()

    def drop_after(self, nbytes, rst=False):
        """Arms a drop: once `nbytes` more bytes have gone client -> upstream,
        every open connection is closed (RST if rst)."""
        with self._cond:
            self._drop_at = self.bytes_up + max(1, int(nbytes))
            self._drop_rst = rst
            self._schedule = []

    def drop_schedule(self, drops):
        """Arms drops[0] = (nbytes, rst) now and each next one when the
        previous one happened, counting from that moment."""
        drops = list(drops)
        with self._cond:
            self._drop_at = self.bytes_up + max(1, int(drops[0][0]))
            self._drop_rst = drops[0][1]
            self._schedule = drops[1:]

    def drop_now(self, rst=False):
        with self._cond:
            self._drop_at = None
            if self._schedule:
                nbytes, self._drop_rst = self._schedule.pop(0)
                self._drop_at = self.bytes_up + max(1, int(nbytes))
            links = list(self._links)
            self.drops.append((time.monotonic(), self.bytes_up))
            self._dropped.notify_all()
        for link in links:
            link.close(rst)

    def wait_dropped(self, count, timeout):
        """Waits until `count` drops happened; returns whether they did."""
        with self._dropped:
            return self._dropped.wait_for(lambda: len(self.drops) >= count, timeout)

    def open_connections(self):
        with self._lock:
            return sum(1 for link in self._links if not link.closed.is_set())

    # --- internals ---------------------------------------------------------

    def _spawn(self, fn, name, *args):
        t = threading.Thread(target=fn, args=args, name=name, daemon=True)
        with self._lock:
            self._threads = [x for x in self._threads if x.is_alive()]
            self._threads.append(t)
        t.start()
        return t

    def _wait_not_stalled(self, link):
        """Blocks while stalled; False when the link or the proxy ended."""
        with self._cond:
            while self._stalled and not self._stopping and not link.closed.is_set():
                self._cond.wait(POLL_S)
            return not self._stopping and not link.closed.is_set()

    def _accept_loop(self):
        while True:
            with self._lock:
                if self._stopping:
                    return
            try:
                client, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            link = _Link(self, client)
            with self._lock:
                if self._stopping:
                    client.close()
                    return
                self._links = [x for x in self._links if not x.closed.is_set()]
                self._links.append(link)
                self.connections += 1
            self._spawn(self._open_link, "proxy-open", link)

    def _open_link(self, link):
        # A stalled proxy holds new connections (the client's SYN was
        # answered by the kernel, nothing else moves) until resume().
        if not self._wait_not_stalled(link):
            link.close()
            return
        try:
            upstream = socket.create_connection(self.upstream, timeout=self.connect_timeout)
        except OSError:
            link.close(rst=True)
            return
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link.client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link.upstream = upstream
        with self._lock:
            self.opened.append(time.monotonic())
        if link.closed.is_set():
            upstream.close()
            return
        for s in (link.client, upstream):
            s.settimeout(POLL_S)
        for src, dst, up in ((link.client, upstream, True), (upstream, link.client, False)):
            q = queue.Queue(QUEUE_CHUNKS)
            self._spawn(self._reader, "proxy-read", link, src, q)
            self._spawn(self._writer, "proxy-write", link, dst, q, up)

    def _reader(self, link, src, q):
        while self._wait_not_stalled(link):
            try:
                data = src.recv(CHUNK)
            except socket.timeout:
                continue
            except OSError:
                data = b""
            with self._lock:
                due = time.monotonic() + self._delay
            while not link.closed.is_set():
                try:
                    q.put((due, data), timeout=POLL_S)
                    break
                except queue.Full:
                    continue
            if not data:
                return

    def _writer(self, link, dst, q, up):
        bucket = _Bucket()
        while not link.closed.is_set():
            try:
                due, data = q.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if not data:  # EOF from the source: half-close towards dst
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    link.close()
                return
            if not self._sleep_until(link, due):
                return
            if not self._send(link, dst, data, up, bucket):
                return

    def _sleep_until(self, link, due):
        while not link.closed.is_set():
            left = due - time.monotonic()
            if left <= 0:
                return True
            link.closed.wait(min(left, POLL_S))
        return False

    def _send(self, link, dst, data, up, bucket):
        """Sends data in pieces, honouring stall, rate and an armed drop."""
        view = memoryview(data)
        while view:
            if not self._wait_not_stalled(link):
                return False
            with self._lock:
                rate = self._rate
                piece = len(view)
                if rate:
                    piece = min(piece, max(1024, rate // 50))
                drop = False
                if up and self._drop_at is not None:
                    left = self._drop_at - self.bytes_up
                    if left <= piece:
                        piece, drop = left, True
            if rate and not bucket.take(piece, rate, link.closed):
                return False
            try:
                sent = dst.send(view[:piece]) if piece else 0
            except socket.timeout:
                continue
            except OSError:
                link.close()
                return False
            with self._lock:
                if up:
                    self.bytes_up += sent
                else:
                    self.bytes_down += sent
            view = view[sent:]
            if drop and sent == piece:
                with self._lock:
                    rst = self._drop_rst
                self.drop_now(rst)
                return False
        return True


class _Bucket:
    """A token bucket of one direction of one connection."""

    def __init__(self):
        self.tokens = 0.0
        self.last = time.monotonic()

    def take(self, n, rate, closed):
        """Waits until n bytes may go at `rate` bytes/s; False if `closed` is set first."""
        burst = max(n, rate / 20)
        while True:
            now = time.monotonic()
            self.tokens = min(burst, self.tokens + (now - self.last) * rate)
            self.last = now
            if self.tokens >= n:
                self.tokens -= n
                return True
            if closed.wait(min(POLL_S, (n - self.tokens) / rate)):
                return False

