"""What a new user meets first, through the API on SQLite and PostgreSQL: errors that say what is wrong in
the user's terms (characters, not items) and never show the server's file paths."""

from __future__ import annotations

import json
import shutil

from fastapi.testclient import TestClient
from sqlalchemy import select

from vidfactory.api.app import create_app
from vidfactory.db.models import Job
from vidfactory.jobs.worker import Worker
from vidfactory.settings import ModelConfig
from vidfactory.storage.local import LocalStorage

from conftest import assert_ledger_clean, make_settings, new_tenant
from fixtures_models import tiny_model_dir  # noqa: F401  (fixture)


def test_a_prompt_too_long_is_counted_in_characters(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=1000)
    for field in ("prompt", "negative_prompt"):
        body = {"prompt": "a cat", field: "猫" * 4001}
        response = client.post("/v1/videos", headers=tenant.headers, json=body)
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["param"] == field
        assert error["message"].startswith(f"{field}: ") and "at most 4000 characters" in error["message"]
        assert "items" not in error["message"]
    empty = client.post("/v1/videos", headers=tenant.headers, json={"prompt": ""}).json()["error"]
    assert empty["param"] == "prompt" and "at least 1 character" in empty["message"], empty
    with ctx.sessions() as session:
        assert session.scalars(select(Job)).all() == []


def test_a_model_that_cannot_load_fails_its_job_without_showing_server_paths(tmp_path, database_url, models_dir,
                                                                              tiny_model_dir):  # noqa: F811
    # A checkpoint with its tokenizer (so admission prices it) but no weights: the worker cannot load it.
    broken_dir = tmp_path / "checkpoints" / "half-copied"
    shutil.copytree(tiny_model_dir / "tokenizer", broken_dir / "tokenizer")
    shutil.copy(tiny_model_dir / "model_index.json", broken_dir / "model_index.json")
    broken = ModelConfig(id="half-copied", engine="wan", path=str(broken_dir), default_size="64x64",
                         default_seconds=1)
    settings = make_settings(tmp_path, database_url, models_dir, models=[broken], attempts_max=1)
    with TestClient(create_app(settings, workers=0)) as client:
        ctx = client.app.state.ctx
        tenant = new_tenant(ctx.sessions, tokens=1000)
        created = client.post("/v1/videos", headers=tenant.headers, json={"prompt": "a cat", "model": "half-copied"})
        assert created.status_code in (200, 202), created.text
        Worker(settings, ctx.sessions, LocalStorage(settings.resolved_storage_dir), worker_id="w").run_once()
        video = client.get(f"/v1/videos/{created.json()['id']}", headers=tenant.headers).json()
        assert video["status"] == "failed"
        assert "cannot load a Wan model from '<path>'" in video["error"]["message"]
        shown = json.dumps(video) + client.get("/v1/webhook_deliveries", headers=tenant.headers).text
        assert str(tmp_path) not in shown and "half-copied/" not in shown and "checkpoints" not in shown
        assert client.get("/v1/balance", headers=tenant.headers).json()["available"] == 1000
    assert_ledger_clean(ctx.sessions)
