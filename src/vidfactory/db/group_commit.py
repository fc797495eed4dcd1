"""Group commit: concurrent writers of one process share one write transaction.

A writer hands `run` its effect, a function of the session. The first to arrive leads: it opens one write
transaction, runs every effect waiting at that moment (up to `batch_max`) in their `order_key` order and
commits them together, while the others wait; then the first writer still waiting leads the next batch.
What every transaction costs, whatever it writes (the session, the commit, the audit chain's lock and
move, the events' insert), is then paid once a batch.

Each effect still commits with everything it wrote, or not at all, and the effects of a batch see one
another's writes as if they had run one after another in that order: a balance or a limit checked by a
later one counts what the earlier ones took. An effect that raises before writing anything (a refusal:
no row inserted, updated or deleted, nothing left in the session or queued for the commit, and no
database error) leaves the batch as it found it: the others go on, and the refusal is its answer once the
batch commits. An effect that raises after writing rolls the batch back: it runs again alone, in a
transaction of its own (where its error, or its success, is its own), and the others go back to the front
of the line. An error from a batch's first effect is final at once: it ran exactly as it would alone.
When the commit fails, every effect runs alone. Effects may therefore run more than once: they must do
nothing outside the transaction that a rerun would repeat wrongly.

When each effect locks only rows named by its `order_key` (a submission: its tenant's accounts), two
processes' batches take their locks in one order and never wait on each other in a circle; a lock taken
out of that order can still deadlock, which the database breaks by failing one batch, whose effects then
run alone. An effect waiting on a lock keeps its whole batch waiting.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from sqlalchemy import Connection, event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from vidfactory.db import at_commit
from vidfactory.db.session import SessionFactory

__all__ = ["GroupCommit"]

T = TypeVar("T")


class _Role(enum.Enum):
    waiting = "waiting"
    leading = "leading"
    alone = "alone"
    done = "done"
    failed = "failed"


@dataclass(eq=False)
class _Writer(Generic[T]):
    order_key: str
    effect: Callable[[Session], T]
    turn: threading.Condition
    role: _Role = _Role.waiting
    result: T | None = None
    error: BaseException | None = None


@dataclass(eq=False)
class _Outcome:
    writer: _Writer
    result: object
    error: Exception | None  # a refusal: the effect raised before writing anything


@dataclass(eq=False)
class _Raised(Exception):
    writer: _Writer
    first: bool  # no effect before it in the batch wrote anything: it ran as it would have alone


_rows_written_key = "vidfactory.rows_written"  # on a connection: the rows its statements changed so far
_reads = ("SELECT", "PRAGMA", "SHOW", "SET", "BEGIN", "SAVEPOINT", "RELEASE", "ROLLBACK", "COMMIT")


def _count_rows_written(conn: Connection, cursor: object, statement: str, parameters: object, context: object,
                        executemany: bool) -> None:
    """A statement that is not a read and changed rows (or cannot tell: -1) counts them."""
    rowcount = getattr(cursor, "rowcount", -1)
    if rowcount != 0 and not statement.lstrip()[:9].upper().startswith(_reads):
        conn.info[_rows_written_key] = conn.info.get(_rows_written_key, 0) + max(rowcount, 1)


def _written(session: Session) -> tuple[int, int]:
    """What the session's transaction has written so far: rows changed, items queued for the commit."""
    return session.connection().info.get(_rows_written_key, 0), at_commit.queued(session)


def _refused_cleanly(session: Session, before: tuple[int, int], exc: Exception) -> bool:
    """The effect that raised `exc` left the transaction as it found it."""
    untouched = not (session.new or session.dirty or session.deleted)
    return not isinstance(exc, SQLAlchemyError) and untouched and _written(session) == before


def _ignore(size: int) -> None:
    pass


