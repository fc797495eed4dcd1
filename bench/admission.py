"""Submissions per second with holds beside a trivial request, 32 concurrent clients, SQLite vs PostgreSQL.

Two layers, each on both databases: (1) HTTP — `vidfactory serve --workers 0` in its own process, the
same 32 client threads first GET /healthz (the framework's own speed on this server), then POST
/v1/videos (auth, tokenize, screen, quote, hold + insert job in one transaction, which submissions
arriving together share), for 1 tenant and for 32 tenants. Each client keeps one connection, opened and
warmed before the clock starts, and sends requests one after another for `load_s` seconds; (2) ledger —
32 threads calling `ledger.hold` directly, one transaction each.
Beside each rate: the server process's CPU time per request (user + system, from /proc): on a machine
shared with other work the rates move with the load, the CPU a request costs much less. On PostgreSQL, the
database server's CPU time per submission too, when it runs on this machine (its processes in /proc, and
the backends that exited, through the postmaster's children's time; n/a elsewhere).
The last column is how many submissions shared a write transaction during the timed load, from the
server's `vidfactory_admission_batch_size` histogram (n/a from a tree without group commit).
A second table splits each load's CPU per request between the server, the client (this process) and the
database, beside how busy the whole machine was (every core, every process, from /proc/stat): what bounds
POST ÷ healthz on a machine that runs all three.
The tenants are on a bench plan that admits every submission (only the active-jobs limit is raised).
`--baseline REV` serves the same loads from another commit's `src/` too, alternating with this tree's
server over `baseline_rounds` rounds on the same machine and databases.
Run: .venv/bin/python bench/admission.py [postgres admin URL] [--baseline REV]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import httpx  # noqa: E402

from common import extract_src, fresh_postgres, git_revision, machine, sized  # noqa: E402
from vidfactory.billing import ledger  # noqa: E402
from vidfactory.bootstrap import upgrade_and_seed  # noqa: E402
from vidfactory.db.models import Plan  # noqa: E402
from vidfactory.db.session import is_sqlite, make_engine, make_session_factory  # noqa: E402
from vidfactory.db.types import utcnow  # noqa: E402
from vidfactory.tenancy import create_key, create_plan, create_tenant, plan_fields  # noqa: E402

clients = sized(32, 2)
load_s = sized(10.0, 0.3)  # each load: every client sends requests this long
holds_per_client = sized(50, 2)
baseline_rounds = sized(2, 1)  # with --baseline: each tree serves the loads this many times, alternating
bench_plan = "bench"
start_s_max = 600  # a first start builds the tiny model; a busy machine makes that slow
default_postgres = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
body = {"prompt": "a red fox running through snow at dawn", "size": "64x64", "seconds": "1"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("postgres_admin", nargs="?", default=default_postgres)
    parser.add_argument("--baseline", help="a commit whose server serves the same loads, alternating")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="vf-admission-"))
    trees: dict[str, Path | None] = {"this tree": None}
    if args.baseline:
        trees = {args.baseline: extract_src(args.baseline, root / "baseline"), **trees}
    print(f"# admission throughput — {machine()}, commit {git_revision()}, {clients} concurrent clients, "
          f"load average {os.getloadavg()[0]:.1f} at the start")
    print("| database | tenants | tree | GET /healthz /s | p50 / p99 ms | server CPU ms | POST /v1/videos /s "
          "| p50 / p99 ms | server CPU ms | database CPU ms | POST ÷ healthz throughput | POST p99 ÷ p50 "
          "| POST ÷ healthz CPU | POSTs a write transaction |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    holds, shares = [], []
    for name, url, drop in [("SQLite (WAL)", f"sqlite:///{root / 'bench.db'}", None),
                            ("PostgreSQL", *fresh_postgres(args.postgres_admin))]:
        engine = make_engine(url)
        upgrade_and_seed(engine)
        sessions = make_session_factory(engine)
        add_bench_plan(sessions)
        for _ in range(baseline_rounds if args.baseline else 1):
            for tree, src in trees.items():
                with served(url, root, src) as server:
                    for tenants in (1, clients):
                        health, posts = loads(server, sessions, tenants, on_postgres=not is_sqlite(url))
                        print(f"| {name} | {tenants} | {tree} | {row(health, posts)}", flush=True)
                        shares += [f"| {name} | {tenants} | {tree} | {request} | {cpu_shares(load)} |"
                                   for request, load in (("GET /healthz", health), ("POST /v1/videos", posts))]
        holds.append((name, ledger_holds(sessions, tenants=1), ledger_holds(sessions, tenants=clients)))
        engine.dispose()
        if drop:
            drop()
    print("\n| database | tenants | tree | request | server CPU ms | client CPU ms | database CPU ms "
          "| machine busy |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(shares))
    print(f"\n| database | ledger holds/s, 1 tenant | ledger holds/s, {clients} tenants |")
    print("|---|---|---|")
    for name, one_tenant, many_tenants in holds:
        print(f"| {name} | {one_tenant:.0f} | {many_tenants:.0f} |")


def loads(server: Server, sessions, tenants: int, *, on_postgres: bool) -> tuple[Load, Load]:
    """`/healthz`, then POST /v1/videos, from `tenants` new tenants."""
    keys = [tenant_key(sessions, 10**9)[1] for _ in range(tenants)]
    health = http_load(server, keys, lambda http: http.get("/healthz"), on_postgres=on_postgres)
    posts = http_load(server, keys, lambda http: http.post("/v1/videos", json=body), on_postgres=on_postgres)
    return health, posts


def database_ms(load: Load) -> str:
    """n/a on SQLite (the server process does the database's work) and where PostgreSQL is not local."""
    return "n/a" if load.database_cpu_ms is None else f"{load.database_cpu_ms:.2f}"


def cpu_shares(load: Load) -> str:
    return (f"{load.cpu_ms:.2f} | {load.client_cpu_ms:.2f} | {database_ms(load)} | "
            f"{load.machine_busy:.0%}")


def row(health: Load, posts: Load) -> str:
    """The rest of a main table row."""
    return (f"{health.rate:.0f} | {health.p50_ms:.1f} / {health.p99_ms:.1f} | {health.cpu_ms:.2f} | {posts.rate:.0f} | "
            f"{posts.p50_ms:.1f} / {posts.p99_ms:.1f} | {posts.cpu_ms:.2f} | {database_ms(posts)} | "
            f"{posts.rate / health.rate:.2f} | "
            f"{posts.p99_ms / posts.p50_ms:.1f} | {ratio(posts.cpu_ms, health.cpu_ms)} | "
            f"{ratio(*posts.batched)} |")


def batches(server: Server) -> tuple[float, float]:
    """(submissions, write transactions) committed so far, from the server's batch-size histogram; zeros
    from a tree without one (its column reads n/a)."""
    text = httpx.get(f"{server.base}/metrics").text
    samples = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
               if line.startswith("vidfactory_admission_batch_size_")}
    return (samples.get("vidfactory_admission_batch_size_sum", 0.0),
            samples.get("vidfactory_admission_batch_size_count", 0.0))


