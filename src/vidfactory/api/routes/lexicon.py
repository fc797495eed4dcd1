"""/v1/admin/tenants/{tenant_id}/lexicon: a tenant's own screening terms on top of the platform lexicon."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session

from vidfactory.api.deps import AdminDep, ContextDep, SessionDep
from vidfactory.api.errors import ApiError, checked_id, not_found
from vidfactory.api.schemas import LexiconEntryCreate, LexiconEntryPublic
from vidfactory.db.models import Tenant
from vidfactory.jobs import screening
from vidfactory.safety.lexicon import Entry, LexiconError, term_chars_max

router = APIRouter(prefix="/v1/admin/tenants/{tenant_id}/lexicon", tags=["admin"])


def _tenant(session: Session, tenant_id: str) -> None:
    checked_id("tenant", tenant_id, "tenant_id")
    if session.get(Tenant, tenant_id) is None:
        raise not_found("tenant", tenant_id, "tenant_id")


def _listing(session: Session, tenant_id: str) -> dict[str, Any]:
    entries = screening.list_entries(session, tenant_id)
    return {"object": "list", "tenant_id": tenant_id,
            "data": [LexiconEntryPublic(term=e.term, category=e.category, action=e.action) for e in entries]}


@router.get("")
def list_lexicon(tenant_id: str, session: SessionDep, _admin: AdminDep) -> dict[str, Any]:
    _tenant(session, tenant_id)
    return _listing(session, tenant_id)


@router.post("", status_code=201)
def add_lexicon_entry(tenant_id: str, body: LexiconEntryCreate, ctx: ContextDep, _admin: AdminDep) -> LexiconEntryPublic:
    """Adds the term, or replaces this tenant's category and action for it."""
    try:
        entry = Entry(body.term.strip(), body.category, body.action)
    except LexiconError as exc:
        raise ApiError(400, "invalid_value", str(exc), param="term") from exc
    with ctx.sessions.begin() as session:
        _tenant(session, tenant_id)
        if not screening.add_entry(session, tenant_id, entry):
            raise ApiError(409, "lexicon_full",
                           f"a tenant lexicon holds at most {screening.tenant_lexicon_entries_max} terms")
    return LexiconEntryPublic(term=entry.term, category=entry.category, action=entry.action)


@router.delete("")
def remove_lexicon_entry(tenant_id: str, ctx: ContextDep, _admin: AdminDep,
                         term: Annotated[str, Query(min_length=1, max_length=term_chars_max, pattern=r"^[^\x00-\x1f\x7f]+$")]) -> dict[str, Any]:
    with ctx.sessions.begin() as session:
        _tenant(session, tenant_id)
        if not screening.remove_entry(session, tenant_id, term.strip()):
            raise ApiError(404, "not_found", f"tenant {tenant_id} has no lexicon term {term.strip()!r}", param="term")
    return {"object": "lexicon_entry.deleted", "tenant_id": tenant_id, "term": term.strip(), "deleted": True}
