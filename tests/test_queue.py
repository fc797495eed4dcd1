"""Claim order, per-tenant concurrency, leases, and compare-and-set guards on job state."""

from datetime import timedelta

import pytest

from vidfactory.billing import ledger
from vidfactory.db.models import Job
from vidfactory.db.types import utcnow
from vidfactory.jobs import maintenance, queue

from conftest import assert_ledger_clean, new_tenant

counter = iter(range(10**6))


def enqueue(sessions, tenant_id, *, priority=0, concurrent=4, tokens=10, age_s=0.0, attempts_max=3) -> str:
    job_id = f"video_q{next(counter)}"
    with sessions.begin() as s:
        hold = ledger.hold(s, tenant_id=tenant_id, amount=tokens, job_id=job_id,
                           expires_at=utcnow() + timedelta(hours=1))
        s.add(Job(id=job_id, tenant_id=tenant_id, status="queued", model="wan-tiny", prompt="p", user_prompt="p",
                  seed=1, width=64, height=64, seconds=1, num_frames=9, fps=8, steps=2, guidance_scale=5.0,
                  priority=priority, concurrent_jobs_max=concurrent, attempts_max=attempts_max,
                  price_book_version=1, pricing_method="ratio", input_tokens=1, output_tokens=tokens - 1,
                  total_tokens=tokens, hold_id=hold.id, created_at=utcnow() - timedelta(seconds=age_s)))
    return job_id


def claim(sessions, worker="w1", lease_s=30.0, now=None):
    with sessions.begin() as s:
        job = queue.claim(s, worker_id=worker, models=["wan-tiny"], lease_s=lease_s, now=now or utcnow())
        return None if job is None else job.id


def status(sessions, job_id):
    with sessions() as s:
        return s.get(Job, job_id).status


def test_claims_by_priority_then_age(sessions):
    tenant = new_tenant(sessions, tokens=1000)
    old_low = enqueue(sessions, tenant.id, priority=0, age_s=100)
    new_high = enqueue(sessions, tenant.id, priority=10, age_s=1)
    old_high = enqueue(sessions, tenant.id, priority=10, age_s=50)
    assert [claim(sessions) for _ in range(4)] == [old_high, new_high, old_low, None]


def test_a_free_job_is_not_starved_by_paid_jobs_arriving(sessions):
    """Strict priority alone would claim every paid job before the free one, for as long as paid jobs keep
    arriving; once the free job has waited `aging_s` it is claimed before every job queued after it."""
    free, paid = new_tenant(sessions, tokens=10_000, plan="free"), new_tenant(sessions, tokens=10_000)
    aging_s = 600.0
    free_job = enqueue(sessions, free.id, priority=0, age_s=aging_s - 30)
    for age_s in (aging_s - 60, aging_s - 45):
        enqueue(sessions, paid.id, priority=10, age_s=age_s, concurrent=100)
    now = utcnow()
    # Not yet aged: the paid jobs go first, by priority.
    assert claim_at(sessions, now, aging_s) != free_job
    # 40 s later paid jobs are still arriving, but the free job has waited past the aging limit.
    later = now + timedelta(seconds=40)
    enqueue(sessions, paid.id, priority=10, age_s=-40, concurrent=100)  # queued at `later`
    assert claim_at(sessions, later, aging_s) == free_job


def test_aged_jobs_are_claimed_oldest_first_whatever_their_priority(sessions):
    tenant = new_tenant(sessions, tokens=10_000)
    aged_low = enqueue(sessions, tenant.id, priority=0, age_s=900)
    aged_high = enqueue(sessions, tenant.id, priority=10, age_s=700)
    fresh_high = enqueue(sessions, tenant.id, priority=10, age_s=10)
    now = utcnow()
    assert [claim_at(sessions, now, 600.0) for _ in range(4)] == [aged_low, aged_high, fresh_high, None]


def claim_at(sessions, now, aging_s):
    with sessions.begin() as s:
        job = queue.claim(s, worker_id="w1", models=["wan-tiny"], lease_s=30.0, now=now, aging_s=aging_s)
        return None if job is None else job.id


def test_a_tenant_at_its_concurrency_limit_waits(sessions):
    busy = new_tenant(sessions, tokens=1000)
    other = new_tenant(sessions, tokens=1000)
    first = enqueue(sessions, busy.id, concurrent=1, age_s=30)
    enqueue(sessions, busy.id, concurrent=1, age_s=20)
    other_job = enqueue(sessions, other.id, concurrent=1, age_s=10)
    assert claim(sessions) == first
    assert claim(sessions) == other_job
    assert claim(sessions) is None