class GroupCommit:
    """`batch_max` 1 runs every effect alone, as `sessions.begin()` would; `batch_sizes` is told the size
    of each batch (a metric)."""

    def __init__(self, sessions: SessionFactory, batch_max: int,
                 batch_sizes: Callable[[int], None] = _ignore) -> None:
        assert batch_max >= 1, f"batch_max out of range: {batch_max}"
        self.sessions, self.batch_max, self.batch_sizes = sessions, batch_max, batch_sizes
        self._lock = threading.Lock()
        self._line: list[_Writer] = []  # the writers waiting for a batch, the next batch's first
        self._led = False  # a leader is running the line's batches
        engine = sessions.kw["bind"]
        if not event.contains(engine, "after_cursor_execute", _count_rows_written):
            event.listen(engine, "after_cursor_execute", _count_rows_written)

    @property
    def waiting(self) -> int:
        """The writers in line for the next batch now."""
        with self._lock:
            return len(self._line)

    def run(self, order_key: str, effect: Callable[[Session], T]) -> T:
        """`effect(session)` committed, in a batch or alone; what it returns, or what it raised."""
        if self.batch_max == 1:
            return self._alone(effect)
        writer = _Writer(order_key, effect, threading.Condition(self._lock))
        with self._lock:
            self._line.append(writer)
            if not self._led:
                self._led, writer.role = True, _Role.leading
        while True:
            with self._lock:
                while writer.role is _Role.waiting:
                    writer.turn.wait()
                role = writer.role
            if role is _Role.leading:
                self._lead()
            elif role is _Role.alone:
                return self._alone(effect)
            elif role is _Role.failed:
                assert writer.error is not None
                raise writer.error
            else:
                return writer.result  # type: ignore[return-value]

    def _alone(self, effect: Callable[[Session], T]) -> T:
        with self.sessions.begin() as session:
            return effect(session)

    def _lead(self) -> None:
        """Run the line's next batch, settle each writer's role, then pass the lead on."""
        with self._lock:
            batch, self._line = self._line[:self.batch_max], self._line[self.batch_max:]
            for writer in batch:
                writer.role = _Role.waiting
        self.batch_sizes(len(batch))
        back: list[_Writer] = []
        try:
            outcomes = self._committed(sorted(batch, key=lambda writer: writer.order_key))
        except _Raised as raised:
            if raised.first:
                raised.writer.role, raised.writer.error = _Role.failed, raised.__cause__
            else:
                raised.writer.role = _Role.alone
            back = [writer for writer in batch if writer is not raised.writer]
        except BaseException as exc:  # the commit failed: each writer's own transaction tells its outcome
            for writer in batch:
                writer.role = _Role.alone
            if not isinstance(exc, Exception):
                raise
        else:
            for outcome in outcomes:
                if outcome.error is None:
                    outcome.writer.role, outcome.writer.result = _Role.done, outcome.result
                else:
                    outcome.writer.role, outcome.writer.error = _Role.failed, outcome.error
        finally:
            self._pass_lead(batch, back)

    def _committed(self, batch: list[_Writer]) -> list[_Outcome]:
        outcomes: list[_Outcome] = []
        with self.sessions.begin() as session:
            for writer in batch:
                session.flush()  # what the effects before it left pending is theirs, not its
                before = _written(session)
                first = all(outcome.error is not None for outcome in outcomes)
                try:
                    outcomes.append(_Outcome(writer, writer.effect(session), None))
                except Exception as exc:
                    if not _refused_cleanly(session, before, exc):
                        raise _Raised(writer, first) from exc
                    outcomes.append(_Outcome(writer, None, exc))
        return outcomes

    def _pass_lead(self, batch: list[_Writer], back: list[_Writer]) -> None:
        with self._lock:
            self._line[:0] = back
            if self._line:
                self._line[0].role = _Role.leading
                self._line[0].turn.notify()
            else:
                self._led = False
            for writer in batch:
                if writer.role is not _Role.waiting:
                    writer.turn.notify()
