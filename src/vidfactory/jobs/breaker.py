"""A circuit breaker per hosted model, in the database so every worker process and host shares it.

closed    jobs for the model run; each failure of the remote service counts, a success resets the count.
open      after `failures_max` consecutive failures: the model's jobs stay queued (no attempt used, the
          hold untouched) and an admin alert is raised.
half_open after `cooldown_s`: one worker wins the right to run one probe job. Success closes the
          breaker; failure opens it again for another cooldown. A probe whose worker vanished expires.

Every change is a compare-and-set on the row's `version`; a lost race re-reads and decides again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from vidfactory.db.models import EngineBreaker
from vidfactory.db.types import utcnow
from vidfactory.notify.alerts import raise_alert

__all__ = ["BreakerPolicy", "admits", "extend_probe", "holding_back", "record_failure", "record_success", "state_of"]

log = logging.getLogger(__name__)

cas_attempts_max = 20  # writers racing on one row; each lost race means someone else made progress
last_error_chars_max = 1000
alert_kind = "engine_breaker_open"


@dataclass(frozen=True)
class BreakerPolicy:
    failures_max: int
    cooldown_s: float
    probe_s: float  # how long a probe may run before another worker may take over

    def __post_init__(self) -> None:
        assert self.failures_max >= 1 and self.cooldown_s >= 0 and self.probe_s > 0


def state_of(session: Session, model: str) -> EngineBreaker | None:
    return session.get(EngineBreaker, model, populate_existing=True)


def holding_back(session: Session) -> dict[str, bool]:
    """Per model with a breaker row: does it hold its jobs back (open, or half-open: one probe at most)?"""
    return {model: state != "closed" for model, state in session.execute(
        select(EngineBreaker.model, EngineBreaker.state))}


def admits(session: Session, model: str, *, worker_id: str, now: datetime, policy: BreakerPolicy) -> bool:
    """May this worker claim a job for `model` now? Taking the half-open probe is a change of its own."""
    for _ in range(cas_attempts_max):
        row = state_of(session, model)
        if row is None or row.state == "closed":
            return True
        if row.state == "half_open" and row.probe_owner == worker_id:
            return True
        probe_free = (row.state == "open" and now >= row.opened_at + timedelta(seconds=policy.cooldown_s)) or (
            row.state == "half_open" and row.probe_expires_at is not None and now >= row.probe_expires_at)
        if not probe_free:
            return False
        if _swap(session, row, state="half_open", probe_owner=worker_id,
                 probe_expires_at=now + timedelta(seconds=policy.probe_s)):
            log.info("breaker %s half-open: %s probes", model, worker_id)
            return True
    raise RuntimeError(f"breaker {model}: no compare-and-set succeeded in {cas_attempts_max} tries")


def extend_probe(session: Session, model: str, *, worker_id: str, until: datetime) -> None:
    """The probe's worker is alive (it heartbeats its job): keep the probe its own until `until`.
    A no-op unless the breaker is half-open with this worker as the prober."""
    session.execute(
        update(EngineBreaker)
        .where(EngineBreaker.model == model, EngineBreaker.state == "half_open",
               EngineBreaker.probe_owner == worker_id)
        .values(probe_expires_at=until, version=EngineBreaker.version + 1, updated_at=utcnow())
        .execution_options(synchronize_session=False))


def record_success(session: Session, model: str) -> None:
    for _ in range(cas_attempts_max):
        row = state_of(session, model)
        if row is None or (row.state == "closed" and row.failures == 0):
            return
        if _swap(session, row, state="closed", failures=0, opened_at=None, probe_owner=None,
                 probe_expires_at=None):
            if row.state != "closed":
                log.info("breaker %s closed: the remote service answers again", model)
            return
    raise RuntimeError(f"breaker {model}: no compare-and-set succeeded in {cas_attempts_max} tries")


def record_failure(session: Session, model: str, error: str, *, now: datetime, policy: BreakerPolicy) -> bool:
    """Count one failure of the remote service. Returns True when the breaker is open afterwards; raises
    the admin alert (in the caller's transaction) when this failure opened it."""
    _ensure_row(session, model, now)
    for _ in range(cas_attempts_max):
        row = state_of(session, model)
        assert row is not None
        failures = row.failures + 1
        opens = row.state == "half_open" or (row.state == "closed" and failures >= policy.failures_max)
        values = {"failures": failures, "last_error": error[:last_error_chars_max]}
        if opens:
            values.update(state="open", opened_at=now, probe_owner=None, probe_expires_at=None)
        if not _swap(session, row, **values):
            continue
        if opens and row.state == "closed":
            log.error("breaker %s open after %d consecutive failures: %s", model, failures, error)
            raise_alert(session, alert_kind, f"model {model}: the hosted service failed {failures} times in a "
                        f"row; its jobs wait in the queue and one probe runs every {policy.cooldown_s:g} s. "
                        f"Last error: {error}")
        return opens or row.state == "open"
    raise RuntimeError(f"breaker {model}: no compare-and-set succeeded in {cas_attempts_max} tries")


def _swap(session: Session, row: EngineBreaker, **values: object) -> bool:
    """Compare-and-set: apply `values` only if nobody changed the row since it was read."""
    result = session.execute(
        update(EngineBreaker)
        .where(EngineBreaker.model == row.model, EngineBreaker.version == row.version)
        .values(version=row.version + 1, updated_at=utcnow(), **values)
        .execution_options(synchronize_session=False))
    return result.rowcount == 1


def _ensure_row(session: Session, model: str, now: datetime) -> None:
    """The row appears at the model's first failure; concurrent first failures insert it once."""
    if session.scalar(select(EngineBreaker.model).where(EngineBreaker.model == model)) is not None:
        return
    dialect = session.get_bind().dialect.name
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[dialect]
    session.execute(insert(EngineBreaker).values(model=model, state="closed", failures=0, version=0, updated_at=now)
                    .on_conflict_do_nothing(index_elements=["model"]))
