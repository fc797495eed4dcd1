"""The app served for real by uvicorn on a free local port, in a thread of the test process (streams and
browsers need a real server; the test still reaches the app's context to drive workers)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn

from vidfactory.api.app import create_app
from vidfactory.api.context import AppContext
from vidfactory.settings import Settings

start_deadline_s = 60.0


@dataclass
class LiveServer:
    url: str
    ctx: AppContext


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def live_server(settings: Settings, workers: int = 0) -> Iterator[LiveServer]:
    app = create_app(settings, workers=workers)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False))
    thread = threading.Thread(target=server.run, name="live-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_deadline_s
    while not server.started:  # polled: uvicorn offers no event to wait on
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", app.state.ctx)
    finally:
        server.should_exit = True
        thread.join(start_deadline_s)
