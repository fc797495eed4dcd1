"""Server-Sent Events: a tenant's events (`/v1/events`, the ones its webhooks get) and one video's
(`/v1/videos/{id}/events`, with its progress) or style training's (`/v1/styles/train/{id}/events`), read
from the one outbox in `seq` order. Each event's `id:` is its seq: a client that reconnects with
`Last-Event-ID` (browsers do it by themselves) resumes right after the last event it saw. A video's or
training's stream ends once it has finished; any stream closes after `events_stream_max_s`, and the client
reconnects from its last event."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from vidfactory.api.context import AppContext
from vidfactory.api.deps import ContextDep, StreamTenantDep
from vidfactory.api.errors import ApiError, checked_id, not_found
from vidfactory.db.models import Job, WebhookEvent
from vidfactory.db.types import utcnow
from vidfactory.jobs import queue
from vidfactory.notify.events import events_after

stream_query_names = frozenset({"after"})


def only_known_query(request: Request) -> None:
    """A stream is long-lived: a misspelt parameter ("afer=") would silently replay from the start."""
    unknown = sorted(set(request.query_params) - stream_query_names)
    if unknown:
        raise ApiError(400, "unknown_parameter", f"unknown query parameter {unknown[0]!r}; this stream takes "
                       "only 'after'", param=unknown[0][:64])


router = APIRouter(tags=["events"], dependencies=[Depends(only_known_query)])

events_per_read = 100
reconnect_ms = 2000  # the `retry:` a browser waits before reconnecting a dropped stream
finished_states = ("completed", "failed", "cancelled")
stream_headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# Each event as a client reads it: its id (outbox events only), its type and its JSON data as text.
event_schema = {"type": "object", "required": ["data"],
                "properties": {"id": {"type": "string"}, "event": {"type": "string"}, "data": {"type": "string"},
                               "retry": {"type": "integer"}}}
event_stream_openapi = {"responses": {"200": {"content": {"text/event-stream": {"schema": event_schema}},
                                              "description": "Server-Sent Events"}}}

event_id_pattern = r"^[0-9]*$"  # an outbox sequence number, as the stream's `id:` lines send it
event_seq_max = 2**63 - 1  # the outbox's sequence is a BIGINT: a larger id was never sent, and PostgreSQL refuses it
LastEventIdHeader = Annotated[str | None, Header(alias="Last-Event-ID", max_length=19, pattern=event_id_pattern)]
AfterQuery = Annotated[str | None, Query(max_length=19, pattern=event_id_pattern, description="Like Last-Event-ID.")]


def _after_seq(last_event_id: str | None) -> int:
    if last_event_id is None or last_event_id == "":
        return 0
    seq = int(last_event_id) if last_event_id.isdigit() else event_seq_max + 1
    if seq > event_seq_max:
        raise ApiError(400, "invalid_last_event_id", "Last-Event-ID must be the id of an event this stream sent",
                       param="Last-Event-ID")
    return seq


def _frame(event: WebhookEvent) -> str:
    return f"id: {event.seq}\nevent: {event.type}\ndata: {json.dumps(event.payload, separators=(',', ':'))}\n\n"


def _progress_frame(job: Job, place: queue.QueuePlace | None) -> str:
    """The video's state and progress (and, while it is queued, its place in the queue and an estimate of
    the seconds until it starts); it has no id, so a reconnect resumes from the last outbox event."""
    data: dict[str, Any] = {"id": job.id, "object": "video", "status": job.status, "progress": job.progress}
    if place is not None:
        data |= {"queue_position": place.position, "estimated_start_s": _rounded(place.estimated_start_s)}
    return f"event: video.progress\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _rounded(estimate_s: float | None) -> int | None:
    return None if estimate_s is None else round(estimate_s)


def _read(ctx: AppContext, tenant_id: str, after_seq: int, job_id: str | None
          ) -> tuple[Job | None, queue.QueuePlace | None, list[WebhookEvent]]:
    # The job before its events: a job read as finished has its last event committed already.
    with ctx.sessions() as session:
        job = None if job_id is None else session.get(Job, job_id)
        place = None if job is None else queue.queue_place(session, job, utcnow())
        events = events_after(session, tenant_id, after_seq, job_id=job_id, limit=events_per_read)
        session.expunge_all()
        return job, place, events


async def _stream(ctx: AppContext, tenant_id: str, after_seq: int, job_id: str | None) -> AsyncIterator[str]:
    yield f"retry: {reconnect_ms}\n\n"
    # Subscribed before the first read: whatever commits after that read wakes this stream.
    subscription = ctx.hub.subscribe(tenant_id, job_id)
    try:
        shown: tuple[str, int, int | None] | None = None
        quiet_since = time.monotonic()
        closes_at = quiet_since + ctx.settings.events_stream_max_s
        while True:
            delivered, must_read = subscription.take()
            if must_read or job_id is not None:
                job, place, events = await run_in_threadpool(_read, ctx, tenant_id, after_seq, job_id)
            else:  # what the hub read once for every stream of this tenant
                job, place, events = None, None, [event for event in delivered if event.seq > after_seq]
            for event in events:
                after_seq = event.seq
                quiet_since = time.monotonic()
                yield _frame(event)
            if job is not None and (job.status, job.progress, place and place.position) != shown:
                shown = (job.status, job.progress, place and place.position)
                quiet_since = time.monotonic()
                yield _progress_frame(job, place)
            if job is not None and job.status in finished_states and len(events) < events_per_read:
                yield "event: end\ndata: {}\n\n"  # says it ends here: a browser would reconnect otherwise
                return
            if len(events) >= events_per_read:
                subscription.must_read = True  # catching up: read on at once
                continue
            while True:
                now = time.monotonic()
                if now >= closes_at:
                    return
                heartbeat_at = quiet_since + ctx.settings.events_heartbeat_s
                if await subscription.wait(min(heartbeat_at, closes_at) - now):
                    break
                if time.monotonic() >= heartbeat_at:
                    quiet_since = time.monotonic()
                    yield ": keep-alive\n\n"  # a comment: proxies keep the connection open, clients ignore it
    finally:
        ctx.hub.unsubscribe(subscription)


def _response(stream: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(stream, media_type="text/event-stream", headers=stream_headers)


@router.get("/v1/events", openapi_extra=event_stream_openapi, response_class=StreamingResponse)
def tenant_events(ctx: ContextDep, tenant_id: StreamTenantDep, last_event_id: LastEventIdHeader = None,
                  after: AfterQuery = None) -> StreamingResponse:
    """The tenant's events as they are recorded (the same events its webhooks get), after `Last-Event-ID`."""
    return _response(_stream(ctx, tenant_id, _after_seq(last_event_id or after), None))