def test_claim_records_the_attempt_and_lease(sessions):
    tenant = new_tenant(sessions, tokens=100)
    job_id = enqueue(sessions, tenant.id)
    assert claim(sessions, worker="w9") == job_id
    with sessions() as s:
        job = s.get(Job, job_id)
        assert (job.status, job.attempts, job.lease_owner) == ("in_progress", 1, "w9")


def test_completion_settles_in_the_same_transaction(sessions):
    tenant = new_tenant(sessions, tokens=100)
    job_id = enqueue(sessions, tenant.id, tokens=40)
    claim(sessions)
    with sessions.begin() as s:
        queue.complete(s, s.get(Job, job_id), "w1", [], charge=40)
    with sessions() as s:
        assert vars(ledger.balance(s, tenant.id)) == {"available": 60, "pending": 0, "posted": 60}
    assert_ledger_clean(sessions)


def test_a_stale_worker_cannot_complete_or_settle(sessions):
    tenant = new_tenant(sessions, tokens=100)
    job_id = enqueue(sessions, tenant.id, tokens=40)
    claim(sessions, worker="w1")
    with pytest.raises(queue.StaleJob), sessions.begin() as s:
        queue.complete(s, s.get(Job, job_id), "w2", [], charge=40)
    with sessions.begin() as s:
        queue.complete(s, s.get(Job, job_id), "w1", [], charge=40)
    with pytest.raises(queue.StaleJob), sessions.begin() as s:
        queue.complete(s, s.get(Job, job_id), "w1", [], charge=40)
    with sessions() as s:
        assert ledger.balance(s, tenant.id).available == 60
    assert_ledger_clean(sessions)


def test_failure_voids_the_hold(sessions):
    tenant = new_tenant(sessions, tokens=100)
    job_id = enqueue(sessions, tenant.id, tokens=40)
    claim(sessions)
    with sessions.begin() as s:
        queue.fail(s, job_id, expected=("in_progress",), owner="w1", error_type="engine_crash", message="boom")
    with sessions() as s:
        assert ledger.balance(s, tenant.id).available == 100
        assert s.get(Job, job_id).error_type == "engine_crash"
    assert_ledger_clean(sessions)


def test_expired_lease_requeues_then_fails_with_refund(sessions):
    tenant = new_tenant(sessions, tokens=100)
    job_id = enqueue(sessions, tenant.id, tokens=30, attempts_max=2)
    now = utcnow()
    for attempt in (1, 2):
        assert claim(sessions, worker=f"dead{attempt}", lease_s=1, now=now) == job_id
        now += timedelta(seconds=5)
        assert maintenance.reap_expired_leases(sessions, now) == 1
    with sessions() as s:
        job = s.get(Job, job_id)
        assert (job.status, job.error_type, job.attempts) == ("failed", "worker_lost", 2)
        assert ledger.balance(s, tenant.id).available == 100
    assert_ledger_clean(sessions)


def test_cancel_queued_voids_at_once_and_running_is_signalled(sessions):
    tenant = new_tenant(sessions, tokens=100)
    queued = enqueue(sessions, tenant.id, tokens=10, age_s=1)
    running = enqueue(sessions, tenant.id, tokens=10, age_s=2)
    assert claim(sessions) == running
    with sessions.begin() as s:
        assert queue.request_cancel(s, s.get(Job, queued)).status == "cancelled"
        assert queue.request_cancel(s, s.get(Job, running)).signalled
    with sessions() as s:
        assert queue.should_stop(s, running, "w1")
        assert ledger.balance(s, tenant.id).pending == 10
    with sessions.begin() as s:
        queue.finish_cancelled(s, running, "w1")
    with pytest.raises(queue.StaleJob), sessions.begin() as s:
        queue.request_cancel(s, s.get(Job, running))
    with sessions() as s:
        assert ledger.balance(s, tenant.id).available == 100
    assert_ledger_clean(sessions)


def test_expired_holds_are_swept_with_their_jobs(sessions):
    tenant = new_tenant(sessions, tokens=100)
    job_id = enqueue(sessions, tenant.id, tokens=25)
    assert maintenance.sweep_expired_holds(sessions, utcnow()) == 0
    assert maintenance.sweep_expired_holds(sessions, utcnow() + timedelta(hours=2)) == 1
    assert status(sessions, job_id) == "failed"
    with sessions() as s:
        assert ledger.balance(s, tenant.id).available == 100
    assert_ledger_clean(sessions)
