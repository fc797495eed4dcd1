"""Delivering the outbox: claim due rows (SKIP LOCKED on PostgreSQL), POST them signed, record the
outcome as a compare-and-set on (status pending, the attempt claimed).

A claim pushes `next_attempt_at` one lease ahead and counts the attempt, so a dispatcher that dies
mid-send leaves the row to be retried after the lease. 2xx delivers; 410 Gone disables the endpoint and
dead-letters the row; a target refused by the address check (private, loopback, 6to4 loopback...)
dead-letters at once; anything else (3xx too: redirects are never followed) retries with exponential
backoff until `webhook_attempts_max`, then dead-letters. An endpoint failing `webhook_failures_alert`
times in a row raises an operator alert.

Invariants of the dispatcher (one per process; any number against one database):
- Sends to different endpoints run concurrently: at most `webhook_concurrency_max` at once, at most
  `webhook_endpoint_concurrency_max` to one endpoint (a registered endpoint, or one per-job URL). A slow
  or black-holed endpoint holds only its own slots, never another endpoint's.
- A row is claimed just before its send starts, and a send is cut at `webhook_send_deadline_s` (connect
  and read timeouts are shorter still); the lease (`webhook_lease_s`, checked to be at least twice the
  deadline) therefore outlasts the send it covers, so no second dispatcher re-sends a row whose first
  send is still running.
- An endpoint that fails `webhook_circuit_failures` times in a row has its circuit opened: its rows stay
  pending, unclaimed, and spend no attempt, for `webhook_circuit_open_s` (doubling while it keeps failing,
  up to `webhook_circuit_open_max_s`); then one probe goes, and a success closes the circuit. Circuits are
  per dispatcher: each process learns of a dead endpoint from its own few failed sends.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx
from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from vidfactory.db.models import TenantWebhookSecret, WebhookDelivery, WebhookEndpoint, WebhookEvent
from vidfactory.db.session import SessionFactory
from vidfactory.db.types import utcnow
from vidfactory.notify.alerts import raise_alert
from vidfactory.notify.events import secrets_in_force
from vidfactory.notify.signing import webhook_headers
from vidfactory.notify.targets import RefusedTarget, UnresolvedHost, parse_networks, resolve_target
from vidfactory.settings import Settings
from vidfactory.tls import verifying_context

__all__ = ["Attempt", "Circuits", "Dispatcher", "OperatorWebhook", "Outcome", "claim_due", "endpoint_key",
           "failed_deliveries", "record_outcome", "start_dispatcher"]

log = logging.getLogger(__name__)
error_chars_max = 500
database_retry_s = 2.0
candidates_per_slot = 4  # rows looked at per free slot: some belong to endpoints with no room left


def endpoint_key(endpoint_id: str | None, url: str) -> str:
    """What concurrency bounds and circuits count by: the registered endpoint, else the row's own URL
    (a per-job webhook_url; "" for the operator webhook)."""
    return endpoint_id if endpoint_id is not None else f"url:{url}"


@dataclass(frozen=True)
class Attempt:
    """A claimed delivery: everything needed to send it, read in the claiming transaction."""

    delivery_id: str
    attempt: int
    url: str
    endpoint_id: str | None
    tenant_id: str | None  # None: the operator webhook
    message_id: str
    body: bytes
    secrets: list[str]
    key: str  # endpoint_key of the row
    unsendable: str | None = None  # why nothing is sent (endpoint gone or disabled, no operator webhook)

    @property
    def to_operator(self) -> bool:
        return self.tenant_id is None


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None
    refused: bool = False  # the target failed the address check: retrying cannot help

    @property
    def sent(self) -> bool:
        """A request went out (or was attempted): the endpoint's health and circuit count it."""
        return not self.refused

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def gone(self) -> bool:
        return self.status_code == 410


@dataclass(frozen=True)
class OperatorWebhook:
    url: str
    secret: str


