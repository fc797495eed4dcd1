"""A TCP proxy that puts production's network faults between the app and a real server (PostgreSQL,
Redis, a webhook receiver), for the fault scenarios in the tests.

    proxy = FaultProxy(("127.0.0.1", 5432))      # listens on 127.0.0.1:<proxy.port>
    proxy.blip()                                 # every open connection cut, new ones refused ...
    proxy.restore()                              # ... until the server is back
    proxy.cut_on(b"INSERT INTO assets")          # the same, at the moment the client sends this
    proxy.cut_on(b"COMMIT", after=b"INSERT INTO assets", forward=True)  # a commit that lands unheard
    proxy.black_hole()                           # connections accepted, bytes read, nothing answered
    proxy.delay(0.2)                             # every forwarded chunk waits this long first

A cut resets both sides (RST), as a server restart or a dropped NAT entry does; a refused connection is
accepted and reset at once, as a port with nothing listening behind a load balancer is. `refused` and
`cut` count what the proxy did, so a test waits on "the app tried and failed" instead of sleeping.
The trigger of `cut_on` is not forwarded (the server never sees the statement that carried it) unless
`forward`: then the server gets it and answers, and the answer is what is lost.
"""

from __future__ import annotations

import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable

__all__ = ["FaultProxy", "wait_for"]

chunk_bytes_max = 65536
poll_s = 0.05  # how often an idle connection looks at the proxy's mode


def wait_for(predicate: Callable[[], object], timeout_s: float, what: str) -> object:
    """Poll `predicate` until it returns something true; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


def _reset(sock: socket.socket) -> None:
    """Close with RST, not FIN: the peer sees 'connection reset', as after a crash."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)  # wakes the connection's own thread if it is waiting
    except OSError:
        pass
    sock.close()


class _Connection:
    def __init__(self, proxy: FaultProxy, client: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.server: socket.socket | None = None
        self.tail = b""  # the end of the last client chunk, so a trigger split across chunks is seen
        self.armed = False  # `after` was seen on this connection
        self.cut_on_reply = False  # the trigger went through: cut instead of passing the server's answer
        self.closed = threading.Event()

    def close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        _reset(self.client)
        if self.server is not None:
            _reset(self.server)

    def run(self) -> None:
        try:
            if self.proxy.mode == "black_hole":
                self._swallow()
                return
            self.server = socket.create_connection(self.proxy.target, timeout=5)
            self._pump()
        except OSError:
            pass
        finally:
            self.close()
            self.proxy._forget(self)

    def _swallow(self) -> None:
        while not self.closed.is_set() and self.proxy.mode == "black_hole":
            self.client.settimeout(poll_s)
            try:
                if not self.client.recv(chunk_bytes_max):
                    return
            except TimeoutError:
                continue

    def _pump(self) -> None:
        assert self.server is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.client, selectors.EVENT_READ, self.server)
            selector.register(self.server, selectors.EVENT_READ, self.client)
            while not self.closed.is_set():
                for key, _ in selector.select(poll_s):
                    source, sink = key.fileobj, key.data
                    data = source.recv(chunk_bytes_max)
                    if not data:
                        return
                    if source is self.server and self.cut_on_reply:
                        self.proxy._fire()
                        return
                    if source is self.client and self.proxy._triggered(self, data):
                        if not self.proxy.trigger_forward:
                            self.proxy._fire()
                            return
                        self.cut_on_reply = True
                    if self.proxy.delay_s:
                        time.sleep(self.proxy.delay_s)  # the fault itself: latency on the wire
                    if self.proxy.mode == "black_hole":
                        continue  # went dark mid-connection: read on, answer nothing
                    sink.sendall(data)


class FaultProxy:
    """One listening port in front of `target`; usable as a context manager."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.mode = "pass"  # pass | refuse | black_hole
        self.delay_s = 0.0
        self.trigger: bytes | None = None
        self.trigger_after: bytes | None = None
        self.trigger_forward = False
        self.accepted = 0
        self.refused = 0
        self.cut = 0
        self.lock = threading.Lock()
        self.connections: set[_Connection] = set()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(poll_s)  # so that close() is noticed
        self.port = self.listener.getsockname()[1]
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._accept, name=f"faultproxy-{self.port}", daemon=True)
        self.thread.start()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # The faults.

    def blip(self) -> None:
        """The server goes away: open connections are cut, new ones refused until `restore()`."""
        with self.lock:
            self.mode = "refuse"
            open_now = list(self.connections)
        self._cut(open_now)

    def cut_on(self, pattern: bytes, *, after: bytes | None = None, forward: bool = False) -> None:
        """Blip at the moment a client sends `pattern` (e.g. a statement's SQL): the chunk carrying it is
        dropped, so the server never sees it. `after`: only on a connection that sent this first (the
        COMMIT of one transaction). `forward`: the server gets the chunk and the blip comes with its answer,
        which the client never hears (a commit that landed, reported as a lost connection)."""
        assert pattern and after != b"", "an empty trigger would fire at once"
        with self.lock:
            self.trigger, self.trigger_after, self.trigger_forward = pattern, after, forward

    def black_hole(self) -> None:
        """Connections are accepted and read, never answered (a hung host, a dropping firewall)."""
        with self.lock:
            self.mode = "black_hole"

    def delay(self, seconds: float) -> None:
        assert seconds >= 0
        self.delay_s = seconds

    def restore(self) -> None:
        """Everything passes again; the connections cut or swallowed stay gone."""
        with self.lock:
            went_dark = self.mode == "black_hole"
            self.mode, self.trigger, self.trigger_after, self.delay_s = "pass", None, None, 0.0
            swallowed = list(self.connections) if went_dark else []
        self._cut(swallowed)

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()
        with self.lock:
            open_now = list(self.connections)
        for connection in open_now:
            connection.close()
        self.thread.join(5)

    # The machinery.

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            client.settimeout(None)
            with self.lock:
                if self.mode == "refuse":
                    self.refused += 1
                    _reset(client)
                    continue
                self.accepted += 1
                connection = _Connection(self, client)
                self.connections.add(connection)
            threading.Thread(target=connection.run, name=f"faultproxy-{self.port}-conn", daemon=True).start()

    def _triggered(self, connection: _Connection, data: bytes) -> bool:
        with self.lock:
            pattern, after = self.trigger, self.trigger_after
            if pattern is None:
                return False
            seen = connection.tail + data
            connection.tail = seen[-max(len(pattern), len(after or b"")):]
            if after is not None and not connection.armed:
                connection.armed = after in seen
                return False
            if pattern not in seen:
                return False
            self.trigger = None
            return True

    def _fire(self) -> None:
        with self.lock:
            self.mode = "refuse"
            open_now = list(self.connections)
        self._cut(open_now)

    def _cut(self, connections: list[_Connection]) -> None:
        for connection in connections:
            if not connection.closed.is_set():
                self.cut += 1
                connection.close()

    def _forget(self, connection: _Connection) -> None:
        with self.lock:
            self.connections.discard(connection)
