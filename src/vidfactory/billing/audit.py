"""The audit trail: an append-only log whose entries are hash-chained.

Each entry's hash is sha256(previous hash + canonical JSON of the entry), so changing, removing or
reordering any entry breaks every link after it. Appends lock the one audit-head row (`FOR UPDATE` on
PostgreSQL; SQLite's write transaction is already exclusive), take the next seq from it and move it on:
concurrent appends chain one after another, never both onto the same predecessor. Every function runs
inside the caller's transaction, so an entry commits with the change it records.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from vidfactory.db.models import AuditEntry, AuditHead, Transfer
from vidfactory.db.types import utcnow

__all__ = ["ChainBreak", "append", "entries_page", "genesis_hash", "record_transfer", "verify_chain"]

genesis_hash = "0" * 64
head_id = 1
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


def append(session: Session, kind: str, subject: str, data: dict[str, Any], actor: str = system_actor) -> AuditEntry:
    """Chain one entry onto the log under the locked head."""
    assert kind and len(kind) <= 40, f"audit kind out of range: {kind!r}"
    head = session.scalars(select(AuditHead).where(AuditHead.id == head_id).with_for_update()
                           .execution_options(populate_existing=True)).one()
    # Stored as JSON and read back as JSON: normalise now so the hash covers what is read later.
    data = json.loads(json.dumps(data, default=str))
    created_at = utcnow()
    seq = head.seq + 1
    digest = entry_hash(head.hash, seq, kind, actor[:actor_chars_max], subject[:subject_chars_max], data,
                        created_at)
    entry = AuditEntry(seq=seq, kind=kind, actor=actor[:actor_chars_max], subject=subject[:subject_chars_max],
                       data=data, prev_hash=head.hash, hash=digest, created_at=created_at)
    session.add(entry)
    head.seq, head.hash = seq, digest
    session.flush()
    return entry


def record_transfer(session: Session, transfer: Transfer, actor: str = system_actor) -> AuditEntry:
    return append(session, f"ledger.{transfer.kind}", transfer.id, {
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
