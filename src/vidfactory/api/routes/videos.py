"""/v1/videos: the OpenAI-compatible video resource."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Annotated, Any, BinaryIO, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from vidfactory.api.body import VideoInput, read_remix, read_video_create, remix_openapi, video_create_openapi
from vidfactory.api.context import AppContext
from vidfactory.api.deps import CallerDep, ContextDep, IdempotencyKeyHeader, SessionDep
from vidfactory.api.errors import ApiError, checked_id, not_found
from vidfactory.api.render import file_hashes_by_job, new_video_object, timestamp, video_object
from vidfactory.api.schemas import FeedbackCreate, RegenerateCreate, prompt_chars_max
from vidfactory.api.uploads import image_gate
from vidfactory.billing import ledger
from vidfactory.db.models import Asset, Job
from vidfactory.db.types import utcnow
from vidfactory.idempotency import Outcome, fingerprint
from vidfactory.jobs import library, queue, regenerate
from vidfactory.jobs.prompting import PromptRequest, resolve_prompt, template_reference
from vidfactory.jobs.styling import requested, resolve_styles
from vidfactory.jobs.submit import VideoRequest, submit
from vidfactory.media.preview import ImageFormat, content_types, transcode
from vidfactory.styles.catalog import StyleRef
from vidfactory.tenancy import Caller

router = APIRouter(prefix="/v1/videos", tags=["videos"])

page_size_max = 100
unfinished_states = ("queued", "in_progress")


def poll_headers(ctx: AppContext, video: dict[str, Any]) -> dict[str, str]:
    """`openai-poll-after-ms` while the video is queued or running: the openai SDK's `poll` and
    `create_and_poll` wait that long before asking again."""
    if video["status"] not in unfinished_states:
        return {}
    return {"openai-poll-after-ms": str(ctx.settings.poll_after_ms)}


def created_response(ctx: AppContext, submitted: Outcome) -> JSONResponse:
    headers = poll_headers(ctx, submitted.body) | ({"Idempotent-Replayed": "true"} if submitted.replayed else {})
    return JSONResponse(submitted.body, status_code=submitted.status_code, headers=headers)


def to_video_request(ctx: AppContext, caller: Caller, sent: VideoInput) -> VideoRequest:
    """Render the template and enhance the prompt, as asked (reads templates; may call the LLM). The
    template's reference image is used when the request sends none; the request's own overrides it."""
    body = sent.body
    resolved = resolve_prompt(ctx.sessions, ctx.settings, caller.tenant_id,
                              PromptRequest(prompt=body.prompt, template=body.template, variables=body.variables,
                                            enhance=body.enhance_prompt), prompt_chars_max)
    reference, from_template = sent.reference, False
    if reference is None and resolved.reference is not None:
        assert body.template is not None
        reference = template_reference(ctx.storage, body.template, resolved.reference)
        from_template = True
    model = body.model or ctx.settings.models[0].id
    asked = None if body.styles is None else [StyleRef(use.style, use.scale) for use in body.styles]
    refs, param = requested(body.style, asked, resolved.style)
    styles = resolve_styles(ctx.sessions, ctx.settings, caller.tenant_id, model, refs, param)
    return VideoRequest(prompt=resolved.prompt, model=model,
                        seconds=body.seconds if body.seconds is not None else _text(resolved.seconds),
                        size=body.size or resolved.size, negative_prompt=body.negative_prompt, seed=body.seed,
                        metadata=dict(body.metadata), cache=body.cache, webhook_url=body.webhook_url,
                        user_prompt=resolved.user_prompt, template=resolved.template,
                        variables=resolved.variables, enhancement=resolved.enhancement,
                        warnings=resolved.warnings, reference=reference,
                        reference_from_template=from_template, styles=styles)


def request_fingerprint(path: str, fields: dict[str, Any], request: VideoRequest) -> str:
    """What was sent, the template's image when it is the one used, and each style's adapter and scale:
    the same key sent again after the template's image or a style changed is another request (409), not
    a replay of the old clip."""
    if request.reference_from_template:
        assert request.reference is not None
        fields = {**fields, "template_reference": {"sha256": request.reference.sha256}}
    if request.styles:  # the adapters named: the same name sent after the style was replaced is another request
        fields = {**fields, "styles_applied": [{"sha256": s.sha256, "scale": s.scale} for s in request.styles]}
    return fingerprint(path, fields)


def _text(seconds: int | None) -> str | None:
    return None if seconds is None else str(seconds)


def owned_job(session, caller: Caller, video_id: str, param: str = "id", *, deleted_too: bool = False) -> Job:
    """Another tenant's video answers exactly like a missing one; a deleted one too, unless `deleted_too`
    (a list cursor: the page after a video deleted since still has its place)."""
    checked_id("video", video_id, param)
    job = library.find_video(session, caller.tenant_id, video_id, deleted_too=deleted_too)
    if job is None:
        raise not_found("video", video_id, param)
    return job


@router.post("", openapi_extra=video_create_openapi)
async def create_video(
    request: Request, ctx: ContextDep, caller: CallerDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    sent = await read_video_create(request, ctx.settings.upload_bytes_max,
                                   image_gate(ctx, caller, needs_balance=True))
    video_request = await run_in_threadpool(to_video_request, ctx, caller, sent)
    idempotency = None
    if idempotency_key is not None:
        idempotency = (idempotency_key, request_fingerprint("/v1/videos", sent.fields, video_request))
    submitted = await run_in_threadpool(submit, ctx.sessions, ctx.settings, ctx.counters, caller, video_request,
                                        new_video_object, idempotency, screens=ctx.screens, storage=ctx.storage,
                                        admissions=ctx.admissions)
    return created_response(ctx, submitted)


@router.get("")
def list_videos(
    ctx: ContextDep, session: SessionDep, caller: CallerDep,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=0, le=page_size_max)] = 20,
    order: Literal["asc", "desc"] = "desc",
) -> dict[str, Any]:
    cursor = None if after is None else owned_job(session, caller, after, param="after", deleted_too=True)
    page, has_more = library.videos_page(session, caller.tenant_id, cursor, limit, order)
    resolutions = ledger.hold_resolutions(session, [leg for job in page for leg in job.hold_leg_ids])
    hashes = file_hashes_by_job(session, [job.id for job in page])
    videos = [video_object(session, job, resolutions, hashes) for job in page]
    return {"object": "list", "data": with_download_urls(ctx, session, videos),
            "first_id": page[0].id if page else None, "last_id": page[-1].id if page else None,
            "has_more": has_more}


@router.get("/{video_id}")
def retrieve_video(video_id: str, ctx: ContextDep, session: SessionDep, caller: CallerDep,
                   response: Response) -> dict[str, Any]:
    [video] = with_download_urls(ctx, session, [video_object(session, owned_job(session, caller, video_id))])
    response.headers.update(poll_headers(ctx, video))
    return video


@router.post("/{video_id}/cancel")
def cancel_video(video_id: str, ctx: ContextDep, caller: CallerDep, response: Response) -> dict[str, Any]:
    with ctx.sessions.begin() as session:
        job = owned_job(session, caller, video_id)
        queue.request_cancel(session, job)
    with ctx.sessions() as session:
        video = video_object(session, owned_job(session, caller, video_id))
    response.headers.update(poll_headers(ctx, video))  # a running job stops at its next step
    return video


@router.delete("/{video_id}")
def delete_video(video_id: str, ctx: ContextDep, caller: CallerDep) -> dict[str, Any]:
    """Deletes the stored files; the job row and its ledger history stay (the ledger is append-only)."""
    with ctx.sessions.begin() as session:
        job = owned_job(session, caller, video_id)
        try:
            keys = library.delete_video(session, job)
        except library.VideoRunning:
            raise ApiError(409, "invalid_state", f"video {video_id} is running; cancel it first") from None
    for key in keys:
        ctx.storage.delete(key)
    return {"id": video_id, "object": "video.deleted", "deleted": True}


def expired(job: Job) -> ApiError:
    """The record stays (retrieve answers it); its files are gone, or go at the next sweep."""
    assert job.expires_at is not None
    return ApiError(410, "video_expired", f"video {job.id} expired at {job.expires_at.isoformat(timespec='seconds')}"
                    "; its files are deleted after its plan's retention period")


def preview_format(accept: str) -> ImageFormat:
    """WebP, as OpenAI serves previews; JPEG for a client whose Accept names JPEG and not WebP."""
    listed = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    return "jpeg" if listed & {"image/jpeg", "image/jpg"} and "image/webp" not in listed else "webp"


extensions = {"video/mp4": "mp4", "image/webp": "webp", "image/jpeg": "jpg"}


@router.get("/{video_id}/content", response_class=Response,
            responses={200: {"content": {"video/mp4": {}, "image/webp": {}, "image/jpeg": {}},
                             "description": "the MP4; a thumbnail or spritesheet in WebP, or JPEG when the "
                                            "Accept header names image/jpeg and not image/webp"}})
def download_content(
    video_id: str, request: Request, ctx: ContextDep, session: SessionDep, caller: CallerDep,
    variant: Literal["video", "thumbnail", "spritesheet"] = "video",
) -> Response:
    job = owned_job(session, caller, video_id)
    if job.content_expired(utcnow()):
        raise expired(job)
    if job.status != "completed":
        raise ApiError(409, "video_not_ready", f"video {video_id} is {job.status}; content exists once completed")
    asset = library.video_asset(session, job.id, variant)
    if asset is None:
        raise ApiError(404, "variant_not_available", f"video {video_id} has no {variant}", param="variant")
    if variant != "video":
        wanted = preview_format(request.headers.get("accept", ""))
        if content_types[wanted] != asset.content_type:  # a JPEG asked for, or a preview stored before WebP
            data = transcode(ctx.storage.read(asset.storage_key), wanted)
            return Response(data, media_type=content_types[wanted],
                            headers=content_headers(video_id, content_types[wanted], hashlib.sha256(data).hexdigest()))
    headers = content_headers(video_id, asset.content_type, asset.sha256)
    if ctx.settings.content_delivery == "redirect":
        url = ctx.links.url(asset.storage_key, content_type=asset.content_type, filename=file_name(video_id, asset))
        if url is not None:  # the bytes go from the bucket or the CDN, not through this process
            return RedirectResponse(url, status_code=307, headers={**headers, "Cache-Control": "private, no-store"})
    size = ctx.storage.size(asset.storage_key)
    return StreamingResponse(chunks(ctx.storage.open(asset.storage_key)), media_type=asset.content_type,
                             headers={**headers, "Content-Length": str(size)})


def file_name(video_id: str, asset: Asset) -> str:
    return f"{video_id}.{extensions[asset.content_type]}"


def content_headers(video_id: str, content_type: str, sha256: str) -> dict[str, str]:
    return {"Content-Disposition": f'inline; filename="{video_id}.{extensions[content_type]}"',
            "X-Content-SHA256": sha256, "Vary": "Accept"}


def chunks(stream: BinaryIO, chunk_bytes: int = 1 << 20) -> Iterator[bytes]:
    """A stored object, a chunk at a time: a proxied clip is never whole in the API's memory."""
    with stream:
        while chunk := stream.read(chunk_bytes):
            yield chunk


