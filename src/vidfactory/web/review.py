"""The review desk: jobs held for a decision, oldest first, each with why it is held (the matched lexicon
terms, the quality scores, the NSFW score) and, for a held clip, the frames that tripped it; approved or
rejected with a note from the page or the keyboard (j/k, a, r: static/review-keys.js). Operators and
reviewers only; it calls the same queue operations as `/v1/admin/reviews`."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from vidfactory.api.errors import id_pattern
from vidfactory.api.schemas import ReviewDecision
from vidfactory.db.models import Job
from vidfactory.jobs import library, output, queue
from vidfactory.media.errors import MediaError
from vidfactory.media.preview import thumbnail_image
from vidfactory.web.console import Console

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
reviews_shown_max = 50
note_chars_max = 500  # as ReviewDecision.reason
preview_variants = ("thumbnail", "spritesheet")
# The output screen's reason names the frame it scored worst (jobs/worker.py _screen_output).
flagged_frame = re.compile(r"frame (\d+) scored")


def _desk(request: Request) -> Console | Response:
    page = Console(request)
    if page.principal is None:
        return page.to_sign_in()
    if not page.allowed("review"):
        return page.error(403, "error.forbidden")
    return page


def _held(session, job: Job) -> dict[str, Any]:
    """What the desk shows of one held job: the reason in full (operators may read the matched terms),
    the quality checks' scores, and which frames to show (a held clip's previews and its flagged frame)."""
    clip = job.status == "in_progress" and library.video_asset(session, job.id, "video") is not None
    frame = flagged_frame.search(job.review_reason or "") if clip else None
    checks = (job.qc_report or {}).get("checks", []) if job.review_source != "prompt" else []
    return {"id": job.id, "tenant_id": job.tenant_id, "prompt": job.prompt, "source": job.review_source,
            "reason": job.review_reason, "checks": checks, "clip": clip, "status": job.status,
            "frame": None if frame is None else int(frame.group(1))}


def _render(page: Console, status_code: int = 200, error: dict[str, str] | None = None) -> Response:
    with page.ctx.sessions() as session:
        held = [_held(session, job) for job in queue.pending_reviews(session, reviews_shown_max)]
    return page.render("review.html", status_code=status_code, held=held, error=error, note_max=note_chars_max)


@router.get("/review")
def review_desk(request: Request) -> Response:
    page = _desk(request)
    return page if not isinstance(page, Console) else _render(page)


def _held_clip_asset(page: Console, video_id: str, variant: str):
    if id_pattern.fullmatch(video_id) is None:
        return None
    with page.ctx.sessions() as session:
        job = queue.held_for_review(session, video_id)
        return None if job is None else library.video_asset(session, job.id, variant)


@router.get("/review/{video_id}/preview/{variant}")
def held_preview(request: Request, video_id: str, variant: str) -> Response:
    """A held clip's thumbnail or sprite sheet: to operators and reviewers only, never to its tenant
    (whose file route answers 404 until the clip is approved)."""
    page = _desk(request)
    if not isinstance(page, Console):
        return page
    asset = _held_clip_asset(page, video_id, variant) if variant in preview_variants else None
    if asset is None:
        return page.error(404, "error.not_found")
    return Response(page.ctx.storage.read(asset.storage_key), media_type=asset.content_type,
                    headers={"Cache-Control": "private, no-store"})


@router.get("/review/{video_id}/frame/{index}")
def held_frame(request: Request, video_id: str, index: int) -> Response:
    """One frame of a held clip (the one the output screen scored worst), decoded from the stored clip."""
    page = _desk(request)
    if not isinstance(page, Console):
        return page
    asset = _held_clip_asset(page, video_id, "video")
    if asset is None:
        return page.error(404, "error.not_found")
    try:
        frames = output.delivered_frames(page.ctx.storage.read(asset.storage_key))
    except MediaError:
        return page.error(404, "error.not_found")
    if not 0 <= index < len(frames):
        return page.error(404, "error.not_found")
    return Response(thumbnail_image(frames[index:index + 1]), media_type="image/webp",
                    headers={"Cache-Control": "private, no-store"})


async def _decision(request: Request, video_id: str) -> tuple[Console, dict[str, str]] | Response:
    page = _desk(request)
    if not isinstance(page, Console):
        return page
    form = {key: str(value)[:note_chars_max * 2] for key, value in (await request.form()).items()
            if isinstance(value, str)}
    if not page.csrf_ok(form):
        return page.error(403, "error.csrf")
    if id_pattern.fullmatch(video_id) is None:
        return page.error(404, "error.not_found")
    return page, form


def _decide(page: Console, video_id: str, decide) -> bool:
    """Runs `decide(session)` on the job if it still waits for a decision; False when it does not."""
    with page.ctx.sessions.begin() as session:
        if queue.held_for_review(session, video_id) is None:
            return False
        decide(session)
        return True


@router.post("/review/{video_id}/approve")
async def approve(request: Request, video_id: str) -> Response:
    decided = await _decision(request, video_id)
    if isinstance(decided, Response):
        return decided
    page, _ = decided
    actor = page.principal.actor
    if not await run_in_threadpool(_decide, page, video_id,
                                   lambda session: queue.approve_review(session, video_id, actor=actor)):
        return page.error(404, "error.not_found")
    return RedirectResponse("/review", status_code=303)


@router.post("/review/{video_id}/reject")
async def reject(request: Request, video_id: str) -> Response:
    """The job fails with `content_rejected`, never charged; the note is what its owner reads."""
    decided = await _decision(request, video_id)
    if isinstance(decided, Response):
        return decided
    page, form = decided
    note = form.get("note", "").strip()
    try:
        ReviewDecision(reason=note)
    except ValidationError:
        note = ""
    if not note or len(note) > note_chars_max:
        return _render(page, 400, {"id": video_id, "message": page.t("review.note_rule", max=note_chars_max)})
    actor = page.principal.actor
    if not await run_in_threadpool(_decide, page, video_id,
                                   lambda session: queue.reject_review(session, video_id, note, actor=actor)):
        return page.error(404, "error.not_found")
    return RedirectResponse("/review", status_code=303)
