"""Webhook latency for a healthy endpoint beside a black-holed one (accepts connections, never answers).

Two tenants on PostgreSQL: one registers an endpoint that black-holes, the other a healthy local receiver.
For `produce_s` seconds an event for each is recorded every `interval_s`; one dispatcher thread (the
loop `serve` and `worker` run, default settings) delivers. Latency: the event's timestamp to the
healthy receiver's receipt. Events still undelivered `drain_s` after the last one are reported as such.
Run: PYTHONPATH=src .venv/bin/python bench/webhook_black_hole.py [postgres admin URL]
"""

from __future__ import annotations

import json
import socket
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import fresh_postgres, git_revision, machine, sized  # noqa: E402
from vidfactory.bootstrap import upgrade_and_seed  # noqa: E402
from vidfactory.db.session import make_engine, make_session_factory  # noqa: E402
from vidfactory.notify.delivery import start_dispatcher  # noqa: E402
from vidfactory.notify.endpoints import create_endpoint  # noqa: E402
from vidfactory.notify.events import record_event  # noqa: E402
from vidfactory.settings import Settings  # noqa: E402
from vidfactory.tenancy import create_tenant  # noqa: E402

default_postgres = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
produce_s = sized(20.0, 2.0)
interval_s = 0.1
drain_s = 60.0


class Healthy(BaseHTTPRequestHandler):
    received: dict[str, float] = {}  # event timestamp (ISO) → seconds from it to receipt

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))))
        sent = datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00")).timestamp()
        Healthy.received[self.headers["webhook-id"]] = time.time() - sent
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        return


def black_hole() -> tuple[int, list[socket.socket]]:
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            held.append(listener.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    return listener.getsockname()[1], held


def percentile(sorted_values: list[float], fraction: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * fraction))]


def main() -> None:
    url, drop = fresh_postgres(sys.argv[1] if len(sys.argv) > 1 else default_postgres)
    engine = make_engine(url)
    upgrade_and_seed(engine)
    sessions = make_session_factory(engine)
    healthy = ThreadingHTTPServer(("127.0.0.1", 0), Healthy)
    threading.Thread(target=healthy.serve_forever, daemon=True).start()
    hole_port, held = black_hole()
    settings = Settings(data_dir=Path(tempfile.mkdtemp()), database_url=url, webhook_allowed_networks=["127.0.0.0/8"])
    with sessions.begin() as session:
        noisy, quiet = (create_tenant(session, f"bench-{uuid.uuid4().hex[:8]}") for _ in range(2))
        create_endpoint(session, noisy.id, f"http://127.0.0.1:{hole_port}/hook", "", [])
        create_endpoint(session, quiet.id, f"http://127.0.0.1:{healthy.server_address[1]}/hook", "", [])
    stop = threading.Event()
    start_dispatcher(settings, sessions, stop)
    produced, start = 0, time.monotonic()
    while time.monotonic() - start < produce_s:
        with sessions.begin() as session:
            for tenant in (noisy, quiet):
                record_event(session, tenant.id, "billing.voucher_granted", {"tokens": produced + 1})
        produced += 1
        time.sleep(interval_s)
    deadline = time.monotonic() + drain_s
    while len(Healthy.received) < produced and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    latencies = sorted(Healthy.received.values())
    print(f"# webhook latency beside a black hole — {machine()}, commit {git_revision()}")
    print("| healthy events | delivered | p50 s | p99 s | max s | connections to the black hole |")
    print("|---|---|---|---|---|---|")
    if latencies:
        print(f"| {produced} | {len(latencies)} | {percentile(latencies, 0.5):.3f} | "
              f"{percentile(latencies, 0.99):.3f} | {latencies[-1]:.3f} | {len(held)} |")
    else:
        print(f"| {produced} | 0 | — | — | — | {len(held)} |")
    engine.dispose()
    drop()


if __name__ == "__main__":
    main()
