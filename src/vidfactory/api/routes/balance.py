"""/v1/balance and /v1/ledger: the caller's tokens and every transfer that moved them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import select

from vidfactory.api.deps import CallerDep, SessionDep
from vidfactory.api.errors import checked_id, not_found
from vidfactory.api.render import transfer_object
from vidfactory.api.schemas import BalancePublic
from vidfactory.billing import ledger
from vidfactory.db.models import Transfer

router = APIRouter(prefix="/v1", tags=["billing"])

page_size_max = 1000


@router.get("/balance")
def get_balance(session: SessionDep, caller: CallerDep) -> BalancePublic:
    current = ledger.balance(session, caller.tenant_id)
    return BalancePublic(available=current.available, pending=current.pending, posted=current.posted)


@router.get("/ledger")
def list_transfers(
    session: SessionDep, caller: CallerDep,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=page_size_max)] = 100,
) -> dict[str, Any]:
    after_seq = 0
    if after is not None:
        checked_id("transfer", after, param="after")
        after_seq = session.scalar(select(Transfer.seq).where(Transfer.id == after,
                                                              Transfer.tenant_id == caller.tenant_id))
        if after_seq is None:
            raise not_found("transfer", after, param="after")
    page = ledger.transfers_page(session, caller.tenant_id, after_seq=after_seq, limit=limit)
    # A separate one-row probe rather than fetching limit + 1: a full page of page_size_max would ask the
    # ledger for more rows than it serves in one page.
    has_more = bool(page) and bool(ledger.transfers_page(session, caller.tenant_id, after_seq=page[-1].seq,
                                                          limit=1))
    return {"object": "list", "data": [transfer_object(t) for t in page],
            "last_id": page[-1].id if page else None, "has_more": has_more}
