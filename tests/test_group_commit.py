"""Group commit: writers arriving together share one write transaction, and each still commits all of its
writes or none, with its own outcome."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from conftest import assert_ledger_clean, make_settings, new_tenant
from fastapi.testclient import TestClient
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from vidfactory.api.app import create_app
from vidfactory.api.render import new_video_object
from vidfactory.billing import ledger
from vidfactory.billing.ledger import InsufficientBalance
from vidfactory.db.group_commit import GroupCommit
from vidfactory.idempotency import Outcome
from vidfactory.jobs.submit import VideoRequest, submit
from vidfactory.observability.metrics import process_registry
from vidfactory.tenancy import authenticate

line_wait_s_max = 60


class Refused(Exception):
    pass


def wait_for_line(line: GroupCommit, writers: int) -> None:
    deadline = time.monotonic() + line_wait_s_max
    while line.waiting < writers:
        assert time.monotonic() < deadline, f"{writers} writers never queued"
        time.sleep(0.005)


def run_together(line: GroupCommit, first: Callable[[Session], object],
                 others: list[tuple[str, Callable[[Session], object]]]) -> dict[str, object]:
    """`first` leads a batch and holds it open until every one of `others` waits in line, so they make the
    next batch: each writer's outcome (its result or its exception), by order key."""
    return calls_together(line, first, [(key, lambda key=key, effect=effect: line.run(key, effect))
                                        for key, effect in others])


def calls_together(line: GroupCommit, first: Callable[[Session], object],
                   calls: list[tuple[str, Callable[[], object]]]) -> dict[str, object]:
    """`run_together` for calls that each hand `line` one writer (`submit`): their outcomes, by name."""
    outcomes: dict[str, object] = {}

    def call(name: str, function: Callable[[], object]) -> None:
        try:
            outcomes[name] = function()
        except Exception as exc:
            outcomes[name] = exc

    def leading(session: Session) -> object:
        for name, function in calls:
            threading.Thread(target=call, args=(name, function)).start()
        wait_for_line(line, len(calls))
        return first(session)

    call("0-first", lambda: line.run("0-first", leading))
    deadline = time.monotonic() + line_wait_s_max
    while len(outcomes) < len(calls) + 1:
        assert time.monotonic() < deadline, "a writer never returned"
        time.sleep(0.005)
    return outcomes


def credit(tenant_id: str, amount: int) -> Callable[[Session], int]:
    return lambda session: ledger.credit(session, tenant_id, amount).amount


def credit_then_refuse(tenant_id: str) -> Callable[[Session], int]:
    def effect(session: Session) -> int:
        ledger.credit(session, tenant_id, 1_000)  # written, then undone with the refusal
        raise Refused(tenant_id)
    return effect


def available(sessions, tenant_id: str) -> int:
    with sessions() as session:
        return ledger.balance(session, tenant_id).available


def test_writers_arriving_together_commit_in_one_batch(sessions):
    tenants = [new_tenant(sessions).id for _ in range(6)]
    sizes: list[int] = []
    line = GroupCommit(sessions, batch_max=32, batch_sizes=sizes.append)
    outcomes = run_together(line, credit(tenants[0], 5),
                            [(f"{n}-tenant", credit(tenant, 10 * n)) for n, tenant in enumerate(tenants, 1)])
    assert sizes == [1, 6]
    assert outcomes == {"0-first": 5, **{f"{n}-tenant": 10 * n for n in range(1, 7)}}
    assert [available(sessions, tenant) for tenant in tenants] == [15, 20, 30, 40, 50, 60]
    assert_ledger_clean(sessions)


def test_a_refused_writer_leaves_nothing_and_the_others_commit(sessions):
    tenants = [new_tenant(sessions).id for _ in range(3)]
    sizes: list[int] = []
    line = GroupCommit(sessions, batch_max=32, batch_sizes=sizes.append)
    outcomes = run_together(line, lambda session: None, [
        ("a", credit(tenants[0], 7)), ("b", credit_then_refuse(tenants[1])), ("c", credit(tenants[2], 9))])
    assert isinstance(outcomes["b"], Refused)
    assert (outcomes["a"], outcomes["c"]) == (7, 9)
    assert [available(sessions, tenant) for tenant in tenants] == [7, 0, 9]
    # the batch rolled back at "b"; "b" ran alone, "a" and "c" went back in line and committed together
    assert sizes == [1, 3, 2]
    assert_ledger_clean(sessions)


