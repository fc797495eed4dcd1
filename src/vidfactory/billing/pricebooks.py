"""Stored price books: publish a new version, read the current one, read a pinned one."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from vidfactory.billing.pricebook import PriceBookBody, body_sha256
from vidfactory.db.models import PriceBook

__all__ = ["current", "ensure_default", "get", "publish"]


def publish(session: Session, body: PriceBookBody) -> int:
    """Append a new version. Versions are never updated: a change is a new version."""
    version = (session.scalar(select(func.max(PriceBook.version))) or 0) + 1
    session.add(PriceBook(version=version, body=body.model_dump(mode="json"), body_sha256=body_sha256(body)))
    session.flush()
    return version


def ensure_default(session: Session, body: PriceBookBody) -> None:
    if session.scalar(select(func.count()).select_from(PriceBook)) == 0:
        publish(session, body)


def get(session: Session, version: int) -> PriceBookBody:
    row = session.get(PriceBook, version)
    if row is None:
        raise LookupError(f"price book version {version} does not exist")
    return PriceBookBody.model_validate(row.body)


def current(session: Session) -> tuple[int, PriceBookBody]:
    row = session.scalars(select(PriceBook).order_by(PriceBook.version.desc()).limit(1)).one_or_none()
    if row is None:
        raise LookupError("no price book is published; run `vidfactory db upgrade`")
    return row.version, PriceBookBody.model_validate(row.body)
