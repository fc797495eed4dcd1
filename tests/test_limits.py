"""Limits: requests per minute per key and per tenant, reads and writes on separate budgets (in memory,
and in Redis shared by replicas), 429 with Retry-After, what the limiter knows (limit, remaining, reset), fail-open or fail-closed when Redis is down, and the plan's active-jobs limit
enforced exactly at admission, freed however a job ends."""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from vidfactory.api.app import create_app
from vidfactory.api.ratelimit import LimiterUnavailable, MemoryLimiter, Quota, RedisLimiter, Window, enforce
from vidfactory.db.session import make_engine, make_session_factory
from vidfactory.jobs.worker import Worker
from vidfactory.tenancy import Caller, create_key, create_plan, plan_fields, update_plan

from conftest import assert_ledger_clean, make_settings, new_tenant
from test_processes import _healthy, cli, env_for, free_port, server_start_s_max, wait_until

redis_url = "redis://127.0.0.1:6379/0"
small = {"prompt": "a cat", "size": "64x64", "seconds": "1", "cache": "off"}


@pytest.fixture
def redis_prefix():
    prefix = f"vftest:{uuid.uuid4().hex[:8]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)
    client.close()


def redis_limiter(prefix: str, url: str = redis_url, failure_mode: str = "open") -> RedisLimiter:
    return RedisLimiter.from_url(url, prefix=prefix, failure_mode=failure_mode, timeout_s=0.25)


def set_plan(sessions, plan_id: str, **limits) -> None:
    with sessions.begin() as session:
        update_plan(session, plan_id, limits)


def tight_plan(sessions, **limits) -> str:
    """A plan with small limits, so a test spends them in a few requests."""
    plan_id = f"tight{uuid.uuid4().hex[:6]}"
    values = dict(priority=0, requests_per_minute=2, tenant_requests_per_minute=4, read_requests_per_minute=3,
                  tenant_read_requests_per_minute=6, concurrent_jobs=1, active_jobs_max=4, step_cache_allowed=False,
                  review_deadline_s=3600, review_deadline_action="refund", training_samples_max=20,
                  training_steps_max=500, concurrent_trainings=1, retention_days=30)
    values.update(limits)
    assert set(values) == set(plan_fields)
    with sessions.begin() as session:
        create_plan(session, plan_id, values)
    return plan_id


def refusal(response) -> str:
    assert response.status_code == 429, response.text
    assert 1 <= int(response.headers["retry-after"]) <= 60
    return response.json()["error"]["message"]


def test_polling_does_not_spend_the_budget_for_creating_videos(client):
    sessions = client.app.state.ctx.sessions
    tenant = new_tenant(sessions, tokens=100_000, plan=tight_plan(sessions))  # 2 writes, 3 reads a minute
    assert [client.get("/v1/balance", headers=tenant.headers).status_code for _ in range(3)] == [200] * 3
    assert "3 read requests per minute per key" in refusal(client.get("/v1/balance", headers=tenant.headers))
    # Reads are spent, writes are not.
    assert [client.post("/v1/quotes", headers=tenant.headers, json=small).status_code
            for _ in range(2)] == [200, 200]
    assert "2 write requests per minute per key" in refusal(
        client.post("/v1/quotes", headers=tenant.headers, json=small))


def test_writes_spent_leave_polling_alone(client):
    sessions = client.app.state.ctx.sessions
    tenant = new_tenant(sessions, tokens=100_000, plan=tight_plan(sessions))
    video = client.post("/v1/videos", headers=tenant.headers, json=small).json()
    client.post("/v1/quotes", headers=tenant.headers, json=small)
    refusal(client.post("/v1/videos", headers=tenant.headers, json=small))
    polls = [client.get(f"/v1/videos/{video['id']}", headers=tenant.headers) for _ in range(3)]
    assert [p.status_code for p in polls] == [200] * 3 and polls[-1].json()["status"] == "queued"