def test_a_writer_refused_before_writing_leaves_the_batch_going(sessions):
    tenants = [new_tenant(sessions).id for _ in range(3)]
    calls: list[str] = []

    def refused(session: Session) -> None:
        calls.append("b")
        ledger.balance(session, tenants[1])  # reads are no writes
        raise Refused(tenants[1])

    sizes: list[int] = []
    line = GroupCommit(sessions, batch_max=32, batch_sizes=sizes.append)
    outcomes = run_together(line, lambda session: None,
                            [("a", credit(tenants[0], 7)), ("b", refused), ("c", credit(tenants[2], 9))])
    assert isinstance(outcomes["b"], Refused) and calls == ["b"]
    assert (outcomes["a"], outcomes["c"]) == (7, 9)
    assert sizes == [1, 3]
    assert [available(sessions, tenant) for tenant in tenants] == [7, 0, 9]
    assert_ledger_clean(sessions)


def test_a_writer_failing_in_the_database_rolls_its_batch_back(sessions):
    tenants = [new_tenant(sessions).id for _ in range(3)]

    def broken_statement(session: Session) -> None:
        session.execute(text("SELECT * FROM no_such_table"))

    sizes: list[int] = []
    line = GroupCommit(sessions, batch_max=32, batch_sizes=sizes.append)
    outcomes = run_together(line, lambda session: None,
                            [("a", credit(tenants[0], 7)), ("b", broken_statement), ("c", credit(tenants[2], 9))])
    assert isinstance(outcomes["b"], DBAPIError)
    assert (outcomes["a"], outcomes["c"]) == (7, 9)
    assert sizes == [1, 3, 2]  # PostgreSQL aborts a transaction at its first error: none of it can commit
    assert [available(sessions, tenant) for tenant in tenants] == [7, 0, 9]


def test_the_first_writer_of_a_batch_is_refused_without_running_twice(sessions):
    tenant = new_tenant(sessions).id
    calls: list[str] = []

    def refused(session: Session) -> None:
        calls.append("refused")
        raise Refused(tenant)

    line = GroupCommit(sessions, batch_max=32)
    with pytest.raises(Refused):
        line.run(tenant, refused)
    assert calls == ["refused"]
    assert line.run(tenant, credit(tenant, 3)) == 3  # the line is free again


def test_a_failed_commit_runs_every_writer_alone(sessions):
    tenants = [new_tenant(sessions).id for _ in range(3)]
    failures = []

    def fail_this_commit(session: Session) -> None:
        if not failures:  # only the batch's commit: the writers' own commits go through
            failures.append(session)
            event.listen(session, "before_commit", lambda _: (_ for _ in ()).throw(RuntimeError("commit lost")),
                         once=True)

    def credit_on_a_failing_commit(tenant_id: str) -> Callable[[Session], int]:
        def effect(session: Session) -> int:
            fail_this_commit(session)
            return ledger.credit(session, tenant_id, 4).amount
        return effect

    sizes: list[int] = []
    line = GroupCommit(sessions, batch_max=32, batch_sizes=sizes.append)
    outcomes = run_together(line, lambda session: None,
                            [(tenant, credit_on_a_failing_commit(tenant)) for tenant in tenants])
    assert [outcomes[tenant] for tenant in tenants] == [4, 4, 4]
    assert [available(sessions, tenant) for tenant in tenants] == [4, 4, 4]
    assert sizes == [1, 3]  # the second batch failed to commit; its writers then committed one by one
    assert_ledger_clean(sessions)


def test_a_batch_holds_at_most_batch_max_writers(sessions):
    tenants = [new_tenant(sessions).id for _ in range(5)]
    sizes: list[int] = []
    line = GroupCommit(sessions, batch_max=2, batch_sizes=sizes.append)
    run_together(line, lambda session: None, [(tenant, credit(tenant, 1)) for tenant in tenants])
    assert sizes == [1, 2, 2, 1]
    assert [available(sessions, tenant) for tenant in tenants] == [1] * 5


def test_batch_max_1_commits_each_writer_alone(sessions):
    tenant = new_tenant(sessions).id
    sizes: list[int] = []
    line = GroupCommit(sessions, batch_max=1, batch_sizes=sizes.append)
    assert line.run(tenant, credit(tenant, 2)) == 2
    assert sizes == [] and available(sessions, tenant) == 2


