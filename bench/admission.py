"""Submissions per second with holds, 32 concurrent clients, SQLite vs PostgreSQL, side by side.

Two layers, each on both databases: (1) HTTP — `vidfactory serve --workers 0` in its own process, 32
client threads POSTing /v1/videos (auth, tokenize, quote, hold + insert job in one transaction);
(2) ledger — 32 threads calling `ledger.hold` directly, one transaction each.
Run: .venv/bin/python bench/admission.py [postgres admin URL]
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import httpx  # noqa: E402

from common import fresh_postgres, git_revision, machine  # noqa: E402
from vidfactory.billing import ledger  # noqa: E402
from vidfactory.bootstrap import upgrade_and_seed  # noqa: E402
from vidfactory.db.session import make_engine, make_session_factory  # noqa: E402
from vidfactory.db.types import utcnow  # noqa: E402
from vidfactory.tenancy import create_key, create_tenant  # noqa: E402

clients = 32
http_requests_per_client = 20
holds_per_client = 50
default_postgres = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def main() -> None:
    postgres_admin = sys.argv[1] if len(sys.argv) > 1 else default_postgres
    root = Path(tempfile.mkdtemp(prefix="vf-admission-"))
    print(f"# admission throughput — {machine()}, commit {git_revision()}, {clients} concurrent clients")
    print("| database | HTTP submissions/s (1 tenant) | p50 ms | p99 ms | ledger holds/s, 1 tenant "
          f"| ledger holds/s, {clients} tenants |")
    print("|---|---|---|---|---|---|")
    for name, url, drop in [("SQLite (WAL)", f"sqlite:///{root / 'bench.db'}", None),
                            ("PostgreSQL", *fresh_postgres(postgres_admin))]:
        engine = make_engine(url)
        upgrade_and_seed(engine)
        sessions = make_session_factory(engine)
        http_rate, p50, p99 = http_submissions(url, root, sessions)
        one_tenant = ledger_holds(sessions, tenants=1)
        many_tenants = ledger_holds(sessions, tenants=clients)
        engine.dispose()
        print(f"| {name} | {http_rate:.0f} | {p50:.1f} | {p99:.1f} | {one_tenant:.0f} | {many_tenants:.0f} |")
        if drop:
            drop()



def tenant_key(sessions, tokens: int) -> tuple[str, str]:
    with sessions.begin() as s:
        tenant = create_tenant(s, f"bench-{uuid.uuid4().hex[:6]}", "enterprise")
        ledger.credit(s, tenant.id, tokens)
        _, key = create_key(s, tenant.id)
    return tenant.id, key


def run_threads(target, count: int) -> float:
    barrier = threading.Barrier(count + 1)
    threads = [threading.Thread(target=lambda: (barrier.wait(), target())) for _ in range(count)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - started


def http_submissions(url: str, root: Path, sessions) -> tuple[float, float, float]:
    _, key = tenant_key(sessions, 10**9)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "VIDFACTORY_DATABASE_URL": url, "VIDFACTORY_DATA_DIR": str(root / "var"),
           "VIDFACTORY_RATE_LIMIT_ENABLED": "false", "VIDFACTORY_ADMIN_TOKEN": "bench"}
    server = subprocess.Popen([sys.executable, "-m", "vidfactory.cli", "serve", "--port", str(port),
                               "--workers", "0"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        latencies: list[float] = []
        headers = {"Authorization": f"Bearer {key}"}
        body = {"prompt": "a red fox running through snow at dawn", "size": "64x64", "seconds": "1"}
        httpx.post(f"{base}/v1/videos", headers=headers, json=body).raise_for_status()  # warm the tokenizer

        def client() -> None:
            with httpx.Client(base_url=base, headers=headers, timeout=60) as http:
                for _ in range(http_requests_per_client):
                    started = time.perf_counter()
                    http.post("/v1/videos", json=body).raise_for_status()
                    latencies.append((time.perf_counter() - started) * 1000)

        elapsed = run_threads(client, clients)
    finally:
        server.terminate()
        server.wait(30)
    latencies.sort()
    return (len(latencies) / elapsed, latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99) - 1])


def ledger_holds(sessions, tenants: int) -> float:
    """`tenants` = 1: every client holds against one account row (they queue on its lock by design);
    `tenants` = clients: each client has its own account, so holds only contend for the database."""
    tenant_ids = iter([tenant_key(sessions, 10**9)[0] for _ in range(tenants)] * (clients // tenants))

    def client() -> None:
        tenant_id = next(tenant_ids)
        for _ in range(holds_per_client):
            with sessions.begin() as s:
                ledger.hold(s, tenant_id=tenant_id, amount=10, job_id=f"video_{uuid.uuid4().hex}",
                            expires_at=utcnow() + timedelta(hours=1))

    elapsed = run_threads(client, clients)
    return clients * holds_per_client / elapsed


if __name__ == "__main__":
    main()
