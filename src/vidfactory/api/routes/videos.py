"""/v1/videos: the OpenAI-compatible video resource."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import select, tuple_
from starlette.concurrency import run_in_threadpool

from vidfactory.api.body import read_video_create, video_create_openapi
from vidfactory.api.deps import CallerDep, ContextDep, IdempotencyKeyHeader, SessionDep
from vidfactory.api.errors import ApiError, checked_id, not_found
from vidfactory.api.render import file_hashes_by_job, video_object
from vidfactory.api.schemas import VideoCreate
from vidfactory.billing import ledger
from vidfactory.db.models import Asset, Job
from vidfactory.db.types import utcnow
from vidfactory.jobs import queue
from vidfactory.idempotency import fingerprint
from vidfactory.jobs.submit import VideoRequest, submit
from vidfactory.tenancy import Caller

router = APIRouter(prefix="/v1/videos", tags=["videos"])

page_size_max = 100


def to_video_request(body: VideoCreate, default_model: str) -> VideoRequest:
    return VideoRequest(prompt=body.prompt, model=body.model or default_model, seconds=body.seconds,
                        size=body.size, negative_prompt=body.negative_prompt, seed=body.seed,
                        metadata=dict(body.metadata), cache=body.cache)


def owned_job(session, caller: Caller, video_id: str, param: str = "id") -> Job:
    """Another tenant's video answers exactly like a missing one."""
    checked_id("video", video_id, param)
    job = session.scalar(select(Job).where(Job.id == video_id, Job.tenant_id == caller.tenant_id,
                                           Job.deleted_at.is_(None)))
    if job is None:
        raise not_found("video", video_id, param)
    return job


@router.post("", status_code=202, openapi_extra=video_create_openapi)
async def create_video(
    request: Request, ctx: ContextDep, caller: CallerDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    body, fields = await read_video_create(request, ctx.settings.upload_bytes_max)
    video_request = to_video_request(body, ctx.settings.models[0].id)
    idempotency = None
    if idempotency_key is not None:
        idempotency = (idempotency_key, fingerprint("/v1/videos", fields))
    submitted = await run_in_threadpool(submit, ctx.sessions, ctx.settings, ctx.counters, caller, video_request,
                                        video_object, idempotency, screens=ctx.screens)
    headers = {"Idempotent-Replayed": "true"} if submitted.replayed else {}
    return JSONResponse(submitted.body, status_code=submitted.status_code, headers=headers)


@router.get("")
def list_videos(
    session: SessionDep, caller: CallerDep,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=page_size_max)] = 20,
    order: Literal["asc", "desc"] = "desc",
) -> dict[str, Any]:
    statement = select(Job).where(Job.tenant_id == caller.tenant_id, Job.deleted_at.is_(None))
    if after is not None:
        cursor = owned_job(session, caller, after, param="after")
        position = tuple_(Job.created_at, Job.id)
        mark = tuple_(cursor.created_at, cursor.id)
        statement = statement.where(position < mark if order == "desc" else position > mark)
    ordering = (Job.created_at.desc(), Job.id.desc()) if order == "desc" else (Job.created_at, Job.id)
    jobs = list(session.scalars(statement.order_by(*ordering).limit(limit + 1)))
    page = jobs[:limit]
    resolutions = ledger.hold_resolutions(session, [leg for job in page for leg in job.hold_leg_ids])
    hashes = file_hashes_by_job(session, [job.id for job in page])
    return {"object": "list", "data": [video_object(session, job, resolutions, hashes) for job in page],
            "first_id": page[0].id if page else None, "last_id": page[-1].id if page else None,
            "has_more": len(jobs) > limit}


@router.get("/{video_id}")
def retrieve_video(video_id: str, session: SessionDep, caller: CallerDep) -> dict[str, Any]:
    return video_object(session, owned_job(session, caller, video_id))


@router.post("/{video_id}/cancel")
def cancel_video(video_id: str, ctx: ContextDep, caller: CallerDep) -> dict[str, Any]:
    with ctx.sessions.begin() as session:
        job = owned_job(session, caller, video_id)
        queue.request_cancel(session, job)
    with ctx.sessions() as session:
        return video_object(session, owned_job(session, caller, video_id))


@router.delete("/{video_id}")
def delete_video(video_id: str, ctx: ContextDep, caller: CallerDep) -> dict[str, Any]:
    """Deletes the stored files; the job row and its ledger history stay (the ledger is append-only)."""
    with ctx.sessions.begin() as session:
        job = owned_job(session, caller, video_id)
        if job.status == "in_progress":
            raise ApiError(409, "invalid_state", f"video {video_id} is running; cancel it first")
        if job.status == "queued":
            queue.request_cancel(session, job)
        assets = list(session.scalars(select(Asset).where(Asset.job_id == job.id)))
        job.deleted_at = utcnow()
        session.flush()
        # A cache hit's assets name its source's files (and the source serves later hits): a file goes
        # only when no job that is not deleted still names it.
        kept = set(session.scalars(select(Asset.storage_key).join(Job, Job.id == Asset.job_id).where(
            Asset.storage_key.in_([a.storage_key for a in assets]), Job.deleted_at.is_(None))))
    for asset in assets:
        if asset.storage_key not in kept:
            ctx.storage.delete(asset.storage_key)
    return {"id": video_id, "object": "video.deleted", "deleted": True}


@router.get("/{video_id}/content", response_class=Response,
            responses={200: {"content": {"video/mp4": {}, "image/jpeg": {}}}})
def download_content(
    video_id: str, ctx: ContextDep, session: SessionDep, caller: CallerDep,
    variant: Literal["video", "thumbnail", "spritesheet"] = "video",
) -> Response:
    job = owned_job(session, caller, video_id)
    if job.status != "completed":
        raise ApiError(409, "video_not_ready", f"video {video_id} is {job.status}; content exists once completed")
    asset = session.scalar(select(Asset).where(Asset.job_id == job.id, Asset.variant == variant))
    if asset is None:
        raise ApiError(404, "variant_not_available", f"video {video_id} has no {variant}", param="variant")
    data = ctx.storage.read(asset.storage_key)
    return Response(data, media_type=asset.content_type,
                    headers={"Content-Disposition": f'inline; filename="{video_id}.{asset.storage_key.rsplit(".", 1)[-1]}"',
                             "X-Content-SHA256": asset.sha256})
