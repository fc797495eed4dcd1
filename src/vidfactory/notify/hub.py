"""One outbox reader per API process for every open event stream.

Each stream used to poll the outbox (and its video) itself, twice a second, whether anything happened or not,
so the API's CPU grew with the open streams. The hub reads what changed once per interval for all of them:
the outbox's new events and the status and progress of the videos being followed. A tenant's stream is
handed its tenant's new events (read once for all of that tenant's streams); a video's stream is woken when
its video moves, and reads its own events and progress. A stream reads the outbox itself from its own
`Last-Event-ID` when it opens, and whenever the hub cannot vouch for what it was handed (it started over,
or the stream fell behind), so nothing is lost. With no stream open the hub reads nothing.

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
delivered_events_max = 1000  # a stream this far behind reads the outbox itself instead


@dataclass(eq=False)
class Subscription:
    """One open stream: a tenant's events, or one video's (or training's) of that tenant."""

    tenant_id: str
    job_id: str | None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    delivered: list[WebhookEvent] = field(default_factory=list)  # a tenant stream's new events, oldest first
    must_read: bool = True  # read the outbox itself: on opening, and when the hub cannot vouch for `delivered`

    async def wait(self, timeout_s: float) -> bool:
        """True when woken within `timeout_s`, False when the time ran out."""
        try:
            await asyncio.wait_for(self.wake.wait(), timeout_s)
        except TimeoutError:
            return False
        self.wake.clear()
        return True

    def take(self) -> tuple[list[WebhookEvent], bool]:
        """(the events handed over since the last take, whether to read the outbox instead)."""
        delivered, must_read = self.delivered, self.must_read
        self.delivered, self.must_read = [], False
        return delivered, must_read

    def deliver(self, events: list[WebhookEvent]) -> None:
        if len(self.delivered) + len(events) > delivered_events_max:
            self.delivered, self.must_read = [], True
        else:
            self.delivered.extend(events)
        self.wake.set()

    def reread(self) -> None:
        self.delivered, self.must_read = [], True
        self.wake.set()


@dataclass(frozen=True)
class Changes:
    """What one read of the outbox and the followed videos found."""

    last_seq: int
    restarted: bool  # the hub was not following the outbox: every stream reads for itself once
    tenants: frozenset[str]  # tenants with new events
    jobs_with_events: frozenset[str]
    events: dict[str, list[WebhookEvent]]  # the new events of the tenants with a tenant stream open
    jobs: dict[str, tuple[str, int]]  # followed video id -> (status, progress)


def read_changes(sessions: SessionFactory, after_seq: int | None, job_ids: list[str],
                 streaming_tenants: frozenset[str]) -> Changes:
    """The events after `after_seq` (None: not following yet, start at the newest), in full for
    `streaming_tenants`, and the state of `job_ids`, in one read transaction."""
    with sessions() as session:
        if after_seq is None:
            last_seq = int(session.scalar(select(func.coalesce(func.max(WebhookEvent.seq), 0))) or 0)
            rows = []
        else:
            rows = session.execute(
                select(WebhookEvent.seq, WebhookEvent.tenant_id, WebhookEvent.job_id)
                .where(WebhookEvent.seq > after_seq).order_by(WebhookEvent.seq).limit(events_per_tick_max)).all()
            last_seq = rows[-1].seq if rows else after_seq
        tenants = frozenset(row.tenant_id for row in rows if row.tenant_id is not None)
        events: dict[str, list[WebhookEvent]] = {}
        if after_seq is not None and tenants & streaming_tenants:
            for event in session.scalars(select(WebhookEvent).where(
                    WebhookEvent.seq > after_seq, WebhookEvent.seq <= last_seq,
                    WebhookEvent.tenant_id.in_(sorted(tenants & streaming_tenants))).order_by(WebhookEvent.seq)):
                events.setdefault(event.tenant_id, []).append(event)
        jobs = {} if not job_ids else {
            row.id: (row.status, row.progress)
            for row in session.execute(select(Job.id, Job.status, Job.progress).where(Job.id.in_(job_ids)))}
        session.expunge_all()
    return Changes(last_seq=last_seq, restarted=after_seq is None, tenants=tenants,
                   jobs_with_events=frozenset(row.job_id for row in rows if row.job_id is not None),
                   events=events, jobs=jobs)


def job_moved(job_id: str, changes: Changes, jobs_before: dict[str, tuple[str, int]]) -> bool:
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
                    subscription.reread()
            await asyncio.sleep(self.poll_s)

    async def _tick(self) -> None:
        read_for = set(self._subscriptions)
        job_ids = sorted({s.job_id for s in read_for if s.job_id is not None})
        streaming = frozenset(s.tenant_id for s in read_for if s.job_id is None)
        changes = await run_in_threadpool(read_changes, self.sessions, self._last_seq, job_ids, streaming)
        jobs_before, self._jobs, self._last_seq = self._jobs, changes.jobs, changes.last_seq
        for subscription in list(self._subscriptions):
            # One that opened during the read may have missed events the read passed: it reads for itself.
            if changes.restarted or subscription not in read_for:
                subscription.reread()
            elif subscription.job_id is None:
                if subscription.tenant_id in changes.events:
                    subscription.deliver(changes.events[subscription.tenant_id])
            elif job_moved(subscription.job_id, changes, jobs_before):
                subscription.wake.set()
