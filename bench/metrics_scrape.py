"""`GET /metrics` with a small and a large history: the fleet collector's queries (queue depth, oldest
queued job, finished jobs, outstanding holds, phase histograms, workers, webhook failures, breakers) over
100 vs 100,000 jobs, on SQLite and PostgreSQL, side by side. The large history is a live platform's:
most jobs finished, a queue of a few thousand, a hold per job and a post or void per finished one.
Run: .venv/bin/python bench/metrics_scrape.py [postgres admin URL]
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from sqlalchemy import insert, text  # noqa: E402

from common import fresh_postgres, git_revision, machine, sized  # noqa: E402
from queue_claim import job_row  # noqa: E402
from vidfactory.billing import ledger  # noqa: E402
from vidfactory.bootstrap import upgrade_and_seed  # noqa: E402
from vidfactory.db.models import Job, Transfer  # noqa: E402
from vidfactory.db.session import make_engine, make_session_factory  # noqa: E402
from vidfactory.db.types import utcnow  # noqa: E402
from vidfactory.observability import metrics, phases  # noqa: E402
from vidfactory.observability.fleet import FleetCollector  # noqa: E402
from vidfactory.settings import Settings  # noqa: E402
from vidfactory.tenancy import create_tenant  # noqa: E402

history_sizes = sized((100, 100_000), (100, 400))
scrapes = sized(50, 3)
tenants_n = 50
unfinished_share = 0.05  # a queue of 5,000 in 100,000
batch_rows = 5000
default_postgres = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def transfer_rows(job: dict, tenant_account: str) -> list[dict]:
    hold = dict(id=job["hold_id"], kind="hold", debit_account_id=tenant_account,
                credit_account_id=ledger.revenue_account_id, amount=3, tenant_id=job["tenant_id"], job_id=job["id"])
    if job["status"] in ("queued", "in_progress"):
        return [hold]
    resolution = dict(id=f"tr_r{job['id']}", kind="post" if job["status"] == "completed" else "void",
                      debit_account_id=tenant_account, credit_account_id=ledger.revenue_account_id,
                      amount=3 if job["status"] == "completed" else 0, pending_id=job["hold_id"],
                      tenant_id=job["tenant_id"], job_id=job["id"])
    return [hold, resolution]


def populate(sessions, size: int) -> None:
    rng = random.Random(size)
    now = utcnow()
    with sessions.begin() as session:
        tenant_ids = [create_tenant(session, f"m-{i}-{rng.randrange(10**8)}").id for i in range(tenants_n)]
    rows = []
    for index in range(size):
        status = ("queued" if rng.random() < unfinished_share else
                  rng.choices(("completed", "failed", "cancelled"), weights=(90, 5, 5))[0])
        row = job_row(index, rng.choice(tenant_ids), status, rng, now)
        rows.append({**row, "lease_owner": None, "completed_at": None if status == "queued" else now})
    for start in range(0, len(rows), batch_rows):
        batch = rows[start:start + batch_rows]
        with sessions.begin() as session:
            session.execute(insert(Job), batch)
            session.execute(insert(Transfer), [t for job in batch
                                               for t in transfer_rows(job, ledger.tenant_account_id(job["tenant_id"]))])
    with sessions.begin() as session:  # the phase histograms of the finished ones (a few rows whatever the count)
        for model in ("wan-tiny", "wan-b", "wan-c"):
            for seconds in (0.02, 0.3, 4.0, 70.0):
                phases.observe(session, model, {phase: seconds for phase in phases.PHASES})


def scrape_ms(collector: FleetCollector) -> float:
    started = time.perf_counter()
    body = metrics.render(collector)
    elapsed = (time.perf_counter() - started) * 1000
    assert any(f.name == "vidfactory_queue_jobs" for f in text_string_to_metric_families(body.decode()))
    return elapsed


def measure(url: str, size: int, tmp: str) -> tuple[float, float]:
    engine = make_engine(url)
    upgrade_and_seed(engine)
    sessions = make_session_factory(engine)
    populate(sessions, size)
    if not url.startswith("sqlite"):  # autovacuum's steady state: statistics, and the visibility map that
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:  # index-only scans use
            connection.execute(text("VACUUM ANALYZE"))
    collector = FleetCollector(sessions, Settings(data_dir=Path(tmp) / "var", database_url=url))
    scrape_ms(collector)  # warm the pool and statement caches
    samples = sorted(scrape_ms(collector) for _ in range(scrapes))
    engine.dispose()
    return statistics.median(samples), samples[max(0, int(len(samples) * 0.95) - 1)]


def main() -> None:
    postgres_admin = sys.argv[1] if len(sys.argv) > 1 else default_postgres
    print(f"# /metrics scrape — {machine()}, commit {git_revision()}, {scrapes} scrapes per cell, "
          f"{unfinished_share:.0%} of jobs unfinished, a hold per job and a resolution per finished one")
    print("| database | jobs | scrape p50 ms | p95 ms | p50 ÷ smallest history's |")
    print("|---|---|---|---|---|")
    for database in ("SQLite (WAL)", "PostgreSQL"):
        first = None
        for size in history_sizes:
            with tempfile.TemporaryDirectory() as tmp:
                url, drop = ((f"sqlite:///{tmp}/bench.db", lambda: None) if database.startswith("SQLite")
                             else fresh_postgres(postgres_admin))
                try:
                    p50, p95 = measure(url, size, tmp)
                finally:
                    drop()
            first = first or p50
            print(f"| {database} | {size:,} | {p50:.2f} | {p95:.2f} | {p50 / first:.2f} |", flush=True)


if __name__ == "__main__":
    main()
