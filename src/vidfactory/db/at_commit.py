"""Work queued on a session's transaction, to be written when it commits: the audit chain's entries and
the outbox's events are numbered at commit, in commit order. A `before_commit` listener `take`s its kind;
what was queued inside a transaction or savepoint that rolls back is dropped with it, and whatever is left
when the outermost transaction ends (closed without a commit) goes too."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

__all__ = ["queue", "queued", "take"]

_key = "vidfactory.at_commit"


@dataclass(frozen=True)
class _Queued:
    kind: str
    transaction: SessionTransaction  # the innermost transaction when queued: its rollback drops the item
    item: Any


def queue(session: Session, kind: str, item: Any) -> None:
    """Queue `item` on the session's innermost transaction (begun if none is)."""
    if not session.in_transaction():
        session.begin()
    transaction = session.get_nested_transaction() or session.get_transaction()
    assert transaction is not None
    session.info.setdefault(_key, []).append(_Queued(kind, transaction, item))


def queued(session: Session) -> int:
    """How many items of every kind wait for the commit."""
    return len(session.info.get(_key, []))


def take(session: Session, kind: str) -> list[Any]:
    """The items of `kind` still queued, in the order they were queued, removed from the queue."""
    queued = session.info.get(_key, [])
    session.info[_key] = [q for q in queued if q.kind != kind]
    return [q.item for q in queued if q.kind == kind]


@event.listens_for(Session, "after_soft_rollback")
def _drop_rolled_back(session: Session, previous_transaction: SessionTransaction) -> None:
    queued = session.info.get(_key)
    if queued:
        session.info[_key] = [q for q in queued if not _inside(q.transaction, previous_transaction)]


@event.listens_for(Session, "after_transaction_end")
def _drop_at_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(_key, None)


def _inside(transaction: SessionTransaction | None, outer: SessionTransaction) -> bool:
    while transaction is not None:
        if transaction is outer:
            return True
        transaction = transaction.parent
    return False