def test_both_budgets_are_shared_by_replicas_through_redis(tmp_path, sqlite_url, models_dir, redis_prefix):
    settings = make_settings(tmp_path, sqlite_url, models_dir, redis_url=redis_url, redis_prefix=redis_prefix)
    with TestClient(create_app(settings, workers=0)) as first, TestClient(create_app(settings, workers=0)) as second:
        sessions = first.app.state.ctx.sessions
        tenant = new_tenant(sessions, tokens=100_000, plan=tight_plan(sessions))
        assert [c.get("/v1/balance", headers=tenant.headers).status_code
                for c in (first, second, first)] == [200] * 3
        assert "read" in refusal(second.get("/v1/balance", headers=tenant.headers))
        assert [c.post("/v1/quotes", headers=tenant.headers, json=small).status_code
                for c in (second, first)] == [200, 200]
        assert "write" in refusal(second.post("/v1/quotes", headers=tenant.headers, json=small))


def test_the_limiter_reports_limit_remaining_and_reset(redis_prefix):
    key, tenant = Window("{t}:key:a", 3), Window("{t}:tenant", 10)
    memory = MemoryLimiter()
    assert memory.check([key, tenant], now=0.0).quota == Quota(3, 2, 60.0)
    assert memory.check([key, tenant], now=15.0).quota == Quota(3, 1, 60.0)
    memory.check([key, tenant], now=20.0)
    refused = memory.check([key, tenant], now=30.0)
    assert refused.window == key and refused.quota == Quota(3, 0, 50.0) and refused.wait_s == 30.0
    # The tenant's window is the tightest once another key has spent most of it.
    other = Window("{t}:key:b", 100)
    assert [memory.check([other, tenant], now=31.0).quota.remaining for _ in range(7)] == [6, 5, 4, 3, 2, 1, 0]

    shared = redis_limiter(redis_prefix)
    first = shared.check([key, tenant]).quota
    assert (first.limit, first.remaining) == (3, 2) and 59.0 < first.reset_s <= 60.0
    assert redis_limiter(redis_prefix).check([key, tenant]).quota.remaining == 1  # another replica's count
    shared.check([key, tenant])
    refused = shared.check([key, tenant])
    assert refused.window == key and (refused.quota.limit, refused.quota.remaining) == (3, 0)


def test_each_method_spends_its_own_budget_and_reports_it():
    caller = Caller(tenant_id="ten_a", api_key_id="key_a", plan="p", priority=0, requests_per_minute=2,
                    concurrent_jobs=1, tenant_requests_per_minute=4, read_requests_per_minute=5,
                    tenant_read_requests_per_minute=8)
    limiter = MemoryLimiter()
    read = enforce(limiter, caller, "GET")
    assert (read.limit, read.remaining) == (5, 4) and 59.0 < read.reset_s <= 60.0
    assert enforce(limiter, caller, "HEAD").remaining == 3
    assert enforce(limiter, caller, "POST").limit == 2
    assert enforce(limiter, caller, "DELETE").remaining == 0


def test_a_reset_never_exceeds_the_window():
    """(now + window) - now is over 60 s in floating point at some instants; the header must not say so."""
    now = 8161.962517661547
    assert (now + 60.0) - now > 60.0
    quota = MemoryLimiter().check([Window("t:key:a", 2)], now=now).quota
    assert quota.reset_s == 60.0


def test_memory_window_slides_and_a_refusal_counts_nowhere():
    limiter = MemoryLimiter()
    key_a, key_b, tenant = Window("t:key:a", 2), Window("t:key:b", 5), Window("t:tenant", 3)
    assert limiter.check([key_a, tenant], now=0.0).window is None
    assert limiter.check([key_a, tenant], now=10.0).window is None
    refused = limiter.check([key_a, tenant], now=20.0)
    assert refused.window == key_a and refused.wait_s == pytest.approx(40.0)
    assert limiter.check([key_b, tenant], now=21.0).window is None  # the refusal did not use the tenant's
    assert limiter.check([key_b, tenant], now=22.0).window == tenant
    assert limiter.check([key_a, tenant], now=60.5).window is None  # the first hit slid out


def test_redis_windows_per_key_and_per_tenant(redis_prefix):
    limiter = redis_limiter(redis_prefix)
    key_a, key_b, tenant = Window("{t}:key:a", 2), Window("{t}:key:b", 5), Window("{t}:tenant", 3)
    assert [limiter.check([key_a, tenant]).window for _ in range(3)] == [None, None, key_a]
    assert limiter.check([key_b, tenant]).window is None
    refused = limiter.check([key_b, tenant])
    assert refused.window == tenant and 59.0 < refused.wait_s <= 60.0
    # A second limiter on the same Redis (another replica) sees the same counts.
    assert redis_limiter(redis_prefix).check([key_b, tenant]).window == tenant


