"""The Styles and Trainings pages without a browser: upload (a refusal shown by the file field, nothing
stored), download byte for byte, delete (the 409's words while a queued video uses the style); start a
training from a ZIP with the model's defaults, the list, a training's page following its event stream, and
once trained its loss curve and preview clip. Owners and members act, viewers read; another tenant's
style or training answers 404; a form without its CSRF token changes nothing."""

from __future__ import annotations

import hashlib
import re

import pytest
from fastapi.testclient import TestClient

from vidfactory.api.app import create_app
from vidfactory.jobs.worker import Worker

from conftest import make_settings, new_tenant
from styles_support import peft_adapter, pickled
from test_console_videos import Person
from test_style_training import RED_DATASET, dataset


@pytest.fixture
def client(tmp_path, sqlite_url, models_dir):
    settings = make_settings(tmp_path, sqlite_url, models_dir, password_hash_time_cost=1,
                             password_hash_memory_kib=1024, output_screening_enabled=False)
    with TestClient(create_app(settings, workers=0)) as test_client:
        yield test_client


def upload(person: Person, data: bytes, name: str = "house", filename: str = "house.safetensors", *,
           with_csrf: bool = True):
    form = {"name": name, "model": "wan-tiny", "default_scale": "0.8",
            **({"csrf_token": person.csrf} if with_csrf else {})}
    return person.client.post("/styles", data=form, headers=person.headers, follow_redirects=False,
                              files={"file": (filename, data, "application/octet-stream")})


def start(person: Person, files=RED_DATASET, **fields):
    form = {"name": "look", "model": "wan-tiny", "steps": "", "rank": "", "learning_rate": "", "seed": "3",
            "caption": "a red brand scene", "default_scale": "1.0", "csrf_token": person.csrf, **fields}
    return person.client.post("/trainings", data=form, headers=person.headers, follow_redirects=False,
                              files={"dataset": ("looks.zip", dataset(files), "application/zip")})


def test_styles_are_uploaded_downloaded_and_deleted_from_the_page(client):
    ctx = client.app.state.ctx
    tenant, other_tenant = new_tenant(ctx.sessions, tokens=100_000), new_tenant(ctx.sessions, tokens=100_000)
    member, viewer = Person(client, "member", tenant), Person(client, "viewer", tenant)
    stranger = Person(client, "owner", other_tenant)
    assert "No styles yet." in member.get("/styles").text
    # A refusal is said by the field it names, and stores nothing.
    refused = upload(member, pickled(), filename="house.pt")
    assert refused.status_code == 400
    assert re.search(r'id="file-error"[^>]*data-code="not_safetensors"', refused.text)
    assert 'value="house"' in refused.text  # what was typed stays
    assert upload(member, peft_adapter(), with_csrf=False).status_code == 403
    assert client.get("/v1/styles", headers=tenant.headers).json()["data"] == []
    adapter = peft_adapter()
    added = upload(member, adapter)
    assert added.status_code == 201 and "Style “house” was added." in added.text
    assert 'data-style="house"' in added.text
    # Everyone of the tenant downloads it byte for byte; a viewer has no upload form or delete button.
    listed = viewer.get("/styles").text
    assert 'data-style="house"' in listed and 'id="style-form"' not in listed and "/styles/house/delete" not in listed
    downloaded = viewer.get("/styles/house/download")
    assert downloaded.content == adapter
    assert downloaded.headers["x-content-sha256"] == hashlib.sha256(adapter).hexdigest()
    assert upload(viewer, adapter, name="mine").status_code == 403
    assert viewer.post("/styles/house/delete").status_code == 403
    # Another tenant's style is nothing to them.
    assert stranger.get("/styles/house/download").status_code == 404
    assert stranger.post("/styles/house/delete").status_code == 404
    # A queued video uses it: the 409 is said on the page, and the style stays.
    video = client.post("/v1/videos", headers=tenant.headers,
                        json={"prompt": "a lighthouse", "size": "64x64", "seconds": "1", "style": "house"})
    assert video.status_code == 200, video.text
    in_use = member.post("/styles/house/delete")
    assert in_use.status_code == 409 and "cannot be deleted yet" in in_use.text and video.json()["id"] in in_use.text
    client.post(f"/v1/videos/{video.json()['id']}/cancel", headers=tenant.headers)
    assert member.post("/styles/house/delete", with_csrf=False).status_code == 403
    deleted = member.post("/styles/house/delete")
    assert (deleted.status_code, deleted.headers["location"]) == (303, "/styles?deleted=house")
    assert client.get("/v1/styles", headers=tenant.headers).json()["data"] == []
    assert "Style “house” was deleted" in member.get("/styles?deleted=house").text
    assert "风格" in client.get("/styles", headers={**member.headers, "Accept-Language": "zh-CN"}).text


