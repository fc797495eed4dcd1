"""Limiter check latency (memory vs Redis) and webhook outbox delivery throughput (SQLite vs PostgreSQL).

(1) One `check` = one request's per-key and per-tenant windows, from 1 thread and from 8 threads, in
process memory and in the local Redis (one Lua call). (2) N events recorded for one endpoint, then
drained by 1 and by 2 dispatcher threads POSTing to a local HTTP receiver (signing included).
Run: .venv/bin/python bench/notify_limits.py [postgres admin URL]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import redis  # noqa: E402

from common import fresh_postgres, git_revision, machine, sized  # noqa: E402
from vidfactory.api.ratelimit import MemoryLimiter, RedisLimiter, Window  # noqa: E402
from vidfactory.bootstrap import upgrade_and_seed  # noqa: E402
from vidfactory.db.session import make_engine, make_session_factory  # noqa: E402
from vidfactory.notify.delivery import Dispatcher  # noqa: E402
from vidfactory.notify.endpoints import create_endpoint  # noqa: E402
from vidfactory.notify.events import record_event  # noqa: E402
from vidfactory.settings import Settings  # noqa: E402
from vidfactory.tenancy import create_tenant  # noqa: E402

redis_url = "redis://127.0.0.1:6379/0"
default_postgres = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
checks_per_thread = sized(4000, 20)
events = sized(600, 5)


def limiter_latency(limiter, threads: int) -> tuple[float, float, float]:
    """(median µs, p99 µs, checks/s) with limits high enough that every check is allowed."""
    samples: list[float] = []
    lock = threading.Lock()

    def run(index: int) -> None:
        windows = [Window(f"{{t{index}}}:key:k", 10**9), Window(f"{{t{index}}}:tenant", 10**9)]
        mine = []
        for _ in range(checks_per_thread):
            start = time.perf_counter()
            limiter.check(windows)
            mine.append((time.perf_counter() - start) * 1e6)
        with lock:
            samples.extend(mine)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - start
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99)], len(samples) / elapsed


class Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        return


def outbox_throughput(url: str, root: Path, port: int, dispatchers: int) -> tuple[float, float]:
    """(events recorded/s, one transaction each; deliveries/s)."""
    engine = make_engine(url)
    upgrade_and_seed(engine)
    sessions = make_session_factory(engine)
    settings = Settings(data_dir=root, database_url=url, webhook_allowed_networks=["127.0.0.0/8"],
                        webhook_batch_max=20)
    with sessions.begin() as session:
        tenant = create_tenant(session, f"bench-{uuid.uuid4().hex[:8]}")
        create_endpoint(session, tenant.id, f"http://127.0.0.1:{port}/hook", "", [])
    start = time.perf_counter()
    for index in range(events):
        with sessions.begin() as session:
            record_event(session, tenant.id, "billing.voucher_granted", {"tokens": index + 1})
    recorded = events / (time.perf_counter() - start)

    def drain() -> None:
        dispatcher = Dispatcher(settings, sessions)
        while dispatcher.run_once():
            pass

    threads = [threading.Thread(target=drain) for _ in range(dispatchers)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    delivered = events / (time.perf_counter() - start)
    engine.dispose()
    return recorded, delivered



def main() -> None:
    postgres_admin = sys.argv[1] if len(sys.argv) > 1 else default_postgres
    print(f"# notify and limits — {machine()}, commit {git_revision()}")
    prefix = f"vfbench:{uuid.uuid4().hex[:8]}:"
    shared = RedisLimiter.from_url(redis_url, prefix=prefix, failure_mode="closed", timeout_s=1.0)
    print("| limiter | threads | median µs | p99 µs | checks/s |")
    print("|---|---|---|---|---|")
    for name, limiter in (("memory", MemoryLimiter()), ("Redis (Lua, 2 windows)", shared)):
        for threads in (1, 8):
            median, p99, rate = limiter_latency(limiter, threads)
            print(f"| {name} | {threads} | {median:.1f} | {p99:.1f} | {rate:,.0f} |")
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    root = Path(tempfile.mkdtemp(prefix="vf-notify-"))
    print(f"\n| database | dispatchers | events recorded/s (1 tx each) | deliveries/s ({events} events) |")
    print("|---|---|---|---|")
    for dispatchers in (1, 2):
        for name, (url, drop) in (("SQLite (WAL)", (f"sqlite:///{root / f'b{dispatchers}.db'}", None)),
                                  ("PostgreSQL", fresh_postgres(postgres_admin))):
            recorded, delivered = outbox_throughput(url, root, port, dispatchers)
            print(f"| {name} | {dispatchers} | {recorded:.0f} | {delivered:.0f} |")
            if drop:
                drop()
    server.shutdown()


if __name__ == "__main__":
    main()
