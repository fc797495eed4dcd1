"""The Videos pages: the gallery (one page of tiles at a time; a queued or running tile refreshes itself
until it ends), and a video's page (live status, player, download, delete, regenerate, remix, feedback
and the provenance panel). Every action calls the same services as `/v1/videos`; another tenant's video
answers 404 to every route here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from vidfactory.api.errors import id_pattern
from vidfactory.api.render import new_video_object, video_object
from vidfactory.api.schemas import FeedbackCreate, RegenerateCreate, prompt_chars_max
from vidfactory.billing.ledger import InsufficientBalance
from vidfactory.db.models import Job
from vidfactory.db.types import utcnow
from vidfactory.jobs import library, queue, regenerate
from vidfactory.jobs.screening import PromptRejected
from vidfactory.jobs.spec import InvalidRequest
from vidfactory.jobs.submit import ActiveJobsLimit, submit
from vidfactory.jobs.verification import Scope, verify_file
from vidfactory.tenancy import TenantSuspended, console_caller
from vidfactory.web import forms
from vidfactory.web.console import Console, ListCursor

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
videos_per_page = 24
tile_poll_s = 2  # an unfinished tile asks for itself again this often (one stream per tile would use up
#                  the browser's six connections per site)
form_chars_max = prompt_chars_max  # the longest field a video form has (the remix prompt)
feedback_reasons = ("great", "on_prompt", "off_prompt", "blurry", "artifacts", "bad_motion", "other")
preview_variants = ("video", "thumbnail", "spritesheet")


def _page(request: Request, role_page: str = "videos") -> Console | Response:
    return forms.opened(request, role_page)


async def _posted(request: Request) -> tuple[Console, dict[str, str]] | Response:
    """The signed-in page allowed to change videos and its form, or the answer that ends the request."""
    return await forms.posted(request, "video_actions", form_chars_max)


def _job(page: Console, session, video_id: str) -> Job | None:
    """The tenant's own video, or None (missing, deleted, another tenant's: one answer, 404)."""
    assert page.principal is not None and page.principal.tenant_id is not None
    if id_pattern.fullmatch(video_id) is None:
        return None
    return library.find_video(session, page.principal.tenant_id, video_id)


def _tile(session, job: Job) -> dict[str, Any]:
    """What a gallery tile shows, from the row alone (no per-video ledger or file reads)."""
    return {"id": job.id, "status": job.status, "progress": job.progress, "prompt": job.prompt,
            "held": job.review_status == "pending", "place": queue.queue_place(session, job, utcnow()),
            "error_code": job.error_type if job.status == "failed" else None}


def _shown(page: Console, video_id: str) -> tuple[dict[str, Any], queue.QueuePlace | None] | None:
    with page.ctx.sessions() as session:
        job = _job(page, session, video_id)
        if job is None:
            return None
        return video_object(session, job), queue.queue_place(session, job, utcnow())


@router.get("/videos")
def gallery(request: Request, after: ListCursor) -> Response:
    page = _page(request)
    if not isinstance(page, Console):
        return page
    tenant_id = page.principal.tenant_id
    with page.ctx.sessions() as session:
        cursor = None if after is None else library.find_video(session, tenant_id, after, deleted_too=True)
        jobs, has_more = library.videos_page(session, tenant_id, cursor, videos_per_page, "desc")
        tiles = [_tile(session, job) for job in jobs]
    return page.render("videos.html", tiles=tiles, after=after, poll_s=tile_poll_s,
                       next_after=tiles[-1]["id"] if has_more else None)


@router.get("/videos/{video_id}/tile")
def tile(request: Request, video_id: str) -> Response:
    """One tile alone: an unfinished tile swaps itself for this until it ends (then it stops asking)."""
    page = _page(request)
    if not isinstance(page, Console):
        return page
    with page.ctx.sessions() as session:
        job = _job(page, session, video_id)
        shown = None if job is None else _tile(session, job)
    if shown is None:
        return page.error(404, "error.not_found")
    return page.render("partials/video_tile.html", tile=shown, poll_s=tile_poll_s)


def _video_page(page: Console, shown: dict[str, Any], place: queue.QueuePlace | None, status_code: int = 200,
                error: dict[str, str] | None = None, message: str = "", remix_prompt: str | None = None) -> Response:
    return page.render("video.html", status_code=status_code, video=shown, place=place, error=error,
                       message=message, reasons=feedback_reasons, can_change=page.allowed("video_actions"),
                       prompt_max=prompt_chars_max,
                       remix_prompt=shown["user_prompt"] or shown["prompt"] if remix_prompt is None else remix_prompt)


@router.get("/videos/{video_id}")
def video_page(request: Request, video_id: str, done: Annotated[str | None, Query(max_length=16)] = None
               ) -> Response:
    page = _page(request)
    if not isinstance(page, Console):
        return page
    found = _shown(page, video_id)
    if found is None:
        return page.error(404, "error.not_found")
    message = page.t("video.feedback_thanks") if done == "feedback" else ""
    return _video_page(page, *found, message=message)


@router.get("/videos/{video_id}/status")
def video_status(request: Request, video_id: str) -> Response:
    """The video's status panel alone: htmx swaps it in when the video's event stream says it moved."""
    page = _page(request)
    if not isinstance(page, Console):
        return page
    found = _shown(page, video_id)
    if found is None:
        return page.error(404, "error.not_found")
    video, place = found
    return page.render("partials/video_status.html", video=video, place=place)


@router.get("/videos/{video_id}/provenance")
def provenance(request: Request, video_id: str) -> Response:
    """The provenance panel: the stored clip checked as `POST /v1/verify` checks an upload (hashes, C2PA
    manifest, AIGC label, watermark). Loaded after the page, since it reads and decodes the clip."""
    page = _page(request)
    if not isinstance(page, Console):
        return page
    ctx = page.ctx
    with ctx.sessions() as session:
        job = _job(page, session, video_id)
        asset = None if job is None or job.status != "completed" else library.video_asset(session, job.id, "video")
    if asset is None:
        return page.error(404, "error.not_found")
    data = ctx.storage.read(asset.storage_key)
    with ctx.sessions() as session:
        found = verify_file(session, data, Scope(page.principal.tenant_id), anchors_pem=ctx.provenance.anchors_pem,
                            watermark_step=ctx.settings.watermark_step)
    return page.render("partials/provenance.html", found=found)


@router.get("/videos/{video_id}/file")
def video_file(request: Request, video_id: str, variant: str = "video") -> Response:
    """The stored clip or a preview, for the player and the download link (the API's bytes and SHA-256)."""
    page = _page(request)
    if not isinstance(page, Console):
        return page
    with page.ctx.sessions() as session:
        job = _job(page, session, video_id)
        usable = job is not None and job.status == "completed" and variant in preview_variants
        asset = library.video_asset(session, video_id, variant) if usable else None
    if asset is None:
        return page.error(404, "error.not_found")
    disposition = "attachment" if request.query_params.get("download") else "inline"
    extension = "mp4" if variant == "video" else "webp"
    return Response(page.ctx.storage.read(asset.storage_key), media_type=asset.content_type, headers={
        "Content-Disposition": f'{disposition}; filename="{video_id}.{extension}"', "X-Content-SHA256": asset.sha256,
        "Cache-Control": "private, max-age=3600"})


@router.post("/videos/{video_id}/delete")
async def delete(request: Request, video_id: str) -> Response:
    posted = await _posted(request)
    if isinstance(posted, Response):
        return posted
    page, _ = posted
    ctx = page.ctx

    def remove() -> str | None:
        with ctx.sessions.begin() as session:
            job = _job(page, session, video_id)
            if job is None:
                return "missing"
            try:
                keys = library.delete_video(session, job)
            except library.VideoRunning:
                return "running"
        for key in keys:
            ctx.storage.delete(key)
        return None

    failure = await run_in_threadpool(remove)
    if failure == "missing":
        return page.error(404, "error.not_found")
    if failure == "running":
        return _refused(page, video_id, {"param": "delete", "message": page.t("video.delete_running")})
    return RedirectResponse("/videos", status_code=303)


def _refused(page: Console, video_id: str, error: dict[str, str], remix_prompt: str | None = None) -> Response:
    found = _shown(page, video_id)
    if found is None:
        return page.error(404, "error.not_found")
    return _video_page(page, *found, status_code=400, error=error, remix_prompt=remix_prompt)


def _make_child(page: Console, video_id: str, body: RegenerateCreate) -> Callable[[], dict[str, Any] | None]:
    ctx, tenant_id = page.ctx, page.principal.tenant_id

    def make() -> dict[str, Any] | None:
        with ctx.sessions() as session:
            parent = _job(page, session, video_id)
            if parent is None:
                return None
            session.expunge(parent)
            caller = console_caller(session, tenant_id)
        request = regenerate.regenerated_request(ctx.sessions, ctx.settings, ctx.storage, parent, prompt=body.prompt,
                                                 seed=body.seed, enhance=body.enhance_prompt,
                                                 prompt_chars_max=prompt_chars_max)
        return submit(ctx.sessions, ctx.settings, ctx.counters, caller, request, new_video_object, screens=ctx.screens,
                      storage=ctx.storage, admissions=ctx.admissions).body

    return make


async def _child(page: Console, video_id: str, body: RegenerateCreate, param: str) -> Response:
    """Regenerate or remix: the new video's page, or this one with the refusal next to `param`."""
    try:
        made = await run_in_threadpool(_make_child(page, video_id, body))
    except PromptRejected as exc:
        error = {"param": param, "message": page.t("video.blocked", category=exc.category)}
    except InvalidRequest as exc:
        error = {"param": param if exc.param == "prompt" else "", "message": str(exc)}
    except InsufficientBalance:
        error = {"param": "", "message": page.t("video.insufficient")}
    except regenerate.ParentExpired:
        error = {"param": "", "message": page.t("video.expired")}
    except (ActiveJobsLimit, TenantSuspended) as exc:
        error = {"param": "", "message": str(exc)}
    else:
        if made is None:
            return page.error(404, "error.not_found")
        return RedirectResponse(f"/videos/{made['id']}", status_code=303)
    return _refused(page, video_id, error, remix_prompt=body.prompt)


@router.post("/videos/{video_id}/regenerate")
async def regenerate_video(request: Request, video_id: str) -> Response:
    posted = await _posted(request)
    if isinstance(posted, Response):
        return posted
    page, _ = posted
    return await _child(page, video_id, RegenerateCreate(), "regenerate")


@router.post("/videos/{video_id}/remix")
async def remix_video(request: Request, video_id: str) -> Response:
    posted = await _posted(request)
    if isinstance(posted, Response):
        return posted
    page, form = posted
    try:
        body = RegenerateCreate(prompt=form.get("prompt", ""))
    except ValidationError:
        return _refused(page, video_id, {"param": "prompt", "message": page.t("video.remix_rule",
                                                                              max=prompt_chars_max)},
                        remix_prompt=form.get("prompt", ""))
    return await _child(page, video_id, body, "prompt")


@router.post("/videos/{video_id}/feedback")
async def feedback(request: Request, video_id: str) -> Response:
    posted = await _posted(request)
    if isinstance(posted, Response):
        return posted
    page, form = posted
    try:
        body = FeedbackCreate(rating=form.get("rating", ""), reason=form.get("reason", ""),
                              comment=form.get("comment", ""))
    except ValidationError as exc:
        param = str(exc.errors()[0]["loc"][0])
        return _refused(page, video_id, {"param": param, "message": page.t(f"video.feedback_{param}_rule")})

    def record() -> bool:
        with page.ctx.sessions.begin() as session:
            job = _job(page, session, video_id)
            if job is not None:
                library.record_feedback(session, job, body.rating, body.reason, body.comment)
            return job is not None

    if not await run_in_threadpool(record):
        return page.error(404, "error.not_found")
    return RedirectResponse(f"/videos/{video_id}?done=feedback", status_code=303)
