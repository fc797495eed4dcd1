"""The /v1 API end to end on SQLite and PostgreSQL: quote, hold, generate with the tiny Wan pipeline,
settle, download; errors in one envelope; nothing held for a rejected request."""

import io
import threading

import av
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from vidfactory.api.app import create_app
from vidfactory.jobs.worker import Worker

from vidfactory.tenancy import update_plan

from conftest import assert_ledger_clean, new_tenant

small = {"size": "64x64", "seconds": "1"}


def work(ctx, jobs=1):
    worker = Worker(ctx.settings, ctx.sessions, ctx.storage, worker_id="test-worker")
    for _ in range(jobs):
        assert worker.run_once()


def balance(client, tenant):
    return client.get("/v1/balance", headers=tenant.headers).json()


def error_of(response):
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "type", "param"}
    return body["error"]


def test_submit_generate_settle_download(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    created = client.post("/v1/videos", headers=tenant.headers, json={"prompt": "a red fox in snow", **small})
    assert created.status_code == 200, created.text
    video = created.json()
    assert video["status"] == "queued" and video["object"] == "video" and video["size"] == "64x64"
    usage, billing = video["usage"], video["billing"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert usage["output_tokens"] == usage["input_tokens"] * 2  # ratio method, 480p tier, ≤5 s: k = 2
    assert billing == {"price_book_version": 1, "held": usage["total_tokens"], "settled": None,
                       "released": None, "status": "held"}
    assert balance(client, tenant) == {"object": "balance", "available": 10_000 - usage["total_tokens"],
                                       "pending": usage["total_tokens"], "posted": 10_000}
    assert (video["engine_settings"], video["model_load_s"]) == (None, None)  # nothing ran yet
    work(ctx)
    done = client.get(f"/v1/videos/{video['id']}", headers=tenant.headers).json()
    assert (done["status"], done["progress"]) == ("completed", 100)
    # How it was made: the memory mode and step cache that ran (no permission the plan grants), and the
    # load of the model this first job paid.
    ran = done["engine_settings"]
    assert (ran["memory_mode"], ran["step_cache"]) == ("none", "none") and "step_cache_allowed" not in ran
    assert all(isinstance(value, str | bool | int | float) for value in ran.values())
    assert done["model_load_s"] > 0
    assert done["billing"]["status"] == "settled" and done["billing"]["settled"] == usage["total_tokens"]
    assert balance(client, tenant)["available"] == 10_000 - usage["total_tokens"]
    mp4 = client.get(f"/v1/videos/{video['id']}/content", headers=tenant.headers)
    assert mp4.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(mp4.content)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.width, stream.height) == ("h264", 64, 64)
        assert sum(1 for _ in container.decode(video=0)) == 9  # 1 s × 8 fps → 4k+1 = 9 frames
    thumb = client.get(f"/v1/videos/{video['id']}/content?variant=thumbnail", headers=tenant.headers)
    assert thumb.headers["content-type"] == "image/webp" and Image.open(io.BytesIO(thumb.content)).size == (64, 64)
    kinds = [t["kind"] for t in client.get("/v1/ledger", headers=tenant.headers).json()["data"]]
    assert kinds == ["credit", "hold", "post"]
    assert_ledger_clean(ctx.sessions)


def test_a_submission_answers_with_the_video_a_read_then_shows(client, ctx):
    """The answer is rendered from what the submitting transaction knows (no hold resolution or file can
    exist yet): a read right after agrees field by field, for a new clip and for a result-cache hit."""
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    body = {"prompt": "a lighthouse in fog", "seed": 7, **small}
    answers = []
    for _ in range(2):
        created = client.post("/v1/videos", headers=tenant.headers, json=body)
        assert created.status_code == 200, created.text
        answers.append(created.json())
        read = client.get(f"/v1/videos/{answers[-1]['id']}", headers=tenant.headers)
        assert read.json() == answers[-1]
        work(ctx)
    assert answers[0]["cache_hit"] is None and answers[1]["cache_hit"]["video_id"] == answers[0]["id"]
    assert [a["billing"]["status"] for a in answers] == ["held", "held"]


def test_quote_matches_the_hold_and_creates_nothing(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    body = {"prompt": "城市夜景，霓虹灯下的雨", "size": "1280x720", "seconds": "30"}
    quote = client.post("/v1/quotes", headers=tenant.headers, json=body).json()
    assert quote["object"] == "quote" and quote["method"] == "ratio" and quote["price_book_version"] == 1
    assert quote["output_tokens"] == quote["input_tokens"] * 8  # k = 8 for 720p/30 s
    assert quote["amount"] == {"currency": "CNY", "value": f"{quote['total_tokens'] / 1000:.3f}"}
    assert balance(client, tenant)["pending"] == 0
    assert client.get("/v1/videos", headers=tenant.headers).json()["data"] == []
    video = client.post("/v1/videos", headers=tenant.headers, json={**body, "seconds": "1", "size": "64x64"})
    assert video.json()["usage"]["input_tokens"] == quote["input_tokens"]


def test_long_prompt_is_truncated_with_a_warning(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=100_000)
    prompt = "snow fox " * 400  # 3,600 characters; 801 tokens once cleaned as the pipeline cleans it
    video = client.post("/v1/videos", headers=tenant.headers, json={"prompt": prompt, **small}).json()
    assert video["usage"]["input_tokens"] == 512
    assert "prompt truncated to 512 tokens (it had 801)" in video["warnings"]
    assert prompt.startswith(video["prompt"]) and len(video["prompt"]) < len(prompt)
    chinese = "红狐狸在雪地里奔跑，" * 300  # cut at a character boundary, never inside one
    cut = client.post("/v1/videos", headers=tenant.headers, json={"prompt": chinese, **small}).json()
    assert 508 <= cut["usage"]["input_tokens"] <= 512 and chinese.startswith(cut["prompt"])


def test_insufficient_balance_is_402_and_holds_nothing(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=5)
    response = client.post("/v1/videos", headers=tenant.headers, json={"prompt": "a cat", **small})
    assert response.status_code == 402
    error = error_of(response)
    assert error["code"] == "insufficient_balance" and "5 are available" in error["message"]
    assert balance(client, tenant) == {"object": "balance", "available": 5, "pending": 0, "posted": 5}
    assert client.get("/v1/videos", headers=tenant.headers).json()["data"] == []


@pytest.mark.parametrize(("body", "param"), [
    ({"prompt": "a cat", "model": "sora-2"}, "model"),
    ({"prompt": "a cat", "size": "100x100"}, "size"),
    ({"prompt": "a cat", "size": "huge"}, "size"),
    ({"prompt": "a cat", "seconds": "31"}, "seconds"),
    ({"prompt": "a cat", "seconds": "0"}, "seconds"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": "   "}, "prompt"),
    ({"prompt": "x" * 4001}, "prompt"),
    ({"prompt": "a cat\x00 with a null"}, "prompt"),
    ({"prompt": "a cat", "seed": -1}, "seed"),
    ({"prompt": "a cat", "colour": "red"}, "colour"),
    ({}, "prompt"),
])
def test_bad_parameters_are_400_with_param_and_change_nothing(client, ctx, body, param):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    response = client.post("/v1/videos", headers=tenant.headers, json=body)
    assert response.status_code == 400, response.text
    assert error_of(response)["param"] == param
    assert balance(client, tenant)["available"] == 10_000


@pytest.mark.parametrize("metadata", [{"campaign": "spring\x00"}, {"campaign": "\x1b[31mred"},
                                      {"camp\x07aign": "spring"}, {"campaign": "line\x85next"}])
def test_metadata_with_control_characters_is_400_and_changes_nothing(client, ctx, metadata):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    response = client.post("/v1/videos", headers=tenant.headers, json={"prompt": "a cat", **small,
                                                                       "metadata": metadata})
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["param"].startswith("metadata") and "control characters" in error["message"]
    assert balance(client, tenant)["available"] == 10_000


def test_idempotent_replay_and_conflict(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    headers = {**tenant.headers, "Idempotency-Key": "order-42"}
    first = client.post("/v1/videos", headers=headers, json={"prompt": "a cat", **small})
    again = client.post("/v1/videos", headers=headers, json={"prompt": "a cat", **small})
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    conflict = client.post("/v1/videos", headers=headers, json={"prompt": "a dog", **small})
    assert conflict.status_code == 409 and error_of(conflict)["code"] == "idempotency_conflict"
    assert balance(client, tenant)["pending"] == first.json()["usage"]["total_tokens"]
    assert len(client.get("/v1/videos", headers=tenant.headers).json()["data"]) == 1


def test_other_tenants_objects_are_404(client, ctx):
    owner = new_tenant(ctx.sessions, tokens=10_000)
    stranger = new_tenant(ctx.sessions, tokens=10_000)
    video = client.post("/v1/videos", headers=owner.headers, json={"prompt": "a cat", **small}).json()
    work(ctx)
    for method, path in [("get", ""), ("get", "/content"), ("post", "/cancel"), ("delete", "")]:
        response = client.request(method, f"/v1/videos/{video['id']}{path}", headers=stranger.headers)
        assert response.status_code == 404 and error_of(response)["code"] == "not_found"
    assert client.get("/v1/videos", headers=stranger.headers).json()["data"] == []
    assert client.get(f"/v1/videos/{video['id']}", headers=owner.headers).status_code == 200


def test_auth_errors(client, ctx):
    assert error_of(client.get("/v1/balance"))["code"] == "missing_api_key"
    bad = client.get("/v1/balance", headers={"Authorization": "Bearer vf_nope"})
    assert bad.status_code == 401 and error_of(bad)["code"] == "invalid_api_key"


def test_rate_limit_is_429_with_retry_after(client, ctx):
    with ctx.sessions.begin() as session:
        update_plan(session, "free", {"read_requests_per_minute": 30, "tenant_read_requests_per_minute": 60})
    tenant = new_tenant(ctx.sessions, tokens=10, plan="free")  # 30 reads per minute
    statuses = [client.get("/v1/balance", headers=tenant.headers).status_code for _ in range(31)]
    assert statuses[:30] == [200] * 30 and statuses[30] == 429
    limited = client.get("/v1/balance", headers=tenant.headers)
    assert int(limited.headers["retry-after"]) >= 1 and error_of(limited)["code"] == "rate_limit_exceeded"


def test_oversize_upload_is_413(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=10)
    response = client.post("/v1/videos", headers=tenant.headers,
                           files={"input_reference": ("big.png", b"0" * 10_000_001, "image/png")},
                           data={"prompt": "a cat"})
    assert response.status_code == 413 and error_of(response)["code"] == "request_too_large"


def test_multipart_like_the_openai_sdk(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    response = client.post("/v1/videos", headers=tenant.headers,
                           files={"prompt": (None, "a cat"), "seconds": (None, "1"), "size": (None, "64x64"),
                                  "seed": (None, "7"), "metadata": (None, '{"campaign": "spring"}')})
    assert response.status_code == 200, response.text
    video = response.json()
    assert (video["seed"], video["seconds"], video["metadata"]) == (7, "1", {"campaign": "spring"})


def test_cancel_queued_refunds_and_delete_removes_content(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    queued = client.post("/v1/videos", headers=tenant.headers, json={"prompt": "a cat", **small}).json()
    cancelled = client.post(f"/v1/videos/{queued['id']}/cancel", headers=tenant.headers).json()
    assert cancelled["status"] == "cancelled" and cancelled["billing"]["status"] == "voided"
    assert balance(client, tenant)["available"] == 10_000
    again = client.post(f"/v1/videos/{queued['id']}/cancel", headers=tenant.headers)
    assert again.status_code == 409
    done = client.post("/v1/videos", headers=tenant.headers, json={"prompt": "a dog", **small}).json()
    work(ctx)
    deleted = client.delete(f"/v1/videos/{done['id']}", headers=tenant.headers).json()
    assert deleted == {"id": done["id"], "object": "video.deleted", "deleted": True}
    assert client.get(f"/v1/videos/{done['id']}", headers=tenant.headers).status_code == 404
    assert not list(ctx.storage.list(f"tenants/{tenant.id}/{done['id']}/"))
    assert_ledger_clean(ctx.sessions)


def test_cancel_running_stops_at_the_next_step(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    video = client.post("/v1/videos", headers=tenant.headers, json={"prompt": "a cat", **small}).json()
    worker = Worker(ctx.settings, ctx.sessions, ctx.storage, worker_id="w-cancel")
    engine = worker.engine_for("wan-tiny")
    steps_seen = []
    original = engine.generate

    def generate_and_cancel_after_first_step(request, on_progress, is_cancelled):
        def progress(done, total):
            steps_seen.append(done)
            on_progress(done, total)
            if done == 1:
                client.post(f"/v1/videos/{video['id']}/cancel", headers=tenant.headers)
        return original(request, progress, is_cancelled)

    engine.generate = generate_and_cancel_after_first_step
    assert worker.run_once()
    final = client.get(f"/v1/videos/{video['id']}", headers=tenant.headers).json()
    assert final["status"] == "cancelled" and final["billing"]["status"] == "voided"
    assert steps_seen == [1]  # stopped before step 2 of 4
    assert balance(client, tenant)["available"] == 10_000
    assert_ledger_clean(ctx.sessions)


def test_list_is_paginated_newest_first(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=100_000)
    ids = [client.post("/v1/videos", headers=tenant.headers, json={"prompt": f"clip {i}", **small}).json()["id"]
           for i in range(5)]
    first = client.get("/v1/videos?limit=2", headers=tenant.headers).json()
    assert [v["id"] for v in first["data"]] == ids[::-1][:2] and first["has_more"]
    rest = client.get(f"/v1/videos?limit=10&after={first['last_id']}", headers=tenant.headers).json()
    assert [v["id"] for v in rest["data"]] == ids[::-1][2:] and not rest["has_more"]
    ascending = client.get("/v1/videos?order=asc&limit=10", headers=tenant.headers).json()
    assert [v["id"] for v in ascending["data"]] == ids
    client.post(f"/v1/videos/{ids[0]}/cancel", headers=tenant.headers)
    statuses = {v["id"]: v["billing"]["status"] for v in
                client.get("/v1/videos?limit=10", headers=tenant.headers).json()["data"]}
    assert statuses == {ids[0]: "voided", **{i: "held" for i in ids[1:]}}


def test_models_lists_the_price_book(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=1)
    models = client.get("/v1/models", headers=tenant.headers).json()["data"]
    assert models[0]["id"] == "wan-tiny"
    assert models[0]["price_book"] == {"version": 1, "method": "ratio", "currency": "CNY", "unit_price": "0.001",
                                       "prompt_tokens_max": 512}


def test_admin_creates_tenant_key_and_credit(client, ctx):
    admin = {"Authorization": "Bearer test-admin-token"}
    assert client.post("/v1/admin/tenants", json={"name": "acme"}).status_code == 401
    tenant = client.post("/v1/admin/tenants", headers=admin, json={"name": "acme", "plan": "pro"}).json()
    key = client.post(f"/v1/admin/tenants/{tenant['id']}/keys", headers=admin).json()["key"]
    credit = client.post(f"/v1/admin/tenants/{tenant['id']}/credits", headers=admin, json={"tokens": 777})
    assert credit.json()["balance"]["available"] == 777
    assert client.get("/v1/balance", headers={"Authorization": f"Bearer {key}"}).json()["available"] == 777
    duplicate = client.post("/v1/admin/tenants", headers=admin, json={"name": "acme"})
    assert duplicate.status_code == 409 and error_of(duplicate)["code"] == "tenant_exists"


def test_a_retried_top_up_credits_once(client, ctx):
    admin = {"Authorization": "Bearer test-admin-token", "Idempotency-Key": "invoice-2026-11"}
    tenant = new_tenant(ctx.sessions)
    path = f"/v1/admin/tenants/{tenant.id}/credits"
    first = client.post(path, headers=admin, json={"tokens": 500, "memo": "invoice"})
    retry = client.post(path, headers=admin, json={"tokens": 500, "memo": "invoice"})
    assert first.status_code == retry.status_code == 201 and retry.json() == first.json()
    assert retry.headers["idempotent-replayed"] == "true"
    other = client.post(path, headers=admin, json={"tokens": 900, "memo": "invoice"})
    assert other.status_code == 409 and error_of(other)["code"] == "idempotency_conflict"
    assert balance(client, tenant)["available"] == 500
    # the operator's keys live apart from the tenant's own: the same key on a video is a new request
    video = client.post("/v1/videos", headers={**tenant.headers, "Idempotency-Key": "invoice-2026-11"},
                        json={"prompt": "a cat", **small})
    assert video.status_code == 200 and "idempotent-replayed" not in video.headers


def test_concurrent_submissions_never_overdraw(client, ctx):
    """50 clients at once against a balance that covers exactly 7 jobs: 7 accepted, 43 get 402."""
    tenant = new_tenant(ctx.sessions, tokens=1)
    quote = client.post("/v1/quotes", headers=tenant.headers, json={"prompt": "a cat", **small}).json()
    with ctx.sessions.begin() as s:
        from vidfactory.billing import ledger
        ledger.credit(s, tenant.id, 7 * quote["total_tokens"] - 1)
    statuses: list[int] = []
    barrier = threading.Barrier(50)

    def submit():
        barrier.wait()
        statuses.append(client.post("/v1/videos", headers=tenant.headers,
                                    json={"prompt": "a cat", **small}).status_code)

    threads = [threading.Thread(target=submit) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200] * 7 + [402] * 43
    assert balance(client, tenant)["available"] == 0
    assert_ledger_clean(ctx.sessions)


def test_a_model_without_weights_is_503_and_holds_nothing(tmp_path, database_url, models_dir):
    from conftest import make_settings
    from vidfactory.settings import ModelConfig

    broken = ModelConfig(id="wan-missing", engine="wan", path=str(tmp_path / "no-such-checkpoint"))
    settings = make_settings(tmp_path, database_url, models_dir,
                             models=[ModelConfig(id="wan-tiny", engine="wan-tiny"), broken])
    with TestClient(create_app(settings, workers=0)) as client:
        ctx = client.app.state.ctx
        tenant = new_tenant(ctx.sessions, tokens=1000)
        response = client.post("/v1/videos", headers=tenant.headers, json={"prompt": "a cat", "model": "wan-missing"})
        assert response.status_code == 503
        error = error_of(response)
        assert (error["code"], error["param"]) == ("model_unavailable", "model")
        assert "cannot load the tokenizer" in error["message"]
        assert str(tmp_path) not in error["message"] and "no-such-checkpoint" not in error["message"]
        assert balance(client, tenant)["available"] == 1000
