"""Real processes: `vidfactory serve` driven by the official openai SDK, and a worker killed with
SIGKILL mid-job whose job is recovered by another worker."""

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

from vidfactory.db.models import Job
from vidfactory.db.session import make_engine, make_session_factory

from conftest import assert_ledger_clean, new_tenant

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


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz").status_code == 200
    except httpx.TransportError:
        return False
