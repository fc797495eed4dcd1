"""Style trainings through the API and the worker, with the tiny model on the CPU: a dataset ZIP becomes a
queued training (quoted per step, held, never listed among videos), a worker that dies after a checkpoint is
resumed by another from that checkpoint and the tenant is charged once, the style ends ready with its
provenance and a preview clip; cancelling refunds; a refused image or a plan limit holds nothing."""

from __future__ import annotations

import io
import time
import zipfile

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select, update

from vidfactory.db.models import Job, Plan, Style, Transfer, WebhookEndpoint, WebhookEvent
from vidfactory.db.types import utcnow
from vidfactory.jobs import maintenance
from vidfactory.jobs.training import TrainingRun
from vidfactory.jobs.worker import Worker
from vidfactory.media.encode import encode_mp4
from vidfactory.storage.local import LocalStorage

from conftest import assert_ledger_clean, make_settings, new_tenant

STEPS = 30
STEP_TOKENS = 20  # the default price book's training_step_tokens
RED = (230, 25, 30)


def png(rgb=RED, size=(48, 40), seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.full((size[1], size[0], 3), rgb, np.int16) + rng.integers(-12, 12, (size[1], size[0], 3)),
                     0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def red_clip() -> bytes:
    return encode_mp4(np.full((9, 48, 48, 3), RED, np.uint8), 8)


def dataset(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


RED_DATASET = {"a.png": png(seed=1), "a.txt": b"a scene in the house colours", "b.png": png(seed=2),
               "clips/c.mp4": red_clip()}


@pytest.fixture
def settings(tmp_path, sqlite_url, models_dir):
    return make_settings(tmp_path, sqlite_url, models_dir, lease_s=3.0, heartbeat_s=0.2)


@pytest.fixture
def client(settings):
    from fastapi.testclient import TestClient

    from vidfactory.api.app import create_app

    with TestClient(create_app(settings, workers=0)) as test_client:
        yield test_client


@pytest.fixture
def ctx(client):
    return client.app.state.ctx


def train(client, tenant, files=RED_DATASET, **fields):
    form = {"name": "house", "model": "wan-tiny", "steps": str(STEPS), "caption": "a red brand scene",
            "seed": "7", **fields}
    return client.post("/v1/styles/train", headers=tenant.headers, data=form,
                       files={"dataset": ("dataset.zip", dataset(files), "application/zip")})


def available(client, tenant) -> int:
    return client.get("/v1/balance", headers=tenant.headers).json()["available"]


def listen(ctx, tenant) -> None:
    """An endpoint subscribed to every event, so the outbox records them (no delivery is attempted here)."""
    with ctx.sessions.begin() as session:
        session.add(WebhookEndpoint(id=f"we_{tenant.id[-8:]}", tenant_id=tenant.id, url="http://127.0.0.1:9/h",
                                    secret="whsec_test"))


def events(ctx, tenant, prefix: str) -> list[dict]:
    with ctx.sessions() as session:
        rows = session.scalars(select(WebhookEvent).where(WebhookEvent.tenant_id == tenant.id,
                                                          WebhookEvent.type.startswith(prefix))
                               .order_by(WebhookEvent.created_at))
        return [row.payload for row in rows]


def worker(ctx, name: str) -> Worker:
    return Worker(ctx.settings, ctx.sessions, LocalStorage(ctx.settings.resolved_storage_dir), worker_id=name)


class Killed(BaseException):
    """The worker process dying: nothing in the worker catches it, nothing is recorded."""


def test_a_training_resumes_after_its_worker_dies_and_is_charged_once(client, ctx, monkeypatch):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    listen(ctx, tenant)
    created = train(client, tenant)
    assert created.status_code == 200, created.text
    training = created.json()
    assert (training["object"], training["status"], training["steps"]) == ("style.training", "queued", STEPS)
    assert training["usage"]["total_tokens"] == STEPS * STEP_TOKENS
    assert training["style"]["status"] == "training" and training["dataset"]["samples"] == 3
    assert available(client, tenant) == 10_000 - STEPS * STEP_TOKENS
    # Never a video.
    assert client.get("/v1/videos", headers=tenant.headers).json()["data"] == []
    assert client.get(f"/v1/videos/{training['id']}", headers=tenant.headers).status_code == 404

    # 1. The first worker dies right after its second checkpoint (step 20 of 30).
    save = TrainingRun._save_checkpoint

    def save_then_die(self, step, data):
        save(self, step, data)
        if step == 20:
            raise Killed()

    monkeypatch.setattr(TrainingRun, "_save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        worker(ctx, "first").run_once()
    monkeypatch.setattr(TrainingRun, "_save_checkpoint", save)
    # 2. Its lease runs out; the reaper puts the training back; another worker resumes it.
    deadline = time.monotonic() + 30
    while maintenance.reap_expired_leases(ctx.sessions, utcnow()) == 0:
        assert time.monotonic() < deadline, "the dead worker's lease never expired"
        time.sleep(0.2)  # polling the lease's expiry
    steps_run: list[int] = []
    progress = TrainingRun._progress
    monkeypatch.setattr(TrainingRun, "_progress",
                        lambda self, step, steps, loss: (steps_run.append(step), progress(self, step, steps, loss)))
    assert worker(ctx, "second").run_once()
    assert steps_run == list(range(21, STEPS + 1)), "the second worker started over"

    done = client.get(f"/v1/styles/train/{training['id']}", headers=tenant.headers).json()
    assert (done["status"], done["step"], done["progress"], done["preview"]) == ("completed", STEPS, 100, True)
    with ctx.sessions() as session:
        style = session.get(Style, done["style_id"])
        job = session.get(Job, training["id"])
        settled = session.scalars(select(Transfer).where(Transfer.kind == "post", Transfer.job_id == job.id))
        assert len(list(settled)) == 1
    assert (style.status, style.source, style.rank) == ("ready", "trained", 8)
    assert job.attempts == 2
    curve = style.training["loss_curve"]
    assert len(curve) == STEPS and style.training["resumed_at_step"] == 21
    assert np.mean(curve[-8:]) < np.mean(curve[:8]), "the loss did not fall"
    assert ctx.storage.read(style.storage_key)[:8]  # the adapter is stored under its key
    assert available(client, tenant) == 10_000 - STEPS * STEP_TOKENS
    types = [event["type"] for event in events(ctx, tenant, "training.")]
    assert types.count("training.completed") == 1 and "training.progress" in types
    last = [e for e in events(ctx, tenant, "training.progress")][-1]["data"]
    assert (last["step"], last["steps"]) == (STEPS, STEPS) and last["loss"] > 0
    assert_ledger_clean(ctx.sessions)


def test_cancelling_a_running_training_stops_it_and_refunds(client, ctx, monkeypatch):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    training = train(client, tenant).json()
    progress = TrainingRun._progress

    def cancel_at_step_3(self, step, steps, loss):
        progress(self, step, steps, loss)
        if step == 3:
            assert client.post(f"/v1/styles/train/{training['id']}/cancel", headers=tenant.headers).status_code == 200

    monkeypatch.setattr(TrainingRun, "_progress", cancel_at_step_3)
    assert worker(ctx, "w").run_once()
    after = client.get(f"/v1/styles/train/{training['id']}", headers=tenant.headers).json()
    assert (after["status"], after["step"], after["style"]["status"]) == ("cancelled", 3, "failed")
    assert available(client, tenant) == 10_000
    # A queued one is cancelled at once.
    queued = train(client, tenant, name="second").json()
    assert client.delete("/v1/styles/second", headers=tenant.headers).status_code == 409  # being trained
    cancelled = client.post(f"/v1/styles/train/{queued['id']}/cancel", headers=tenant.headers).json()
    assert cancelled["status"] == "cancelled" and available(client, tenant) == 10_000
    assert client.delete("/v1/styles/second", headers=tenant.headers).status_code == 200  # the name is free
    assert_ledger_clean(ctx.sessions)


def nothing_held(client, ctx, tenant) -> None:
    assert available(client, tenant) == 10_000
    with ctx.sessions() as session:
        assert session.scalars(select(Job).where(Job.tenant_id == tenant.id)).all() == []
        assert session.scalars(select(Style).where(Style.tenant_id == tenant.id)).all() == []
    stored = ctx.settings.resolved_storage_dir / "tenants" / tenant.id
    assert not stored.exists() or not any(p.is_file() for p in stored.rglob("*"))


def test_a_dataset_image_the_screen_refuses_holds_nothing(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    ctx.settings.output_nsfw_threshold = 0.0  # open_nsfw at threshold 0 flags every picture
    refused = train(client, tenant)
    assert refused.status_code == 400, refused.text
    assert (refused.json()["error"]["code"], refused.json()["error"]["param"]) == ("content_policy", "dataset")
    nothing_held(client, ctx, tenant)


def test_plan_limits_and_bad_datasets_answer_clear_errors(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=10_000, plan="free")  # 20 samples, 500 steps, 1 training
    too_many = train(client, tenant, steps="501")
    assert too_many.status_code == 400 and too_many.json()["error"]["code"] == "plan_limit"
    assert "at most 500" in too_many.json()["error"]["message"]
    big = train(client, tenant, files={f"{i}.png": png(seed=i) for i in range(21)})
    assert big.status_code == 400 and "at most 20" in big.json()["error"]["message"]
    not_zip = client.post("/v1/styles/train", headers=tenant.headers, data={"name": "x", "model": "wan-tiny"},
                          files={"dataset": ("d.zip", b"not a zip", "application/zip")})
    assert not_zip.status_code == 400 and not_zip.json()["error"]["code"] == "invalid_dataset"
    uncaptioned = train(client, tenant, files={"a.png": png()}, caption="")
    assert uncaptioned.status_code == 400
    unknown = client.post("/v1/styles/train", headers=tenant.headers,
                          json={"name": "v", "model": "wan-tiny", "video_ids": ["video_0"]})
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (400, "video_not_found")
    both = client.post("/v1/styles/train", headers=tenant.headers, json={"name": "v", "model": "wan-tiny"})
    assert both.status_code == 400 and both.json()["error"]["param"] == "dataset"
    nothing_held(client, ctx, tenant)
    # One training at a time on this plan; a plan without training says so.
    assert train(client, tenant).status_code == 200
    second = train(client, tenant, name="other")
    assert second.status_code == 429 and second.json()["error"]["code"] == "trainings_limit"
    with ctx.sessions.begin() as session:
        session.execute(update(Plan).where(Plan.id == "free").values(concurrent_trainings=0))
    assert train(client, tenant, name="third").json()["error"]["code"] == "plan_limit"
    taken = new_tenant(ctx.sessions, tokens=10_000)
    assert train(client, taken).status_code == 200
    assert train(client, taken).json()["error"]["code"] in ("style_name_taken", "trainings_limit")
    assert_ledger_clean(ctx.sessions)