def ratio(part: float, whole: float) -> str:
    """A tiny run can measure no CPU tick (10 ms) at all."""
    return f"{part / whole:.1f}" if whole > 0 else "n/a"


def add_bench_plan(sessions) -> None:
    """The enterprise plan's limits, with room for every submission the run makes."""
    with sessions.begin() as s:
        enterprise = s.get(Plan, "enterprise")
        limits = {field: getattr(enterprise, field) for field in plan_fields}
        limits["active_jobs_max"] = 10**6
        create_plan(s, bench_plan, limits)


def tenant_key(sessions, tokens: int) -> tuple[str, str]:
    with sessions.begin() as s:
        tenant = create_tenant(s, f"bench-{uuid.uuid4().hex[:6]}", bench_plan)
        ledger.credit(s, tenant.id, tokens)
        _, key = create_key(s, tenant.id)
    return tenant.id, key


def run_threads(target, count: int) -> float:
    barrier = threading.Barrier(count + 1)
    threads = [threading.Thread(target=lambda i=i: (barrier.wait(), target(i))) for i in range(count)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - started


@dataclass(frozen=True)
class Server:
    base: str
    pid: int

    def cpu_s(self) -> float:
        """The process's user + system CPU seconds so far (Linux /proc; fields 14 and 15 of its stat)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu_s() -> float | None:
    """CPU seconds of the PostgreSQL server on this machine so far: its processes' own (user + system), and
    their reaped children's, which holds every backend that exited (a closed connection's); None when no
    PostgreSQL process runs here (or /proc is not there)."""
    ticks, found = 0, False
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended while we looked
            continue
        if text[text.find("(") + 1:text.rfind(")")] != "postgres":
            continue
        fields = text.rpartition(")")[2].split()
        ticks += sum(int(field) for field in fields[11:15])  # utime, stime, cutime, cstime
        found = True
    return ticks / os.sysconf("SC_CLK_TCK") if found else None


def machine_cpu_s() -> float:
    """Busy CPU seconds of every core so far: /proc/stat's first line, less its idle and iowait."""
    user, nice, system, idle, iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Load:
    rate: float  # requests/s
    p50_ms: float
    p99_ms: float
    cpu_ms: float  # the server's CPU time per request
    client_cpu_ms: float  # this process's (the client threads') CPU time per request
    database_cpu_ms: float | None  # the local PostgreSQL server's CPU time per request (None: none here)
    machine_busy: float  # the share of every core's time that was busy during the load
    batched: tuple[float, float]  # (submissions, write transactions) the server committed during the load


