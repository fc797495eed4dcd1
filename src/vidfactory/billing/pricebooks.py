"""Stored price books: publish a new version, list them, read the one in force for a tenant (its contract
pin, else the newest), read a pinned one. A published version is never updated: a change is a new version."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from vidfactory.billing import audit
from vidfactory.billing.pricebook import PriceBookBody, Quote, body_sha256, quote
from vidfactory.db.models import PriceBook, Tenant

__all__ = ["Preview", "Sample", "current", "ensure_default", "for_tenant", "get", "list_versions", "pin_tenant",
           "preview", "publish"]


def publish(session: Session, body: PriceBookBody, actor: str = audit.system_actor) -> int:
    """Append a new version (audited). Versions are never updated: a change is a new version. ValueError:
    the body names an unknown error type."""
    body = body.for_publication()
    version = (session.scalar(select(func.max(PriceBook.version))) or 0) + 1
    digest = body_sha256(body)
    session.add(PriceBook(version=version, body=body.model_dump(mode="json"), body_sha256=digest))
    session.flush()
    audit.append(session, "price_book.published", f"price_book:{version}", {"version": version, "sha256": digest},
                 actor)
    return version


none_published = "no price book is published; run `vidfactory db upgrade`"


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
        raise LookupError(none_published)
    return row.version, PriceBookBody.model_validate(row.body)


_tenants_book = select(PriceBook.version, PriceBook.body).where(PriceBook.version == func.coalesce(
    select(Tenant.price_book_version).where(Tenant.id == bindparam("tenant_id")).scalar_subquery(),
    select(func.max(PriceBook.version)).scalar_subquery()))


def for_tenant(session: Session, tenant_id: str) -> tuple[int, PriceBookBody]:
    """The version a tenant's contract pins, or the newest when it pins none (one statement: every
    submission and quote reads it)."""
    row = session.execute(_tenants_book, {"tenant_id": tenant_id}).one_or_none()
    if row is None:
        raise LookupError(none_published)
    return row.version, PriceBookBody.model_validate(row.body)


def list_versions(session: Session) -> list[PriceBook]:
    return list(session.scalars(select(PriceBook).order_by(PriceBook.version)))


def pin_tenant(session: Session, tenant_id: str, version: int | None, actor: str = audit.system_actor) -> None:
    """Pin a tenant's contract to `version` (None: follow the newest). Audited."""
    if version is not None and session.get(PriceBook, version) is None:
        raise LookupError(f"price book version {version} does not exist")
    result = session.execute(update(Tenant).where(Tenant.id == tenant_id).values(price_book_version=version))
    assert result.rowcount == 1, f"no tenant {tenant_id}"
    audit.append(session, "tenant.price_book_pinned", f"tenant:{tenant_id}", {"version": version}, actor)


@dataclass(frozen=True)
class Sample:
    """A request to price: which model, how large, how long, and how many prompt tokens it bills."""

    model: str
    width: int
    height: int
    seconds: int
    input_tokens: int


@dataclass(frozen=True)
class Preview:
    """What the sample costs under the book in force and under a proposed one; a side that cannot price
    it (too large or too long for its tables) carries the reason instead of a quote."""

    in_force_version: int
    in_force: Quote | str
    proposed: Quote | str


def _priced(book: PriceBookBody, sample: Sample) -> Quote | str:
    priced = book.for_model(sample.model)
    if sample.input_tokens > priced.prompt_tokens_max:
        return f"{sample.input_tokens} prompt tokens exceed the book's {priced.prompt_tokens_max}"
    try:
        return quote(priced, input_tokens=sample.input_tokens, width=sample.width, height=sample.height,
                     seconds=sample.seconds)
    except ValueError as exc:
        return str(exc)


def preview(session: Session, proposed: PriceBookBody, sample: Sample) -> Preview:
    """Price `sample` under the newest published version and under `proposed`, publishing nothing."""
    version, in_force = current(session)
    return Preview(version, _priced(in_force, sample), _priced(proposed, sample))
