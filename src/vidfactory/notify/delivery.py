"""Delivering the outbox: claim due rows (SKIP LOCKED on PostgreSQL), POST them signed, record the
outcome as a compare-and-set on (status pending, the attempt claimed).

A claim pushes `next_attempt_at` one lease ahead and counts the attempt, so a dispatcher that dies
mid-send leaves the row to be retried after the lease. 2xx delivers; 410 Gone disables the endpoint and
dead-letters the row; anything else (3xx too: redirects are never followed) retries with exponential
backoff until `webhook_attempts_max`, then dead-letters. An endpoint failing `webhook_failures_alert`
times in a row raises an operator alert.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from vidfactory.db.models import TenantWebhookSecret, WebhookDelivery, WebhookEndpoint, WebhookEvent
from vidfactory.db.session import SessionFactory
from vidfactory.db.types import utcnow
from vidfactory.notify.alerts import raise_alert
from vidfactory.notify.events import secrets_in_force
from vidfactory.notify.signing import webhook_headers
from vidfactory.notify.targets import RefusedTarget, parse_networks, resolve_target
from vidfactory.settings import Settings

__all__ = ["Attempt", "Dispatcher", "OperatorWebhook", "Outcome", "claim_due", "record_outcome", "start_dispatcher"]

log = logging.getLogger(__name__)
error_chars_max = 500
database_retry_s = 2.0


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
    unsendable: str | None = None  # why nothing is sent (endpoint gone or disabled, no operator webhook)

    @property
    def to_operator(self) -> bool:
        return self.tenant_id is None


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None

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
              operator: OperatorWebhook | None = None) -> list[Attempt]:
    assert limit >= 1 and lease_s > 0
    ids = list(session.scalars(
        select(WebhookDelivery.id)
        .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now)
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.seq).limit(limit)
        .with_for_update(skip_locked=True)))
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
                   body=body, secrets=secrets, unsendable=unsendable)


def _backoff_s(settings: Settings, attempt: int) -> float:
    return min(settings.webhook_backoff_s * 2 ** (attempt - 1), settings.webhook_backoff_max_s)


def record_outcome(session: Session, settings: Settings, attempt: Attempt, outcome: Outcome, now: datetime) -> bool:
    """False when the row moved on meanwhile (another dispatcher re-claimed it after our lease)."""
    if outcome.delivered:
        values = {"status": "delivered", "delivered_at": now}
    elif outcome.gone or attempt.unsendable or attempt.attempt >= settings.webhook_attempts_max:
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
    if attempt.endpoint_id is not None and not attempt.unsendable:
        _endpoint_health(session, settings, attempt, outcome)
    return True


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


class Dispatcher:
    """Sends what the outbox holds. One per process (serve and worker each run one in a thread); any
    number may run against one database."""

    def __init__(self, settings: Settings, sessions: SessionFactory, client: httpx.Client | None = None) -> None:
        self.settings = settings
        self.sessions = sessions
        self.allowed = parse_networks(settings.webhook_allowed_networks)
        self.operator = (OperatorWebhook(settings.operator_webhook_url,
                                         settings.operator_webhook_secret.get_secret_value())
                         if settings.operator_webhook_url else None)
        # Redirects are never followed: a public URL could otherwise bounce the request inside.
        self.client = client or httpx.Client(follow_redirects=False, timeout=settings.webhook_timeout_s,
                                             trust_env=False)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                sent = self.run_once()
            except OperationalError as exc:
                log.error("webhook dispatcher: database unavailable: %s", exc)
                stop.wait(database_retry_s)
                continue
            if not sent:
                stop.wait(self.settings.webhook_poll_s)

    def run_once(self, now: datetime | None = None) -> int:
        """Claim and send one batch; returns how many were attempted. `now` fixes the clock (tests)."""
        fixed_now = now
        with self.sessions.begin() as session:
            attempts = claim_due(session, now=fixed_now or utcnow(), limit=self.settings.webhook_batch_max,
                                 lease_s=self.settings.webhook_lease_s, operator=self.operator)
        for attempt in attempts:
            outcome = Outcome(None, attempt.unsendable) if attempt.unsendable else self.send(attempt)
            with self.sessions.begin() as session:
                if not record_outcome(session, self.settings, attempt, outcome, fixed_now or utcnow()):
                    log.warning("webhook delivery %s moved on before its outcome was recorded", attempt.delivery_id)
        return len(attempts)

    def send(self, attempt: Attempt) -> Outcome:
        timestamp = int(utcnow().timestamp())
        headers = webhook_headers(attempt.secrets, attempt.message_id, timestamp, attempt.body)
        headers["user-agent"] = "vidfactory-webhooks"
        url, extensions = httpx.URL(attempt.url), {}
        if not attempt.to_operator:  # the operator's own URL is trusted; tenants' are checked
            try:
                target = resolve_target(attempt.url, self.allowed)
            except RefusedTarget as exc:
                return Outcome(None, f"target refused: {exc}")
            # Connect to the address that was checked, not to a second lookup's answer; Host and TLS SNI
            # still name the host.
            headers["host"] = url.netloc.decode("ascii")
            extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
            url = url.copy_with(host=target.address)
        try:
            with self.client.stream("POST", url, content=attempt.body, headers=headers,
                                    extensions=extensions) as response:
                status = response.status_code
        except httpx.HTTPError as exc:
            return Outcome(None, f"{type(exc).__name__}: {exc}")
        if 200 <= status < 300:
            return Outcome(status, None)
        return Outcome(status, f"answered {status}" + (" (redirects are not followed)" if 300 <= status < 400 else ""))


def start_dispatcher(settings: Settings, sessions: SessionFactory, stop: threading.Event) -> list[threading.Thread]:
    """The outbox's delivery loop in a thread (none when webhooks are disabled)."""
    if not settings.webhooks_enabled:
        return []
    dispatcher = Dispatcher(settings, sessions)
    thread = threading.Thread(target=dispatcher.run, args=(stop,), name="webhooks", daemon=True)
    thread.start()
    return [thread]
