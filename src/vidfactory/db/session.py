"""Engines and sessions for SQLite (embedded default) and PostgreSQL (scale-out)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.orm import Session, sessionmaker

if TYPE_CHECKING:  # settings reads this module's pool defaults
    from vidfactory.settings import Settings

__all__ = ["SessionFactory", "WriteInReadSession", "database_engine", "is_sqlite", "make_engine",
           "make_session_factory", "sqlalchemy_url", "wait_in_line"]

sqlite_busy_timeout_ms = 30_000
_writer_option = "vidfactory_writer"
_queued_writer = "vidfactory_queued_writer"  # on a connection that holds the process's SQLite writer lock
_read_statements = ("SELECT", "BEGIN")  # what a reading session sends (BEGIN: SQLite's deferred one)


class WriteInReadSession(RuntimeError):
    """A statement that is not a read, sent from a reading session: a bug (write in `factory.begin()`)."""


class SessionFactory(sessionmaker[Session]):
    """`factory()` gives a session that only reads (it is never committed, and a statement that is not a
    SELECT raises WriteInReadSession); `factory.begin()` one that writes, committed at the end of its
    block. On SQLite the difference matters: a writing transaction takes the database's one write lock at
    BEGIN (BEGIN IMMEDIATE), while a reading one stays deferred, so WAL readers (authentication, price
    lookups, polling) never queue behind writers. On PostgreSQL a reading session runs without a
    transaction (autocommit): each statement sees what was committed before it, as it would under READ
    COMMITTED inside one, without a BEGIN and a ROLLBACK round trip per session. A submission has two
    reading sessions; without those round trips it costs the API a tenth less CPU and the database a third
    less (bench/RESULTS.md)."""

    def __init__(self, engine: Engine, **kw) -> None:
        super().__init__(engine, **kw)
        autocommit = {"isolation_level": "AUTOCOMMIT"} if engine.dialect.name == "postgresql" else {}
        self.reader = engine.execution_options(**autocommit)  # an engine of its own for the check's listener
        event.listen(self.reader, "before_cursor_execute", _refuse_writes)

    def __call__(self, **local_kw) -> Session:
        local_kw.setdefault("bind", self.reader)
        return super().__call__(**local_kw)

    @contextlib.contextmanager
    def begin(self) -> Iterator[Session]:  # type: ignore[override]
        writer = self.kw["bind"].execution_options(**{_writer_option: True})
        with self(bind=writer) as session, session.begin():
            yield session


def _refuse_writes(_conn, _cursor, statement: str, _parameters, _context, _executemany) -> None:
    if not statement.lstrip()[:6].upper().startswith(_read_statements):
        raise WriteInReadSession(f"a reading session sent {statement.lstrip()[:60]!r}: write in sessions.begin()")


_advisory_xact_lock = text("SELECT pg_advisory_xact_lock(:space, hashtext(:name))")


def wait_in_line(session: Session, space: int, name: str) -> None:
    """Before locking a contended row: on PostgreSQL, an advisory lock on (`space`, `name`) held until the
    transaction ends. Its waiters are served in the order they came; a row lock's are not (one that looks just
    as the row is released goes first), so under load some waited many turns. The row lock still decides
    what is correct; a locker that skips the line only skips its order. SQLite: nothing (its write
    transaction is already exclusive)."""
    assert 0 < space < 2**31, f"advisory lock space out of range: {space}"
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_advisory_xact_lock, {"space": space, "name": name})


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


# The URL schemes other tools write for PostgreSQL (libpq, Heroku, Django): all mean the psycopg 3 driver here.
postgres_schemes = ("postgres://", "postgresql://")
postgres_driver_scheme = "postgresql+psycopg://"


def sqlalchemy_url(url: str) -> str:
    """`url` with a plain PostgreSQL scheme mapped to the installed driver (psycopg 3, not psycopg2)."""
    for scheme in postgres_schemes:
        if url.startswith(scheme):
            return postgres_driver_scheme + url.removeprefix(scheme)
    return url


# Database connections a process keeps (opened as needed, never more than it used at once): as many as the
# API's request threads (anyio's default pool, 40) can hold together, so a busy API neither closes and
# reopens one for a large share of its requests (on PostgreSQL each new one is a server process to start)
# nor makes threads wait for one; a burst beyond them opens up to `pool_overflow_max_default` more, closed
# again when returned.
pool_size_default = 40
pool_overflow_max_default = 10


def make_engine(url: str, *, pool_size: int = pool_size_default,
                pool_overflow_max: int = pool_overflow_max_default) -> Engine:
    url = sqlalchemy_url(url)
    if not is_sqlite(url):
        # JIT off: the claim's planned cost (three index-ordered lookups) crosses jit_above_cost, and
        # compiling it took 250 ms for a query that runs in under 1 ms; no OLTP statement here gains from JIT.
        return create_engine(url, pool_pre_ping=True, pool_size=pool_size, max_overflow=pool_overflow_max,
                             connect_args={"options": "-c jit=off"})
    path = make_url(url).database
    pool: dict[str, int] = {}  # an in-memory database: one connection a thread (SQLAlchemy's own pool)
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        pool = {"pool_size": pool_size, "max_overflow": pool_overflow_max}
    engine = create_engine(url, **pool,
                           connect_args={"check_same_thread": False, "timeout": sqlite_busy_timeout_ms / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # Take transaction control from pysqlite so BEGIN IMMEDIATE can be issued: a deferred
        # transaction that later upgrades to a writer fails with SQLITE_BUSY instead of waiting.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={sqlite_busy_timeout_ms}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    # The writers of this process queue on one lock before BEGIN IMMEDIATE: SQLite's busy handler polls
    # with sleeps of up to 100 ms, so writers left to it are served in no order, and under load some
    # waited seconds while later ones passed (the admission tail). Writers of other processes still meet
    # the busy handler; so does one of ours that waited a whole busy timeout here.
    writers = threading.Lock()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:
        # A deferred transaction that later upgrades to a writer fails with SQLITE_BUSY instead of waiting,
        # so writers lock at BEGIN; readers never write (see SessionFactory).
        if not connection.get_execution_options().get(_writer_option, False):
            connection.exec_driver_sql("BEGIN")
            return
        connection.info[_queued_writer] = writers.acquire(timeout=sqlite_busy_timeout_ms / 1000)
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            _leave_writers(connection)
            raise

    def _leave_writers(connection) -> None:
        if connection.info.pop(_queued_writer, False):
            writers.release()

    event.listen(engine, "commit", _leave_writers)
    event.listen(engine, "rollback", _leave_writers)
    return engine


def database_engine(settings: Settings) -> Engine:
    """The configured database, with the configured pool."""
    return make_engine(settings.resolved_database_url, pool_size=settings.database_pool_size,
                       pool_overflow_max=settings.database_pool_overflow_max)


def make_session_factory(engine: Engine) -> SessionFactory:
    return SessionFactory(engine, expire_on_commit=False)
