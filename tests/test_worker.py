"""Worker failure paths on the real tiny engine, with faults injected around it: out-of-memory retries once
with the next memory mode and keeps the hold; permanent errors fail and refund; timeouts fail and refund."""

import time

import pytest
from sqlalchemy import select

from vidfactory.billing import ledger
from vidfactory.db.models import Job
from vidfactory.engines.base import EngineError, OutOfMemory
from vidfactory.engines.registry import load_engine
from vidfactory.jobs.submit import VideoRequest, submit
from vidfactory.jobs.screening import PromptScreens
from vidfactory.jobs.worker import Worker
from vidfactory.api.context import TokenCounters
from vidfactory.api.render import video_object
from vidfactory.storage.local import LocalStorage
from vidfactory.tenancy import authenticate

from conftest import assert_ledger_clean, make_settings, new_tenant


class FaultyEngine:
    """The real engine, preceded by a scripted list of failures (one per generate call)."""

    def __init__(self, engine, failures):
        self.engine = engine
        self.model_id = engine.model_id
        self.failures = list(failures)
        self.calls = 0
        self.requests = []

    def generate(self, request, on_progress, is_cancelled):
        self.calls += 1
        self.requests.append(request)
        if self.failures:
            raise self.failures.pop(0)
        return self.engine.generate(request, on_progress, is_cancelled)


@pytest.fixture
def setup(tmp_path, database_url, models_dir, sessions):
    def make(failures=(), **overrides):
        settings = make_settings(tmp_path, database_url, models_dir, **overrides)
        faulty = FaultyEngine(load_engine(settings.models[0], settings.models_dir), failures)
        worker = Worker(settings, sessions, LocalStorage(settings.resolved_storage_dir), worker_id="w",
                        engine_loader=lambda config, models_path: faulty)
        tenant = new_tenant(sessions, tokens=1000)
        with sessions() as s:
            caller = authenticate(s, tenant.key)
        submitted = submit(sessions, settings, TokenCounters(settings.models_dir), caller,
                           VideoRequest(prompt="a lantern on a lake", model="wan-tiny", size="64x64", seconds="1"),
                           video_object, screens=PromptScreens.from_settings(settings))
        return worker, faulty, tenant, submitted.body["id"]

    return make


def job(sessions, job_id) -> Job:
    with sessions() as s:
        return s.scalars(select(Job).where(Job.id == job_id)).one()


def available(sessions, tenant):
    with sessions() as s:
        return ledger.balance(s, tenant.id).available


def test_out_of_memory_retries_once_at_once_with_the_next_memory_mode(setup, sessions):
    worker, faulty, tenant, job_id = setup([OutOfMemory("CUDA out of memory")], retry_backoff_s=30.0)
    assert worker.run_once()
    retried = job(sessions, job_id)
    assert (retried.status, retried.error_type, retried.attempts) == ("queued", "oom", 1)
    assert retried.memory_mode == "vae_tiling"  # the tiny model fits in "none": the next mode is tiling
    with sessions() as s:
        assert ledger.balance(s, tenant.id).pending == retried.total_tokens  # the hold stays
    assert worker.run_once()  # no backoff: a retry in a more frugal mode can run now
    done = job(sessions, job_id)
    assert (done.status, done.attempts, faulty.calls) == ("completed", 2, 2)
    assert [r.memory_mode for r in faulty.requests] == ["none", "vae_tiling"]
    assert done.engine_settings["memory_mode"] == "vae_tiling"
    assert available(sessions, tenant) == 1000 - done.total_tokens
    assert_ledger_clean(sessions)


def test_a_second_out_of_memory_fails_and_refunds(setup, sessions):
    worker, faulty, tenant, job_id = setup([OutOfMemory("oom")] * 3, retry_backoff_s=0.0)
    assert worker.run_once() and worker.run_once()
    assert not worker.run_once()
    failed = job(sessions, job_id)
    assert (failed.status, failed.error_type, failed.attempts, faulty.calls) == ("failed", "oom", 2, 2)
    assert available(sessions, tenant) == 1000
    assert_ledger_clean(sessions)


def test_engine_crash_fails_at_once_and_refunds(setup, sessions):
    worker, faulty, tenant, job_id = setup([EngineError("the transformer exploded")])
    assert worker.run_once()
    failed = job(sessions, job_id)
    assert (failed.status, failed.error_type, failed.attempts) == ("failed", "engine_crash", 1)
    assert "the transformer exploded" in failed.error_message
    assert available(sessions, tenant) == 1000
    assert_ledger_clean(sessions)


def test_timeout_fails_and_refunds(setup, sessions):
    worker, faulty, tenant, job_id = setup(job_timeout_s=0.0)
    assert worker.run_once()
    failed = job(sessions, job_id)
    assert (failed.status, failed.error_type) == ("failed", "timeout")
    assert available(sessions, tenant) == 1000
    assert_ledger_clean(sessions)


def test_an_unexpected_error_is_recorded_not_swallowed(setup, sessions):
    worker, faulty, tenant, job_id = setup([ZeroDivisionError("bug")])
    assert worker.run_once()
    failed = job(sessions, job_id)
    assert (failed.status, failed.error_type) == ("failed", "internal_error")
    assert "ZeroDivisionError: bug" in failed.error_message
    assert available(sessions, tenant) == 1000


def test_worker_survives_an_unreachable_database(tmp_path, models_dir):
    import threading

    from vidfactory.db.session import make_engine, make_session_factory

    settings = make_settings(tmp_path, "postgresql+psycopg://postgres@127.0.0.1:1/unreachable", models_dir)
    engine = make_engine(settings.resolved_database_url)
    worker = Worker(settings, make_session_factory(engine), LocalStorage(tmp_path / "storage"), worker_id="w")
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    time.sleep(0.5)
    assert thread.is_alive()  # it logged the outage and kept trying instead of dying
    stop.set()
    thread.join(5)
    assert not thread.is_alive()
    engine.dispose()
