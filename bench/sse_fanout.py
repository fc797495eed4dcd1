"""SSE fan-out: one API process serving many open `GET /v1/events` streams while events are recorded.

The API runs as its own process (`vidfactory serve --workers 0`, SQLite, the default poll interval); this
script opens 1 stream and then `streams_many` streams for one tenant (rounds interleaved, 1 / many / 1 /
many), records `events_per_round` events at a steady rate, and reads every stream. Per event and stream:
the delivery latency (recorded -> read by the client, same clock). Per round: the API process's CPU time
(/proc utime + stime) per second of wall time. Ratios many : 1 are what to read; the machine is shared.
`--baseline REV` serves the same rounds from another commit's `src/` too (a second API process on the same
database), interleaved round by round, so the two trees are compared under the same load.
Run: .venv/bin/python bench/sse_fanout.py [--baseline REV]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import httpx  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from common import extract_src, git_revision, machine, sized  # noqa: E402
from vidfactory.bootstrap import upgrade_and_seed  # noqa: E402
from vidfactory.db.models import WebhookEvent  # noqa: E402
from vidfactory.db.session import make_engine, make_session_factory  # noqa: E402
from vidfactory.notify.events import record_event  # noqa: E402
from vidfactory.tenancy import create_key, create_tenant  # noqa: E402

streams_many = sized(200, 3)
events_per_round = sized(40, 3)
event_interval_s = sized(0.25, 0.1)
rounds = sized(3, 1)  # pairs of (1 stream, many streams)
start_deadline_s = 300.0  # a loaded machine imports torch slowly
connect_deadline_s = 60.0
clock_ticks = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / clock_ticks  # utime, stime


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_api(root: Path, database_url: str, src: Path | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "VIDFACTORY_DATABASE_URL": database_url, "VIDFACTORY_DATA_DIR": str(root / "var"),
           "VIDFACTORY_RATE_LIMIT_ENABLED": "false"}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    process = subprocess.Popen([sys.executable, "-c", "from vidfactory.cli import app; app()", "serve",
                                "--host", "127.0.0.1", "--port", str(port), "--workers", "0"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + start_deadline_s
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code < 500:
                return process, url
        except httpx.HTTPError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, "the API did not start"
        time.sleep(0.2)  # polled with a deadline: uvicorn says nothing when it is ready


async def read_stream(client: httpx.AsyncClient, url: str, key: str, after_seq: int, connected: asyncio.Event,
                      latencies: list[float], expected: int) -> None:
    """Reads the events recorded after `after_seq` (not the earlier rounds': a stream without Last-Event-ID
    replays the tenant's events from the start) until `expected` arrived; each one's latency appended."""
    seen = 0
    headers = {"Authorization": f"Bearer {key}", "Last-Event-ID": str(after_seq)}
    async with client.stream("GET", f"{url}/v1/events", headers=headers) as answer:
        assert answer.status_code == 200, answer.status_code
        async for line in answer.aiter_lines():
            if line.startswith("retry:"):
                connected.set()
            if not line.startswith("data: "):
                continue
            payload = json.loads(line[len("data: "):])
            sent = payload.get("data", {}).get("bench_sent_s")
            if sent is None:
                continue
            latencies.append(time.time() - sent)
            seen += 1
            if seen == expected:
                return


def last_seq(sessions) -> int:
    with sessions() as session:
        return session.scalar(select(func.max(WebhookEvent.seq))) or 0


def record(sessions, tenant_id: str) -> None:
    with sessions.begin() as session:
        record_event(session, tenant_id, "billing.voucher_granted", {"bench_sent_s": time.time()})


async def one_round(url: str, key: str, sessions, tenant_id: str, pid: int, streams: int
                    ) -> tuple[list[float], float]:
    """(latencies in s, API CPU s per wall s while the events were recorded and read)."""
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=streams + 10, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=httpx.Timeout(120.0), limits=limits) as client:
        connected = [asyncio.Event() for _ in range(streams)]
        after_seq = last_seq(sessions)
        readers = [asyncio.create_task(read_stream(client, url, key, after_seq, connected[i], latencies,
                                                   events_per_round)) for i in range(streams)]
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in connected)), connect_deadline_s)
        cpu_before, wall_before = cpu_s(pid), time.monotonic()
        for _ in range(events_per_round):
            await asyncio.to_thread(record, sessions, tenant_id)
            await asyncio.sleep(event_interval_s)
        await asyncio.wait_for(asyncio.gather(*readers), connect_deadline_s)
        cpu_after, wall_after = cpu_s(pid), time.monotonic()
    assert len(latencies) == streams * events_per_round
    return latencies, (cpu_after - cpu_before) / (wall_after - wall_before)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", help="a commit whose API serves the same rounds, interleaved")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        database_url = f"sqlite:///{root / 'bench.db'}"
        engine = make_engine(database_url)
        upgrade_and_seed(engine)
        sessions = make_session_factory(engine)
        with sessions.begin() as session:
            tenant = create_tenant(session, "sse-bench", "enterprise")
            _, key = create_key(session, tenant.id)
            tenant_id = tenant.id
        trees = {"this tree": None}
        if args.baseline:
            trees = {args.baseline: extract_src(args.baseline, root / "baseline"), **trees}
        apis = {tree: start_api(root, database_url, src) for tree, src in trees.items()}
        try:
            results: dict[str, dict[int, list[tuple[list[float], float]]]] = {
                tree: {1: [], streams_many: []} for tree in trees}
            for _ in range(rounds):
                for tree, (api, url) in apis.items():
                    for streams in (1, streams_many):
                        results[tree][streams].append(
                            asyncio.run(one_round(url, key, sessions, tenant_id, api.pid, streams)))
        finally:
            for api, _ in apis.values():
                api.terminate()
                api.wait(30)
        engine.dispose()
    for tree, tree_results in results.items():
        report(tree, tree_results)


def report(tree: str, results: dict[int, list[tuple[list[float], float]]]) -> None:
    print(f"{tree}: machine: {machine()}; commit {git_revision()}; {events_per_round} events per round, one every "
          f"{event_interval_s} s; rounds interleaved 1 / {streams_many} streams, {rounds} each; SQLite; "
          "events_poll_s default")
    print("| round | streams | delivery p50 ms | delivery p99 ms | API CPU s per s |")
    print("|---|---|---|---|---|")
    for index in range(rounds):
        for streams in (1, streams_many):
            latencies, cpu = results[streams][index]
            print(f"| {index + 1} | {streams} | {percentile(latencies, 0.5) * 1000:.0f} | "
                  f"{percentile(latencies, 0.99) * 1000:.0f} | {cpu:.3f} |")
    rows = {}
    for streams, runs in results.items():
        latencies = [value for run, _ in runs for value in run]
        rows[streams] = (percentile(latencies, 0.5), percentile(latencies, 0.99),
                         statistics.fmean(cpu for _, cpu in runs))
    one, many = rows[1], rows[streams_many]
    print(f"ratios {streams_many} : 1 streams, all rounds: p50 {many[0] / one[0]:.2f}x, p99 {many[1] / one[1]:.2f}x, "
          f"API CPU {many[2] / max(one[2], 1e-6):.1f}x")


if __name__ == "__main__":
    main()
