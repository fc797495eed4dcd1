"""What one SQL statement costs the API process, and how many a submission runs: the floor under admission.

Per database (SQLite, PostgreSQL), the CPU time (user + system, this process) of one statement of the two
shapes a submission runs most, a primary-key read and a guarded UPDATE, issued five ways: through an ORM
session (entities, or columns; the statement built at each call), through the ORM session with the
statement built once (bound parameters, as the submission's statements are), through SQLAlchemy Core on
the session's connection, and on the driver's own cursor. Then two whole requests, no HTTP: a submission
(`authenticate` + `jobs.submit.submit`, as POST /v1/videos runs them) and a poll (`authenticate` + the
video's read, as GET /v1/videos/{id} runs them): their statements, counted as SQLAlchemy sends them, and
their CPU time. Single thread, no contention: what is left is the cost of the code path itself.
Last, what batching admissions could save, measured and not built: the write transaction of
`batch_tenants` submissions (`enqueue`: the hold, the job, its events and their audit entries, then the
video object), one transaction each as today, all in one transaction, and all in one with a savepoint
each (what isolating one member's failure the simple way costs).
`--baseline REV` measures another commit's requests too, each tree in a process of its own, alternating
over `baseline_rounds` rounds.
Run: .venv/bin/python bench/statement_cost.py [postgres admin URL] [--baseline REV]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from sqlalchemy import bindparam, event, select, update  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from admission import add_bench_plan, body, default_postgres, tenant_key  # noqa: E402
from common import extract_src, fresh_postgres, git_revision, machine, sized  # noqa: E402
from vidfactory.api.context import AppContext  # noqa: E402
from vidfactory.api.render import new_video_object, video_object  # noqa: E402
from vidfactory.bootstrap import upgrade_and_seed  # noqa: E402
from vidfactory.db.models import AuditHead  # noqa: E402
from vidfactory.jobs.library import find_video  # noqa: E402
from vidfactory.jobs.submit import VideoRequest, enqueue, price_in, submit  # noqa: E402
from vidfactory.settings import Settings  # noqa: E402
from vidfactory.tenancy import Caller, authenticate  # noqa: E402

statements_per_shape = sized(2000, 20)
submissions = sized(300, 3)
polls = sized(1000, 3)
warm_up = sized(30, 2)
baseline_rounds = sized(2, 1)  # with --baseline: each tree's requests are measured this many times, alternating
batch_tenants = sized(16, 2)  # one submission each, per way of committing them
batch_rounds = sized(5, 1)  # the three ways alternate; the median round counts
databases = {"sqlite": "SQLite (WAL)", "postgresql": "PostgreSQL"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("postgres_admin", nargs="?", default=default_postgres)
    parser.add_argument("--baseline", help="a commit whose requests are measured too, alternating")
    parser.add_argument("--requests", choices=databases, help=argparse.SUPPRESS)  # a child's one measurement
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="vf-statements-"))
    if args.requests:
        with opened(args.requests, args.postgres_admin, root) as ctx:
            for cost in request_costs(ctx):
                print(*cost)
        return
    print(f"# statement cost — {machine()}, commit {git_revision()}, one thread, {statements_per_shape} "
          f"statements a shape, {submissions} submissions, {polls} polls")
    print("| database | statement | ORM entity µs | ORM columns µs | ORM, built once µs | Core µs | driver µs "
          "| ORM entity ÷ driver |")
    print("|---|---|---|---|---|---|---|---|")
    measured = []  # (database, tree, request, statements, CPU ms)
    batching = {}  # database → its `batching_costs`
    for database, name in databases.items():
        with opened(database, args.postgres_admin, root) as ctx:
            for shape, row in statement_rows(ctx).items():
                print(f"| {name} | {shape} | {' | '.join(f'{us:.0f}' for us in row)} | {row[0] / row[-1]:.1f} |")
            if not args.baseline:
                measured += [(name, "this tree", *cost) for cost in request_costs(ctx)]
            batching[name] = batching_costs(ctx)
    if args.baseline:
        trees = {args.baseline: extract_src(args.baseline, root / "baseline"), "this tree": None}
        for database, name in databases.items():
            for _ in range(baseline_rounds):
                for tree, src in trees.items():
                    measured += [(name, tree, *cost) for cost in request_costs_in(database, args.postgres_admin, src)]
    print("\n| database | tree | request | statements | CPU ms | CPU ms ÷ statements |")
    print("|---|---|---|---|---|---|")
    for name, tree, request, count, cpu_ms in measured:
        print(f"| {name} | {tree} | {request} | {count} | {cpu_ms:.2f} | {cpu_ms * 1000 / count:.0f} µs |")
    print(f"\n| database | {batch_tenants} submissions' write transactions | statements a submission "
          "| CPU ms a submission | ÷ one each |")
    print("|---|---|---|---|---|")
    for name, ways in batching.items():
        for way, (count, cpu_ms) in ways.items():
            print(f"| {name} | {way} | {count:.1f} | {cpu_ms:.2f} | {cpu_ms / ways[one_each][1]:.2f} |")


@contextlib.contextmanager
def opened(database: str, postgres_admin: str, root: Path) -> Iterator[AppContext]:
    """The app's context on a new, migrated database, with the bench plan."""
    url, drop = (fresh_postgres(postgres_admin) if database == "postgresql"
                 else (f"sqlite:///{root / f'bench-{uuid.uuid4().hex[:8]}.db'}", None))
    os.environ["VIDFACTORY_DATABASE_URL"] = url
    os.environ["VIDFACTORY_DATA_DIR"] = str(root / "var")
    ctx = AppContext.from_settings(Settings())
    try:
        upgrade_and_seed(ctx.engine)
        add_bench_plan(ctx.sessions)
        yield ctx
    finally:
        ctx.engine.dispose()
        if drop is not None:
            drop()


