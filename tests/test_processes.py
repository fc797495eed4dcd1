"""Real processes: `vidfactory serve` driven by the official openai SDK, a worker killed with SIGKILL
mid-job whose job is recovered by another worker, and a worker stopped with SIGTERM mid-job."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from openai import OpenAI
from sqlalchemy import func, select

from vidfactory.api.context import TokenCounters
from vidfactory.api.render import video_object
from vidfactory.billing import ledger
from vidfactory.db.models import Job, Transfer
from vidfactory.db.session import make_engine, make_session_factory
from vidfactory.jobs.screening import PromptScreens
from vidfactory.jobs.submit import VideoRequest, submit
from vidfactory.jobs.worker import generation_share_pct
from vidfactory.tenancy import authenticate

from conftest import assert_ledger_clean, make_settings, new_tenant

pytestmark = pytest.mark.slow
server_start_s_max = 90
job_wait_s_max = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def env_for(tmp_path: Path, database_url: str, models_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDFACTORY_")}
    env.update({"VIDFACTORY_DATABASE_URL": database_url, "VIDFACTORY_DATA_DIR": str(tmp_path / "var"),
                "VIDFACTORY_MODELS_PATH": str(models_dir), "VIDFACTORY_ADMIN_TOKEN": "proc-admin"})
    env.update(extra)
    return env


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "vidfactory.cli", *args]


def wait_until(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def sessions_for(database_url):
    engine = make_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


def test_openai_sdk_round_trip(tmp_path, database_url, models_dir, sessions_for):
    port = free_port()
    server = subprocess.Popen(cli("serve", "--port", str(port)), env=env_for(tmp_path, database_url, models_dir),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"

        def up():
            try:
                return httpx.get(f"{base}/healthz").status_code == 200
            except httpx.TransportError:
                assert server.poll() is None, server.stderr.read().decode()[-3000:]
                return False

        wait_until(up, server_start_s_max, "the server to start")
        tenant = new_tenant(sessions_for, tokens=50_000)
        client = OpenAI(base_url=f"{base}/v1", api_key=tenant.key, max_retries=0)
        video = client.videos.create(prompt="a paper boat on a river", model="wan-tiny", seconds="1", size="64x64")
        assert video.status == "queued" and video.model == "wan-tiny"
        final = wait_until(lambda: (v := client.videos.retrieve(video.id)).status == "completed" and v,
                           job_wait_s_max, "the video to complete")
        assert final.progress == 100
        content = client.videos.download_content(video.id)
        assert content.content[4:8] == b"ftyp"
        thumbnail = client.videos.download_content(video.id, variant="thumbnail")
        assert thumbnail.content[:4] == b"RIFF" and thumbnail.content[8:12] == b"WEBP"
        assert [v.id for v in client.videos.list()] == [video.id]
        deleted = client.videos.delete(video.id)
        assert deleted.deleted and deleted.id == video.id
        assert list(client.videos.list()) == []
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(30)
    assert_ledger_clean(sessions_for)


def test_worker_killed_mid_job_is_recovered(tmp_path, database_url, models_dir, sessions_for):
    slow_model = [{"id": "wan-tiny", "engine": "wan-tiny", "default_size": "128x128", "default_seconds": 2,
                   "steps": 150}]
    env = env_for(tmp_path, database_url, models_dir, VIDFACTORY_MODELS=json.dumps(slow_model),
                  VIDFACTORY_LEASE_S="3", VIDFACTORY_HEARTBEAT_S="0.5", VIDFACTORY_POLL_S="0.1",
                  VIDFACTORY_PROGRESS_WRITE_INTERVAL_S="0.1")
    subprocess.run(cli("db", "upgrade"), env=env, check=True, capture_output=True)
    tenant = new_tenant(sessions_for, tokens=50_000)
    port = free_port()
    api = subprocess.Popen(cli("serve", "--port", str(port), "--workers", "0"), env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    doomed = subprocess.Popen(cli("worker"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rescuer = None
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: _healthy(base), server_start_s_max, "the API")
        video = httpx.post(f"{base}/v1/videos", headers=tenant.headers, json={"prompt": "a lighthouse"}).json()

        def job():
            with sessions_for() as s:
                return s.get(Job, video["id"])

        wait_until(lambda: job().status == "in_progress" and job().progress > 0, job_wait_s_max, "progress")
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(10)
        assert job().status == "in_progress"  # nobody has noticed yet: the lease is still running
        rescuer = subprocess.Popen(cli("worker"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        finished = wait_until(lambda: job().status in ("completed", "failed") and job(), job_wait_s_max * 3,
                              "the rescued job")
        assert finished.status == "completed" and finished.attempts == 2
        assert finished.error_type == "worker_lost"  # recorded from the lost attempt
        billing = httpx.get(f"{base}/v1/videos/{video['id']}", headers=tenant.headers).json()["billing"]
        assert billing["status"] == "settled" and billing["settled"] == billing["held"]
    finally:
        for process in (api, doomed, rescuer):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(30)
    assert_ledger_clean(sessions_for)


def test_a_worker_sent_sigterm_hands_back_or_finishes_its_job(tmp_path, sqlite_url, models_dir):
    """What Kubernetes does on scale-down or a node drain: SIGTERM. With no grace left the job goes back to
    the queue, its attempt unused and its hold kept; with grace the next worker's job is finished first.
    Either way the worker exits cleanly, and the job is charged once."""
    # Denoising lasts seconds even on a fast machine, so the signal lands during it, not after it.
    slow_model = [{"id": "wan-tiny", "engine": "wan-tiny", "default_size": "128x128", "default_seconds": 2,
                   "steps": 96}]
    env = env_for(tmp_path, sqlite_url, models_dir, VIDFACTORY_MODELS=json.dumps(slow_model),
                  VIDFACTORY_POLL_S="0.1", VIDFACTORY_PROGRESS_WRITE_INTERVAL_S="0.1")
    engine = make_engine(sqlite_url)
    sessions_for = make_session_factory(engine)
    tenant = new_tenant(sessions_for, tokens=50_000)
    settings = make_settings(tmp_path, sqlite_url, models_dir, models=slow_model)
    with sessions_for() as s:
        caller = authenticate(s, tenant.key)
    job_id = submit(sessions_for, settings, TokenCounters(settings.models_dir), caller,
                    VideoRequest(prompt="a lighthouse", model="wan-tiny"), video_object,
                    screens=PromptScreens.from_settings(settings)).body["id"]

    def job() -> Job:
        with sessions_for() as s:
            return s.get(Job, job_id)

    def progress_or_end() -> Job | None:
        """The job once it is running and has reported progress, or once it has ended."""
        current = job()
        running = current.status == "in_progress" and current.progress > 0
        return current if running or current.status in ("completed", "failed") else None

    def stop_mid_job(grace_s: str) -> None:
        log = tmp_path / f"worker-{grace_s}.log"
        with log.open("wb") as stderr:
            worker = subprocess.Popen(cli("worker"), env={**env, "VIDFACTORY_SHUTDOWN_GRACE_S": grace_s},
                                      stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            seen = wait_until(progress_or_end, job_wait_s_max, "progress")
            assert seen.status == "in_progress" and seen.progress < generation_share_pct, (
                f"the job was past denoising ({seen.status}, {seen.progress}%) before it could be stopped")
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(job_wait_s_max) == 0, log.read_text()[-3000:]
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait(10)

    stop_mid_job("0")
    handed_back = job()
    assert (handed_back.status, handed_back.attempts, handed_back.lease_owner) == ("queued", 0, None)
    assert handed_back.error_type == "worker_lost"
    with sessions_for() as s:
        assert ledger.balance(s, tenant.id).pending == handed_back.total_tokens  # the hold stays
    stop_mid_job("600")
    finished = job()
    assert (finished.status, finished.attempts) == ("completed", 1)
    with sessions_for() as s:
        posts = s.scalar(select(func.count()).select_from(Transfer).where(Transfer.job_id == job_id,
                                                                         Transfer.kind == "post"))
        balance = ledger.balance(s, tenant.id)
    assert posts == 1 and balance.pending == 0 and balance.available == 50_000 - finished.total_tokens
    assert_ledger_clean(sessions_for)
    engine.dispose()


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz").status_code == 200
    except httpx.TransportError:
        return False
