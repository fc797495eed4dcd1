"""/v1/styles/train: style trainings (a LoRA learned from the tenant's images and clips, on the job queue)."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from vidfactory.api.body import read_training_create
from vidfactory.api.context import AppContext
from vidfactory.api.deps import CallerDep, ContextDep, IdempotencyKeyHeader, SessionDep
from vidfactory.api.errors import checked_id, not_found
from vidfactory.api.schemas import TrainingCreate
from vidfactory.db.models import Job
from vidfactory.idempotency import fingerprint
from vidfactory.jobs import queue
from vidfactory.jobs.training import (
    TrainingRequest,
    dataset_from_videos,
    find_training,
    submit_training,
    training_object,
    trainings_page,
)
from vidfactory.tenancy import Caller

router = APIRouter(prefix="/v1/styles/train", tags=["styles"])
path = "/v1/styles/train"
page_size_max = 100


def owned_training(session, caller: Caller, training_id: str, param: str = "id") -> Job:
    """Another tenant's training answers exactly like a missing one."""
    checked_id("training", training_id, param)
    job = find_training(session, caller.tenant_id, training_id)
    if job is None:
        raise not_found("training", training_id, param)
    return job


def to_request(ctx: AppContext, caller: Caller, body: TrainingCreate, dataset: bytes | None) -> TrainingRequest:
    if dataset is None:
        with ctx.sessions() as session:
            dataset = dataset_from_videos(session, ctx.storage, caller.tenant_id, body.video_ids or [])
    return TrainingRequest(name=body.name, model=body.model, dataset=dataset, caption=body.caption,
                           steps=body.steps, rank=body.rank, learning_rate=body.learning_rate,
                           default_scale=body.default_scale, description=body.description, seed=body.seed)


def request_fingerprint(body: TrainingCreate, dataset: bytes | None) -> str:
    """What was sent, the ZIP by its SHA-256: the same key with another dataset is another request (409)."""
    fields = body.model_dump()
    if dataset is not None:
        fields["dataset_sha256"] = hashlib.sha256(dataset).hexdigest()
    return fingerprint(path, fields)


@router.post("")
async def create_training(request: Request, ctx: ContextDep, caller: CallerDep,
                          idempotency_key: IdempotencyKeyHeader = None) -> JSONResponse:
    """A dataset ZIP as multipart field `dataset`, or `video_ids` (JSON or form): the tenant's own videos.
    With an `Idempotency-Key`, a retry answers the first training (header `Idempotent-Replayed`), never a
    second hold; the key sent with another body answers 409."""
    body, dataset = await read_training_create(request, ctx.settings.training_upload_bytes_max)
    idempotency = None if idempotency_key is None else (idempotency_key, request_fingerprint(body, dataset))
    training = await run_in_threadpool(to_request, ctx, caller, body, dataset)
    submitted = await run_in_threadpool(submit_training, ctx.sessions, ctx.settings, caller, training,
                                        ctx.screens.images, ctx.storage, idempotency)
    headers = {"Idempotent-Replayed": "true"} if submitted.replayed else {}
    return JSONResponse(submitted.body, status_code=submitted.status_code, headers=headers)


@router.get("")
def list_trainings(session: SessionDep, caller: CallerDep,
                   after: Annotated[str | None, Query(max_length=64)] = None,
                   limit: Annotated[int, Query(ge=0, le=page_size_max)] = 20) -> dict[str, Any]:
    """The tenant's trainings, newest first; `after` a training id from the previous page."""
    cursor = None if after is None else owned_training(session, caller, after, param="after")
    page, has_more = trainings_page(session, caller.tenant_id, cursor, limit)
    return {"object": "list", "data": [training_object(session, job) for job in page],
            "first_id": page[0].id if page else None, "last_id": page[-1].id if page else None,
            "has_more": has_more}


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
