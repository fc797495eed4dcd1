"""Idempotency-Key for POSTs: the same key and body replay the first response; another body is a 409.

Invariants:
- The first request with a key reserves it (a row with no outcome yet) in a transaction of its own,
  before it checks balances or limits; its effect and the stored outcome then commit in one transaction,
  compare-and-set on its reservation. So the effect runs at most once per key, and a retry never runs it
  beside the first.
- A request whose key is reserved by a running request waits up to `in_flight_wait_s` for that outcome
  and replays it; still running then, it is refused with `IdempotencyInProgress` (409
  idempotency_in_progress, distinct from IdempotencyConflict: another body under the key). It never runs
  the effect itself, so it never sees a 402 or 429 caused by the first request's own hold.
- A request that fails releases its reservation: the key is free again, as if never sent. A request
  that died holding one (a killed process) is taken over once its `reservation_s` has passed; the first
  request, should it still be running then, cannot store its outcome and its effect rolls back.
- Key spaces are separate: a tenant's keys (scope "tenant") never meet the operator's (admin-credit,
  admin-voucher), so a tenant can neither block nor probe them.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vidfactory.db.group_commit import GroupCommit
from vidfactory.db.models import IdempotencyRecord
from vidfactory.db.session import SessionFactory
from vidfactory.db.types import utcnow

__all__ = ["IdempotencyConflict", "IdempotencyInProgress", "Outcome", "fingerprint", "run_once", "scopes"]

scopes = ("tenant", "admin-credit", "admin-voucher")
in_flight_wait_s = 5.0
in_flight_poll_s = 0.05


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before with a different request."""


class IdempotencyInProgress(Exception):
    """A request with this Idempotency-Key is still running; retry shortly for its outcome."""


@dataclass(frozen=True)
class Outcome:
    status_code: int
    body: dict[str, Any]
    replayed: bool


@dataclass(frozen=True)
class _Reserved:
    token: str


_in_flight = object()


def fingerprint(path: str, body: dict[str, Any]) -> str:
    canonical = json.dumps({"path": path, "body": body}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _reserve(sessions: SessionFactory, tenant_id: str, scope: str, key: str, request_sha256: str,
             reservation_s: float) -> Outcome | _Reserved | object:
    """The stored outcome (a replay), our reservation, or `_in_flight` (another request holds the key)."""
    now, token = utcnow(), uuid.uuid4().hex
    until = now + timedelta(seconds=reservation_s)
    with sessions.begin() as session:
        record = session.get(IdempotencyRecord, (tenant_id, scope, key), with_for_update=True,
                             populate_existing=True)
        if record is None:
            try:
                with session.begin_nested():
                    session.add(IdempotencyRecord(tenant_id=tenant_id, scope=scope, key=key,
                                                  request_sha256=request_sha256, reservation=token,
                                                  reserved_until=until))
            except IntegrityError:  # a concurrent first request inserted it: it holds the key
                return _in_flight
            return _Reserved(token)
        if record.request_sha256 != request_sha256:
            raise IdempotencyConflict(f"Idempotency-Key {key!r} was already used with a different request")
        if record.status_code is not None:
            assert record.response is not None
            return Outcome(status_code=record.status_code, body=record.response, replayed=True)
        assert record.reserved_until is not None
        if record.reserved_until > now:
            return _in_flight
        record.reservation, record.reserved_until = token, until  # its request died: ours now (row locked)
        return _Reserved(token)


def _release(sessions: SessionFactory, tenant_id: str, scope: str, key: str, token: str) -> None:
    with sessions.begin() as session:
        session.execute(delete(IdempotencyRecord).where(
            IdempotencyRecord.tenant_id == tenant_id, IdempotencyRecord.scope == scope,
            IdempotencyRecord.key == key, IdempotencyRecord.reservation == token,
            IdempotencyRecord.status_code.is_(None)))


def _claim_key(sessions: SessionFactory, tenant_id: str, scope: str, key: str, request_sha256: str,
               reservation_s: float) -> Outcome | _Reserved:
    deadline = time.monotonic() + in_flight_wait_s
    while True:
        state = _reserve(sessions, tenant_id, scope, key, request_sha256, reservation_s)
        if state is not _in_flight:
            assert isinstance(state, (Outcome, _Reserved))
            return state
        if time.monotonic() >= deadline:
            raise IdempotencyInProgress(f"a request with Idempotency-Key {key!r} is still running; "
                                        "retry shortly for its outcome")
        time.sleep(in_flight_poll_s)


def run_once(sessions: SessionFactory, tenant_id: str, idempotency: tuple[str, str] | None,
             effect: Callable[[Session], tuple[int, dict[str, Any]]], *, reservation_s: float,
             scope: str = "tenant", admissions: GroupCommit | None = None) -> Outcome:
    """Run `effect` in one transaction, at most once per (tenant, scope, key). `idempotency` is
    (key, fingerprint); `reservation_s` how long the key waits for this request before a retry may take
    it over. With `admissions`, that transaction is shared with the writers arriving together (group
    commit; `effect` may then run more than once, only one run commits). Raises IdempotencyConflict,
    IdempotencyInProgress, or what `effect` raises."""
    assert scope in scopes, f"unknown idempotency scope {scope!r}"
    if idempotency is None:
        status_code, body = _committed(sessions, admissions, tenant_id, effect)
        return Outcome(status_code, body, replayed=False)
    key, request_sha256 = idempotency
    state = _claim_key(sessions, tenant_id, scope, key, request_sha256, reservation_s)
    if isinstance(state, Outcome):
        return state

    def effect_and_outcome(session: Session) -> tuple[int, dict[str, Any]]:
        status_code, body = effect(session)
        stored = session.execute(update(IdempotencyRecord).where(
            IdempotencyRecord.tenant_id == tenant_id, IdempotencyRecord.scope == scope,
            IdempotencyRecord.key == key, IdempotencyRecord.reservation == state.token,
            IdempotencyRecord.status_code.is_(None)).values(
            status_code=status_code, response=body, reservation=None, reserved_until=None))
        if stored.rowcount != 1:  # we outlived the reservation and another request took the key over
            raise IdempotencyInProgress(f"a request with Idempotency-Key {key!r} is still running; "
                                        "retry shortly for its outcome")
        return status_code, body

    try:
        status_code, body = _committed(sessions, admissions, tenant_id, effect_and_outcome)
    except BaseException:
        _release(sessions, tenant_id, scope, key, state.token)
        raise
    return Outcome(status_code, body, replayed=False)


def _committed(sessions: SessionFactory, admissions: GroupCommit | None, tenant_id: str,
               effect: Callable[[Session], tuple[int, dict[str, Any]]]) -> tuple[int, dict[str, Any]]:
    """`effect` committed in a write transaction of its own, or in a batch of `admissions`."""
    if admissions is not None:
        return admissions.run(tenant_id, effect)
    with sessions.begin() as session:
        return effect(session)
