"""Queue claim latency with a short and a long queue: 10 vs 100,000 queued jobs of mixed models,
priorities and tenants (some waiting past the aging limit, some tenants at their running limit), on
SQLite and PostgreSQL, side by side. Each claim is the worker's real `queue.claim` in a transaction that
is rolled back, so every sample sees the same queue.
Run: .venv/bin/python bench/queue_claim.py [postgres admin URL]
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from sqlalchemy import insert, text  # noqa: E402

from common import fresh_postgres, git_revision, machine, sized  # noqa: E402
from vidfactory.bootstrap import upgrade_and_seed  # noqa: E402
from vidfactory.db.models import Job  # noqa: E402
from vidfactory.db.session import make_engine, make_session_factory  # noqa: E402
from vidfactory.db.types import utcnow  # noqa: E402
from vidfactory.jobs import queue  # noqa: E402
from vidfactory.tenancy import create_tenant  # noqa: E402

queue_sizes = sized((10, 100_000), (10, 200))
claims = sized(200, 5)
tenants_n = 50
models = ("wan-tiny", "wan-b", "wan-c")
priorities = (0, 5, 10)  # free, pro, enterprise
aging_s = 600.0
batch_rows = 5000
default_postgres = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def job_row(index: int, tenant_id: str, status: str, rng: random.Random, now) -> dict:
    return dict(id=f"video_q{index}", tenant_id=tenant_id, status=status, model=rng.choice(models),
                prompt="a fox", user_prompt="a fox", negative_prompt="", seed=1, width=64, height=64, seconds=1,
                num_frames=9, fps=8, steps=4, guidance_scale=5.0, priority=rng.choice(priorities),
                concurrent_jobs_max=rng.choice((1, 4, 16)), progress=0, attempts=0, attempts_max=3,
                run_after=now, cancel_requested=False, price_book_version=1, pricing_method="ratio",
                input_tokens=1, output_tokens=2, total_tokens=3, hold_id=f"tr_q{index}", warnings=[],
                request_metadata={}, cache_mode="exact",
                lease_owner="other" if status == "in_progress" else None,
                # spread over two hours: about half waited past the aging limit
                created_at=now - timedelta(seconds=rng.uniform(0, 2 * aging_s * 6)))


def populate(sessions, size: int) -> None:
    rng = random.Random(size)
    now = utcnow()
    with sessions.begin() as session:
        tenant_ids = [create_tenant(session, f"q-{uuid.uuid4().hex[:8]}").id for _ in range(tenants_n)]
    rows = [job_row(i, rng.choice(tenant_ids), "queued", rng, now) for i in range(size)]
    # a few tenants busy at their limit: the claim must skip their queued jobs
    rows += [job_row(size + i, tenant_ids[i % 5], "in_progress", rng, now) for i in range(20)]
    for start in range(0, len(rows), batch_rows):
        with sessions.begin() as session:
            session.execute(insert(Job), rows[start:start + batch_rows])


def claim_ms(sessions, held: tuple[str, ...]) -> float:
    session = sessions(bind=sessions.kw["bind"])  # a transaction, rolled back: the queue stays as built
    try:
        started = time.perf_counter()
        job = queue.claim(session, worker_id="bench", models=list(models), lease_s=60, now=utcnow(),
                          residency=queue.Residency(held_models=held, switch_after_s=300), aging_s=aging_s)
        elapsed = (time.perf_counter() - started) * 1000
        assert job is not None, "the bench queue always has a claimable job"
        return elapsed
    finally:
        session.rollback()
        session.close()


def measure(url: str, size: int) -> tuple[float, float]:
    engine = make_engine(url)
    upgrade_and_seed(engine)
    sessions = make_session_factory(engine)
    populate(sessions, size)
    if not url.startswith("sqlite"):
        # Autocommit: ANALYZE inside a transaction that is rolled back keeps no statistics.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("ANALYZE"))
    claim_ms(sessions, ())  # warm the connection pool and statement caches
    samples = sorted(claim_ms(sessions, (models[i % len(models)],)) for i in range(claims))
    engine.dispose()
    return statistics.median(samples), samples[max(0, int(len(samples) * 0.95) - 1)]


def main() -> None:
    postgres_admin = sys.argv[1] if len(sys.argv) > 1 else default_postgres
    print(f"# queue claim — {machine()}, commit {git_revision()}, {claims} claims per cell, {len(models)} models, "
          f"{tenants_n} tenants, priorities {priorities}, aging {aging_s:.0f} s")
    print("| database | queued jobs | claim p50 ms | p95 ms | p50 ÷ shortest queue's |")
    print("|---|---|---|---|---|")
    for database in ("SQLite (WAL)", "PostgreSQL"):
        first = None
        for size in queue_sizes:
            with tempfile.TemporaryDirectory() as tmp:
                url, drop = ((f"sqlite:///{tmp}/bench.db", lambda: None) if database.startswith("SQLite")
                             else fresh_postgres(postgres_admin))
                try:
                    p50, p95 = measure(url, size)
                finally:
                    drop()
            first = first or p50
            print(f"| {database} | {size:,} | {p50:.2f} | {p95:.2f} | {p50 / first:.2f} |", flush=True)


if __name__ == "__main__":
    main()