def test_submissions_of_one_batch_commit_their_holds_and_jobs_and_a_refused_one_nothing(client, ctx):
    """Three tenants' submissions in one batch, the middle one (in tenant order) without the balance."""
    handles = sorted((new_tenant(ctx.sessions) for _ in range(3)), key=lambda t: t.id)
    broke = handles[1]
    with ctx.sessions.begin() as session:
        for handle in handles[0], handles[2]:
            ledger.credit(session, handle.id, 10_000)
    with ctx.sessions() as session:
        callers = [authenticate(session, handle.key) for handle in handles]
    request = VideoRequest(prompt="a lantern over the sea", model="wan-tiny", size="64x64", seconds="1")
    sizes: list[int] = []
    line = GroupCommit(ctx.sessions, batch_max=32, batch_sizes=sizes.append)
    outcomes = calls_together(line, lambda session: None, [
        (caller.tenant_id, lambda caller=caller: submit(ctx.sessions, ctx.settings, ctx.counters, caller, request,
                                                        new_video_object, screens=ctx.screens, admissions=line))
        for caller in callers])
    assert isinstance(outcomes[broke.id], InsufficientBalance)
    assert sizes == [1, 3]  # refused before writing anything: the batch went on without it
    for handle in handles[0], handles[2]:
        video = outcomes[handle.id].body
        assert client.get(f"/v1/videos/{video['id']}", headers=handle.headers).json() == video
        listed = client.get("/v1/videos", headers=handle.headers).json()["data"]
        assert [v["id"] for v in listed] == [video["id"]]
        assert available(ctx.sessions, handle.id) == 10_000 - video["billing"]["held"]
    assert client.get("/v1/videos", headers=broke.headers).json()["data"] == []
    assert client.get("/v1/balance", headers=broke.headers).json()["pending"] == 0
    assert_ledger_clean(ctx.sessions)


class RenderFailed(Exception):
    pass


def test_a_submission_run_again_counts_its_cache_lookup_once(ctx):
    """The later submission of a batch fails after writing (its rendering), so the batch rolls back and the
    earlier one runs again in the next: both runs looked the cache up, the metric counts the one that
    committed."""
    first, failing = sorted((new_tenant(ctx.sessions, tokens=10_000) for _ in range(2)), key=lambda t: t.id)
    with ctx.sessions() as session:
        callers = {handle.id: authenticate(session, handle.key) for handle in (first, failing)}
    request = VideoRequest(prompt="a harbour at low tide", model="wan-tiny", size="64x64", seconds="1")
    sizes: list[int] = []
    line = GroupCommit(ctx.sessions, batch_max=32, batch_sizes=sizes.append)

    def render_or_fail(session: Session, job) -> dict:
        if job.tenant_id == failing.id:
            raise RenderFailed(job.id)
        return new_video_object(session, job)

    def misses() -> float:
        return process_registry.get_sample_value("vidfactory_cache_lookups_total", {"result": "miss"}) or 0.0

    before = misses()
    outcomes = calls_together(line, lambda session: None, [
        (tenant_id, lambda caller=caller: submit(ctx.sessions, ctx.settings, ctx.counters, caller, request,
                                                 render_or_fail, screens=ctx.screens, admissions=line))
        for tenant_id, caller in callers.items()])
    assert isinstance(outcomes[failing.id], RenderFailed)
    assert sizes == [1, 2, 1]  # rolled back at the failing one, which ran alone; the first one then alone
    assert outcomes[first.id].body["status"] == "queued"
    assert misses() - before == 1
    assert_ledger_clean(ctx.sessions)


def test_submissions_with_idempotency_keys_commit_in_one_batch_and_replay(tmp_path, postgres_url, models_dir):
    """PostgreSQL: each key is claimed in a transaction of its own before its submission joins the line,
    which on SQLite would wait for the write lock of the batch this test holds open."""
    with TestClient(create_app(make_settings(tmp_path, postgres_url, models_dir), workers=0)) as client:
        ctx = client.app.state.ctx
        handles = [new_tenant(ctx.sessions, tokens=10_000) for _ in range(3)]
        with ctx.sessions() as session:
            callers = {handle.id: authenticate(session, handle.key) for handle in handles}
        request = VideoRequest(prompt="a kite in the wind", model="wan-tiny", size="64x64", seconds="1")
        sizes: list[int] = []
        line = GroupCommit(ctx.sessions, batch_max=32, batch_sizes=sizes.append)

        def keyed(tenant_id: str) -> Outcome:
            return submit(ctx.sessions, ctx.settings, ctx.counters, callers[tenant_id], request, new_video_object,
                          ("order-7", "the same body"), screens=ctx.screens, admissions=line)

        first = calls_together(line, lambda session: None,
                               [(tenant_id, lambda tenant_id=tenant_id: keyed(tenant_id)) for tenant_id in callers])
        assert sizes == [1, 3]
        for handle in handles:
            again = keyed(handle.id)
            assert again.replayed and not first[handle.id].replayed
            assert again.body == first[handle.id].body
            listed = client.get("/v1/videos", headers=handle.headers).json()["data"]
            assert [video["id"] for video in listed] == [again.body["id"]]
        assert sizes == [1, 3]  # a replay commits nothing
        assert_ledger_clean(ctx.sessions)