def test_redis_down_fails_open_or_closed_as_configured(redis_prefix):
    unreachable = "redis://127.0.0.1:1/0"
    window = Window("{t}:key:a", 1)
    assert redis_limiter(redis_prefix, unreachable, "open").check([window]).window is None
    with pytest.raises(LimiterUnavailable):
        redis_limiter(redis_prefix, unreachable, "closed").check([window])


def test_api_fail_closed_answers_503(tmp_path, sqlite_url, models_dir):
    settings = make_settings(tmp_path, sqlite_url, models_dir, redis_url="redis://127.0.0.1:1/0",
                             rate_limit_redis_failure="closed")
    with TestClient(create_app(settings, workers=0)) as client:
        tenant = new_tenant(client.app.state.ctx.sessions, tokens=10)
        response = client.get("/v1/balance", headers=tenant.headers)
    assert response.status_code == 503 and response.json()["error"]["code"] == "rate_limiter_unavailable"
    assert response.headers["retry-after"] == "1"


def test_tenant_limit_spans_its_keys(tmp_path, sqlite_url, models_dir, redis_prefix):
    settings = make_settings(tmp_path, sqlite_url, models_dir, redis_url=redis_url, redis_prefix=redis_prefix)
    with TestClient(create_app(settings, workers=0)) as client:
        sessions = client.app.state.ctx.sessions
        tenant = new_tenant(sessions, tokens=10, plan="free")
        set_plan(sessions, "free", read_requests_per_minute=30, tenant_read_requests_per_minute=60)
        with sessions.begin() as session:
            second, third = ({"Authorization": f"Bearer {create_key(session, tenant.id)[1]}"} for _ in range(2))
        statuses = [client.get("/v1/balance", headers=h).status_code for h in [tenant.headers, second] * 30]
        assert statuses == [200] * 60
        extra = client.get("/v1/balance", headers=third)  # a fresh key, but the tenant's minute is spent
    assert extra.status_code == 429 and "per tenant" in extra.json()["error"]["message"]
    assert 1 <= int(extra.headers["retry-after"]) <= 60


def test_active_jobs_limit_is_exact_and_freed_however_a_job_ends(client):
    ctx = client.app.state.ctx
    tenant = new_tenant(ctx.sessions, tokens=100_000, plan="free")  # 4 queued or running
    ids = [client.post("/v1/videos", headers=tenant.headers, json=small).json()["id"] for _ in range(4)]
    refused = client.post("/v1/videos", headers=tenant.headers, json=small)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "active_jobs_limit"
    assert refused.headers["retry-after"] == str(ctx.settings.active_jobs_retry_after_s)
    held = client.get("/v1/balance", headers=tenant.headers).json()["pending"]
    client.post(f"/v1/videos/{ids[0]}/cancel", headers=tenant.headers)  # ends by cancel
    assert client.post("/v1/videos", headers=tenant.headers, json=small).status_code == 200
    assert client.post("/v1/videos", headers=tenant.headers, json=small).status_code == 429
    Worker(ctx.settings, ctx.sessions, ctx.storage, worker_id="w").run_once()  # ends by completing
    assert client.post("/v1/videos", headers=tenant.headers, json=small).status_code == 200
    assert client.get("/v1/balance", headers=tenant.headers).json()["pending"] == held
    assert_ledger_clean(ctx.sessions)


