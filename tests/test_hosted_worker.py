"""Hosted engines through the real worker, queue and ledger, on SQLite and PostgreSQL, against a local
fake DashScope: a job completes and settles with the remote task recorded; a failed task fails and
refunds; while the service is down the breaker keeps jobs queued (no attempt used, hold pending), alerts
an admin, then lets a probe through and recovers; a retried job resumes its remote task instead of paying
for a second one."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import select

from conftest import assert_ledger_clean, make_settings, new_tenant
from fake_hosted import FakeDashScope, FakeOpenAIVideo, api_key
from fixtures_models import tiny_model_dir  # noqa: F401  (fixture)
from vidfactory.api.context import TokenCounters
from vidfactory.api.render import video_object
from vidfactory.billing import ledger
from vidfactory.db.models import EngineBreaker, Job
from vidfactory.db.types import utcnow
from vidfactory.jobs import breaker, maintenance, queue
from vidfactory.jobs.screening import PromptScreens
from vidfactory.jobs.submit import VideoRequest, submit
from vidfactory.jobs.worker import Worker
from vidfactory.media.encode import probe_mp4
from vidfactory.notify.alerts import recent_alerts
from vidfactory.settings import HostedConfig, ModelConfig
from vidfactory.storage.local import LocalStorage
from vidfactory.tenancy import authenticate


@pytest.fixture(params=["dashscope", "openai-video"])
def service(request):
    fake = FakeDashScope() if request.param == "dashscope" else FakeOpenAIVideo()
    fake.engine = request.param
    yield fake
    fake.close()


@pytest.fixture
def setup(tmp_path, database_url, models_dir, sessions, tiny_model_dir, service):  # noqa: F811
    def make(hosted_overrides=None, **overrides):
        hosted = HostedConfig(**{**dict(base_url=service.base_url, api_key=api_key, remote_model="wan2.2-t2v-plus",
                                        poll_interval_s=0.01, task_timeout_s=5.0, request_timeout_s=2.0,
                                        http_attempts_max=2, http_backoff_s=0.0, prompt_extend=True),
                                 **(hosted_overrides or {})})
        model = ModelConfig(id="wan-hosted", engine=service.engine, path=str(tiny_model_dir),
                            default_size="64x64", default_seconds=1, fps=8, hosted=hosted)
        settings = make_settings(tmp_path, database_url, models_dir, models=[model], **overrides)
        worker = Worker(settings, sessions, LocalStorage(settings.resolved_storage_dir), worker_id="w")
        tenant = new_tenant(sessions, tokens=1000)
        return settings, worker, tenant

    return make


def submit_job(sessions, settings, tenant) -> str:
    with sessions() as s:
        caller = authenticate(s, tenant.key)
    submitted = submit(sessions, settings, TokenCounters(settings.models_dir), caller,
                       VideoRequest(prompt="a lantern on a lake", model="wan-hosted"), video_object,
                       screens=PromptScreens.from_settings(settings))
    return submitted.body["id"]


def job(sessions, job_id) -> Job:
    with sessions() as s:
        return s.scalars(select(Job).where(Job.id == job_id)).one()


def balance(sessions, tenant):
    with sessions() as s:
        return ledger.balance(s, tenant.id)


def test_hosted_job_completes_settles_and_records_the_remote_task(setup, sessions, service):
    settings, worker, tenant = setup()
    job_id = submit_job(sessions, settings, tenant)
    assert worker.run_once()
    done = job(sessions, job_id)
    assert done.status == "completed", done.error_message
    assert done.engine_metadata["task_id"] in service.tasks
    assert done.engine_metadata["engine"] == service.engine
    if service.engine == "dashscope":
        assert done.engine_metadata["actual_prompt"] == "a lantern on a lake, cinematic lighting"
        assert done.engine_metadata["usage"]["video_count"] == 1
        with sessions() as s:
            assert video_object(s, done)["actual_prompt"] == "a lantern on a lake, cinematic lighting"
    video = worker.storage.read(f"tenants/{tenant.id}/{job_id}/video.mp4")
    probe = probe_mp4(video)
    assert (probe.codec, probe.width, probe.height, probe.frames) == ("h264", 64, 64, 5)
    assert balance(sessions, tenant).available == 1000 - done.total_tokens
    assert_ledger_clean(sessions)


def test_failed_remote_task_fails_the_job_and_voids_the_hold(setup, sessions, service):
    settings, worker, tenant = setup()
    service.outcome = "failed"
    job_id = submit_job(sessions, settings, tenant)
    assert worker.run_once()
    failed = job(sessions, job_id)
    assert (failed.status, failed.error_type, failed.attempts) == ("failed", "engine_crash", 1)
    assert failed.engine_metadata["task_id"] in service.tasks
    assert balance(sessions, tenant).available == 1000
    assert_ledger_clean(sessions)


def test_input_the_service_refuses_fails_as_invalid_input_and_voids(setup, sessions, service):
    settings, worker, tenant = setup()
    service.fail_next(1, "/video", status=400, body={"code": "InvalidParameter", "message": "bad size"})
    job_id = submit_job(sessions, settings, tenant)
    assert worker.run_once()
    failed = job(sessions, job_id)
    assert (failed.status, failed.error_type) == ("failed", "invalid_input")
    assert balance(sessions, tenant).available == 1000
    assert_ledger_clean(sessions)


def test_breaker_keeps_jobs_queued_while_the_service_is_down_then_recovers(setup, sessions, service):
    # A cooldown no stalled machine outlasts between the steps below; step 4 lets it pass.
    settings, worker, tenant = setup(breaker_failures_max=2, breaker_cooldown_s=600, retry_backoff_s=0.0)
    service.fail_next(4, "/video", status=503)  # two attempts of two HTTP tries each
    job_id = submit_job(sessions, settings, tenant)
    # 1. First failure: an ordinary transient retry (attempt used, hold kept).
    assert worker.run_once()
    first = job(sessions, job_id)
    assert (first.status, first.attempts, first.error_type) == ("queued", 1, "engine_unavailable")
    # 2. Second failure opens the breaker: the job goes back without using an attempt, an admin is told.
    assert worker.run_once()
    held = job(sessions, job_id)
    assert (held.status, held.attempts) == ("queued", 1)
    assert balance(sessions, tenant).pending == held.total_tokens
    with sessions() as s:
        assert breaker.state_of(s, "wan-hosted").state == "open"
        [alert] = recent_alerts(s, 10, kind="engine_breaker_open")
        assert "wan-hosted" in alert.message and "503" in alert.message
    # 3. While open nothing is claimed, however often the worker looks.
    requests_before = len(service.requests)
    assert not worker.run_once() and not worker.run_once()
    assert len(service.requests) == requests_before and job(sessions, job_id).status == "queued"
    # 4. After the cooldown one probe runs; the service is back, so the job completes and the breaker closes.
    with sessions.begin() as s:
        opened = s.get(EngineBreaker, "wan-hosted")
        opened.opened_at -= timedelta(seconds=settings.breaker_cooldown_s)  # the cooldown has passed
    assert worker.run_once()
    done = job(sessions, job_id)
    assert (done.status, done.attempts) == ("completed", 2)
    with sessions() as s:
        row = breaker.state_of(s, "wan-hosted")
        assert (row.state, row.failures) == ("closed", 0)
    assert balance(sessions, tenant).available == 1000 - done.total_tokens
    assert_ledger_clean(sessions)


def test_a_failed_probe_reopens_the_breaker_and_only_the_probe_owner_claims(setup, sessions, service):
    settings, worker, tenant = setup(breaker_failures_max=1, breaker_cooldown_s=0.2, retry_backoff_s=0.0)
    other = Worker(settings, sessions, worker.storage, worker_id="other")
    service.fail_next(4, "/video", status=503)
    job_id = submit_job(sessions, settings, tenant)
    assert worker.run_once()  # opens at once (failures_max 1)
    time.sleep(0.25)
    with sessions.begin() as s:  # "other" takes the half-open probe slot...
        assert breaker.admits(s, "wan-hosted", worker_id="other", now=utcnow(), policy=other.breaker_policy)
    assert not worker.run_once()  # ...so this worker waits
    assert other.run_once()  # the probe fails: open again, job still queued, attempt given back
    with sessions() as s:
        assert breaker.state_of(s, "wan-hosted").state == "open"
        assert len(recent_alerts(s, 10, kind="engine_breaker_open")) == 1  # alerted when it first opened
    assert (job(sessions, job_id).status, job(sessions, job_id).attempts) == ("queued", 0)
    assert_ledger_clean(sessions)


def test_cancelling_a_running_hosted_job_cancels_the_remote_task(setup, sessions, service):
    settings, worker, tenant = setup()
    service.outcome = "never"
    job_id = submit_job(sessions, settings, tenant)
    runner = threading.Thread(target=worker.run_once)
    runner.start()
    wait_for(lambda: service.tasks, timeout_s=60)  # the remote task exists: cancelling must reach it
    with sessions.begin() as s:
        queue.request_cancel(s, job(sessions, job_id))
    runner.join(10)
    assert job(sessions, job_id).status == "cancelled"
    assert len(service.calls("POST", "/cancel")) == 1
    assert balance(sessions, tenant).available == 1000
    assert_ledger_clean(sessions)


def wait_for(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def probe_expiry(sessions):
    with sessions() as s:
        return breaker.state_of(s, "wan-hosted").probe_expires_at


def test_a_probe_longer_than_a_lease_stays_the_only_probe(setup, sessions, service):
    settings, worker, tenant = setup(dict(poll_interval_s=0.02, task_timeout_s=60.0), breaker_failures_max=1,
                                     breaker_cooldown_s=0.0, retry_backoff_s=0.0, lease_s=2.0, heartbeat_s=0.1)
    service.fail_next(2, "/video", status=503)
    job_id = submit_job(sessions, settings, tenant)
    assert worker.run_once()  # opens the breaker
    service.polls_to_finish = 10**6  # the probe job's remote task runs until the test lets it finish
    runner = threading.Thread(target=worker.run_once)
    runner.start()
    wait_for(lambda: job(sessions, job_id).status == "in_progress")
    first_expiry = probe_expiry(sessions)
    # The probe's heartbeats move its expiry on, past the one taking it set (the lease is 2 s)...
    wait_for(lambda: probe_expiry(sessions) > first_expiry + timedelta(seconds=1))
    with sessions.begin() as s:  # ...so past that first expiry, no other worker may take it
        assert not breaker.admits(s, "wan-hosted", worker_id="other", now=first_expiry + timedelta(seconds=0.5),
                                  policy=worker.breaker_policy)
    [task] = [task for task in service.tasks.values() if task.polls_to_finish == 10**6]
    task.polls_to_finish = task.polls + 1
    runner.join(30)
    assert job(sessions, job_id).status == "completed"
    assert_ledger_clean(sessions)


# --- a retried job resumes its remote task ------------------------------------------------------------------


def test_a_retry_after_polling_failed_resumes_the_task_instead_of_paying_twice(setup, sessions, service):
    settings, worker, tenant = setup(retry_backoff_s=0.0)
    service.fail_next(2, service.task_path, status=503)  # both HTTP tries of the first poll
    job_id = submit_job(sessions, settings, tenant)
    assert worker.run_once()
    first = job(sessions, job_id)
    assert (first.status, first.error_type, service.tasks_created) == ("queued", "engine_unavailable", 1)
    [task_id] = service.tasks
    assert first.engine_metadata["task_id"] == task_id
    assert worker.run_once()
    done = job(sessions, job_id)
    assert (done.status, done.attempts) == ("completed", 2), done.error_message
    assert service.tasks_created == 1 and len(service.calls("POST", "/video")) == 1
    assert (done.engine_metadata["task_id"], done.engine_metadata["resumed"]) == (task_id, True)
    assert balance(sessions, tenant).available == 1000 - done.total_tokens
    assert_ledger_clean(sessions)


def test_a_job_whose_worker_was_lost_is_finished_from_the_same_task(setup, sessions, service):
    settings, worker, tenant = setup(retry_backoff_s=0.0, lease_s=1.0, heartbeat_s=60.0)  # no heartbeat comes
    service.polls_to_finish = 10**6  # runs until the test lets it finish
    job_id = submit_job(sessions, settings, tenant)
    runner = threading.Thread(target=worker.run_once)
    runner.start()
    wait_for(lambda: (job(sessions, job_id).engine_metadata or {}).get("task_id") is not None)
    # The worker stops heartbeating (a crash, a partition): its lease expires and the job is requeued.
    time.sleep(settings.lease_s)
    assert maintenance.reap_expired_leases(sessions, utcnow()) == 1
    runner.join(10)
    assert not runner.is_alive()
    [task] = service.tasks.values()
    assert task.status in ("pending", "running")  # left running for the next owner, not cancelled
    task.polls_to_finish = task.polls + 1
    other = Worker(settings, sessions, worker.storage, worker_id="other")
    assert other.run_once()
    done = job(sessions, job_id)
    assert (done.status, done.attempts, done.engine_metadata["task_id"]) == ("completed", 2, task.id)
    assert service.tasks_created == 1 and not service.calls("POST", "/cancel")
    assert balance(sessions, tenant).available == 1000 - done.total_tokens
    assert_ledger_clean(sessions)


@pytest.mark.parametrize("recorded", ["failed", "cancelled", "gone"])
def test_a_recorded_task_that_cannot_deliver_is_replaced_by_a_new_one(setup, sessions, service, recorded):
    settings, worker, tenant = setup(retry_backoff_s=0.0)
    job_id = submit_job(sessions, settings, tenant)
    # An earlier attempt created a task, recorded it, and its worker was lost.
    earlier = "expired-task-1" if recorded == "gone" else service.add_task(recorded).id
    with sessions.begin() as s:
        claimed = queue.claim(s, worker_id="lost", models=["wan-hosted"], lease_s=0.01, now=utcnow())
        assert claimed.id == job_id
        queue.record_remote_task(s, job_id, "lost", engine=service.engine, task_id=earlier)
    time.sleep(0.02)
    assert maintenance.reap_expired_leases(sessions, utcnow()) == 1
    created_before = service.tasks_created
    assert worker.run_once()
    done = job(sessions, job_id)
    assert done.status == "completed", done.error_message
    assert service.tasks_created == created_before + 1
    assert done.engine_metadata["task_id"] != earlier and done.engine_metadata["resumed"] is False
    assert_ledger_clean(sessions)


def test_a_stale_worker_cannot_record_its_task_over_the_owners(setup, sessions, service):
    settings, worker, tenant = setup()
    job_id = submit_job(sessions, settings, tenant)
    with sessions.begin() as s:
        queue.claim(s, worker_id="owner", models=["wan-hosted"], lease_s=30.0, now=utcnow())
        queue.record_remote_task(s, job_id, "owner", engine=service.engine, task_id="task-of-owner")
    with pytest.raises(queue.StaleJob), sessions.begin() as s:
        queue.record_remote_task(s, job_id, "stale", engine=service.engine, task_id="task-of-stale")
    assert job(sessions, job_id).engine_metadata == {"engine": service.engine, "task_id": "task-of-owner"}
