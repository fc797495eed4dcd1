"""Operator alerts: rows an admin reads (`GET /v1/admin/alerts`) and the operator webhook receives."""

from __future__ import annotations

import uuid

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from vidfactory.billing import audit
from vidfactory.db.models import Alert
from vidfactory.db.types import utcnow
from vidfactory.notify.events import record_operator_event

__all__ = ["acknowledge_alert", "alert_kind_chars_max", "alert_message_chars_max", "raise_alert", "recent_alerts"]

alert_kind_chars_max = 40
alert_message_chars_max = 2000


def raise_alert(session: Session, kind: str, message: str, *, tenant_id: str | None = None,
                job_id: str | None = None) -> Alert:
    """Written in the caller's transaction, so an alert exists exactly when the change it reports does; so
    is its delivery to the operator webhook (the outbox)."""
    assert 0 < len(kind) <= alert_kind_chars_max, f"alert kind {kind!r}"
    alert = Alert(id=f"alert_{uuid.uuid4().hex}", kind=kind, message=message[:alert_message_chars_max],
                  tenant_id=tenant_id, job_id=job_id)
    session.add(alert)
    session.flush()
    record_operator_event(session, "alert.raised", {
        "id": alert.id, "object": "alert", "kind": alert.kind, "message": alert.message,
        "tenant_id": alert.tenant_id, "video_id": alert.job_id})
    return alert


def recent_alerts(session: Session, limit: int, kind: str | None = None) -> list[Alert]:
    statement = select(Alert).order_by(Alert.seq.desc()).limit(limit)
    if kind is not None:
        statement = statement.where(Alert.kind == kind)
    return list(session.scalars(statement))


def acknowledge_alert(session: Session, alert_id: str, actor: str = audit.system_actor) -> Alert | None:
    """Mark the alert seen by `actor` (audited); None when there is no such alert. Acknowledging twice
    changes nothing: the first operator and time stay."""
    alert = session.scalar(select(Alert).where(Alert.id == alert_id))
    if alert is None:
        return None
    changed = session.execute(update(Alert).where(Alert.id == alert_id, Alert.acknowledged_at.is_(None))
                              .values(acknowledged_at=utcnow(), acknowledged_by=actor)
                              .execution_options(synchronize_session=False))
    if changed.rowcount == 1:
        audit.append(session, "alert.acknowledged", f"alert:{alert_id}", {"kind": alert.kind}, actor)
    session.refresh(alert)
    return alert
