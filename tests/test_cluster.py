"""The whole cluster under fire: two API processes and three workers on PostgreSQL, Redis and an S3 server
take 200 tiny jobs from three tenants on three plans, submitted through both APIs by clients that
retry with their Idempotency-Key as real clients do, while workers are SIGKILLed mid-job (and restarted)
and one API process is SIGKILLed mid-submission (and restarted). Afterwards every job has ended exactly
once (one final state, one terminal event, its hold settled or released once), no hold is left open,
`vidfactory ledger verify` is clean, every stored object is referenced and every reference is stored, and
the metered tenant got no more submissions accepted than its plan's per-minute write budget, counted
across both APIs together. `/metrics`, scraped all along, shows the queue fill and drain to zero and the
finished-job counters add up to every job.

Cheap by design (about 0.3 s of CPU per job): the smallest clip the API accepts, one denoising step, no
guidance pass, no output screening (tested on its own). Most of the test's time is its nine process
starts; the kills are triggered by progress, never by the clock."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from vidfactory.billing import ledger
from vidfactory.db.models import Asset, Job, Plan, Transfer, WebhookEvent
from vidfactory.db.session import make_engine, make_session_factory
from vidfactory.engines.tiny import ensure_tiny_model
from vidfactory.notify import endpoints
from vidfactory.storage import make_storage
from vidfactory.tenancy import create_plan, plan_fields

from conftest import make_settings, new_bucket, new_tenant
from receivers import start_receiver
from test_limits import redis_prefix, redis_url  # noqa: F401 (a fixture)
from test_processes import cli, env_for, free_port

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(900)]

jobs_total = 200
metered_budget = 6  # the metered plan's writes per minute, per tenant and per key
metered_attempts = 3 * metered_budget  # split over both APIs: counting per process would accept 2 budgets
pro_jobs = 40  # within the pro plan's active_jobs_max: admission never refuses them
worker_count = 3
worker_kills = 3
client_threads = 4
start_s_max = 300.0  # five processes importing torch at once on two busy cores
run_s_max = 600.0
request_timeout_s = 30.0
# The smallest clip the API accepts: 64×64, one second at 4 fps (5 frames), one denoising step.
tiny_models = [{"id": "wan-tiny", "engine": "wan-tiny", "default_size": "64x64", "default_seconds": 1,
                "fps": 4, "steps": 1, "guidance_scale": 1.0}]  # 1.0: no classifier-free guidance pass
# The pro plan, with a write budget small enough to meet.
metered_limits = {"priority": 1, "requests_per_minute": metered_budget, "tenant_requests_per_minute": metered_budget,
                  "concurrent_jobs": 2, "active_jobs_max": metered_attempts}
terminal_events = ("video.completed", "video.failed")


@dataclass
class Process:
    role: str
    popen: subprocess.Popen
    port: int | None = None


@dataclass
class Cluster:
    """The processes; a killed one is replaced by a fresh one (an API on the same port)."""

    env: dict[str, str]
    log_dir: Path
    ports: list[int]
    apis: list[Process] = field(default_factory=list)
    workers: list[Process] = field(default_factory=list)
    started: int = 0

    @property
    def bases(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.ports]

    def _spawn(self, role: str, *args: str) -> subprocess.Popen:
        self.started += 1
        with (self.log_dir / f"{self.started:02d}-{role}.log").open("wb") as log:
            return subprocess.Popen(cli(*args), env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def start_api(self, port: int) -> Process:
        process = Process("api", self._spawn("api", "serve", "--port", str(port), "--workers", "0"), port)
        self.apis.append(process)
        return process

    def start_worker(self) -> Process:
        process = Process("worker", self._spawn("worker", "worker"))
        self.workers.append(process)
        return process

    def kill(self, process: Process) -> None:
        process.popen.send_signal(signal.SIGKILL)
        process.popen.wait(30)
        (self.apis if process.role == "api" else self.workers).remove(process)

    def stop_all(self) -> None:
        for process in self.apis + self.workers:
            if process.popen.poll() is None:
                process.popen.send_signal(signal.SIGTERM)
        for process in self.apis + self.workers:
            try:
                process.popen.wait(30)
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait(30)


def healthy(api: Process) -> bool:
    assert api.popen.poll() is None, f"the API on port {api.port} exited with {api.popen.returncode}"
    try:
        return httpx.get(f"http://127.0.0.1:{api.port}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def poll_until(predicate, timeout_s: float, what: str, every_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


@dataclass
class Submission:
    tenant: str
    key: str
    body: dict
    idempotency_key: str = field(default_factory=lambda: uuid.uuid4().hex)
    video_id: str | None = None
    refusals: list[str] = field(default_factory=list)


@dataclass
class Retries:
    causes: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, cause: str) -> None:
        with self.lock:
            self.causes[cause] += 1


def submit(submission: Submission, bases: list[str], first: int, retries: Retries, deadline: float) -> Submission:
    """POST one video as a careful client does: the same Idempotency-Key on every try; a connection error
    or a 5xx tries the other API; `idempotency_in_progress` (an earlier try still running, or dead with
    the key) is retried when the server says; anything else is the answer."""
    headers = {"Authorization": f"Bearer {submission.key}", "Idempotency-Key": submission.idempotency_key}
    index = first
    while time.monotonic() < deadline:
        try:
            response = httpx.post(f"{bases[index % len(bases)]}/v1/videos", headers=headers, json=submission.body,
                                  timeout=request_timeout_s)
        except httpx.TransportError:
            retries.add("connection")
            index += 1
            continue
        if response.status_code >= 500:
            retries.add(str(response.status_code))
            index += 1
            continue
        if response.status_code in (200, 201):
            submission.video_id = response.json()["id"]
            return submission
        code = response.json()["error"]["code"]
        if code == "idempotency_in_progress":
            retries.add(code)
            time.sleep(float(response.headers["retry-after"]))
            continue
        submission.refusals.append(code)
        return submission
    raise AssertionError(f"no answer for {submission.idempotency_key} before the deadline")


class MetricsScraper:
    """Reads an API's `/metrics` until stopped, as Prometheus would: the fleet's unfinished jobs (queued
    and running) and its finished-job counters, summed over their labels."""

    def __init__(self, bases: list[str]) -> None:
        self.bases = bases
        self.unfinished_max = 0
        self.scrapes = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="scraper", daemon=True)
        self.thread.start()

    def scrape(self) -> tuple[float, float] | None:
        """(unfinished, finished) from the first API that answers; None when none does."""
        for base in self.bases:
            try:
                text = httpx.get(f"{base}/metrics", timeout=5).text
            except httpx.TransportError:
                continue  # killed, or not up yet: Prometheus marks the target down and moves on
            totals = Counter()
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    totals[sample.name] += sample.value
            self.scrapes += 1
            return totals["vidfactory_queue_jobs"], totals["vidfactory_jobs_finished_total"]
        return None

    def _run(self) -> None:
        while not self.stop.wait(0.5):
            if (scraped := self.scrape()) is not None:
                self.unfinished_max = max(self.unfinished_max, int(scraped[0]))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)


def state_counts(sessions, tenant_ids: list[str]) -> Counter:
    with sessions() as session:
        rows = session.execute(select(Job.status, func.count()).where(Job.tenant_id.in_(tenant_ids))
                               .group_by(Job.status)).all()
    return Counter(dict(rows))


def test_the_cluster_survives_sigkills_and_accounts_for_every_job(tmp_path, postgres_url, models_dir, s3_server,
                                                                   redis_prefix):  # noqa: F811
    began = time.monotonic()
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    ensure_tiny_model(models_dir / "wan-tiny")  # built here once, not raced by three workers
    receiver = start_receiver()
    bucket = new_bucket(s3_server)
    env = env_for(tmp_path, postgres_url, models_dir, VIDFACTORY_MODELS=json.dumps(tiny_models),
                  **{f"VIDFACTORY_{name.upper()}": value for name, value in bucket.items()},
                  VIDFACTORY_REDIS_URL=redis_url, VIDFACTORY_REDIS_PREFIX=redis_prefix,
                  VIDFACTORY_RATE_LIMIT_REDIS_FAILURE="closed",
                  VIDFACTORY_LEASE_S="4", VIDFACTORY_HEARTBEAT_S="0.5", VIDFACTORY_POLL_S="0.1",
                  VIDFACTORY_RETRY_BACKOFF_S="0.1", VIDFACTORY_PROGRESS_WRITE_INTERVAL_S="1",
                  # A key whose request died with the killed API is free for the client's retry this soon.
                  VIDFACTORY_IDEMPOTENCY_RESERVATION_S="10",
                  VIDFACTORY_WEBHOOK_ALLOWED_NETWORKS='["127.0.0.0/8"]',
                  # Output screening is tested on its own; here it would be half of every job's CPU time.
                  VIDFACTORY_OUTPUT_SCREENING_ENABLED="false", OMP_NUM_THREADS="1")
    engine = make_engine(postgres_url)
    sessions = make_session_factory(engine)
    with sessions.begin() as session:
        pro = session.get(Plan, "pro")
        create_plan(session, "metered", {name: getattr(pro, name) for name in plan_fields} | metered_limits)
    tenants = {plan: new_tenant(sessions, tokens=100_000_000, plan=plan) for plan in ("enterprise", "pro", "metered")}
    with sessions.begin() as session:
        for tenant in tenants.values():
            endpoints.create_endpoint(session, tenant.id, receiver.url(), "chaos", terminal_events)
    tenant_ids = [t.id for t in tenants.values()]
    cluster = Cluster(env=env, log_dir=tmp_path, ports=[free_port(), free_port()])
    retries, kills = Retries(), Counter()
    scraper = MetricsScraper(cluster.bases)
    try:
        for port in cluster.ports:
            cluster.start_api(port)
        for _ in range(worker_count):
            cluster.start_worker()
        for api in cluster.apis:
            poll_until(lambda: healthy(api), start_s_max, f"the API on port {api.port}")
        started_s = time.monotonic() - began
        deadline = time.monotonic() + run_s_max

        def body(n: int) -> dict:
            return {"prompt": f"clip {n}: a paper boat on a river", "model": "wan-tiny", "size": "64x64",
                    "seconds": "1"}

        # 1. The metered tenant's burst through both APIs at once: its budget holds in total.
        metered = [Submission("metered", tenants["metered"].key, body(n)) for n in range(metered_attempts)]
        with ThreadPoolExecutor(client_threads) as pool:
            list(pool.map(lambda n: submit(metered[n], cluster.bases, n, retries, deadline), range(metered_attempts)))
        metered_accepted = sum(1 for s in metered if s.video_id)
        assert 1 <= metered_accepted <= metered_budget, [s.refusals for s in metered]
        assert {code for s in metered for code in s.refusals} == {"rate_limit_exceeded"}

        # 2. The rest, pro and enterprise interleaved, while one API and then workers are killed.
        plans = ["pro" if n % 5 == 0 and n < 5 * pro_jobs else "enterprise"
                 for n in range(jobs_total - metered_accepted)]
        rest = [Submission(plan, tenants[plan].key, body(metered_attempts + n)) for n, plan in enumerate(plans)]
        answered = threading.Semaphore(0)

        def client(n: int) -> Submission:
            try:
                return submit(rest[n], cluster.bases, n, retries, deadline)
            finally:
                answered.release()

        with ThreadPoolExecutor(client_threads) as pool:
            futures = [pool.submit(client, n) for n in range(len(rest))]
            for _ in range(rng.randrange(len(rest) // 4, len(rest) // 2)):
                answered.acquire()
            doomed = rng.choice(cluster.apis)
            cluster.kill(doomed)
            kills["api"] += 1
            cluster.start_api(doomed.port)
            for mark in sorted(rng.sample(range(10, jobs_total - 20), worker_kills)):
                _kill_a_busy_worker(cluster, sessions, tenant_ids, mark, rng, deadline)
                kills["worker"] += 1
            submitted = [future.result() for future in futures]
        assert not [s for s in submitted if not s.video_id], [(s.tenant, s.refusals) for s in submitted]
        ids = [s.video_id for s in metered + submitted if s.video_id]
        assert len(ids) == len(set(ids)) == jobs_total  # no retry made a second job

        # 3. Every job ends: nothing queued or running once the workers have drained the queue.
        final = poll_until(lambda: (c := state_counts(sessions, tenant_ids)) and not (c["queued"] or c["in_progress"])
                           and c, deadline - time.monotonic(), "the queue to drain")
        scraper.close()
        assert scraper.scrape() == (0, jobs_total)  # read from the database: right across both APIs
    finally:
        scraper.close()
        cluster.stop_all()
        receiver.server.shutdown()
    storage = make_storage(make_settings(tmp_path, postgres_url, models_dir, **bucket))
    _assert_accounted(sessions, tenants, ids, final, {stored.key for stored in storage.list("")})
    assert scraper.unfinished_max > 0, "no scrape saw the queue before it drained"
    verified = subprocess.run(cli("ledger", "verify"), env=env, capture_output=True, text=True, timeout=120)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    engine.dispose()
    print(f"\ncluster chaos (seed {seed}): {jobs_total} jobs, states {dict(final)}, kills {dict(kills)}, "
          f"client retries {dict(retries.causes)}, metered tenant {metered_accepted} of {metered_attempts} accepted "
          f"(budget {metered_budget}/min), /metrics scraped {scraper.scrapes} times (queue up to "
          f"{scraper.unfinished_max}), processes started {cluster.started} (up in {started_s:.0f} s), "
          f"{time.monotonic() - began:.0f} s in all")


def _kill_a_busy_worker(cluster: Cluster, sessions, tenant_ids: list[str], mark: int, rng: random.Random,
                        deadline: float) -> None:
    """Once `mark` jobs have finished, SIGKILL a worker in the middle of a job and start a fresh one."""
    def busy_workers() -> list[Process] | None:
        counts = state_counts(sessions, tenant_ids)
        if counts["completed"] + counts["failed"] < mark:
            return None
        with sessions() as session:
            owners = session.scalars(select(Job.lease_owner).where(Job.status == "in_progress")).all()
        pids = {int(owner.split(":")[1]) for owner in owners if owner}  # worker ids are host:pid:nonce
        return [w for w in cluster.workers if w.popen.pid in pids]

    busy = poll_until(busy_workers, deadline - time.monotonic(), f"{mark} finished jobs and a busy worker")
    cluster.kill(rng.choice(busy))
    cluster.start_worker()


def _assert_accounted(sessions, tenants, ids: list[str], final: Counter, stored: set[str]) -> None:
    assert set(final) <= {"completed", "failed"} and sum(final.values()) == jobs_total, final
    with sessions() as session:
        jobs = session.scalars(select(Job).where(Job.id.in_(ids))).all()
        assert len(jobs) == jobs_total
        transfers = Counter(session.execute(select(Transfer.job_id, Transfer.kind).where(
            Transfer.job_id.in_(ids), Transfer.kind.in_(("hold", "post", "void")))).all())
        events = Counter((e.payload["data"]["id"], e.type) for e in session.scalars(
            select(WebhookEvent).where(WebhookEvent.type.in_(terminal_events))))
        for job in jobs:
            settled = job.status == "completed"
            resolved = [transfers[(job.id, kind)] for kind in ("hold", "post", "void")]
            assert resolved == [1, int(settled), int(not settled)], job.id
            assert [events[(job.id, kind)] for kind in terminal_events] == [int(settled), int(not settled)], job.id
        assert [ledger.balance(session, t.id).pending for t in tenants.values()] == [0, 0, 0]
        referenced = set(session.scalars(select(Asset.storage_key)).all())
    assert stored == referenced, (sorted(stored - referenced)[:10], sorted(referenced - stored)[:10])