def test_a_training_starts_from_the_page_and_shows_its_progress_curve_and_preview(client):
    ctx = client.app.state.ctx
    tenant = new_tenant(ctx.sessions, tokens=100_000)
    owner, viewer = Person(client, "owner", tenant), Person(client, "viewer", tenant)
    stranger = Person(client, "owner", new_tenant(ctx.sessions, tokens=100_000))
    page = owner.get("/trainings").text
    assert 'id="training-form"' in page and 'placeholder="40"' in page  # wan-tiny's default steps
    assert 'id="training-form"' not in viewer.get("/trainings").text
    # Refusals by field; nothing held.
    bad_zip = owner.client.post("/trainings", headers=owner.headers, follow_redirects=False,
                                data={"name": "look", "model": "wan-tiny", "csrf_token": owner.csrf},
                                files={"dataset": ("looks.zip", b"not a zip", "application/zip")})
    assert bad_zip.status_code == 400 and re.search(r'id="dataset-error"[^>]*data-code="invalid_dataset"', bad_zip.text)
    too_long = start(owner, steps="999999")
    assert too_long.status_code == 400 and re.search(r'id="steps-error"[^>]*data-code="invalid_value"', too_long.text)
    assert start(owner, csrf_token="wrong").status_code == 403
    assert start(viewer).status_code == 403
    assert client.get("/v1/styles/train", headers=tenant.headers).json()["data"] == []
    # Started with the defaults but for the steps.
    started = start(owner, steps="12")
    assert started.status_code == 303, started.text
    training_id = started.headers["location"].rsplit("/", 1)[1]
    shown = viewer.get(f"/trainings/{training_id}").text
    assert f'sse-connect="/v1/styles/train/{training_id}/events"' in shown and 'data-status="queued"' in shown
    assert f'data-training="{training_id}"' in viewer.get("/trainings").text
    assert stranger.get(f"/trainings/{training_id}").status_code == 404
    assert stranger.get(f"/trainings/{training_id}/status").status_code == 404
    assert client.get(f"/v1/styles/train/{training_id}/events", headers=stranger.tenant.headers).status_code == 404
    # Trained: the panel shows the last step and loss, the curve and the preview clip.
    assert Worker(ctx.settings, ctx.sessions, ctx.storage, worker_id="w").run_once()
    panel = viewer.get(f"/trainings/{training_id}/status").text
    assert 'data-status="completed"' in panel and "12 / 12" in panel and 'id="loss-curve"' in panel
    assert len(re.search(r'points="([^"]+)"', panel).group(1).split()) == 12
    preview = viewer.get(f"/trainings/{training_id}/preview")
    assert preview.status_code == 200 and preview.headers["content-type"] == "video/mp4"
    assert preview.headers["x-content-sha256"] == hashlib.sha256(preview.content).hexdigest()
    assert stranger.get(f"/trainings/{training_id}/preview").status_code == 404
    # Its event stream ends now that it has ended, after its progress.
    stream = client.get(f"/v1/styles/train/{training_id}/events", headers=tenant.headers).text
    assert "event: video.progress" in stream and stream.rstrip().endswith("event: end\ndata: {}")
