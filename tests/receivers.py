"""A real local HTTP server standing in for a tenant's webhook receiver: records every request and
answers from a script (status per path, in order, the last one repeating)."""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    server: ThreadingHTTPServer
    thread: threading.Thread
    requests: list[Received] = field(default_factory=list)
    script: dict[str, list[tuple[int, dict[str, str]]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def answer(self, path: str, *responses: int | tuple[int, dict[str, str]]) -> None:
        self.script[path] = [r if isinstance(r, tuple) else (r, {}) for r in responses]

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    def _respond(self, path: str) -> tuple[int, dict[str, str]]:
        with self.lock:
            responses = self.script.get(path) or [(200, {})]
            return responses.pop(0) if len(responses) > 1 else responses[0]


def start_receiver() -> Receiver:
    receiver: Receiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            with receiver.lock:
                receiver.requests.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            status, headers = receiver._respond(self.path)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    receiver = Receiver(server=server, thread=thread)
    thread.start()
    return receiver


@dataclass
class BlackHole:
    """Accepts connections and never answers: a webhook endpoint that hangs every sender."""

    listener: socket.socket
    thread: threading.Thread
    connections: list[socket.socket] = field(default_factory=list)
    stopped: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}{path}"

    @property
    def accepted(self) -> int:
        return len(self.connections)

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()
        for connection in self.connections:
            connection.close()


def start_black_hole() -> BlackHole:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)

    def accept() -> None:
        while not hole.stopped.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            hole.connections.append(connection)

    hole = BlackHole(listener=listener, thread=threading.Thread(target=accept, daemon=True))
    hole.thread.start()
    return hole
