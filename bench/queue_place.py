"""A queued video's place and start estimate (`queue.queue_place`, what the gallery's queued tiles and a
queued video's event stream show) with 100 and with 100,000 completed jobs of its model, on SQLite and
PostgreSQL, with and without the index its run-time sample reads (`ix_jobs_model_runs`), side by side in
one run: each database is measured with the index, then again after dropping it.
Run: .venv/bin/python bench/queue_place.py [postgres admin URL]
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from sqlalchemy import insert, text  # noqa: E402

from common import fresh_postgres, git_revision, machine, sized  # noqa: E402
from queue_claim import batch_rows, default_postgres, job_row  # noqa: E402
from vidfactory.bootstrap import upgrade_and_seed  # noqa: E402
from vidfactory.db.models import Job  # noqa: E402
from vidfactory.db.session import make_engine, make_session_factory  # noqa: E402
from vidfactory.db.types import utcnow  # noqa: E402
from vidfactory.jobs import queue  # noqa: E402
from vidfactory.tenancy import create_tenant  # noqa: E402

history_sizes = sized((100, 100_000), (100, 300))
samples = sized(50, 3)
index_name = "ix_jobs_model_runs"


def populate(sessions, completed: int) -> str:
    """`completed` finished jobs over a day (mixed models), then one queued job of wan-tiny: its id."""
    rng, now = random.Random(completed), utcnow()
    with sessions.begin() as session:
        tenant_id = create_tenant(session, f"place-{completed}").id
    rows = []
    for index in range(completed):
        row = job_row(index, tenant_id, "completed", rng, now)
        finished = now - timedelta(seconds=rng.uniform(0, 86_400))
        rows.append(row | {"started_at": finished - timedelta(seconds=rng.uniform(5, 60)), "completed_at": finished})
    queued = job_row(completed, tenant_id, "queued", rng, now) | {"model": "wan-tiny"}
    for start in range(0, len(rows), batch_rows):
        with sessions.begin() as session:
            session.execute(insert(Job), rows[start:start + batch_rows])
    with sessions.begin() as session:
        session.execute(insert(Job), [queued])
        if session.get_bind().dialect.name == "postgresql":  # as autovacuum would; nothing analyzes SQLite
            session.execute(text("ANALYZE"))
    return queued["id"]


def median_ms(sessions, job_id: str) -> float:
    with sessions() as session:
        job = session.get(Job, job_id)
        queue.queue_place(session, job, utcnow())  # warm
        times = []
        for _ in range(samples):
            start = time.perf_counter()
            place = queue.queue_place(session, job, utcnow())
            times.append(time.perf_counter() - start)
        assert place is not None and place.position == 1 and place.estimated_start_s is not None
    return statistics.median(times) * 1000


def measure(url: str, completed: int) -> dict[bool, float]:
    """{indexed: median ms} on a fresh database at `url` holding `completed` finished jobs."""
    engine = make_engine(url)
    upgrade_and_seed(engine)
    sessions = make_session_factory(engine)
    job_id = populate(sessions, completed)
    results = {True: median_ms(sessions, job_id)}
    with engine.begin() as connection:
        connection.execute(text(f"DROP INDEX {index_name}"))
    results[False] = median_ms(sessions, job_id)
    engine.dispose()
    return results


def main() -> None:
    admin_url = sys.argv[1] if len(sys.argv) > 1 else default_postgres
    rows: dict[str, dict[int, dict[bool, float]]] = {"SQLite": {}, "PostgreSQL": {}}
    for completed in history_sizes:
        with tempfile.TemporaryDirectory() as tmp:
            rows["SQLite"][completed] = measure(f"sqlite:///{Path(tmp) / 'place.db'}", completed)
        url, drop = fresh_postgres(admin_url)
        try:
            rows["PostgreSQL"][completed] = measure(url, completed)
        finally:
            drop()
    small, large = history_sizes
    print(f"# queue_place — {machine()}, commit {git_revision()}, median of {samples}\n")
    print(f"| database | index | {small:,} completed ms | {large:,} completed ms | ratio |")
    print("|---|---|---|---|---|")
    for database, results in rows.items():
        for indexed in (False, True):
            few, many = results[small][indexed], results[large][indexed]
            print(f"| {database} | {'with' if indexed else 'without'} {index_name} | {few:.2f} | {many:.2f} | "
                  f"{many / few:.1f}× |")


if __name__ == "__main__":
    main()
