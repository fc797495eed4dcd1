"""The one outbox reader behind every open event stream of a process: one read a tick whatever the number
of streams, each event read once and handed to the streams it concerns (the others not woken), and nothing
read once the last stream has closed."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from sqlalchemy import event

from vidfactory.db.session import make_engine, make_session_factory
from vidfactory.notify import hub as hub_module
from vidfactory.notify.events import events_after, record_event
from vidfactory.notify.hub import EventHub

from conftest import new_tenant

poll_s = 0.01
wake_deadline_s = 10.0  # generous: a loaded machine; a stream that is not woken is checked with quiet_s
quiet_s = 0.2
streams = 200


async def reads_stopped(ticks: list[int]) -> None:
    """Once a quiet_s passes with no new read. The read in flight when the last stream closed still ends,
    late on a loaded machine; a hub that kept reading (every poll_s) never lets a quiet_s pass."""
    deadline = time.monotonic() + wake_deadline_s
    while time.monotonic() < deadline:
        count = len(ticks)
        await asyncio.sleep(quiet_s)
        if len(ticks) == count:
            return
    raise AssertionError(f"the hub kept reading with no stream open: {len(ticks)} reads")


def test_one_read_a_tick_for_any_number_of_streams_wakes_only_those_an_event_concerns(database_url,
                                                                                      monkeypatch):
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    watched, other = new_tenant(sessions), new_tenant(sessions)
    ticks: list[int] = []  # the queries each tick's read ran
    reading = threading.local()
    read_changes = hub_module.read_changes

    def counted(*args):
        reading.statements = 0
        try:
            return read_changes(*args)
        finally:
            ticks.append(reading.statements)
            del reading.statements

    def count(_connection, _cursor, statement: str, *_) -> None:
        if hasattr(reading, "statements") and statement.lstrip().upper().startswith("SELECT"):
            reading.statements += 1

    monkeypatch.setattr(hub_module, "read_changes", counted)
    event.listen(engine, "before_cursor_execute", count)

    async def scenario() -> None:
        hub = EventHub(sessions, poll_s)
        mine = [hub.subscribe(watched.id, None) for _ in range(streams)]
        theirs = hub.subscribe(other.id, None)
        # The first tick starts at the newest event and wakes every stream once: each reads for itself.
        assert all(await asyncio.gather(*(s.wait(wake_deadline_s) for s in [*mine, theirs])))
        assert {(tuple(events), must_read) for events, must_read in (s.take() for s in [*mine, theirs])} == {((), True)}
        with sessions.begin() as session:
            recorded = record_event(session, watched.id, "billing.voucher_granted", {"tokens": 1})
        recorded = recorded.seq  # given at the commit
        assert all(await asyncio.gather(*(s.wait(wake_deadline_s) for s in mine)))
        assert not await theirs.wait(quiet_s)
        handed = [s.take() for s in mine]  # the event itself, read once for all 200
        assert {(tuple(e.seq for e in events), must_read) for events, must_read in handed} == {((recorded,), False)}
        assert len({id(events[0]) for events, _ in handed}) == 1
        for subscription in [*mine, theirs]:
            hub.unsubscribe(subscription)
        await reads_stopped(ticks)  # nothing open, nothing read

    try:
        asyncio.run(scenario())
    finally:
        engine.dispose()
    # One SELECT a tick, and one more for the tick that found the watched tenant's event: for 201 streams.
    assert len(ticks) >= 3 and sorted(ticks)[-2:] == [1, 2] and set(ticks) == {1, 2}, ticks


def test_a_stream_that_opens_while_the_hub_reads_is_told_to_read_for_itself(sqlite_url, monkeypatch):
    """The stream's own first read can come before an event the hub's read then passes: it must read again."""
    engine = make_engine(sqlite_url)
    sessions = make_session_factory(engine)
    early, late_tenant = new_tenant(sessions), new_tenant(sessions)
    read_changes = hub_module.read_changes

    async def scenario() -> None:
        loop, hub = asyncio.get_running_loop(), EventHub(sessions, poll_s)
        opened: list = []

        async def open_late_stream():
            opened.append(hub.subscribe(late_tenant.id, None))
            opened[0].take()  # its own first read, before the event below exists

        def racing(*args):
            if not opened and args[1] is not None:  # a tick after the first, with the early stream's read set
                asyncio.run_coroutine_threadsafe(open_late_stream(), loop).result()
                with sessions.begin() as session:
                    record_event(session, late_tenant.id, "billing.voucher_granted", {"tokens": 1})
            return read_changes(*args)

        monkeypatch.setattr(hub_module, "read_changes", racing)
        first = hub.subscribe(early.id, None)
        while not opened:
            await asyncio.sleep(poll_s)
        late = opened[0]
        assert await late.wait(wake_deadline_s)
        delivered, must_read = late.take()
        assert must_read and delivered == []
        hub.unsubscribe(late)
        hub.unsubscribe(first)

    try:
        asyncio.run(scenario())
    finally:
        engine.dispose()


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)  # SQLite runs one writer at a time
def test_an_event_recorded_first_but_committed_last_is_not_skipped(sessions):
    """Two transactions record events of one tenant; the one that recorded first commits last. A reader
    resuming after the last seq it was sent (a stream's Last-Event-ID, the hub's last read) still gets it:
    seq follows commit order."""
    tenant = new_tenant(sessions)
    with sessions.begin() as first:
        record_event(first, tenant.id, "billing.voucher_granted", {"tokens": 1})
        first.flush()
        with sessions.begin() as second:
            record_event(second, tenant.id, "billing.voucher_granted", {"tokens": 2})
        with sessions() as reader:
            sent = events_after(reader, tenant.id, 0)
    with sessions() as reader:
        sent += events_after(reader, tenant.id, sent[-1].seq)
    assert [event.payload["data"]["tokens"] for event in sent] == [2, 1]


def test_events_of_a_rolled_back_savepoint_or_an_uncommitted_transaction_are_never_written(sessions):
    tenant = new_tenant(sessions)
    with sessions.begin() as session:
        record_event(session, tenant.id, "billing.voucher_granted", {"tokens": 1})
        with pytest.raises(RuntimeError), session.begin_nested():
            record_event(session, tenant.id, "billing.voucher_granted", {"tokens": 2})
            raise RuntimeError("the savepoint rolls back")
    with sessions() as session:  # a reading session is closed, never committed
        record_event(session, tenant.id, "billing.voucher_granted", {"tokens": 3})
    session.commit()  # the same session again: what its closed transaction queued is gone
    with sessions() as reader:
        written = events_after(reader, tenant.id, 0)
    assert [event.payload["data"]["tokens"] for event in written] == [1]
