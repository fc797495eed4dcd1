"""A claimed job's lease as its worker holds it: a heartbeat thread, and every write the attempt makes.

Invariants (each pinned in tests/test_faults.py):
- The heartbeat runs from the claim until `release()`, and every way out of an attempt releases it: a
  lease is never kept alive with no generation or post-processing behind it.
- `expires_at` (this process's monotonic clock) never runs ahead of the lease in the database: it is
  counted from before the renewal was sent.
- A heartbeat that cannot reach the database retries with backoff until `expires_at`; then it sets `lost`
  and stops. Another worker taking the job (StaleJob) sets `lost` at once. `lost` stops the generation at
  its next step and nothing more is written for the attempt.
- `transact` retries a database outage while the lease holds and raises LeaseExpired once it does not:
  an outcome is recorded by this worker or by no one (the job is then handed back, or the reaper requeues
  it). Every write is a compare-and-set under the lease owner, so a retry of a commit that did land fails
  with StaleJob instead of applying twice.
- `conclude` records the attempt's outcome and ends the heartbeat in one step, under the lock each renewal
  also takes: a renewal either lands before the outcome (the job was still ours) or is never sent, so the
  outcome's commit (which clears the owner) is never read as a lost lease.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from vidfactory.db.outage import Backoff, is_outage
from vidfactory.db.session import SessionFactory
from vidfactory.db.types import utcnow
from vidfactory.jobs import queue
from vidfactory.jobs.errors import LeaseExpired

__all__ = ["Lease", "outage_retry_first_s"]

log = logging.getLogger(__name__)
outage_retry_first_s = 0.1
T = TypeVar("T")
Renewal = Callable[[Session, datetime], None]


class Lease:
    """`renew_also`: more to keep alive in each heartbeat's transaction (a hosted model's breaker probe).
    `claimed_at`: time.monotonic() taken before the claim was sent."""

    def __init__(self, sessions: SessionFactory, job_id: str, owner: str, *, lease_s: float, heartbeat_s: float,
                 claimed_at: float, renew_also: Renewal | None = None) -> None:
        assert lease_s > 0 and heartbeat_s > 0, f"lease {lease_s} s, heartbeat {heartbeat_s} s"
        self.sessions = sessions
        self.job_id = job_id
        self.owner = owner
        self.lease_s = lease_s
        self.heartbeat_s = heartbeat_s
        self.renew_also = renew_also
        self.expires_at = claimed_at + lease_s
        self.lost = threading.Event()
        self.done = threading.Event()
        self._concluding = threading.Lock()  # a renewal's check-and-send against the outcome's commit
        self.beat = threading.Thread(target=self._beat, name=f"lease-{job_id}", daemon=True)
        self.beat.start()

    def remaining_s(self) -> float:
        return self.expires_at - time.monotonic()

    def release(self) -> None:
        """Stop the heartbeat (idempotent); the job's row keeps whatever the attempt recorded."""
        self.done.set()
        self.beat.join()

    def transact(self, change: Callable[[Session], T], what: str) -> T:
        """`change` in one transaction, retried through a database outage while the lease holds."""
        return self._retried(lambda: self._commit(change), what)

    def conclude(self, change: Callable[[Session], T], what: str) -> T:
        """`transact` for the attempt's outcome (`change` ends the lease in the database): once it
        commits, the heartbeat stops without renewing again."""
        return self._retried(lambda: self._commit_outcome(change), what)

    def _commit(self, change: Callable[[Session], T]) -> T:
        with self.sessions.begin() as session:
            return change(session)

    def _commit_outcome(self, change: Callable[[Session], T]) -> T:
        with self._concluding:
            result = self._commit(change)
            self.done.set()
        return result

    def _retried(self, commit: Callable[[], T], what: str) -> T:
        backoff = Backoff(outage_retry_first_s, self.heartbeat_s)
        while True:
            try:
                return commit()
            except SQLAlchemyError as exc:
                if not is_outage(exc):
                    raise
                delay = backoff.next_s()
                if self.lost.is_set() or self.remaining_s() <= delay:
                    raise LeaseExpired(f"job {self.job_id}: {what} not recorded: the database was unreachable "
                                       f"until the lease of {self.owner} ran out") from exc
                log.warning("job %s: %s waits for the database (retry in %.2f s): %s", self.job_id, what, delay,
                            exc.__class__.__name__)
                self.lost.wait(delay)

    def best_effort(self, change: Callable[[Session], T], what: str) -> T | None:
        """`change` once; None when the database is unreachable (progress, stop checks: the next one
        comes soon, and the heartbeat decides whether the job is still ours)."""
        try:
            with self.sessions.begin() as session:
                return change(session)
        except SQLAlchemyError as exc:
            if not is_outage(exc):
                raise
            log.debug("job %s: %s skipped, the database is unreachable: %s", self.job_id, what,
                        exc.__class__.__name__)
            return None

    def _beat(self) -> None:
        try:
            self._renew_until_done()
        finally:
            if not self.done.is_set():  # the heartbeat only ever ends early by losing the lease
                self.lost.set()

    def _renew_until_done(self) -> None:
        backoff = Backoff(outage_retry_first_s, self.heartbeat_s)
        delay = self.heartbeat_s
        while not self.done.wait(delay):
            sent_at = time.monotonic()
            try:
                if not self._renew():
                    return
            except queue.StaleJob:
                log.warning("job %s: lease lost by %s; stopping", self.job_id, self.owner)
                return
            except SQLAlchemyError as exc:
                if not is_outage(exc):
                    raise
                if self.remaining_s() <= 0:
                    log.error("job %s: lease of %s ran out while the database was unreachable; stopping",
                              self.job_id, self.owner)
                    return
                delay = min(backoff.next_s(), self.remaining_s())
                log.warning("job %s: heartbeat failed (retry in %.2f s, lease left %.1f s): %s", self.job_id,
                            delay, self.remaining_s(), exc.__class__.__name__)
                continue
            self.expires_at = sent_at + self.lease_s
            backoff.reset()
            delay = self.heartbeat_s

    def _renew(self) -> bool:
        """One renewal; False when the outcome was recorded first (nothing to renew). The renewal's
        statements run under the outcome's lock, so StaleJob here means another worker has the job."""
        with self.sessions.begin() as session:
            with self._concluding:
                if self.done.is_set():
                    return False
                now = utcnow()
                queue.heartbeat(session, self.job_id, self.owner, lease_s=self.lease_s, now=now)
                if self.renew_also is not None:
                    self.renew_also(session, now)
        return True
