"""Idempotency-Key for POSTs: the same key and body replay the first response; another body is a 409.

The record is written in the same transaction as the effect it remembers, so a retried request either
sees the committed effect or runs it once; two racing requests with one key meet at the primary key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vidfactory.db.models import IdempotencyRecord
from vidfactory.db.session import SessionFactory

__all__ = ["IdempotencyConflict", "Outcome", "fingerprint", "run_once"]


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before with a different request."""


@dataclass(frozen=True)
class Outcome:
    status_code: int
    body: dict[str, Any]
    replayed: bool


def fingerprint(path: str, body: dict[str, Any]) -> str:
    canonical = json.dumps({"path": path, "body": body}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _recall(sessions: SessionFactory, tenant_id: str, key: str, request_sha256: str) -> Outcome | None:
    with sessions() as session:
        record = session.get(IdempotencyRecord, (tenant_id, key))
    if record is None:
        return None
    if record.request_sha256 != request_sha256:
        raise IdempotencyConflict(f"Idempotency-Key {key!r} was already used with a different request")
    return Outcome(status_code=record.status_code, body=record.response, replayed=True)


def run_once(sessions: SessionFactory, tenant_id: str, idempotency: tuple[str, str] | None,
             effect: Callable[[Session], tuple[int, dict[str, Any]]]) -> Outcome:
    """Run `effect` in one transaction, at most once per (tenant, key). `idempotency` is (key, fingerprint)."""
    if idempotency is None:
        with sessions.begin() as session:
            status_code, body = effect(session)
        return Outcome(status_code, body, replayed=False)
    key, request_sha256 = idempotency
    earlier = _recall(sessions, tenant_id, key, request_sha256)
    if earlier is not None:
        return earlier
    try:
        with sessions.begin() as session:
            status_code, body = effect(session)
            session.add(IdempotencyRecord(tenant_id=tenant_id, key=key, request_sha256=request_sha256,
                                          status_code=status_code, response=body))
            session.flush()
    except IntegrityError:
        # A concurrent request with the same key committed first; ours rolled back whole.
        earlier = _recall(sessions, tenant_id, key, request_sha256)
        if earlier is None:
            raise
        return earlier
    return Outcome(status_code, body, replayed=False)