def with_download_urls(ctx: AppContext, session, videos: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each completed video's signed link per variant (`download_urls`, valid until
    `download_urls_expire_at`), where the operator enables them and the storage or a CDN can sign. None
    for a video past its `expires_at`: its files are gone, or go at the next sweep."""
    now = timestamp(utcnow())
    done = [video["id"] for video in videos if video["status"] == "completed"
            and (video["expires_at"] is None or video["expires_at"] > now)]
    if not ctx.settings.download_links or not done:
        return videos
    urls: dict[str, dict[str, str]] = {}
    for asset in session.scalars(select(Asset).where(Asset.job_id.in_(done)).order_by(Asset.variant)):
        url = ctx.links.url(asset.storage_key, content_type=asset.content_type,
                            filename=file_name(asset.job_id, asset))
        if url is None:  # a local directory without a CDN: /content serves the bytes
            return videos
        urls.setdefault(asset.job_id, {})[asset.variant] = url
    expires_at = ctx.links.expires_at()
    return [video | {"download_urls": urls[video["id"]], "download_urls_expire_at": expires_at}
            if video["id"] in urls else video for video in videos]


def regenerated_request(ctx: AppContext, parent: Job, body: RegenerateCreate) -> VideoRequest:
    try:
        return regenerate.regenerated_request(ctx.sessions, ctx.settings, ctx.storage, parent, prompt=body.prompt,
                                              seed=body.seed, enhance=body.enhance_prompt,
                                              prompt_chars_max=prompt_chars_max)
    except regenerate.ParentExpired as exc:
        raise expired(exc.job) from None


async def _regenerate(video_id: str, body: RegenerateCreate, ctx: AppContext, caller: Caller,
                      idempotency_key: str | None, path: str) -> JSONResponse:
    """200 with the new video, queued (or completed, from the result cache), as OpenAI's remix answers."""
    with ctx.sessions() as session:
        parent = owned_job(session, caller, video_id)
        session.expunge(parent)
    video_request = await run_in_threadpool(regenerated_request, ctx, parent, body)
    idempotency = None
    if idempotency_key is not None:
        idempotency = (idempotency_key, fingerprint(path.format(video_id=video_id), body.model_dump()))
    submitted = await run_in_threadpool(submit, ctx.sessions, ctx.settings, ctx.counters, caller, video_request,
                                        new_video_object, idempotency, screens=ctx.screens, storage=ctx.storage,
                                        admissions=ctx.admissions)
    return created_response(ctx, submitted)


