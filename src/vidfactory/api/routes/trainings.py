"""/v1/styles/train: style trainings (a LoRA learned from the tenant's images and clips, on the job queue)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from vidfactory.api.body import read_training_create
from vidfactory.api.context import AppContext
from vidfactory.api.deps import CallerDep, ContextDep, SessionDep
from vidfactory.api.errors import checked_id, not_found
from vidfactory.api.schemas import TrainingCreate
from vidfactory.db.models import Job
from vidfactory.jobs import queue
from vidfactory.jobs.training import TrainingRequest, dataset_from_videos, submit_training, training_object
from vidfactory.tenancy import Caller

router = APIRouter(prefix="/v1/styles/train", tags=["styles"])


def owned_training(session, caller: Caller, training_id: str) -> Job:
    """Another tenant's training answers exactly like a missing one."""
    checked_id("training", training_id)
    job = session.scalar(select(Job).where(Job.id == training_id, Job.tenant_id == caller.tenant_id,
                                           Job.job_type == "training"))
    if job is None:
        raise not_found("training", training_id)
    return job


def to_request(ctx: AppContext, caller: Caller, body: TrainingCreate, dataset: bytes | None) -> TrainingRequest:
    if dataset is None:
        with ctx.sessions() as session:
            dataset = dataset_from_videos(session, ctx.storage, caller.tenant_id, body.video_ids or [])
    return TrainingRequest(name=body.name, model=body.model, dataset=dataset, caption=body.caption,
                           steps=body.steps, rank=body.rank, learning_rate=body.learning_rate,
                           default_scale=body.default_scale, description=body.description, seed=body.seed)


@router.post("")
async def create_training(request: Request, ctx: ContextDep, caller: CallerDep) -> dict[str, Any]:
    """A dataset ZIP as multipart field `dataset`, or `video_ids` (JSON or form): the tenant's own videos."""
    body, dataset = await read_training_create(request, ctx.settings.training_upload_bytes_max)
    training = await run_in_threadpool(to_request, ctx, caller, body, dataset)
    return await run_in_threadpool(submit_training, ctx.sessions, ctx.settings, caller, training,
                                   ctx.screens.images, ctx.storage)


@router.get("/{training_id}")
def retrieve_training(training_id: str, session: SessionDep, caller: CallerDep) -> dict[str, Any]:
    return training_object(session, owned_training(session, caller, training_id))


@router.post("/{training_id}/cancel")
def cancel_training(training_id: str, ctx: ContextDep, caller: CallerDep) -> dict[str, Any]:
    """Queued: cancelled and refunded now. Running: its worker stops before the next step, then refunds."""
    with ctx.sessions.begin() as session:
        queue.request_cancel(session, owned_training(session, caller, training_id))
    with ctx.sessions() as session:
        return training_object(session, owned_training(session, caller, training_id))