@router.get("/v1/videos/{video_id}/events", openapi_extra=event_stream_openapi, response_class=StreamingResponse)
def video_events(video_id: str, ctx: ContextDep, tenant_id: StreamTenantDep, last_event_id: LastEventIdHeader = None,
                 after: AfterQuery = None) -> StreamingResponse:
    """One video's events and `video.progress` while it runs; the stream ends when the video has finished."""
    checked_id("video", video_id)
    with ctx.sessions() as session:
        owned = session.scalar(select(Job.id).where(Job.id == video_id, Job.tenant_id == tenant_id,
                                                    Job.deleted_at.is_(None)))
    if owned is None:
        raise not_found("video", video_id)
    return _response(_stream(ctx, tenant_id, _after_seq(last_event_id or after), video_id))


@router.get("/v1/styles/train/{training_id}/events", openapi_extra=event_stream_openapi,
            response_class=StreamingResponse)
def training_events(training_id: str, ctx: ContextDep, tenant_id: StreamTenantDep,
                    last_event_id: LastEventIdHeader = None, after: AfterQuery = None) -> StreamingResponse:
    """One style training's events (`training.progress` with step and loss) and its progress while it runs
    (`video.progress` frames: status and percent); the stream ends when the training has ended."""
    checked_id("training", training_id)
    with ctx.sessions() as session:
        owned = session.scalar(select(Job.id).where(Job.id == training_id, Job.tenant_id == tenant_id,
                                                    Job.job_type == "training"))
    if owned is None:
        raise not_found("training", training_id)
    return _response(_stream(ctx, tenant_id, _after_seq(last_event_id or after), training_id))
