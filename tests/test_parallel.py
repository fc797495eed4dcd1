"""One job across two devices: two CPU processes under torchrun (gloo) run diffusers' Ulysses context
parallelism on the tiny Wan model; the frames equal a single process's, and a two-rank worker completes a
queued job and settles it once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from vidfactory.api.app import create_app
from vidfactory.engines.parallel import DevicePlan, ParallelError

from conftest import assert_ledger_clean, make_settings, new_tenant
from fixtures_models import tiny_model_dir  # noqa: F401  (fixture)
from test_processes import free_port

run_s_max = 600
generate_script = Path(__file__).parent / "parallel_generate.py"


def torchrun(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
               f"--master_port={free_port()}", *args]
    # A rank that aborts prints every thread's Python stack: where it stood, in the failure's message.
    environment = {**(env or os.environ), "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=run_s_max)


def test_the_device_plan_comes_from_torchrun_and_refuses_nonsense():
    assert DevicePlan.from_environment({}) == DevicePlan(1, 0, 0)
    plan = DevicePlan.from_environment({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"})
    assert plan.parallel and not plan.is_leader
    for bad in ({"WORLD_SIZE": "2", "RANK": "2"}, {"WORLD_SIZE": "0"}, {"WORLD_SIZE": "two"}):
        with pytest.raises(ParallelError):
            DevicePlan.from_environment(bad)


@pytest.mark.slow
@pytest.mark.timeout(run_s_max + 60)
def test_two_processes_make_the_frames_one_makes(tiny_model_dir, tmp_path):
    single, split = tmp_path / "single.npy", tmp_path / "split.npy"
    one = subprocess.run([sys.executable, str(generate_script), str(tiny_model_dir), str(single)],
                         capture_output=True, text=True, timeout=run_s_max)
    assert one.returncode == 0, one.stderr[-3000:]
    two = torchrun(str(generate_script), str(tiny_model_dir), str(split))
    assert two.returncode == 0, two.stderr[-3000:]
    assert "ulysses x2" in two.stdout
    np.testing.assert_allclose(np.load(split).astype(int), np.load(single).astype(int), atol=1)


@pytest.mark.slow
@pytest.mark.timeout(run_s_max + 60)
def test_a_worker_spanning_two_devices_completes_a_job_once(tmp_path, sqlite_url, models_dir):
    settings = make_settings(tmp_path, sqlite_url, models_dir)
    with TestClient(create_app(settings, workers=0)) as client:
        ctx = client.app.state.ctx
        tenant = new_tenant(ctx.sessions, tokens=100_000)
        video = client.post("/v1/videos", headers=tenant.headers,
                            json={"prompt": "a red fox", "size": "64x64", "seconds": "1", "cache": "off"}).json()
        env = {k: v for k, v in os.environ.items() if not k.startswith("VIDFACTORY_")}
        env.update({"VIDFACTORY_DATABASE_URL": sqlite_url, "VIDFACTORY_DATA_DIR": str(tmp_path / "var"),
                    "VIDFACTORY_MODELS_PATH": str(models_dir), "VIDFACTORY_WEBHOOKS_ENABLED": "false"})
        worker = torchrun("-m", "vidfactory.cli", "worker", "--model", "wan-tiny", "--once", env=env)
        assert worker.returncode == 0, worker.stderr[-3000:]
        done = client.get(f"/v1/videos/{video['id']}", headers=tenant.headers).json()
        assert done["status"] == "completed", done
        assert done["engine_settings"]["context_parallel"] == "ulysses x2"
        assert_ledger_clean(ctx.sessions)


def test_a_worker_spanning_devices_needs_exactly_one_model(tmp_path, sqlite_url, models_dir):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDFACTORY_")}
    env.update({"VIDFACTORY_DATABASE_URL": sqlite_url, "VIDFACTORY_DATA_DIR": str(tmp_path / "var"),
                "VIDFACTORY_MODELS_PATH": str(models_dir), "WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"})
    result = subprocess.run([sys.executable, "-m", "vidfactory.cli", "worker"], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2 and "exactly one model" in result.stderr