class served:
    """`vidfactory serve --workers 0` on a free port for the length of a `with` block; from `src` (another
    commit's) when given, imported before the installed tree."""

    def __init__(self, url: str, root: Path, src: Path | None = None) -> None:
        self.url, self.root, self.src = url, root, src

    def __enter__(self) -> Server:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env = {**os.environ, "VIDFACTORY_DATABASE_URL": self.url, "VIDFACTORY_DATA_DIR": str(self.root / "var"),
               "VIDFACTORY_RATE_LIMIT_ENABLED": "false", "VIDFACTORY_ADMIN_TOKEN": "bench"}
        if self.src is not None:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.src), os.environ.get("PYTHONPATH")]))
        self.server = subprocess.Popen([sys.executable, "-m", "vidfactory.cli", "serve", "--port", str(port),
                                        "--workers", "0"], env=env, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + start_s_max
        while time.monotonic() < deadline and self.server.poll() is None:
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    return Server(base, self.server.pid)
            except httpx.TransportError:
                time.sleep(0.1)
        self.__exit__()
        raise RuntimeError(f"the server exited or did not answer /healthz within {start_s_max} s")

    def __exit__(self, *exc) -> None:
        self.server.terminate()
        self.server.wait(30)


def http_load(server: Server, keys: list[str], call: Callable[[httpx.Client], httpx.Response], *,
              on_postgres: bool) -> Load:
    """`clients` threads calling for `load_s` each, thread i authenticated with keys[i % len(keys)]. Each
    thread's connection is opened, and warmed by one call (tokenizer, pools), before the clock starts: a
    short load would otherwise time the clients' own set-up, which costs more than a `/healthz`."""
    connections = [httpx.Client(base_url=server.base, headers={"Authorization": f"Bearer {keys[i % len(keys)]}"},
                                timeout=60) for i in range(clients)]
    try:
        for http in connections:
            call(http).raise_for_status()
        latencies: list[list[float]] = [[] for _ in range(clients)]

        def client(index: int) -> None:
            http, mine = connections[index], latencies[index]
            deadline = time.perf_counter() + load_s
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                call(http).raise_for_status()
                mine.append((time.perf_counter() - started) * 1000)

        cpu_before, (submissions_before, transactions_before) = server.cpu_s(), batches(server)
        database_before = postgres_cpu_s() if on_postgres else None
        client_before, machine_before = time.process_time(), machine_cpu_s()
        elapsed = run_threads(client, clients)
        machine_s, client_s = machine_cpu_s() - machine_before, time.process_time() - client_before
        cpu_s, database_after = server.cpu_s() - cpu_before, postgres_cpu_s() if on_postgres else None
        submissions, transactions = batches(server)
    finally:
        for http in connections:
            http.close()
    every = sorted(latency for mine in latencies for latency in mine)
    database_cpu_ms = (None if database_before is None or database_after is None
                       else (database_after - database_before) * 1000 / len(every))
    return Load(len(every) / elapsed, every[len(every) // 2], every[max(0, int(len(every) * 0.99) - 1)],
                cpu_s * 1000 / len(every), client_s * 1000 / len(every), database_cpu_ms,
                machine_s / (elapsed * os.cpu_count()),
                (submissions - submissions_before, transactions - transactions_before))


def ledger_holds(sessions, tenants: int) -> float:
    """`tenants` = 1: every client holds against one account row (they queue on its lock by design);
    `tenants` = clients: each client has its own account, so holds only contend for the database."""
    tenant_ids = iter([tenant_key(sessions, 10**9)[0] for _ in range(tenants)] * (clients // tenants))

    def client(_: int) -> None:
        tenant_id = next(tenant_ids)
        for _ in range(holds_per_client):
            with sessions.begin() as s:
                ledger.hold(s, tenant_id=tenant_id, amount=10, job_id=f"video_{uuid.uuid4().hex}",
                            expires_at=utcnow() + timedelta(hours=1))

    elapsed = run_threads(client, clients)
    return clients * holds_per_client / elapsed


if __name__ == "__main__":
    main()