def request_costs_in(database: str, postgres_admin: str, src: Path | None) -> list[tuple[str, int, float]]:
    """`request_costs` in a process of its own, importing `src` (another commit's) when given."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")]))
    out = subprocess.run([sys.executable, __file__, postgres_admin, "--requests", database], env=env,
                         check=True, capture_output=True, text=True).stdout.splitlines()
    return [(request, int(count), float(cpu_ms)) for request, count, cpu_ms in (line.split() for line in out[-2:])]


def cpu_us(call: Callable[[], object]) -> float:
    for _ in range(warm_up):
        call()
    started = time.process_time()
    for _ in range(statements_per_shape):
        call()
    return (time.process_time() - started) * 1e6 / statements_per_shape


def statement_rows(ctx: AppContext) -> dict[str, list[float]]:
    """µs of CPU for each way of sending each shape, in one transaction (rolled back)."""
    head = AuditHead.id == 1
    with ctx.sessions(bind=ctx.engine) as session:
        connection = session.connection()
        cursor = connection.connection.driver_connection.cursor()
        marker = "%s" if ctx.engine.dialect.name == "postgresql" else "?"
        read_once = select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == bindparam("head_id"))
        read = [
            lambda: session.get(AuditHead, 1, populate_existing=True),
            lambda: session.execute(select(AuditHead.seq, AuditHead.hash).where(head)).one(),
            lambda: session.execute(read_once, {"head_id": 1}).one(),
            lambda: connection.execute(select(AuditHead.seq, AuditHead.hash).where(head)).one(),
            lambda: cursor.execute(f"SELECT seq, hash FROM audit_head WHERE id = {marker}", (1,)).fetchone()]
        guarded = update(AuditHead).where(head, AuditHead.seq >= 0).values(seq=AuditHead.seq)
        guarded_once = (update(AuditHead)
                        .where(AuditHead.id == bindparam("head_id"), AuditHead.seq >= bindparam("floor"))
                        .values(seq=AuditHead.seq).execution_options(synchronize_session=False))
        write = [
            lambda: session.execute(guarded),
            lambda: session.execute(guarded.execution_options(synchronize_session=False)),
            lambda: session.execute(guarded_once, {"head_id": 1, "floor": 0}),
            lambda: connection.execute(guarded),
            lambda: cursor.execute(f"UPDATE audit_head SET seq = seq WHERE id = {marker} AND seq >= 0", (1,))]
        rows = {"primary-key read": [cpu_us(call) for call in read],
                "guarded UPDATE": [cpu_us(call) for call in write]}
        session.rollback()
    return rows


def request_costs(ctx: AppContext) -> list[tuple[str, int, float]]:
    """(request, statements, CPU ms) of a submission of one new video, then of a poll of it."""
    _, key = tenant_key(ctx.sessions, 10**9)
    request = VideoRequest(prompt=body["prompt"], model=ctx.settings.models[0].id, seconds=body["seconds"],
                           size=body["size"])

    def submit_one() -> str:
        return submit(ctx.sessions, ctx.settings, ctx.counters, authenticated(ctx, key), request, new_video_object,
                      screens=ctx.screens, storage=ctx.storage).body["id"]

    video_id = submit_one()

    def poll_one() -> None:
        tenant_id = authenticated(ctx, key).tenant_id
        with ctx.sessions() as session:
            job = find_video(session, tenant_id, video_id)
            assert job is not None
            video_object(session, job)

    return [("submission", *cost(ctx, submit_one, submissions)), ("poll", *cost(ctx, poll_one, polls))]


one_each, all_in_one, savepoint_each = "one transaction each", "all in one transaction", "all in one, a savepoint each"


def batching_costs(ctx: AppContext) -> dict[str, tuple[float, float]]:
    """Way → (statements, median CPU ms) a submission, `batch_tenants` tenants submitting one video each."""
    callers = [authenticated(ctx, tenant_key(ctx.sessions, 10**9)[1]) for _ in range(batch_tenants)]
    request = VideoRequest(prompt=body["prompt"], model=ctx.settings.models[0].id, seconds=body["seconds"],
                           size=body["size"])
    with ctx.sessions() as session:
        priced = price_in(session, ctx.settings, ctx.counters, request, callers[0].tenant_id)

    def write(session: Session, caller: Caller) -> None:
        new_video_object(session, enqueue(session, ctx.settings, caller, request, priced))

    def each() -> None:
        for caller in callers:
            with ctx.sessions.begin() as session:
                write(session, caller)

    def together() -> None:
        with ctx.sessions.begin() as session:
            for caller in callers:
                write(session, caller)

    def savepoints() -> None:
        with ctx.sessions.begin() as session:
            for caller in callers:
                with session.begin_nested():
                    write(session, caller)

    ways = {one_each: each, all_in_one: together, savepoint_each: savepoints}
    counted = {way: statements_of(ctx, call) / batch_tenants for way, call in ways.items()}
    rounds: dict[str, list[float]] = {way: [] for way in ways}
    for _ in range(batch_rounds):
        for way, call in ways.items():
            started = time.process_time()
            call()
            rounds[way].append((time.process_time() - started) * 1000 / batch_tenants)
    return {way: (counted[way], statistics.median(rounds[way])) for way in ways}


def authenticated(ctx: AppContext, key: str) -> Caller:
    with ctx.sessions() as session:
        found = authenticate(session, key)
    assert found is not None
    return found


def statements_of(ctx: AppContext, call: Callable[[], object]) -> int:
    """The statements one `call` sends, counted as SQLAlchemy sends them."""
    sent: list[str] = []

    def count(*_: object) -> None:
        sent.append("")

    event.listen(ctx.engine, "before_cursor_execute", count)
    try:
        call()
    finally:
        event.remove(ctx.engine, "before_cursor_execute", count)
    return len(sent)


def cost(ctx: AppContext, call: Callable[[], object], times: int) -> tuple[int, float]:
    """(statements, CPU ms) of one `call`: the statements of one call counted as SQLAlchemy sends them, the
    CPU time the mean of `times` calls after a warm-up."""
    for _ in range(warm_up):
        call()
    sent = statements_of(ctx, call)
    started = time.process_time()
    for _ in range(times):
        call()
    return sent, (time.process_time() - started) * 1000 / times


if __name__ == "__main__":
    main()
