"""Sessions on SQLite: readers never wait for the write lock; writers take it at BEGIN. On PostgreSQL,
readers run without a transaction while writers still commit or roll back whole. A reading session never
writes. Connection pools: a busy process keeps the connections it opened, up to its configured pool size."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import event, text

from vidfactory.db.session import WriteInReadSession, make_engine, make_session_factory, pool_size_default

lock_held_s_max = 20.0
connections_held_s_max = 20.0  # how long the pool test's threads wait for one another


def test_a_reader_does_not_wait_for_a_writer_holding_the_lock(sqlite_url):
    engine = make_engine(sqlite_url)
    sessions = make_session_factory(engine)
    writer_has_lock, reader_done = threading.Event(), threading.Event()
    released_by_reader: list[bool] = []

    def writer() -> None:
        with sessions.begin() as session:
            session.execute(text("UPDATE plans SET priority = priority"))
            writer_has_lock.set()
            # False if the reader was stuck behind this transaction's lock for the whole wait
            released_by_reader.append(reader_done.wait(lock_held_s_max))

    thread = threading.Thread(target=writer)
    thread.start()
    assert writer_has_lock.wait(lock_held_s_max)
    with sessions() as session:
        assert session.execute(text("SELECT count(*) FROM plans")).scalar() >= 1
    reader_done.set()
    thread.join()
    engine.dispose()
    assert released_by_reader == [True]


def test_writers_lock_at_begin_and_readers_defer(sqlite_url):
    engine = make_engine(sqlite_url)
    sessions = make_session_factory(engine)
    begins: list[str] = []
    event.listen(engine, "before_cursor_execute",
                 lambda conn, cursor, statement, *rest: begins.append(statement) if "BEGIN" in statement else None)
    with sessions() as session:
        session.execute(text("SELECT 1"))
    with sessions.begin() as session:
        session.execute(text("SELECT 1"))
    engine.dispose()
    assert begins == ["BEGIN", "BEGIN IMMEDIATE"]


def test_a_reading_session_that_writes_fails_and_writes_nothing(database_url):
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    with sessions() as session:
        plans = session.execute(text("SELECT count(*) FROM plans")).scalar()
        with pytest.raises(WriteInReadSession):
            session.execute(text("DELETE FROM plans"))
    with sessions() as session:
        assert session.execute(text("SELECT count(*) FROM plans")).scalar() == plans > 0
    engine.dispose()


def test_postgres_reads_run_without_a_transaction_and_writes_still_roll_back_whole(postgres_url):
    """One pooled connection serves both: after a read, it must be transactional again for the writer."""
    engine = make_engine(postgres_url, pool_size=1, pool_overflow_max=0)
    sessions = make_session_factory(engine)
    started = text("SELECT now()")  # a transaction's start: the same for every statement inside one
    with sessions() as session:
        assert session.execute(started).scalar() != session.execute(started).scalar()
        priority = session.execute(text("SELECT priority FROM plans WHERE id = 'enterprise'")).scalar()
    with sessions.begin() as session:
        assert session.execute(started).scalar() == session.execute(started).scalar()
    with pytest.raises(RuntimeError, match="undone"), sessions.begin() as session:
        session.execute(text("UPDATE plans SET priority = priority + 1 WHERE id = 'enterprise'"))
        session.execute(text("UPDATE plans SET priority = priority + 1 WHERE id = 'pro'"))
        raise RuntimeError("undone")
    with sessions() as session:
        assert session.execute(text("SELECT priority FROM plans WHERE id = 'enterprise'")).scalar() == priority
    engine.dispose()


def test_postgres_connections_never_jit_compile(postgres_url):
    """JIT compiling the claim cost 250 ms on a 100,000-job queue for a query that runs in under 1 ms."""
    engine = make_engine(postgres_url)
    with engine.connect() as connection:
        assert connection.execute(text("SHOW jit")).scalar() == "off"
    engine.dispose()


def test_a_busy_process_reuses_the_connections_it_opened(database_url):
    """As many threads as the API's request pool each hold a connection at once, round after round: the
    connections the first round opened serve every later one. A pool smaller than that closed and reopened
    a connection for nearly half the submissions under load (on PostgreSQL, a server process each)."""
    engine = make_engine(database_url)
    opened: list[int] = []
    event.listen(engine, "connect", lambda *_: opened.append(1))
    threads, rounds = pool_size_default, 3
    everyone_connected = threading.Barrier(threads, timeout=connections_held_s_max)

    def hold_one() -> None:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            everyone_connected.wait()

    for _ in range(rounds):
        workers = [threading.Thread(target=hold_one) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert not everyone_connected.broken
    engine.dispose()
    assert len(opened) == threads
