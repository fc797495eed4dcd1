"""A database that went away (a restart, a failover, a cut connection, a SQLite writer holding the lock)
against a statement that is wrong: background loops wait the first out with backoff and fail loudly on
the second. A pooled connection that died is replaced on the next checkout (`pool_pre_ping`), so waiting
and trying again is all that reconnecting takes."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

__all__ = ["Backoff", "is_outage"]


def is_outage(exc: BaseException) -> bool:
    """True when trying again on a fresh connection may succeed."""
    if isinstance(exc, (OperationalError, InterfaceError)):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


@dataclass
class Backoff:
    """Delays for retrying through an outage: `first_s`, doubling after each failure, at most `max_s`."""

    first_s: float
    max_s: float
    failures: int = 0

    def __post_init__(self) -> None:
        assert 0 < self.first_s <= self.max_s, f"backoff {self.first_s} s .. {self.max_s} s"

    def next_s(self) -> float:
        delay = min(self.first_s * 2 ** min(self.failures, 30), self.max_s)
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0