def test_concurrent_submissions_never_exceed_the_active_limit(client):
    ctx = client.app.state.ctx
    tenant = new_tenant(ctx.sessions, tokens=100_000, plan="free")
    statuses: list[int] = []
    barrier = threading.Barrier(10)

    def submit_one() -> None:
        barrier.wait()
        statuses.append(client.post("/v1/videos", headers=tenant.headers, json=small).status_code)

    threads = [threading.Thread(target=submit_one) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sorted(statuses) == [200] * 4 + [429] * 6
    assert_ledger_clean(ctx.sessions)


@pytest.mark.slow
def test_two_api_processes_sharing_redis_enforce_one_limit(tmp_path, database_url, models_dir, redis_prefix):
    env = env_for(tmp_path, database_url, models_dir, VIDFACTORY_REDIS_URL=redis_url,
                  VIDFACTORY_REDIS_PREFIX=redis_prefix, VIDFACTORY_WEBHOOKS_ENABLED="false")
    subprocess.run(cli("db", "upgrade"), env=env, check=True, capture_output=True)
    engine = make_engine(database_url)
    tenant = new_tenant(make_session_factory(engine), tokens=10, plan="free")
    set_plan(make_session_factory(engine), "free", read_requests_per_minute=30)  # reads per minute per key
    engine.dispose()
    ports = [free_port(), free_port()]
    servers = [subprocess.Popen(cli("serve", "--port", str(port), "--workers", "0"), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for port in ports]
    try:
        bases = [f"http://127.0.0.1:{port}" for port in ports]
        for base in bases:
            wait_until(lambda: _healthy(base), server_start_s_max * 3, f"the API at {base}")
        # Concurrently, so that all 80 land inside one minute even on a loaded machine.
        with ThreadPoolExecutor(16) as pool:
            started = time.monotonic()
            responses = list(pool.map(lambda i: httpx.get(f"{bases[i % 2]}/v1/balance", headers=tenant.headers,
                                                          timeout=60), range(80)))
            elapsed_s = time.monotonic() - started
    finally:
        for server in servers:
            server.terminate()
            server.wait(30)
    assert elapsed_s < 60, "the requests spread over more than the one-minute window"
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 30 and statuses.count(429) == 50, statuses
    assert all(1 <= int(r.headers["retry-after"]) <= 60 for r in responses if r.status_code == 429)
    served = {bases[i % 2] for i, r in enumerate(responses) if r.status_code == 200}
    assert len(served) == 2  # both replicas let requests through, against one shared count


def test_failed_key_attempts_are_throttled_per_client_address_across_replicas(tmp_path, sqlite_url, models_dir,
                                                                              redis_prefix):
    settings = make_settings(tmp_path, sqlite_url, models_dir, redis_url=redis_url, redis_prefix=redis_prefix,
                             failed_auth_per_minute=3, trusted_proxies=["10.0.0.0/8"])
    bad = {"Authorization": "Bearer vf_not-a-key"}
    behind_proxy = ("10.0.0.5", 4000)  # the load balancer, listed in trusted_proxies
    with TestClient(create_app(settings, workers=0), client=behind_proxy) as first, \
            TestClient(create_app(settings, workers=0), client=behind_proxy) as second:
        tenant = new_tenant(first.app.state.ctx.sessions, tokens=10)
        attacker = {"X-Forwarded-For": "203.0.113.7"}
        assert [first.get("/v1/balance", headers={**bad, **attacker}).status_code for _ in range(3)] == [401] * 3
        # The other replica counts the same address (Redis), and refuses even a valid key before looking it up.
        blocked = second.get("/v1/balance", headers={**tenant.headers, **attacker})
        assert blocked.status_code == 429 and blocked.json()["error"]["code"] == "too_many_failed_attempts"
        assert 1 <= int(blocked.headers["retry-after"]) <= 60
        # A hop the attacker wrote left of what the proxy appended does not make it someone else.
        forged = {"X-Forwarded-For": "198.51.100.9, 203.0.113.7"}
        assert first.get("/v1/balance", headers={**tenant.headers, **forged}).status_code == 429
        assert first.get("/v1/admin/tenants", headers={**bad, **attacker}).status_code == 429
        # Another client behind the same proxy is unaffected.
        assert first.get("/v1/balance", headers={**tenant.headers, "X-Forwarded-For": "198.51.100.9"}).status_code == 200
    with TestClient(create_app(settings, workers=0), client=("192.0.2.1", 4000)) as direct:
        # Not a listed proxy: its X-Forwarded-For is ignored, however it varies.
        statuses = [direct.get("/v1/balance", headers={**bad, "X-Forwarded-For": f"198.51.100.{n}"}).status_code
                    for n in range(4)]
    assert statuses == [401, 401, 401, 429]


def test_a_dry_check_records_nothing(redis_prefix):
    window = Window("probe", 1)
    for limiter in (MemoryLimiter(), redis_limiter(redis_prefix)):
        assert [limiter.check([window], record=False).window for _ in range(3)] == [None] * 3
        assert limiter.check([window]).window is None
        assert limiter.check([window], record=False).window == window