def claim_due(session: Session, *, now: datetime, limit: int, lease_s: float,
              operator: OperatorWebhook | None = None, room: Callable[[str], int] | None = None) -> list[Attempt]:
    """Claim up to `limit` due rows, oldest first, at most `room(key)` per endpoint (endpoints with no room
    are skipped in the query, so that one endpoint's backlog never hides another's rows)."""
    assert limit >= 1 and lease_s > 0
    room = room or (lambda key: limit)
    query = (select(WebhookDelivery.id, WebhookDelivery.endpoint_id, WebhookDelivery.url)
             .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now))
    full = _full_endpoints(session, now, room)
    if full:
        query = query.where(or_(WebhookDelivery.endpoint_id.is_(None), WebhookDelivery.endpoint_id.not_in(
            [key for key in full if not key.startswith("url:")])))
        query = query.where(or_(WebhookDelivery.endpoint_id.is_not(None), WebhookDelivery.url.not_in(
            [key.removeprefix("url:") for key in full if key.startswith("url:")])))
    candidates = session.execute(query.order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.seq)
                                 .limit(limit * candidates_per_slot).with_for_update(skip_locked=True)).all()
    taken: Counter[str] = Counter()
    ids = []
    for delivery_id, endpoint_id, url in candidates:
        key = endpoint_key(endpoint_id, url)
        if len(ids) < limit and taken[key] < room(key):
            taken[key] += 1
            ids.append(delivery_id)
    if not ids:
        return []
    session.execute(update(WebhookDelivery).where(WebhookDelivery.id.in_(ids), WebhookDelivery.status == "pending")
                    .values(attempts=WebhookDelivery.attempts + 1,
                            next_attempt_at=now + timedelta(seconds=lease_s))
                    .execution_options(synchronize_session=False))
    rows = session.execute(select(WebhookDelivery, WebhookEvent)
                           .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
                           .where(WebhookDelivery.id.in_(ids))
                           .execution_options(populate_existing=True)).all()
    return [_attempt(session, delivery, event, now, operator) for delivery, event in rows]


def _full_endpoints(session: Session, now: datetime, room: Callable[[str], int]) -> list[str]:
    """Keys of endpoints with due rows but no room (at their bound, or their circuit open)."""
    due = session.execute(select(WebhookDelivery.endpoint_id, WebhookDelivery.url).distinct().where(
        WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now)).all()
    return [key for key in (endpoint_key(endpoint_id, url) for endpoint_id, url in due) if room(key) <= 0]


def _attempt(session: Session, delivery: WebhookDelivery, event: WebhookEvent, now: datetime,
             operator: OperatorWebhook | None) -> Attempt:
    url, unsendable = delivery.url, None
    if delivery.tenant_id is None:
        url, secrets = (operator.url, [operator.secret]) if operator else ("", [])
        unsendable = None if operator else "no operator webhook is configured"
    elif delivery.endpoint_id is not None:
        endpoint = session.get(WebhookEndpoint, delivery.endpoint_id)
        usable = endpoint is not None and endpoint.status == "enabled" and endpoint.deleted_at is None
        secrets = secrets_in_force(endpoint, now) if usable else []
        unsendable = None if usable else "the endpoint was disabled or deleted"
    else:
        row = session.get(TenantWebhookSecret, delivery.tenant_id)
        secrets = secrets_in_force(row, now) if row is not None else []
        unsendable = None if row is not None else "the tenant has no webhook secret"
    body = json.dumps(event.payload, separators=(",", ":"), ensure_ascii=False).encode()
    return Attempt(delivery_id=delivery.id, attempt=delivery.attempts, url=url,
                   endpoint_id=delivery.endpoint_id, tenant_id=delivery.tenant_id, message_id=event.id,
                   body=body, secrets=secrets, key=endpoint_key(delivery.endpoint_id, delivery.url),
                   unsendable=unsendable)