@router.post("/{video_id}/regenerate")
async def regenerate_video(video_id: str, body: RegenerateCreate, ctx: ContextDep, caller: CallerDep,
                           idempotency_key: IdempotencyKeyHeader = None) -> JSONResponse:
    """A new job linked to its parent (`remixed_from_video_id`), quoted, held and billed on its own."""
    return await _regenerate(video_id, body, ctx, caller, idempotency_key, "/v1/videos/{video_id}/regenerate")


@router.post("/{video_id}/remix", openapi_extra=remix_openapi)
async def remix_video(video_id: str, request: Request, ctx: ContextDep, caller: CallerDep,
                      idempotency_key: IdempotencyKeyHeader = None) -> JSONResponse:
    """OpenAI's remix: regenerate with a new prompt (JSON or a form)."""
    body = await read_remix(request, ctx.settings.upload_bytes_max)
    return await _regenerate(video_id, RegenerateCreate(prompt=body.prompt), ctx, caller, idempotency_key,
                             "/v1/videos/{video_id}/remix")


@router.post("/{video_id}/feedback", status_code=201)
def create_feedback(video_id: str, body: FeedbackCreate, ctx: ContextDep, caller: CallerDep) -> dict[str, Any]:
    """A rating of a clip (up/down, a short reason, free text): kept, never changed, exported to admins
    as preference data."""
    with ctx.sessions.begin() as session:
        job = owned_job(session, caller, video_id)
        feedback = library.record_feedback(session, job, body.rating, body.reason, body.comment)
        return {"id": feedback.id, "object": "video.feedback", "video_id": job.id, "rating": feedback.rating,
                "reason": feedback.reason, "comment": feedback.comment, "created_at": timestamp(feedback.created_at)}
