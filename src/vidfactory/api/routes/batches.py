"""/v1/batches: many videos from one template and variable lists, quoted as a whole; their progress;
a ZIP of the finished clips with a manifest."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from vidfactory.api.deps import CallerDep, ContextDep, IdempotencyKeyHeader, SessionDep
from vidfactory.api.errors import ApiError, checked_id, not_found
from vidfactory.api.render import timestamp
from vidfactory.api.schemas import BatchCreate, prompt_chars_max
from vidfactory.db.models import Batch, Job
from vidfactory.db.types import utcnow
from vidfactory.idempotency import fingerprint
from vidfactory.jobs.batches import (BatchExpired, BatchSpec, archive_bytes, batch_jobs, batch_quote,
                                    batch_reference, find_batch, status_counts, submit_batch, tenant_batches)
from vidfactory.jobs.library import feedback_counts
from vidfactory.styles.catalog import StyleRef
from vidfactory.tenancy import Caller

router = APIRouter(prefix="/v1/batches", tags=["batches"])

page_size_max = 100


def archive_expires_at(jobs: list[Job]) -> datetime | None:
    """The archive holds each finished clip until that clip expires: it is gone when the last one is.
    None while an item is unfinished (its expiry is not known yet)."""
    expiries = [job.expires_at for job in jobs]
    if not expiries or None in expiries:
        return None
    return max(expiries)


def batch_object(session: Session, batch: Batch) -> dict[str, Any]:
    jobs = batch_jobs(session, batch)
    counts = status_counts(session, [batch])[batch.id]
    feedback = feedback_counts(session, [job.id for job in jobs])
    items = [{"item": job.batch_item, "video_id": job.id, "status": job.status, "ab_group": job.ab_group,
              "variables": job.variables, "expires_at": timestamp(job.expires_at), "feedback": feedback[job.id]}
             for job in jobs]
    return {"id": batch.id, "object": "batch", "created_at": timestamp(batch.created_at),
            "expires_at": timestamp(archive_expires_at(jobs)), "template": batch.template,
            "mode": batch.mode, "atomic": batch.atomic, "items_total": batch.items_total, "counts": counts,
            "quote": batch_quote(session, batch), "items": items, "rejected": list(batch.rejected),
            "metadata": batch.request_metadata}


def batch_spec(body: BatchCreate) -> BatchSpec:
    return BatchSpec(template=body.template, variables=dict(body.variables), mode=body.mode,
                     ab_groups=body.ab_groups, atomic=body.atomic, enhance=body.enhance_prompt, model=body.model,
                     seconds=body.seconds, size=body.size, negative_prompt=body.negative_prompt, seed=body.seed,
                     metadata=dict(body.metadata), style=body.style,
                     styles=None if body.styles is None else [StyleRef(u.style, u.scale) for u in body.styles])


def owned_batch(session: Session, caller: Caller, batch_id: str) -> Batch:
    checked_id("batch", batch_id)
    batch = find_batch(session, caller.tenant_id, batch_id)
    if batch is None:
        raise not_found("batch", batch_id)
    return batch


@router.post("", status_code=202)
async def create_batch(body: BatchCreate, ctx: ContextDep, caller: CallerDep,
                       idempotency_key: IdempotencyKeyHeader = None) -> JSONResponse:
    """Every item is priced before anything is held; the response quotes the whole batch. `atomic`:
    all items held and queued, or none (402 when the balance cannot hold them all). Every item starts
    from the template's reference image, when it has one."""
    spec = batch_spec(body)
    reference = await run_in_threadpool(batch_reference, ctx.sessions, ctx.storage, caller.tenant_id,
                                        body.template)
    idempotency = None
    if idempotency_key is not None:
        # The template's image is part of what is asked for: after it changes, the key is another request.
        sent = body.model_dump(mode="json") | ({} if reference is None else
                                               {"template_reference": {"sha256": reference.sha256}})
        idempotency = (idempotency_key, fingerprint("/v1/batches", sent))
    outcome = await run_in_threadpool(functools.partial(
        submit_batch, ctx.sessions, ctx.settings, ctx.counters, caller, spec, prompt_chars_max, batch_object,
        idempotency, screens=ctx.screens, storage=ctx.storage, reference=reference))
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else {}
    return JSONResponse(outcome.body, status_code=outcome.status_code, headers=headers)


@router.get("")
def list_batches(session: SessionDep, caller: CallerDep,
                 limit: Annotated[int, Query(ge=1, le=page_size_max)] = 20) -> dict[str, Any]:
    """Newest first, without their items (GET one batch for those)."""
    batches = tenant_batches(session, caller.tenant_id, limit)
    counts = status_counts(session, batches)
    return {"object": "list", "data": [
        {"id": b.id, "object": "batch", "created_at": timestamp(b.created_at), "template": b.template,
         "items_total": b.items_total, "counts": counts[b.id]} for b in batches]}


@router.get("/{batch_id}")
def retrieve_batch(batch_id: str, session: SessionDep, caller: CallerDep) -> dict[str, Any]:
    return batch_object(session, owned_batch(session, caller, batch_id))


@router.get("/{batch_id}/archive", response_class=Response,
            responses={200: {"content": {"application/zip": {}}}})
def batch_archive(batch_id: str, ctx: ContextDep, session: SessionDep, caller: CallerDep) -> Response:
    """A ZIP: each finished clip as item-NNNN.mp4, and manifest.csv with one row per item (finished or
    not): item, video_id, file, variables, ab_group, prompt, seed, status, sha256 (of the clip). An expired
    clip is left out (its status says `expired`); once every clip has expired, 410 `batch_expired`."""
    batch = owned_batch(session, caller, batch_id)
    try:
        archive = archive_bytes(session, ctx.storage, batch, utcnow())
    except BatchExpired as exc:
        raise ApiError(410, "batch_expired", f"batch {batch.id} expired: the files of all its videos were deleted "
                       "after their plan's retention period") from exc
    return Response(archive, media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{batch.id}.zip"'})
