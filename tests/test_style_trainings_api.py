"""Style trainings as a tenant manages them: listed newest first and paged, submitted once under an
Idempotency-Key (a retry answers the same training and holds nothing more; the key with another dataset is a
409), started, listed and shown from the CLI, and a trained style deleted with its training's dataset,
checkpoints and preview clip, on local storage and on an S3 server."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from vidfactory.db.models import Asset, Job
from vidfactory.jobs.worker import Worker
from vidfactory.storage import make_storage

from conftest import assert_ledger_clean, make_settings, new_bucket, new_tenant
from test_cli import Cli
from test_style_training import RED_DATASET, STEP_TOKENS, available, dataset, png, train

QUICK_STEPS = "12"  # past the first checkpoint (step 10): the folder holds a dataset and a checkpoint


@pytest.fixture(params=["local", "s3"])
def storage_settings(request, tmp_path, sqlite_url, models_dir):
    where = {} if request.param == "local" else new_bucket(request.getfixturevalue("s3_server"))
    return make_settings(tmp_path, sqlite_url, models_dir, **where)


@pytest.fixture
def local_client(tmp_path, sqlite_url, models_dir):
    from fastapi.testclient import TestClient

    from vidfactory.api.app import create_app

    with TestClient(create_app(make_settings(tmp_path, sqlite_url, models_dir), workers=0)) as test_client:
        yield test_client


def test_trainings_are_listed_newest_first_in_pages(local_client):
    ctx = local_client.app.state.ctx
    tenant, other = new_tenant(ctx.sessions, tokens=10_000), new_tenant(ctx.sessions, tokens=10_000)
    made = [train(local_client, tenant, name=f"look-{i}", steps="5").json()["id"] for i in range(3)]
    train(local_client, other, name="theirs", steps="5")
    first = local_client.get("/v1/styles/train?limit=2", headers=tenant.headers).json()
    assert [t["id"] for t in first["data"]] == made[::-1][:2] and first["has_more"] is True
    assert first["data"][0]["name"] == "look-2" and first["data"][0]["status"] == "queued"
    rest = local_client.get(f"/v1/styles/train?limit=2&after={first['last_id']}", headers=tenant.headers).json()
    assert [t["id"] for t in rest["data"]] == [made[0]] and rest["has_more"] is False
    # Another tenant's training is no cursor; trainings are never videos.
    theirs = local_client.get("/v1/styles/train", headers=other.headers).json()["data"][0]["id"]
    refused = local_client.get(f"/v1/styles/train?after={theirs}", headers=tenant.headers)
    assert refused.status_code == 404 and refused.json()["error"]["param"] == "after"
    assert local_client.get("/v1/videos", headers=tenant.headers).json()["data"] == []


def test_an_idempotency_key_makes_a_retry_answer_the_same_training(local_client):
    ctx = local_client.app.state.ctx
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    key = {**tenant.headers, "Idempotency-Key": "train-house-1"}
    form = {"name": "house", "model": "wan-tiny", "steps": "5", "caption": "a red brand scene", "seed": "7"}
    zipped = dataset(RED_DATASET)

    def send(data=form, archive=zipped):
        return local_client.post("/v1/styles/train", headers=key, data=data,
                                 files={"dataset": ("dataset.zip", archive, "application/zip")})

    first, again = send(), send()
    assert first.status_code == again.status_code == 200, again.text
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert available(local_client, tenant) == 10_000 - 5 * STEP_TOKENS  # one hold
    listed = local_client.get("/v1/styles/train", headers=tenant.headers).json()["data"]
    assert [t["id"] for t in listed] == [first.json()["id"]]
    # The key with another dataset, or other fields, is another request.
    other_zip = send(archive=dataset({**RED_DATASET, "d.png": png(seed=9)}))
    other_steps = send(data={**form, "steps": "6"})
    for refused in (other_zip, other_steps):
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "idempotency_conflict"
    assert available(local_client, tenant) == 10_000 - 5 * STEP_TOKENS
    with ctx.sessions() as session:
        assert len(session.scalars(select(Job).where(Job.tenant_id == tenant.id)).all()) == 1
    assert_ledger_clean(ctx.sessions)


def test_a_deleted_trained_style_takes_its_training_files_with_it(storage_settings):
    from fastapi.testclient import TestClient

    from vidfactory.api.app import create_app

    with TestClient(create_app(storage_settings, workers=0)) as client:
        ctx = client.app.state.ctx
        storage = make_storage(storage_settings)
        tenant = new_tenant(ctx.sessions, tokens=10_000)
        training = train(client, tenant, steps=QUICK_STEPS).json()
        assert Worker(ctx.settings, ctx.sessions, storage, worker_id="w").run_once()
        done = client.get(f"/v1/styles/train/{training['id']}", headers=tenant.headers).json()
        assert (done["status"], done["preview"]) == ("completed", True)
        folder = f"tenants/{tenant.id}/trainings/{training['id']}/"
        with ctx.sessions() as session:
            previews = list(session.scalars(select(Asset.storage_key).where(Asset.job_id == training["id"])))
        kept = [stored.key for stored in storage.list(folder)]
        assert any(key.endswith("dataset.zip") for key in kept) and any(key.endswith(".pt") for key in kept)
        assert previews and all(storage.exists(key) for key in previews)
        adapter = client.get("/v1/styles/house", headers=tenant.headers).json()
        assert adapter["training"]["job_id"] == training["id"]

        assert client.delete("/v1/styles/house", headers=tenant.headers).status_code == 200
        assert list(storage.list(folder)) == []
        assert not any(storage.exists(key) for key in previews)
        assert list(storage.list(f"tenants/{tenant.id}/styles/")) == []
        with ctx.sessions() as session:
            job = session.get(Job, training["id"])
            assert job.content_status == "expired"
            assert session.scalars(select(Asset).where(Asset.job_id == job.id)).all() == []
        after = client.get(f"/v1/styles/train/{training['id']}", headers=tenant.headers).json()
        assert (after["status"], after["preview"], after["style"]) == ("completed", False, None)
        assert_ledger_clean(ctx.sessions)


def test_the_cli_starts_lists_and_shows_trainings(tmp_path, sqlite_url, models_dir):
    cli = Cli(tmp_path, models_dir, sqlite_url)
    tenant = cli.json("admin", "tenant", "create", "acme", "--plan", "enterprise")
    cli.ok("admin", "credit", "acme", "5000")
    (tmp_path / "looks.zip").write_bytes(dataset(RED_DATASET))
    started = cli.json("admin", "style", "train", "acme", "house", str(tmp_path / "looks.zip"), "--model", "wan-tiny",
                       "--steps", "5", "--caption", "a red brand scene")
    assert (started["object"], started["status"], started["steps"], started["name"]) == (
        "style.training", "queued", 5, "house")
    listed = cli.json("admin", "style", "trainings", "acme")
    assert listed["tenant_id"] == tenant["id"] and [t["id"] for t in listed["data"]] == [started["id"]]
    shown = cli.ok("admin", "style", "training", "acme", started["id"]).stdout
    assert started["id"] in shown and "step 0/5" in shown and "dataset: 3 samples" in shown
    missing = cli("admin", "style", "training", "acme", "train_0")
    assert missing.returncode != 0 and "has no training 'train_0'" in missing.stderr
    taken = cli("admin", "style", "train", "acme", "house", str(tmp_path / "looks.zip"), "--steps", "5",
                "--caption", "x")
    assert taken.returncode != 0 and "already have a style named 'house'" in taken.stderr
