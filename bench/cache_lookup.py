"""Result-cache lookup latency against the size of the index, exact and similar, SQLite and PostgreSQL.

For each size N the index holds N completed jobs of one tenant, all of one shape, with distinct prompts
drawn from a bilingual vocabulary (English words and Chinese phrases), indexed by `cache.index.index_job`'s
own keys (fingerprint, shape key, canonical-form key). Each lookup is `cache.index.lookup` in a read
transaction: exact for a prompt that is cached (a hit), similar for a cached prompt in capitals with
"Please generate a video of" before it (a hit through the canonical key), similar for a cached prompt with
one word changed (a miss: it asks for something else). Median and p95 of 200 lookups.
Run: .venv/bin/python bench/cache_lookup.py [sizes, default 1000,10000,100000] [postgres admin URL]
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from sqlalchemy import insert, text  # noqa: E402

from common import fresh_postgres, git_revision, machine, sized  # noqa: E402
from vidfactory.bootstrap import upgrade_and_seed  # noqa: E402
from vidfactory.cache import index as cache_index  # noqa: E402
from vidfactory.cache.keys import CacheSpec, fingerprint, shape_key, similar_key  # noqa: E402
from vidfactory.db.models import CacheEntry, Job  # noqa: E402
from vidfactory.db.session import make_engine, make_session_factory  # noqa: E402
from vidfactory.db.types import utcnow  # noqa: E402
from vidfactory.tenancy import create_tenant  # noqa: E402

lookups = sized(200, 3)
batch_rows = 5000
default_postgres = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
english = ("fox snow river harbour lantern forest city neon rain desert whale ocean mountain dawn dusk "
           "bicycle train market garden temple bridge storm meadow robot dragon violin").split()
chinese = ["红色的狐狸", "雪地里奔跑", "城市夜景", "江南水乡", "古老的寺庙", "海边日落", "竹林深处", "热闹的集市",
           "下雨的街道", "高山流水", "一只小猫", "灯笼", "长城", "稻田", "樱花"]
spec = CacheSpec(model="wan-tiny", width=64, height=64, num_frames=9, fps=8, steps=4, guidance_scale=5.0,
                 negative_prompt="", seed=None)


def prompt(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return " ".join(rng.choice(english) for _ in range(8))
    return "".join(rng.choice(chinese) for _ in range(4)) + " " + " ".join(rng.choice(english) for _ in range(2))


def populate(sessions, tenant_id: str, prompts: list[str]) -> None:
    shape = shape_key(spec)
    now = utcnow()
    for start in range(0, len(prompts), batch_rows):
        jobs, entries = [], []
        for offset, text_ in enumerate(prompts[start:start + batch_rows]):
            job_id = f"video_b{start + offset}"
            jobs.append(dict(id=job_id, tenant_id=tenant_id, status="completed", model=spec.model, prompt=text_,
                             user_prompt=text_, negative_prompt="", seed=1, width=64, height=64, seconds=1,
                             num_frames=9, fps=8, steps=4, guidance_scale=5.0, priority=0, concurrent_jobs_max=1,
                             progress=100, attempts=1, attempts_max=3, run_after=now, cancel_requested=False,
                             price_book_version=1, pricing_method="ratio", input_tokens=1, output_tokens=2,
                             total_tokens=3, hold_id=f"tr_b{start + offset}", warnings=[], request_metadata={},
                             cache_mode="exact", created_at=now))
            key, form = similar_key(shape, text_)
            entries.append(dict(job_id=job_id, tenant_id=tenant_id, fingerprint=fingerprint(spec, text_),
                                shape_key=shape, similar_key=key, prompt=form, created_at=now))
        with sessions.begin() as session:
            session.execute(insert(Job), jobs)
            session.execute(insert(CacheEntry), entries)


def timed(sessions, tenant_id: str, mode: str, text_: str) -> tuple[float, bool]:
    started = time.perf_counter()
    with sessions() as session:
        hit = cache_index.lookup(session, tenant_id=tenant_id, mode=mode, fingerprint=fingerprint(spec, text_),
                                 shape_key=shape_key(spec), prompt=text_, candidates_max=200)
    return (time.perf_counter() - started) * 1000, hit is not None


def measure(url: str, size: int) -> dict[str, tuple[float, float, float]]:
    engine = make_engine(url)
    upgrade_and_seed(engine)
    sessions = make_session_factory(engine)
    with sessions.begin() as session:
        tenant_id = create_tenant(session, f"bench-{uuid.uuid4().hex[:6]}").id
    rng = random.Random(size)
    prompts = list(dict.fromkeys(prompt(rng) for _ in range(size * 2)))[:size]
    started = time.perf_counter()
    populate(sessions, tenant_id, prompts)
    build_s = time.perf_counter() - started
    if not url.startswith("sqlite"):
        # Autocommit: ANALYZE inside a transaction that is rolled back keeps no statistics.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("ANALYZE"))
    probes = {
        "exact hit": ("exact", [rng.choice(prompts) for _ in range(lookups)]),
        "similar hit": ("similar", ["Please generate a video of " + rng.choice(prompts).upper() + "!"
                                    for _ in range(lookups)]),
        "similar miss": ("similar", [_one_word_changed(rng.choice(prompts), rng) + " zebra" for _ in range(lookups)]),
    }
    results: dict[str, tuple[float, float, float]] = {}
    for name, (mode, texts) in probes.items():
        samples = [timed(sessions, tenant_id, mode, t) for t in texts]
        latencies = sorted(ms for ms, _ in samples)
        results[name] = (statistics.median(latencies), latencies[int(len(latencies) * 0.95) - 1],
                         sum(hit for _, hit in samples) / len(samples))
    engine.dispose()
    results["build"] = (build_s, 0.0, 0.0)
    return results


def _one_word_changed(text_: str, rng: random.Random) -> str:
    words = text_.split(" ")
    words[-1] = rng.choice(english)
    return " ".join(words)



def main() -> None:
    sizes = [int(s) for s in (sys.argv[1] if len(sys.argv) > 1 else sized("1000,10000,100000", "50")).split(",")]
    postgres = sys.argv[2] if len(sys.argv) > 2 else default_postgres
    print(f"Machine: cache lookup — {machine()}, commit {git_revision()}, {lookups} lookups per cell\n")
    print("| database | cached jobs | index build s | exact hit p50 / p95 ms | similar hit p50 / p95 ms "
          "(hit rate) | similar miss p50 / p95 ms (hit rate) |")
    print("|---|---|---|---|---|---|")
    for database in ("SQLite (WAL)", "PostgreSQL"):
        for size in sizes:
            with tempfile.TemporaryDirectory() as tmp:
                if database == "PostgreSQL":
                    url, drop = fresh_postgres(postgres)
                else:
                    url, drop = f"sqlite:///{tmp}/bench.db", (lambda: None)
                try:
                    r = measure(url, size)
                finally:
                    drop()
            print(f"| {database} | {size:,} | {r['build'][0]:.1f} | {r['exact hit'][0]:.2f} / {r['exact hit'][1]:.2f} "
                  f"| {r['similar hit'][0]:.2f} / {r['similar hit'][1]:.2f} ({r['similar hit'][2]:.0%}) "
                  f"| {r['similar miss'][0]:.2f} / {r['similar miss'][1]:.2f} ({r['similar miss'][2]:.0%}) |",
                  flush=True)


if __name__ == "__main__":
    main()
