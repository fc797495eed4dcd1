"""What clients written for OpenAI's video API rely on: request ids, status codes, headers, pagination,
models and sizes, preview formats; through the official `openai` SDK where it has a call for it."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
import uuid

import av
import openai
import pytest
from fastapi.testclient import TestClient
from openai import OpenAI
from PIL import Image
from pydantic import ValidationError
from sqlalchemy import select

from vidfactory.api.app import create_app
from vidfactory.db.models import Asset, Plan
from vidfactory.jobs.worker import Worker
from vidfactory.jobs.spec import InvalidRequest, parse_size
from vidfactory.observability.requests import request_log
from vidfactory.settings import ModelConfig, Settings
from vidfactory.tenancy import create_plan, plan_fields

from conftest import make_settings, new_tenant

small = {"size": "64x64", "seconds": "1"}


def request_lines(caplog) -> list[dict]:
    return [json.loads(record.getMessage()) for record in caplog.records if record.name == request_log.name]


def test_every_response_carries_a_request_id_and_one_json_log_line(client, ctx, caplog):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    caplog.set_level(logging.INFO, logger=request_log.name)
    created = client.post("/v1/videos", headers=tenant.headers, json={"prompt": "a fox", **small})
    missing = client.get("/v1/videos/video_missing", headers=tenant.headers)
    unauthenticated = client.get("/v1/videos")
    no_route = client.get("/v1/nowhere")
    responses = [created, missing, unauthenticated, no_route]
    ids = [response.headers["x-request-id"] for response in responses]
    assert all(i.startswith("req_") for i in ids) and len(set(ids)) == len(ids)
    lines = request_lines(caplog)
    assert [(line["request_id"], line["status"]) for line in lines] == [
        (i, r.status_code) for i, r in zip(ids, responses)]
    assert [line["tenant"] for line in lines] == [tenant.id, tenant.id, None, None]
    # The route's template, so that ids do not split the aggregate; the method and a duration.
    assert [line["route"] for line in lines] == ["/v1/videos", "/v1/videos/{video_id}", "/v1/videos",
                                                 "/v1/nowhere"]
    assert lines[0]["method"] == "POST" and all(line["duration_ms"] >= 0 for line in lines)
    assert tenant.key not in caplog.text


def test_a_callers_request_id_is_echoed_and_a_malformed_one_replaced(client, ctx):
    tenant = new_tenant(ctx.sessions)
    sent = "3f1c2a9e-6b7d-4e0f-9a1b-2c3d4e5f6a7b"
    echoed = client.get("/v1/balance", headers={**tenant.headers, "X-Request-Id": sent})
    assert echoed.headers["x-request-id"] == sent
    for bad in ("has spaces in it", "x" * 129, 'quote"d'):
        replaced = client.get("/v1/balance", headers={**tenant.headers, "X-Request-Id": bad})
        assert replaced.status_code == 200 and replaced.headers["x-request-id"].startswith("req_")


def test_an_unexpected_failure_answers_the_envelope_with_its_request_id(tmp_path, database_url, models_dir,
                                                                         caplog):
    app = create_app(make_settings(tmp_path, database_url, models_dir), workers=0)

    @app.get("/v1/broken")
    def broken() -> None:
        raise RuntimeError("a bug")

    caplog.set_level(logging.INFO, logger=request_log.name)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/v1/broken", headers={"X-Request-Id": "trace-42"})
    assert response.status_code == 500 and response.headers["x-request-id"] == "trace-42"
    assert response.json()["error"]["code"] == "internal_error" and "a bug" not in response.text
    assert [(line["request_id"], line["status"]) for line in request_lines(caplog)] == [("trace-42", 500)]


@pytest.fixture
def served(tmp_path, database_url, models_dir):
    """The app as `serve` runs it: one in-process worker; pollers told to come back after 50 ms."""
    settings = make_settings(tmp_path, database_url, models_dir, poll_after_ms=50)
    with TestClient(create_app(settings, workers=1)) as client:
        yield client


def sdk_for(client: TestClient, tenant) -> OpenAI:
    return OpenAI(base_url="http://testserver/v1", api_key=tenant.key, http_client=client, max_retries=0)


def test_create_and_remix_answer_200_and_tell_pollers_when_to_come_back(served):
    ctx = served.app.state.ctx
    tenant = new_tenant(ctx.sessions, tokens=50_000)
    sdk = sdk_for(served, tenant)
    raw = sdk.videos.with_raw_response.create(prompt="a paper boat", model="wan-tiny", seconds="1", size="64x64")
    assert raw.status_code == 200 and raw.headers["openai-poll-after-ms"] == "50"
    assert raw.parse().status == "queued"
    served.post(f"/v1/videos/{raw.parse().id}/cancel", headers=tenant.headers)  # one clip to wait for is enough
    # create_and_poll waits as told and returns the finished video.
    video = sdk.videos.create_and_poll(prompt="a paper boat on a lake", model="wan-tiny", seconds="1", size="64x64")
    assert (video.status, video.progress) == ("completed", 100)
    done = sdk.videos.with_raw_response.retrieve(video.id)
    assert "openai-poll-after-ms" not in done.headers
    remix = sdk.videos.with_raw_response.remix(video.id, prompt="a paper boat at night")
    assert remix.status_code == 200 and remix.headers["openai-poll-after-ms"] == "50"
    assert remix.parse().remixed_from_video_id == video.id
    finished = sdk.videos.poll(remix.parse().id)
    assert finished.status == "completed" and finished.prompt == "a paper boat at night"


def test_remix_takes_a_form_as_the_spec_allows(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=50_000)
    parent = client.post("/v1/videos", headers=tenant.headers, json={"prompt": "a red kite", **small}).json()
    key = {"Idempotency-Key": "remix-once"}
    as_form = client.post(f"/v1/videos/{parent['id']}/remix", headers={**tenant.headers, **key},
                          files={"prompt": (None, "a blue kite")})
    assert as_form.status_code == 200, as_form.text
    assert (as_form.json()["prompt"], as_form.json()["remixed_from_video_id"]) == ("a blue kite", parent["id"])
    # The same remix sent as JSON under the same key is the same request: replayed, not a second job.
    as_json = client.post(f"/v1/videos/{parent['id']}/remix", headers={**tenant.headers, **key},
                          json={"prompt": "a blue kite"})
    assert as_json.headers["idempotent-replayed"] == "true" and as_json.json()["id"] == as_form.json()["id"]
    urlencoded = client.post(f"/v1/videos/{parent['id']}/remix", headers=tenant.headers, data={"prompt": "a kite"})
    assert urlencoded.status_code == 200, urlencoded.text
    pending = client.get("/v1/balance", headers=tenant.headers).json()["pending"]
    refused = [
        client.post(f"/v1/videos/{parent['id']}/remix", headers=tenant.headers,
                    files={"prompt": ("p.txt", b"a kite", "text/plain")}),
        client.post(f"/v1/videos/{parent['id']}/remix", headers=tenant.headers, files={"prompt": (None, " ")}),
        client.post(f"/v1/videos/{parent['id']}/remix", headers=tenant.headers,
                    files={"prompt": (None, "a kite"), "seed": (None, "3")}),
        client.post(f"/v1/videos/{parent['id']}/remix", headers=tenant.headers, content=b"prompt",
                    ), ]
    assert [(r.status_code, r.json()["error"]["param"]) for r in refused] == [
        (400, "prompt"), (400, "prompt"), (400, "seed"), (415, None)]
    assert client.get("/v1/balance", headers=tenant.headers).json()["pending"] == pending


def test_listing_pages_on_after_a_deleted_cursor_and_takes_limit_zero(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=50_000)
    sdk = sdk_for(client, tenant)
    made = [client.post("/v1/videos", headers=tenant.headers, json={"prompt": f"a fox {i}", **small}).json()["id"]
            for i in range(4)]
    first_page = sdk.videos.list(limit=2)
    assert [v.id for v in first_page.data] == made[:1:-1] and first_page.has_more
    # The page's last video is deleted before the next page is asked for: the cursor keeps its place.
    cursor = first_page.data[-1].id
    assert client.delete(f"/v1/videos/{cursor}", headers=tenant.headers).status_code == 200
    next_page = sdk.videos.list(limit=2, after=cursor)
    assert [v.id for v in next_page.data] == made[1::-1] and not next_page.has_more
    assert [v.id for v in sdk.videos.list(order="asc", after=cursor).data] == [made[3]]
    # A cursor that is another tenant's (or never existed) still names nothing.
    stranger = new_tenant(ctx.sessions)
    hidden = client.get(f"/v1/videos?after={made[0]}", headers=stranger.headers)
    assert hidden.status_code == 404 and hidden.json()["error"]["param"] == "after"
    empty = client.get("/v1/videos?limit=0", headers=tenant.headers).json()
    assert (empty["data"], empty["first_id"], empty["last_id"], empty["has_more"]) == ([], None, None, True)
    assert client.get("/v1/videos?limit=0", headers=stranger.headers).json()["has_more"] is False
    assert client.get("/v1/videos?limit=-1", headers=tenant.headers).status_code == 400


def test_models_can_be_retrieved_one_by_one_with_when_they_were_first_served(tmp_path, database_url, models_dir):
    settings = make_settings(tmp_path, database_url, models_dir)
    with TestClient(create_app(settings, workers=0)) as client:
        tenant = new_tenant(client.app.state.ctx.sessions)
        sdk = sdk_for(client, tenant)
        model = sdk.models.retrieve("wan-tiny")
        listed = sdk.models.list().data
        with pytest.raises(openai.NotFoundError) as missing:
            sdk.models.retrieve("sora-3")
    assert (model.id, model.object, model.owned_by) == ("wan-tiny", "model", "vidfactory")
    assert abs(model.created - time.time()) < 600
    assert [m.id for m in listed] == [m.id for m in settings.models]
    assert ("wan-tiny", model.created) in [(m.id, m.created) for m in listed]
    assert missing.value.body["code"] == "not_found"
    # A restart (another replica, an upgrade) keeps the date.
    time.sleep(1)
    with TestClient(create_app(settings, workers=0)) as client:
        again = sdk_for(client, tenant).models.retrieve("wan-tiny")
    assert again.created == model.created


def test_openai_sizes_map_to_the_models_nearest_supported_size():
    wide = ModelConfig(id="wan-720p", engine="wan-tiny", size_max_px=1280)
    narrow = ModelConfig(id="wan-480p", engine="wan-tiny", size_max_px=832)
    assert parse_size("720x1280", wide) == (720, 1280)  # made exactly where the model can
    assert parse_size("1792x1024", wide) == (1280, 736)
    assert parse_size("1024x1792", wide) == (736, 1280)
    assert parse_size("1280x720", narrow) == (832, 464)
    assert parse_size("720x1280", narrow) == (464, 832)
    large = ModelConfig(id="big", engine="wan-tiny", size_min_px=1024, size_max_px=2048, size_multiple_px=32)
    assert parse_size("1280x720", large) == (1824, 1024)  # scaled up until the short side fits
    with pytest.raises(InvalidRequest):  # any other size the model cannot make is still refused
        parse_size("1800x1024", wide)


def test_aliases_must_name_a_configured_model():
    with pytest.raises(ValidationError, match="'sora-2' names 'wan-14b', which is not a configured model"):
        Settings(data_dir="unused", model_aliases={"sora-2": "wan-14b"})
    with pytest.raises(ValidationError, match="'wan-tiny' is a configured model's own id"):
        Settings(data_dir="unused", model_aliases={"wan-tiny": "wan-tiny"})


def test_sora_names_and_sizes_are_made_by_the_configured_model(tmp_path, database_url, models_dir):
    settings = make_settings(tmp_path, database_url, models_dir, poll_after_ms=50,
                             models=[ModelConfig(id="wan-tiny", engine="wan-tiny", size_max_px=128)],
                             model_aliases={"sora-2": "wan-tiny", "sora-2-pro": "wan-tiny", "house-style": "wan-tiny"})
    with TestClient(create_app(settings, workers=1)) as client:
        tenant = new_tenant(client.app.state.ctx.sessions, tokens=50_000)
        sdk = sdk_for(client, tenant)
        quote = client.post("/v1/quotes", headers=tenant.headers,
                            json={"prompt": "a lighthouse", "model": "sora-2-pro", "size": "1024x1792"}).json()
        exact = client.post("/v1/quotes", headers=tenant.headers,
                            json={"prompt": "a lighthouse", "model": "wan-tiny", "size": "80x128"}).json()
        video = sdk.videos.create_and_poll(prompt="a lighthouse at dusk", model="sora-2", size="1792x1024",
                                           seconds="1")
        clip = sdk.videos.download_content(video.id).content
        model = sdk.models.retrieve("house-style")
    assert (quote["model"], quote["total_tokens"]) == ("wan-tiny", exact["total_tokens"])
    assert quote["warnings"] == ["model sora-2-pro is served by wan-tiny",
                                 "size 1024x1792 is made at 80x128, the nearest size model wan-tiny supports"]
    # The video says what was made, and was made so.
    assert (video.status, video.model, video.size) == ("completed", "wan-tiny", "128x80")
    assert video.model_extra["warnings"] == [
        "model sora-2 is served by wan-tiny",
        "size 1792x1024 is made at 128x80, the nearest size model wan-tiny supports"]
    with av.open(io.BytesIO(clip)) as container:
        assert (container.streams.video[0].width, container.streams.video[0].height) == (128, 80)
    assert (model.id, model.model_extra["aliases"]) == ("wan-tiny", ["house-style", "sora-2", "sora-2-pro"])


def test_previews_are_webp_as_openai_serves_them_and_jpeg_on_request(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    video = client.post("/v1/videos", headers=tenant.headers, json={"prompt": "a lantern", **small}).json()
    assert Worker(ctx.settings, ctx.sessions, ctx.storage, worker_id="test-worker").run_once()
    hashes = client.get(f"/v1/videos/{video['id']}", headers=tenant.headers).json()["hashes"]
    sdk = sdk_for(client, tenant)
    for variant in ("thumbnail", "spritesheet"):
        webp = sdk.videos.download_content(video["id"], variant=variant)
        assert webp.response.headers["content-type"] == "image/webp"
        assert Image.open(io.BytesIO(webp.content)).format == "WEBP"
        # What is served is what is stored: its hash is the one the video lists (and verify finds).
        assert hashlib.sha256(webp.content).hexdigest() == hashes[variant]["sha256"]
        jpeg = client.get(f"/v1/videos/{video['id']}/content?variant={variant}",
                          headers={**tenant.headers, "Accept": "image/jpeg"})
        assert jpeg.headers["content-type"] == "image/jpeg" and jpeg.content[:3] == b"\xff\xd8\xff"
        assert Image.open(io.BytesIO(jpeg.content)).size == Image.open(io.BytesIO(webp.content)).size
        assert jpeg.headers["x-content-sha256"] == hashlib.sha256(jpeg.content).hexdigest()
    thumbnail = sdk.videos.download_content(video["id"], variant="thumbnail").content
    found = client.post("/v1/verify", headers=tenant.headers, files={"file": ("t.webp", thumbnail, "image/webp")})
    assert (found.json()["video_id"], found.json()["hashes"]["variant"]) == (video["id"], "thumbnail")
    # A clip whose previews were stored as JPEG, before WebP, is served WebP too.
    with ctx.sessions.begin() as session:
        asset = session.scalar(select(Asset).where(Asset.job_id == video["id"], Asset.variant == "thumbnail"))
        old = Image.open(io.BytesIO(thumbnail)).convert("RGB")
        stored = io.BytesIO()
        old.save(stored, format="JPEG")
        ctx.storage.put(asset.storage_key, stored.getvalue())
        asset.content_type = "image/jpeg"
    served = client.get(f"/v1/videos/{video['id']}/content?variant=thumbnail", headers=tenant.headers)
    assert served.headers["content-type"] == "image/webp" and Image.open(io.BytesIO(served.content)).size == old.size


def plan_like_free(sessions, **limits) -> str:
    plan_id = f"p{uuid.uuid4().hex[:8]}"
    with sessions.begin() as session:
        free = session.get(Plan, "free")
        create_plan(session, plan_id, {field: getattr(free, field) for field in plan_fields} | limits)
    return plan_id


def quota_of(response) -> tuple[int, int, float]:
    headers = response.headers
    reset = headers["x-ratelimit-reset-requests"]
    assert reset.endswith("s"), reset
    return (int(headers["x-ratelimit-limit-requests"]), int(headers["x-ratelimit-remaining-requests"]),
            float(reset[:-1]))


def test_ratelimit_headers_report_the_budget_each_request_spent(client, ctx):
    plan = plan_like_free(ctx.sessions, requests_per_minute=2, tenant_requests_per_minute=10,
                          read_requests_per_minute=5, tenant_read_requests_per_minute=4)
    tenant = new_tenant(ctx.sessions, tokens=10_000, plan=plan)
    sdk = sdk_for(client, tenant)
    # Reads: the tighter of the key's 5 and the tenant's 4 a minute.
    reads = [sdk.videos.with_raw_response.list(), sdk.models.with_raw_response.list()]
    assert [quota_of(r)[:2] for r in reads] == [(4, 3), (4, 2)]
    assert 59 <= quota_of(reads[-1])[2] <= 60
    # Writes spend their own budget (2 a minute per key), also on an answer that is an error.
    body = {"prompt": "a kite", **small}
    writes = [client.post("/v1/quotes", headers=tenant.headers, json=body),
              client.post("/v1/quotes", headers=tenant.headers, json={"prompt": ""}),
              client.post("/v1/quotes", headers=tenant.headers, json=body)]
    assert [w.status_code for w in writes] == [200, 400, 429]
    assert [quota_of(w)[:2] for w in writes] == [(2, 1), (2, 0), (2, 0)]
    assert writes[-1].headers["retry-after"] and "x-request-id" in writes[-1].headers
    # Nothing counted, nothing reported: the operator's routes and unauthenticated requests.
    admin = client.get("/v1/admin/plans", headers={"Authorization": "Bearer test-admin-token"})
    assert admin.status_code == 200 and "x-ratelimit-limit-requests" not in admin.headers
    assert "x-ratelimit-limit-requests" not in client.get("/v1/videos").headers
