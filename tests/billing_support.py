"""Helpers for the billing-in-depth tests: an API client, jobs taken through the real queue functions."""

from __future__ import annotations

from sqlalchemy import select

from vidfactory.db.models import Job, Transfer
from vidfactory.db.types import utcnow
from vidfactory.jobs import queue
from vidfactory.jobs.worker import Worker

admin = {"Authorization": "Bearer test-admin-token"}
small = {"size": "64x64", "seconds": "1"}


def work(ctx, jobs: int = 1) -> None:
    """Run queued jobs through the real worker (tiny Wan pipeline, encode, store, settle)."""
    worker = Worker(ctx.settings, ctx.sessions, ctx.storage, worker_id="test-worker")
    for _ in range(jobs):
        assert worker.run_once()


def finish_without_media(sessions, job_id: str) -> None:
    """Claim and complete one job through the queue's own functions, with a stand-in asset record (for
    tests about billing and the cache index, where the clip's bytes do not matter)."""
    with sessions.begin() as session:
        job = queue.claim(session, worker_id="w-fast", models=["wan-tiny"], lease_s=30.0, now=utcnow())
        assert job is not None and job.id == job_id, (job, job_id)
        asset = queue.AssetRecord("video", f"{job.tenant_id}/{job.id}/video.mp4", "video/mp4", 1, "0" * 64)
        if job.cache_hit_job_id is not None:  # posted at the cache rate, as the worker's re-labelling does
            queue.complete_cache_hit(session, job, "w-fast", [asset])
        else:
            queue.complete(session, job, "w-fast", [asset], charge=job.total_tokens)


def fail_job(sessions, job_id: str, error_type: str = "engine_crash"):
    with sessions.begin() as session:
        job = queue.claim(session, worker_id="w-fail", models=["wan-tiny"], lease_s=30.0, now=utcnow())
        assert job is not None and job.id == job_id
        return queue.fail(session, job_id, expected=("in_progress",), owner="w-fail", error_type=error_type,
                          message="boom")


def transfers_of_job(sessions, job_id: str) -> list[Transfer]:
    with sessions() as session:
        return list(session.scalars(select(Transfer).where(Transfer.job_id == job_id).order_by(Transfer.seq)))


def job_row(sessions, job_id: str) -> Job:
    with sessions() as session:
        return session.get(Job, job_id)
