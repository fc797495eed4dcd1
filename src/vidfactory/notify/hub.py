"""One outbox reader per API process for every open event stream.

Each stream used to poll the outbox (and its video) itself, twice a second, whether anything happened or not,
so the API's CPU grew with the open streams. The hub reads what changed once per interval for all of them:
the outbox's new events (seq, tenant and video only) and the status and progress of the videos being
followed. It wakes only the streams something happened to; a woken stream reads its own events from its own
`Last-Event-ID`, as before, so nothing a stream sends comes from the hub. With no stream open it reads nothing.

A queued video's place moves when other videos are claimed (events of other tenants): its stream is woken
by any new event, and recomputes its place.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from vidfactory.db.models import Job, WebhookEvent
from vidfactory.db.session import SessionFactory

__all__ = ["EventHub", "Subscription"]

logger = logging.getLogger(__name__)

events_per_tick_max = 1000  # a burst beyond this is read over the following ticks


@dataclass(eq=False)
class Subscription:
    """One open stream: a tenant's events, or one video's (or training's) of that tenant."""

    tenant_id: str
    job_id: str | None
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait(self, timeout_s: float) -> bool:
        """True when woken within `timeout_s`, False when the time ran out."""
        try:
            await asyncio.wait_for(self.wake.wait(), timeout_s)
        except TimeoutError:
            return False
        self.wake.clear()
        return True


@dataclass(frozen=True)
class Changes:
    """What one read of the outbox and the followed videos found."""

    last_seq: int
    restarted: bool  # the hub was not following the outbox: every stream re-reads once
    tenants: frozenset[str]  # tenants with new events
    jobs_with_events: frozenset[str]
    jobs: dict[str, tuple[str, int]]  # followed video id -> (status, progress)


def read_changes(sessions: SessionFactory, after_seq: int | None, job_ids: list[str]) -> Changes:
    """The events after `after_seq` (None: not following yet, start at the newest) and the state of
    `job_ids`, in one read transaction."""
    with sessions() as session:
        if after_seq is None:
            last_seq = int(session.scalar(select(func.coalesce(func.max(WebhookEvent.seq), 0))) or 0)
            rows = []
        else:
            rows = session.execute(
                select(WebhookEvent.seq, WebhookEvent.tenant_id, WebhookEvent.job_id)
                .where(WebhookEvent.seq > after_seq).order_by(WebhookEvent.seq).limit(events_per_tick_max)).all()
            last_seq = rows[-1].seq if rows else after_seq
        jobs = {} if not job_ids else {
            row.id: (row.status, row.progress)
            for row in session.execute(select(Job.id, Job.status, Job.progress).where(Job.id.in_(job_ids)))}
    return Changes(last_seq=last_seq, restarted=after_seq is None,
                   tenants=frozenset(row.tenant_id for row in rows if row.tenant_id is not None),
                   jobs_with_events=frozenset(row.job_id for row in rows if row.job_id is not None), jobs=jobs)


def woken(subscription: Subscription, changes: Changes, jobs_before: dict[str, tuple[str, int]]) -> bool:
    if changes.restarted:
        return True
    if subscription.job_id is None:
        return subscription.tenant_id in changes.tenants
    job_id = subscription.job_id
    state = changes.jobs.get(job_id)
    queued_and_queue_moved = state is not None and state[0] == "queued" and bool(changes.tenants)
    return job_id in changes.jobs_with_events or state != jobs_before.get(job_id) or queued_and_queue_moved


class EventHub:
    """Built once per app; its reading task runs on the event loop while any stream is open."""

    def __init__(self, sessions: SessionFactory, poll_s: float) -> None:
        assert poll_s > 0
        self.sessions = sessions
        self.poll_s = poll_s
        self._subscriptions: set[Subscription] = set()
        self._last_seq: int | None = None
        self._jobs: dict[str, tuple[str, int]] = {}
        self._task: asyncio.Task[None] | None = None

    def subscribe(self, tenant_id: str, job_id: str | None) -> Subscription:
        subscription = Subscription(tenant_id, job_id)
        self._subscriptions.add(subscription)
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._last_seq, self._jobs = None, {}
            self._task = loop.create_task(self._run())
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    @property
    def streams_open(self) -> int:
        return len(self._subscriptions)

    async def _run(self) -> None:
        # No await between the last check and returning: a stream that subscribes meanwhile starts a new task.
        while self._subscriptions:
            try:
                await self._tick()
            except SQLAlchemyError:
                # Every stream reads for itself and meets the outage itself; the hub starts over next time.
                logger.warning("event streams: reading the outbox failed; each stream reads on its own",
                               exc_info=True)
                self._last_seq, self._jobs = None, {}
                for subscription in self._subscriptions:
                    subscription.wake.set()
            await asyncio.sleep(self.poll_s)

    async def _tick(self) -> None:
        job_ids = sorted({s.job_id for s in self._subscriptions if s.job_id is not None})
        changes = await run_in_threadpool(read_changes, self.sessions, self._last_seq, job_ids)
        jobs_before, self._jobs, self._last_seq = self._jobs, changes.jobs, changes.last_seq
        for subscription in list(self._subscriptions):
            if woken(subscription, changes, jobs_before):
                subscription.wake.set()
