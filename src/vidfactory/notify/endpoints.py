"""A tenant's webhook endpoints and delivery log: every query scoped by tenant."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from vidfactory.db.models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from vidfactory.db.types import utcnow
from vidfactory.notify.signing import new_secret

__all__ = ["TooManyEndpoints", "create_endpoint", "deliveries", "endpoints_max", "list_endpoints",
           "owned_endpoint", "remove_endpoint"]

endpoints_max = 20  # per tenant


class TooManyEndpoints(Exception):
    pass


def create_endpoint(session: Session, tenant_id: str, url: str, description: str,
                    event_types: Sequence[str]) -> WebhookEndpoint:
    """`url` must already have passed the target check."""
    count = session.scalar(select(func.count()).select_from(WebhookEndpoint).where(
        WebhookEndpoint.tenant_id == tenant_id, WebhookEndpoint.deleted_at.is_(None)))
    if count >= endpoints_max:
        raise TooManyEndpoints(f"a tenant has at most {endpoints_max} webhook endpoints")
    endpoint = WebhookEndpoint(id=f"we_{uuid.uuid4().hex[:24]}", tenant_id=tenant_id, url=url,
                               description=description, event_types=sorted(set(event_types)),
                               secret=new_secret(), status="enabled", consecutive_failures=0)
    session.add(endpoint)
    session.flush()
    return endpoint


def owned_endpoint(session: Session, tenant_id: str, endpoint_id: str) -> WebhookEndpoint | None:
    return session.scalar(select(WebhookEndpoint).where(
        WebhookEndpoint.id == endpoint_id, WebhookEndpoint.tenant_id == tenant_id,
        WebhookEndpoint.deleted_at.is_(None)))


def list_endpoints(session: Session, tenant_id: str) -> list[WebhookEndpoint]:
    return list(session.scalars(select(WebhookEndpoint).where(
        WebhookEndpoint.tenant_id == tenant_id, WebhookEndpoint.deleted_at.is_(None))
        .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)))


def remove_endpoint(endpoint: WebhookEndpoint) -> None:
    """Soft: its deliveries stay in the log; pending ones are dead-lettered when next claimed."""
    endpoint.deleted_at = utcnow()
    endpoint.status = "disabled"
    endpoint.disabled_reason = "deleted"


def deliveries(session: Session, tenant_id: str, *, limit: int, endpoint_id: str | None = None,
               job_id: str | None = None, status: str | None = None) -> list[tuple[WebhookDelivery, str]]:
    """(delivery, its event's type), newest first."""
    assert 1 <= limit <= 1000
    statement = (select(WebhookDelivery, WebhookEvent.type)
                 .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
                 .where(WebhookDelivery.tenant_id == tenant_id))
    if endpoint_id is not None:
        statement = statement.where(WebhookDelivery.endpoint_id == endpoint_id)
    if job_id is not None:
        statement = statement.where(WebhookDelivery.job_id == job_id)
    if status is not None:
        statement = statement.where(WebhookDelivery.status == status)
    return [(row[0], row[1]) for row in session.execute(statement.order_by(WebhookDelivery.seq.desc()).limit(limit))]