def _backoff_s(settings: Settings, attempt: int) -> float:
    return min(settings.webhook_backoff_s * 2 ** (attempt - 1), settings.webhook_backoff_max_s)


def record_outcome(session: Session, settings: Settings, attempt: Attempt, outcome: Outcome, now: datetime) -> bool:
    """False when the row moved on meanwhile (another dispatcher re-claimed it after our lease)."""
    if outcome.delivered:
        values = {"status": "delivered", "delivered_at": now}
    elif (outcome.gone or outcome.refused or attempt.unsendable
          or attempt.attempt >= settings.webhook_attempts_max):
        values = {"status": "failed"}
    else:
        values = {"next_attempt_at": now + timedelta(seconds=_backoff_s(settings, attempt.attempt))}
    values.update(last_status_code=outcome.status_code, last_attempt_at=now,
                  last_error=None if outcome.error is None else outcome.error[:error_chars_max])
    result = session.execute(update(WebhookDelivery).where(
        WebhookDelivery.id == attempt.delivery_id, WebhookDelivery.status == "pending",
        WebhookDelivery.attempts == attempt.attempt).values(**values).execution_options(synchronize_session=False))
    if result.rowcount != 1:
        return False
    if attempt.endpoint_id is not None and not attempt.unsendable and outcome.sent:
        _endpoint_health(session, settings, attempt, outcome)
    return True


def failed_deliveries(session: Session) -> int:
    """Deliveries that ended failed (attempts spent, 410 Gone, refused), ever: a range of
    `ix_webhook_deliveries_due`. A failed delivery is never retried, so the count only grows."""
    return int(session.scalar(select(func.count()).select_from(WebhookDelivery)
                              .where(WebhookDelivery.status == "failed")) or 0)


def _endpoint_health(session: Session, settings: Settings, attempt: Attempt, outcome: Outcome) -> None:
    endpoint_id = attempt.endpoint_id
    if outcome.delivered:
        session.execute(update(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id)
                        .values(consecutive_failures=0))
        return
    if outcome.gone:
        disabled = session.execute(update(WebhookEndpoint).where(
            WebhookEndpoint.id == endpoint_id, WebhookEndpoint.status == "enabled").values(
            status="disabled", disabled_reason="the endpoint answered 410 Gone"))
        if disabled.rowcount == 1:
            raise_alert(session, "webhook_endpoint_disabled",
                        f"webhook endpoint {endpoint_id} answered 410 Gone and was disabled",
                        tenant_id=attempt.tenant_id)
        return
    failures = session.scalars(update(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id)
                               .values(consecutive_failures=WebhookEndpoint.consecutive_failures + 1)
                               .returning(WebhookEndpoint.consecutive_failures)).one()
    if failures == settings.webhook_failures_alert:
        raise_alert(session, "webhook_endpoint_failing",
                    f"webhook endpoint {endpoint_id} failed {failures} deliveries in a row "
                    f"(last: {outcome.error or outcome.status_code})", tenant_id=attempt.tenant_id)


@dataclass
class _Circuit:
    failures: int = 0  # consecutive failed sends
    opened: int = 0  # times opened since the last success (the open period doubles with each)
    open_until: datetime | None = None


@dataclass
class Circuits:
    """Per endpoint: consecutive failures, and whether its circuit is open (no sends) or half-open (one
    probe at a time). In memory, for one dispatcher."""

    failures_max: int
    open_s: float
    open_max_s: float
    bound: int  # sends at once to one endpoint while its circuit is closed
    _state: dict[str, _Circuit] = field(default_factory=dict)

    def room(self, key: str, in_flight: int, now: datetime) -> int:
        circuit = self._state.get(key)
        if circuit is None or circuit.open_until is None:
            return self.bound - in_flight
        if now < circuit.open_until:
            return 0
        return 1 - in_flight  # half-open: one probe

    def record(self, key: str, outcome: Outcome, now: datetime) -> None:
        if outcome.delivered or outcome.gone:  # the endpoint answered as it meant to
            self._state.pop(key, None)
            return
        if not outcome.sent:
            return
        circuit = self._state.setdefault(key, _Circuit())
        circuit.failures += 1
        if circuit.failures >= self.failures_max:
            open_s = min(self.open_s * 2 ** circuit.opened, self.open_max_s)
            circuit.opened += 1
            circuit.open_until = now + timedelta(seconds=open_s)
            log.warning("webhook endpoint %s failed %d sends in a row; no sends to it for %.0f s",
                        key, circuit.failures, open_s)


