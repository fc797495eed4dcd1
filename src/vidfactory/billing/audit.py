"""The audit trail: an append-only log whose entries are hash-chained.

Each entry's hash is sha256(previous hash + canonical JSON of the entry), so changing, removing or
reordering any entry breaks every link after it. Chaining locks the one audit-head row (`FOR UPDATE` on
PostgreSQL; SQLite's write transaction is already exclusive), takes the next seq from it and moves it on:
concurrent transactions chain one after another, never both onto the same predecessor.

`append` queues an entry on the caller's transaction; the session chains its queued entries when that
transaction (or a savepoint inside it) commits, so an entry still commits with the change it records,
and one rolled back with its savepoint is never written. Why at commit: the head row is every writer's
one shared lock, held until the commit; taken last, it is held for the commit alone instead of for the
rest of the transaction (a submission's job, events and response), which made every writer of every
tenant wait in line on PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, event, insert, select, update
from sqlalchemy.orm import Session, SessionTransaction

from vidfactory.db.models import AuditEntry, AuditHead, Transfer
from vidfactory.db import at_commit
from vidfactory.db.session import wait_in_line
from vidfactory.db.types import utcnow

__all__ = ["ChainBreak", "append", "entries_page", "genesis_hash", "hold_head", "lock_head", "record_transfer",
           "verify_chain"]

genesis_hash = "0" * 64
head_id = 1
head_lock_space = 0x76660001  # advisory lock space of the line to the head row (`wait_in_line`)
actor_chars_max = 80
subject_chars_max = 80
system_actor = "system"


def _canonical(seq: int, kind: str, actor: str, subject: str, data: dict[str, Any], created_at: datetime) -> str:
    return json.dumps({"seq": seq, "kind": kind, "actor": actor, "subject": subject, "data": data,
                       "created_at": created_at.isoformat(timespec="microseconds")},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def entry_hash(prev_hash: str, seq: int, kind: str, actor: str, subject: str, data: dict[str, Any],
               created_at: datetime) -> str:
    payload = prev_hash + _canonical(seq, kind, actor, subject, data, created_at)
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class _Entry:
    kind: str
    actor: str
    subject: str
    data: dict[str, Any]


_head_held_key = "vidfactory.audit.head_held"  # the transaction that holds the head's line, once it does


def append(session: Session, kind: str, subject: str, data: dict[str, Any], actor: str = system_actor) -> None:
    """Queue one entry on the session's transaction; it is chained when that transaction commits."""
    assert kind and len(kind) <= 40, f"audit kind out of range: {kind!r}"
    # Stored as JSON and read back as JSON: normalise now so the hash covers what is read later.
    data = json.loads(json.dumps(data, default=str))
    at_commit.queue(session, "audit", _Entry(kind, actor[:actor_chars_max], subject[:subject_chars_max], data))


# Every writing transaction that audits runs these three: built once, not at every commit.
_head_locked = select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == head_id).with_for_update()
_entries_added = insert(AuditEntry)
_head_moved = (update(AuditHead).where(AuditHead.id == head_id)
               .values(seq=bindparam("new_seq"), hash=bindparam("new_hash"))
               .execution_options(synchronize_session=False))


@event.listens_for(Session, "before_commit")
def _chain_queued(session: Session) -> None:
    """Chain the queued entries onto the log under the locked head, in the order they were appended. A
    savepoint's commit chains them too: they are then rows inside it, rolled back with it by the database."""
    queued = at_commit.take(session, "audit")
    if not queued:
        return
    seq, prev_hash = lock_head(session)
    created_at = utcnow()
    rows = []
    for entry in queued:
        seq += 1
        digest = entry_hash(prev_hash, seq, entry.kind, entry.actor, entry.subject, entry.data, created_at)
        rows.append({"seq": seq, "kind": entry.kind, "actor": entry.actor, "subject": entry.subject,
                     "data": entry.data, "prev_hash": prev_hash, "hash": digest, "created_at": created_at})
        prev_hash = digest
    session.execute(_entries_added, rows)
    session.execute(_head_moved, {"new_seq": seq, "new_hash": prev_hash})


def lock_head(session: Session) -> tuple[int, str]:
    """Lock the audit head until this transaction ends (PostgreSQL; SQLite's write transaction is already
    exclusive): (its seq, its hash). Taken at commit, it is the one lock that puts writers' commits in a
    line; whatever else must be numbered in commit order (the event outbox) takes this same lock
    (`hold_head`), so two such locks can never be taken in opposite orders."""
    transaction = session.get_transaction()
    if session.info.get(_head_held_key) is not transaction:
        wait_in_line(session, head_lock_space, "audit-head")
        session.info[_head_held_key] = transaction
    seq, prev_hash = session.execute(_head_locked).one()
    return seq, prev_hash


def hold_head(session: Session) -> None:
    """`lock_head` for a writer that needs no value from it: nothing to do once this transaction holds it."""
    if session.info.get(_head_held_key) is not session.get_transaction():
        lock_head(session)


@event.listens_for(Session, "after_soft_rollback")
def _forget_head(session: Session, previous_transaction: SessionTransaction) -> None:
    """A savepoint's rollback releases the locks taken inside it: the next writer takes the head again."""
    session.info.pop(_head_held_key, None)


def record_transfer(session: Session, transfer: Transfer, actor: str = system_actor) -> None:
    append(session, f"ledger.{transfer.kind}", transfer.id, {
        "amount": transfer.amount, "debit": transfer.debit_account_id, "credit": transfer.credit_account_id,
        "pending_id": transfer.pending_id, "tenant_id": transfer.tenant_id, "job_id": transfer.job_id,
        "memo": transfer.memo,
        "expires_at": None if transfer.expires_at is None else transfer.expires_at.isoformat()}, actor)


@dataclass(frozen=True)
class ChainBreak:
    seq: int
    reason: str

    def __str__(self) -> str:
        return f"audit log broken at entry {self.seq}: {self.reason}"


def verify_chain(session: Session, batch: int = 5000) -> ChainBreak | None:
    """Walk the chain from the start; return the first broken link, or None when it is whole."""
    prev_hash, expected_seq = genesis_hash, 1
    while True:
        rows = list(session.scalars(select(AuditEntry).where(AuditEntry.seq >= expected_seq)
                                    .order_by(AuditEntry.seq).limit(batch)))
        for row in rows:
            if row.seq != expected_seq:
                return ChainBreak(expected_seq, f"entry missing (next is {row.seq})")
            if row.prev_hash != prev_hash:
                return ChainBreak(row.seq, "prev_hash does not match the previous entry's hash")
            recomputed = entry_hash(prev_hash, row.seq, row.kind, row.actor, row.subject, row.data,
                                    row.created_at)
            if recomputed != row.hash:
                return ChainBreak(row.seq, "contents do not match its hash (the entry was changed)")
            prev_hash, expected_seq = row.hash, row.seq + 1
        if len(rows) < batch:
            break
    head = session.get(AuditHead, head_id, populate_existing=True)
    if head is None or (head.seq, head.hash) != (expected_seq - 1, prev_hash):
        return ChainBreak(expected_seq, "the head does not name the last entry (entries were removed)")
    return None


def entries_page(session: Session, *, after_seq: int, limit: int) -> list[AuditEntry]:
    assert 1 <= limit <= 1000
    return list(session.scalars(select(AuditEntry).where(AuditEntry.seq > after_seq)
                                .order_by(AuditEntry.seq).limit(limit)))
