"""Prompt preparation cost, and a batch of N items vs N single submissions, side by side.

(1) Pure functions, median of 5 runs over 2,000 calls: rendering a library template in the sandbox,
rule-based enhancement (English and Chinese). (2) Through the app in-process (FastAPI TestClient, no
network, SQLite and PostgreSQL): one atomic POST /v1/batches of 100 items (render, tokenize, quote each,
then hold + insert all in one transaction) against 100 POST /v1/videos of the same prompts.
Run: .venv/bin/python bench/prompts.py [postgres admin URL]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from fastapi.testclient import TestClient  # noqa: E402

from common import fresh_postgres, git_revision, machine, sized  # noqa: E402
from vidfactory.api.app import create_app  # noqa: E402
from vidfactory.billing import ledger  # noqa: E402
from vidfactory.db.session import make_engine, make_session_factory  # noqa: E402
from vidfactory.prompts.enhance import enhance_rules  # noqa: E402
from vidfactory.prompts.library import library  # noqa: E402
from vidfactory.prompts.templates import render  # noqa: E402
from vidfactory.settings import Settings  # noqa: E402
from vidfactory.tenancy import create_key, create_tenant  # noqa: E402

calls = sized(2000, 5)
runs = sized(5, 1)
batch_items = sized(100, 2)
default_postgres = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def per_call_us(function) -> float:
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        for _ in range(calls):
            function()
        timings.append((time.perf_counter() - started) / calls * 1e6)
    return statistics.median(timings)


def pure() -> None:
    intro = library["travel_promo"]
    print("| operation | µs per call (median of 5 × 2,000) |\n|---|---|")
    print(f"| render `travel_promo` in the sandbox | "
          f"{per_call_us(lambda: render(intro, {'city': 'Hangzhou', 'season': 'spring'}, 4000)):.0f} |")
    print(f"| rules enhancement, English | {per_call_us(lambda: enhance_rules('a red fox running in snow')):.0f} |")
    print(f"| rules enhancement, Chinese | {per_call_us(lambda: enhance_rules('一只红狐狸在雪地里奔跑')):.0f} |")



def through_the_app(name: str, url: str, root: Path) -> None:
    settings = Settings(data_dir=root / name, database_url=url, rate_limit_enabled=False, admin_token="bench")
    with TestClient(create_app(settings, workers=0)) as client:
        sessions = make_session_factory(make_engine(url))
        with sessions.begin() as session:
            tenant = create_tenant(session, f"bench-{uuid.uuid4().hex[:6]}", "enterprise")
            ledger.credit(session, tenant.id, 10**9)
            _, key = create_key(session, tenant.id)
        headers = {"Authorization": f"Bearer {key}"}
        cities = [f"city {i}" for i in range(batch_items)]
        body = {"template": "travel_promo", "variables": {"city": cities, "season": "spring"}, "atomic": True,
                "size": "64x64", "seconds": "1"}
        client.post("/v1/batches", headers=headers, json={**body, "variables": {"city": ["warm-up"]}})
        started = time.perf_counter()
        response = client.post("/v1/batches", headers=headers, json=body)
        batch_s = time.perf_counter() - started
        assert response.status_code == 202 and response.json()["counts"]["queued"] == batch_items
        started = time.perf_counter()
        for city in cities:
            single = client.post("/v1/videos", headers=headers, json={
                "template": "travel_promo", "variables": {"city": city, "season": "spring"}, "size": "64x64",
                "seconds": "1"})
            assert single.status_code == 200
        singles_s = time.perf_counter() - started
    print(f"| {name} | {batch_s:.2f} | {singles_s:.2f} | {singles_s / batch_s:.1f}× |")


def main() -> None:
    postgres_admin = sys.argv[1] if len(sys.argv) > 1 else default_postgres
    print(f"# prompts — {machine()}, commit {git_revision()}")
    pure()
    root = Path(tempfile.mkdtemp(prefix="vf-prompts-"))
    print(f"\n| database | 1 batch of {batch_items} s | {batch_items} single POSTs s | ratio |\n|---|---|---|---|")
    through_the_app("SQLite (WAL)", f"sqlite:///{root / 'bench.db'}", root)
    url, drop = fresh_postgres(postgres_admin)
    try:
        through_the_app("PostgreSQL", url, root)
    finally:
        drop()


if __name__ == "__main__":
    main()
