"""/v1/admin/audit: the hash-chained audit log, oldest first."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from vidfactory.api.deps import AdminDep, SessionDep
from vidfactory.api.render import timestamp
from vidfactory.billing import audit

router = APIRouter(prefix="/v1/admin", tags=["admin"])

page_size_max = 1000


@router.get("/audit")
def list_audit(session: SessionDep, _admin: AdminDep, after: Annotated[int, Query(ge=0, le=2**62)] = 0,
               limit: Annotated[int, Query(ge=1, le=page_size_max)] = 100) -> dict[str, Any]:
    """Entries after seq `after`; `verified` says whether the whole chain checks out."""
    entries = audit.entries_page(session, after_seq=after, limit=limit)
    broken = audit.verify_chain(session)
    return {"object": "list", "verified": broken is None, "first_broken": None if broken is None else broken.seq,
            "data": [{"object": "audit_entry", "seq": e.seq, "kind": e.kind, "actor": e.actor, "subject": e.subject,
                      "data": e.data, "prev_hash": e.prev_hash, "hash": e.hash,
                      "created_at": timestamp(e.created_at)} for e in entries]}