class Dispatcher:
    """Sends what the outbox holds. One per process (serve and worker each run one in a thread); any
    number may run against one database. Sends run concurrently on an asyncio loop of its own; the
    database work runs in threads beside it."""

    def __init__(self, settings: Settings, sessions: SessionFactory) -> None:
        self.settings = settings
        self.sessions = sessions
        self.allowed = parse_networks(settings.webhook_allowed_networks)
        self.operator = (OperatorWebhook(settings.operator_webhook_url,
                                         settings.operator_webhook_secret.get_secret_value())
                         if settings.operator_webhook_url else None)
        self.circuits = Circuits(failures_max=settings.webhook_circuit_failures,
                                 open_s=settings.webhook_circuit_open_s,
                                 open_max_s=settings.webhook_circuit_open_max_s,
                                 bound=settings.webhook_endpoint_concurrency_max)
        self._in_flight: Counter[str] = Counter()

    def _client(self) -> httpx.AsyncClient:
        settings = self.settings
        timeout = httpx.Timeout(connect=settings.webhook_connect_timeout_s, read=settings.webhook_read_timeout_s,
                                write=settings.webhook_read_timeout_s, pool=settings.webhook_send_deadline_s)
        # Redirects are never followed: a public URL could otherwise bounce the request inside.
        return httpx.AsyncClient(follow_redirects=False, timeout=timeout, trust_env=False,
                                 verify=verifying_context(trust_env=False),
                                 limits=httpx.Limits(max_connections=settings.webhook_concurrency_max))

    def run(self, stop: threading.Event) -> None:
        asyncio.run(self._serve(stop))

    def run_once(self, now: datetime | None = None) -> int:
        """Claim one batch and send it (concurrently); returns how many were attempted. `now` fixes the
        clock (tests)."""
        return asyncio.run(self._round(now))

    async def _round(self, now: datetime | None) -> int:
        async with self._client() as client:
            attempts = await asyncio.to_thread(self._claim, now or utcnow(), self.settings.webhook_batch_max)
            self._start(attempts)
            await asyncio.gather(*(self._deliver(client, attempt, now) for attempt in attempts))
        return len(attempts)

    async def _serve(self, stop: threading.Event) -> None:
        settings = self.settings
        tasks: set[asyncio.Task[None]] = set()
        async with self._client() as client:
            while not stop.is_set():
                free = settings.webhook_concurrency_max - len(tasks)
                attempts: list[Attempt] = []
                if free > 0:
                    try:
                        attempts = await asyncio.to_thread(self._claim, utcnow(), free)
                    except OperationalError as exc:
                        log.error("webhook dispatcher: database unavailable: %s", exc)
                        await _rest(stop, database_retry_s)
                        continue
                self._start(attempts)
                for attempt in attempts:
                    task = asyncio.create_task(self._deliver(client, attempt, None))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if attempts and len(tasks) < settings.webhook_concurrency_max:
                    continue  # more rows may be due for endpoints with room
                if tasks:  # until a slot frees up, or the next poll
                    await asyncio.wait(tasks, timeout=settings.webhook_poll_s, return_when=asyncio.FIRST_COMPLETED)
                else:
                    await _rest(stop, settings.webhook_poll_s)
            if tasks:  # each ends by its deadline
                await asyncio.wait(tasks)

    def _claim(self, now: datetime, limit: int) -> list[Attempt]:
        with self.sessions.begin() as session:
            attempts = claim_due(session, now=now, limit=limit, lease_s=self.settings.webhook_lease_s,
                                 operator=self.operator,
                                 room=lambda key: self.circuits.room(key, self._in_flight[key], now))
        return attempts

    def _start(self, attempts: list[Attempt]) -> None:
        """Count the claimed sends in flight (on the loop's thread, which alone changes the counts)."""
        for attempt in attempts:
            self._in_flight[attempt.key] += 1

    async def _deliver(self, client: httpx.AsyncClient, attempt: Attempt, fixed_now: datetime | None) -> None:
        try:
            outcome = Outcome(None, attempt.unsendable) if attempt.unsendable else await self._send_in_time(
                client, attempt)
            self.circuits.record(attempt.key, outcome, fixed_now or utcnow())
            await asyncio.to_thread(self._record, attempt, outcome, fixed_now or utcnow())
        except OperationalError as exc:  # the row's lease runs out and it is sent again
            log.error("webhook delivery %s: its outcome could not be recorded: %s", attempt.delivery_id, exc)
        finally:
            self._in_flight[attempt.key] -= 1

    def _record(self, attempt: Attempt, outcome: Outcome, now: datetime) -> None:
        with self.sessions.begin() as session:
            if not record_outcome(session, self.settings, attempt, outcome, now):
                log.warning("webhook delivery %s moved on before its outcome was recorded", attempt.delivery_id)

    async def _send_in_time(self, client: httpx.AsyncClient, attempt: Attempt) -> Outcome:
        deadline_s = self.settings.webhook_send_deadline_s
        try:
            return await asyncio.wait_for(self.send(client, attempt), deadline_s)
        except TimeoutError:
            return Outcome(None, f"no answer within {deadline_s:g} s")

    async def send(self, client: httpx.AsyncClient, attempt: Attempt) -> Outcome:
        timestamp = int(utcnow().timestamp())
        headers = webhook_headers(attempt.secrets, attempt.message_id, timestamp, attempt.body)
        headers["user-agent"] = "vidfactory-webhooks"
        url, extensions = httpx.URL(attempt.url), {}
        if not attempt.to_operator:  # the operator's own URL is trusted; tenants' are checked
            try:
                target = await asyncio.to_thread(resolve_target, attempt.url, self.allowed)
            except UnresolvedHost as exc:  # DNS may answer again: retried
                return Outcome(None, f"target unresolved: {exc}")
            except RefusedTarget as exc:
                return Outcome(None, f"target refused: {exc}", refused=True)
            # Connect to the address that was checked, not to a second lookup's answer; Host and TLS SNI
            # still name the host.
            headers["host"] = url.netloc.decode("ascii")
            extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
            url = url.copy_with(host=target.address)
        try:
            async with client.stream("POST", url, content=attempt.body, headers=headers,
                                     extensions=extensions) as response:
                status = response.status_code
        except httpx.HTTPError as exc:
            return Outcome(None, f"{type(exc).__name__}: {exc}")
        if 200 <= status < 300:
            return Outcome(status, None)
        return Outcome(status, f"answered {status}" + (" (redirects are not followed)" if 300 <= status < 400 else ""))


async def _rest(stop: threading.Event, seconds: float) -> None:
    """Wait up to `seconds`, and no longer once `stop` is set: a shutdown does not wait out a poll."""
    await asyncio.to_thread(stop.wait, seconds)


def start_dispatcher(settings: Settings, sessions: SessionFactory, stop: threading.Event) -> list[threading.Thread]:
    """The outbox's delivery loop in a thread (none when webhooks are disabled)."""
    if not settings.webhooks_enabled:
        return []
    dispatcher = Dispatcher(settings, sessions)
    thread = threading.Thread(target=dispatcher.run, args=(stop,), name="webhooks", daemon=True)
    thread.start()
    return [thread]
