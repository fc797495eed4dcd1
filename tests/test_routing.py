"""Memory-aware routing and residency on SQLite and PostgreSQL: a job goes only to a worker it fits; a
worker keeps its model and prefers its jobs until another model's job has waited too long; the worker
registry; requests no worker could ever fit are refused at submission; what ran is recorded on the job."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from vidfactory.api.app import create_app
from vidfactory.db.models import Job, Plan
from vidfactory.db.types import utcnow
from vidfactory.engines.base import GeneratedVideo
from vidfactory.engines.memory import GIB
from vidfactory.engines.tiny import ensure_tiny_model
from vidfactory.jobs import queue, workers
from vidfactory.jobs.worker import Worker
from vidfactory.settings import ModelConfig
from vidfactory.storage.local import LocalStorage

from conftest import assert_ledger_clean, make_settings, new_tenant
from test_queue import enqueue

import numpy as np

GPU_24 = workers.DeviceReport("NVIDIA L4", 24 * GIB, 20 * GIB)
GPU_80 = workers.DeviceReport("NVIDIA H100 80GB HBM3", 80 * GIB, 79 * GIB)


def set_job(sessions, job_id, **values) -> None:
    with sessions.begin() as s:
        s.execute(update(Job).where(Job.id == job_id).values(**values))


def claim(sessions, worker="w1", models=("wan-tiny",), **residency):
    with sessions.begin() as s:
        job = queue.claim(s, worker_id=worker, models=list(models), lease_s=30.0, now=utcnow(),
                          residency=queue.Residency(**residency))
        return None if job is None else job.id


def test_a_job_goes_only_to_a_worker_it_fits(sessions):
    tenant = new_tenant(sessions, tokens=1000)
    big = enqueue(sessions, tenant.id, age_s=20)
    small = enqueue(sessions, tenant.id, age_s=10)
    set_job(sessions, big, memory_bytes_min=40 * GIB)
    set_job(sessions, small, memory_bytes_min=10 * GIB)
    assert claim(sessions, "l4", memory_bytes=24 * GIB) == small  # the older job does not fit an L4
    assert claim(sessions, "l4", memory_bytes=24 * GIB) is None
    assert claim(sessions, "h100", memory_bytes=80 * GIB) == big


def test_a_worker_prefers_the_model_it_holds_until_another_waits_too_long(sessions):
    tenant = new_tenant(sessions, tokens=10_000)
    other_old = enqueue(sessions, tenant.id, age_s=100)
    held_new = enqueue(sessions, tenant.id, age_s=10)
    set_job(sessions, other_old, model="wan-b")
    models = ("wan-tiny", "wan-b")
    # holding wan-tiny: its own job first although wan-b's is older (no switch needed)
    assert claim(sessions, models=models, held_models=("wan-tiny",), switch_after_s=300) == held_new
    # nothing left for the held model: switch
    assert claim(sessions, models=models, held_models=("wan-tiny",), switch_after_s=300) == other_old

    starving = enqueue(sessions, tenant.id, age_s=400)
    fresh_held = enqueue(sessions, tenant.id, age_s=5)
    set_job(sessions, starving, model="wan-b")
    # wan-b's oldest job waited past model_switch_after_s: it goes first
    assert claim(sessions, models=models, held_models=("wan-tiny",), switch_after_s=300) == starving
    assert claim(sessions, models=models, held_models=("wan-tiny",), switch_after_s=300) == fresh_held


def test_the_registry_reports_devices_models_and_heartbeats(sessions):
    now = utcnow()
    with sessions.begin() as s:
        workers.register(s, "gpu-a", GPU_24, ["wan2.1-t2v-1.3b"], now)
        workers.register(s, "gpu-b", GPU_80, ["wan2.1-t2v-1.3b", "wan2.1-t2v-14b"], now - timedelta(hours=1))
        workers.record_load(s, "gpu-a", "wan2.1-t2v-1.3b", 12.3456)
        assert workers.heartbeat(s, "gpu-a", memory_free_bytes=5 * GIB, models_held=["wan2.1-t2v-1.3b"],
                                 now=now)
        assert not workers.heartbeat(s, "gone", memory_free_bytes=0, models_held=[], now=now)
    with sessions() as s:
        rows = {w.id: w for w in workers.list_workers(s)}
        assert rows["gpu-a"].models_held == ["wan2.1-t2v-1.3b"]
        assert rows["gpu-a"].model_load_s == {"wan2.1-t2v-1.3b": 12.346}
        assert rows["gpu-a"].memory_free_bytes == 5 * GIB
        # gpu-b has not been heard from for an hour: it does not count
        assert workers.fleet_devices(s, "wan2.1-t2v-14b", now, stale_s=120) == []
        assert workers.fleet_devices(s, "wan2.1-t2v-1.3b", now, stale_s=120) == [(24 * GIB, 1)]
        assert sorted(workers.fleet_devices(s, "wan2.1-t2v-1.3b", now, stale_s=7200)) == [(24 * GIB, 1),
                                                                                         (80 * GIB, 1)]


# --- admission --------------------------------------------------------------------------------------------

@pytest.fixture
def fleet_client(tmp_path, database_url, models_dir):
    """wan14b: the 14B preset's memory profile; its files (read only for its tokenizer) are the tiny model's."""
    tiny_dir = ensure_tiny_model(models_dir / "wan-tiny")
    models = [ModelConfig(id="wan-tiny", engine="wan-tiny"),
              ModelConfig(id="wan14b", engine="wan", preset="wan2.1-t2v-14b", path=str(tiny_dir))]

    def make(**overrides):
        settings = make_settings(tmp_path, database_url, models_dir, models=models, **overrides)
        return TestClient(create_app(settings, workers=0))
    return make


def error_of(response):
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "type", "param"}
    return body["error"]


def test_a_request_no_worker_could_fit_is_refused_and_holds_nothing(fleet_client):
    with fleet_client(fleet_memory_bytes_max=8 * GIB) as client:
        ctx = client.app.state.ctx
        tenant = new_tenant(ctx.sessions, tokens=100_000)
        body = {"prompt": "a fox", "model": "wan14b", "size": "1280x720", "seconds": "5"}
        refused = client.post("/v1/videos", headers=tenant.headers, json=body)
        assert refused.status_code == 400, refused.text
        error = error_of(refused)
        assert (error["code"], error["param"]) == ("exceeds_gpu_memory", "size")
        assert "10.0 GiB" in error["message"] and "fleet_memory_bytes_max" in error["message"]
        assert "8.0 GiB" in error["message"]
        assert client.get("/v1/balance", headers=tenant.headers).json()["pending"] == 0

        # a registered worker replaces the configured limit: an 80 GB card fits it
        with ctx.sessions.begin() as s:
            workers.register(s, "h100", GPU_80, ["wan14b"], utcnow())
        accepted = client.post("/v1/videos", headers=tenant.headers, json=body)
        assert accepted.status_code == 200, accepted.text
        with ctx.sessions.begin() as s:
            workers.register(s, "h100", workers.DeviceReport("small", 4 * GIB, 4 * GIB), ["wan14b"], utcnow())
        again = error_of(client.post("/v1/videos", headers=tenant.headers, json=body))
        assert again["code"] == "exceeds_gpu_memory" and "largest live worker" in again["message"]
        assert_ledger_clean(ctx.sessions)


def test_a_request_too_large_for_one_device_fits_a_worker_spanning_two(fleet_client):
    """The 14B at 720p needs 10.0 GiB on one device in its most frugal mode and 6.2 GiB per device when
    two devices split its denoising: an 8 GiB card refuses it, a worker of two 8 GiB cards takes it."""
    with fleet_client() as client:
        ctx = client.app.state.ctx
        tenant = new_tenant(ctx.sessions, tokens=100_000)
        body = {"prompt": "a fox", "model": "wan14b", "size": "1280x720", "seconds": "5"}
        with ctx.sessions.begin() as s:
            workers.register(s, "one-card", workers.DeviceReport("L4", 8 * GIB, 8 * GIB), ["wan14b"], utcnow())
        assert error_of(client.post("/v1/videos", headers=tenant.headers, json=body))["code"] == "exceeds_gpu_memory"
        with ctx.sessions.begin() as s:
            workers.register(s, "two-cards", workers.DeviceReport("L4", 8 * GIB, 8 * GIB, devices=2), ["wan14b"],
                             utcnow())
        accepted = client.post("/v1/videos", headers=tenant.headers, json=body)
        assert accepted.status_code < 300, accepted.text
        assert_ledger_clean(ctx.sessions)


def test_admins_list_workers(fleet_client):
    with fleet_client() as client:
        ctx = client.app.state.ctx
        with ctx.sessions.begin() as s:
            workers.register(s, "gpu-a", GPU_24, ["wan-tiny"], utcnow())
        assert client.get("/v1/admin/workers").status_code == 401
        listed = client.get("/v1/admin/workers", headers={"Authorization": "Bearer test-admin-token"})
        assert listed.status_code == 200
        (worker,) = listed.json()["data"]
        assert worker["id"] == "gpu-a" and worker["gpu_name"] == "NVIDIA L4" and worker["live"] is True
        assert worker["memory_total_bytes"] == 24 * GIB and worker["models_served"] == ["wan-tiny"]
        assert worker["devices"] == 1


# --- the worker: residency, switch cost, recorded settings --------------------------------------------------


class CountingEngine:
    def __init__(self, model_id):
        self.model_id = model_id
        self.requests = []

    def generate(self, request, on_progress, is_cancelled):
        self.requests.append(request)
        on_progress(1, 1)
        # Mid-grey that brightens a little each frame: neither black, frozen nor flickering, so quality
        # checks pass it and no job is regenerated.
        levels = 100 + 2 * np.arange(request.num_frames, dtype=np.uint8)
        frames = np.broadcast_to(levels[:, None, None, None],
                                 (request.num_frames, request.height, request.width, 3)).copy()
        return GeneratedVideo(frames=frames, fps=request.fps, engine_settings={"attention_backend": "native"})


def test_a_worker_keeps_its_model_switches_when_needed_and_records_the_cost(
        tmp_path, database_url, models_dir, sessions):
    models = [ModelConfig(id="wan-tiny", engine="wan-tiny"), ModelConfig(id="wan-b", engine="wan-tiny")]
    settings = make_settings(tmp_path, database_url, models_dir, models=models, step_cache="first_block")
    loads = []

    def loader(config, models_path):
        loads.append(config.id)
        return CountingEngine(config.id)

    worker = Worker(settings, sessions, LocalStorage(settings.resolved_storage_dir), worker_id="w",
                    engine_loader=loader)
    tenant = new_tenant(sessions, tokens=10_000)
    first = enqueue(sessions, tenant.id, age_s=30)
    other = enqueue(sessions, tenant.id, age_s=20)
    second = enqueue(sessions, tenant.id, age_s=10)
    set_job(sessions, other, model="wan-b")
    for _ in range(3):
        assert worker.run_once()
    assert loads == ["wan-tiny", "wan-b"]  # wan-tiny's two jobs ran back to back, then one switch
    assert list(worker.engines) == ["wan-b"]  # one model resident at a time
    with sessions() as s:
        jobs = {j: s.get(Job, j) for j in (first, other, second)}
        assert all(j.status == "completed" for j in jobs.values())
        assert jobs[first].model_load_s is not None and jobs[second].model_load_s is None
        assert jobs[other].model_load_s is not None
        # enqueue() jobs carry no plan entry: step caching stays off
        assert jobs[first].engine_settings == {"memory_mode": "none", "step_cache": "none",
                                               "attention_backend": "native"}
        (row,) = workers.list_workers(s)
        assert set(row.model_load_s) == {"wan-tiny", "wan-b"}
    assert_ledger_clean(sessions)


def test_step_caching_runs_only_where_the_plan_allows_it(tmp_path, database_url, models_dir, sessions):
    settings = make_settings(tmp_path, database_url, models_dir, step_cache="first_block")
    with TestClient(create_app(settings, workers=0)) as client:
        ctx = client.app.state.ctx
        engine = CountingEngine("wan-tiny")
        worker = Worker(settings, ctx.sessions, ctx.storage, worker_id="w", engine_loader=lambda c, p: engine)
        with ctx.sessions.begin() as s:
            s.execute(update(Plan).where(Plan.id == "pro").values(step_cache_allowed=True))
        allowed, plain = new_tenant(ctx.sessions, tokens=10_000, plan="pro"), new_tenant(ctx.sessions, tokens=10_000)
        ids = []
        for tenant in (allowed, plain):
            made = client.post("/v1/videos", headers=tenant.headers,
                               json={"prompt": "a fox", "size": "64x64", "seconds": "1"})
            assert made.status_code == 200, made.text
            ids.append(made.json()["id"])
        assert worker.run_once() and worker.run_once()
        by_job = {}
        with ctx.sessions() as s:
            for job_id in ids:
                by_job[job_id] = s.get(Job, job_id).engine_settings
        assert by_job[ids[0]]["step_cache_allowed"] is True and by_job[ids[0]]["step_cache"] == "first_block"
        assert by_job[ids[1]]["step_cache_allowed"] is False and by_job[ids[1]]["step_cache"] == "none"
        assert sorted(r.step_cache for r in engine.requests) == ["first_block", "none"]
