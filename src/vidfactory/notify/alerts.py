"""Operator alerts: rows an admin reads (`GET /v1/admin/alerts`) and the operator webhook receives."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from vidfactory.db.models import Alert
from vidfactory.notify.events import record_operator_event

__all__ = ["alert_kind_chars_max", "alert_message_chars_max", "raise_alert", "recent_alerts"]

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
