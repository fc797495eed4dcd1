"""The review desk without a browser: a reviewer sees why a prompt is held (the matched term: operators may
read it), rejects it with a note its owner then reads, or approves it; a note is required to reject, the
desk is for operators and reviewers only, and a decision posted without its CSRF token is refused. A held
clip shows its quality scores, its NSFW score and the frame that tripped it, to reviewers only."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from fastapi.testclient import TestClient

from vidfactory.accounts import PasswordHasher, create_user, csrf_token, session_cookie, sign_in
from vidfactory.api.app import create_app
from vidfactory.db.types import utcnow
from vidfactory.jobs import queue
from vidfactory.media.encode import encode_mp4
from vidfactory.media.preview import spritesheet_image

from conftest import make_settings, new_tenant

password = "correct horse battery"
held_prompt = "a nude marble statue in a museum"


@pytest.fixture
def client(tmp_path, database_url, models_dir):
    settings = make_settings(tmp_path, database_url, models_dir, password_hash_time_cost=1,
                             password_hash_memory_kib=1024)
    with TestClient(create_app(settings, workers=0)) as test_client:
        yield test_client


def _signed_in(client: TestClient, role: str, tenant_id: str | None = None) -> tuple[dict[str, str], str]:
    ctx = client.app.state.ctx
    hasher = PasswordHasher.from_settings(ctx.settings)
    email = f"{role}-{uuid.uuid4().hex[:8]}@example.com"
    with ctx.sessions.begin() as session:
        create_user(session, hasher, email, role, password, tenant_id)
    with ctx.sessions.begin() as session:
        token = sign_in(session, hasher, email, password, ttl_s=3600, failures_max=5).token
    return {"Cookie": f"{session_cookie}={token}"}, csrf_token(token)


def _held(client: TestClient, tenant) -> str:
    created = client.post("/v1/videos", headers=tenant.headers,
                          json={"prompt": held_prompt, "size": "64x64", "seconds": "1"})
    assert created.status_code == 200, created.text
    assert created.json()["review"]["status"] == "pending"
    return created.json()["id"]


def test_a_reviewer_rejects_with_a_note_that_the_owner_reads(client):
    tenant = new_tenant(client.app.state.ctx.sessions, tokens=1_000_000)
    first, second = _held(client, tenant), _held(client, tenant)
    reviewer, token = _signed_in(client, "reviewer")
    desk = client.get("/review", headers=reviewer)
    assert desk.status_code == 200
    assert f'id="review-{first}"' in desk.text and f'id="review-{second}"' in desk.text
    assert "prompt matched" in desk.text and "nude" in desk.text  # the term, for the reviewer only
    assert "/static/review-keys.js" in desk.text

    refused = client.post(f"/review/{first}/reject", data={"csrf_token": token, "note": "  "}, headers=reviewer)
    assert refused.status_code == 400 and f'id="note-error-{first}"' in refused.text
    assert client.get(f"/v1/videos/{first}", headers=tenant.headers).json()["review"]["status"] == "pending"
    no_token = client.post(f"/review/{first}/reject", data={"note": "no"}, headers=reviewer, follow_redirects=False)
    assert no_token.status_code == 403

    note = "Nudity is not allowed on this platform"
    rejected = client.post(f"/review/{first}/reject", data={"csrf_token": token, "note": note}, headers=reviewer,
                           follow_redirects=False)
    assert rejected.status_code == 303
    video = client.get(f"/v1/videos/{first}", headers=tenant.headers).json()
    assert video["status"] == "failed" and video["error"] == {"code": "content_rejected", "message": note}
    owner, _ = _signed_in(client, "owner", tenant.id)
    page = client.get(f"/videos/{first}", headers=owner)
    assert "Rejected on review" in page.text and note in page.text

    approved = client.post(f"/review/{second}/approve", data={"csrf_token": token}, headers=reviewer,
                           follow_redirects=False)
    assert approved.status_code == 303
    assert client.get(f"/v1/videos/{second}", headers=tenant.headers).json()["review"]["status"] == "approved"
    assert "Nothing is waiting for review." in client.get("/review", headers=reviewer).text
    again = client.post(f"/review/{second}/approve", data={"csrf_token": token}, headers=reviewer)
    assert again.status_code == 404  # decided already


def test_the_desk_and_its_frames_are_for_operators_and_reviewers_only(client):
    tenant = new_tenant(client.app.state.ctx.sessions, tokens=1_000_000)
    video_id = _held(client, tenant)
    owner, token = _signed_in(client, "owner", tenant.id)
    assert client.get("/review", headers=owner).status_code == 403
    assert client.post(f"/review/{video_id}/reject", data={"csrf_token": token, "note": "mine"},
                       headers=owner).status_code == 403
    for path in ("preview/spritesheet", "frame/0"):
        assert client.get(f"/review/{video_id}/{path}", headers=owner).status_code == 403
    operator, _ = _signed_in(client, "operator")
    assert client.get("/review", headers=operator).status_code == 200
    # A held prompt has no clip yet: nothing to show.
    assert client.get(f"/review/{video_id}/preview/spritesheet", headers=operator).status_code == 404
    assert client.get(f"/v1/videos/{video_id}", headers=tenant.headers).json()["review"]["status"] == "pending"


def test_a_held_clip_shows_its_scores_and_the_frame_that_tripped_it_to_reviewers_only(client):
    ctx = client.app.state.ctx
    tenant = new_tenant(ctx.sessions, tokens=1_000_000)
    video_id = client.post("/v1/videos", headers=tenant.headers,
                           json={"prompt": "a lighthouse", "size": "64x64", "seconds": "1"}).json()["id"]
    frames = np.stack([np.full((64, 64, 3), 20 * index, np.uint8) for index in range(8)])
    files = []
    for variant, data, content_type in (("video", encode_mp4(frames, 8), "video/mp4"),
                                        ("spritesheet", spritesheet_image(frames), "image/webp")):
        ctx.storage.put(f"held/{video_id}/{variant}", data, content_type=content_type)
        files.append(queue.AssetRecord(variant, f"held/{video_id}/{variant}", content_type, len(data), "ab"))
    qc = {"verdict": "flag", "checks": [{"name": "flicker", "score": 0.31, "threshold": 0.2, "verdict": "flag",
                                         "detail": ""}]}
    with ctx.sessions.begin() as session:
        job = queue.claim(session, worker_id="w1", models=[ctx.settings.models[0].id], lease_s=30, now=utcnow())
        assert job.id == video_id
        queue.record_qc(session, video_id, "w1", qc)
        queue.hold_for_review(session, job, "w1", files, queue.Review(
            "output_safety", "output_safety: frame 3 scored 0.912 on open_nsfw (threshold 0.80, 8 frames sampled); "
                             "qc: flicker flag: score 0.31 (threshold 0.2)"))
    reviewer, _ = _signed_in(client, "reviewer")
    desk = client.get("/review", headers=reviewer).text
    assert "0.912" in desk and "<td>flicker</td><td>0.31</td>" in desk
    assert f'src="/review/{video_id}/frame/3"' in desk and f'src="/review/{video_id}/preview/spritesheet"' in desk
    frame = client.get(f"/review/{video_id}/frame/3", headers=reviewer)
    assert frame.status_code == 200 and frame.headers["content-type"] == "image/webp" and frame.content[8:12] == b"WEBP"
    assert client.get(f"/review/{video_id}/frame/8", headers=reviewer).status_code == 404
    assert client.get(f"/review/{video_id}/preview/spritesheet", headers=reviewer).status_code == 200
    owner, _ = _signed_in(client, "owner", tenant.id)
    assert client.get(f"/review/{video_id}/frame/3", headers=owner).status_code == 403
    assert client.get(f"/videos/{video_id}/file?variant=video", headers=owner).status_code == 404
    assert "waiting for a review" in client.get(f"/videos/{video_id}", headers=owner).text
