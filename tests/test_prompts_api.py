"""Templates, enhancement, batches, regeneration and feedback through the API, on SQLite and PostgreSQL:
a template renders into a billed prompt; an enhanced job keeps both prompts and bills the generated one;
a batch is quoted whole and, when atomic, held entirely or not at all; the archive holds the finished
clips and a manifest; a regeneration is a new job with its own hold and a link to its parent; feedback is
exported as JSONL; every other tenant's object is a 404."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import zipfile

import pytest
from fastapi.testclient import TestClient
from openai import OpenAI
from PIL import Image
from sqlalchemy import func, select

from vidfactory.api.app import create_app
from vidfactory.db.models import Batch, Job
from vidfactory.jobs.worker import Worker

from conftest import assert_ledger_clean, make_settings, new_tenant
from test_prompts import FakeChat

admin = {"Authorization": "Bearer test-admin-token"}
small = {"size": "64x64", "seconds": "1"}
travel = {"name": "travel", "body": "A {{ style }} video of {{ city }} in {{ season }}, for {{ audience }}.",
          "form": {"style": "cinematic", "keywords": ["landmarks"]}, "seconds": 1, "size": "64x64",
          "defaults": {"audience": "families"}}


def error_of(response):
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "type", "param"}
    return body["error"]


def balance(client, tenant):
    return client.get("/v1/balance", headers=tenant.headers).json()


def work(ctx, jobs):
    worker = Worker(ctx.settings, ctx.sessions, ctx.storage, worker_id="test-worker")
    for _ in range(jobs):
        assert worker.run_once()


def count_jobs(ctx, tenant) -> int:
    with ctx.sessions() as session:
        return session.scalar(select(func.count()).select_from(Job).where(Job.tenant_id == tenant.id))


# --- templates ------------------------------------------------------------------------------------

def test_template_crud_and_isolation(client, ctx):
    owner, stranger = new_tenant(ctx.sessions), new_tenant(ctx.sessions)
    created = client.post("/v1/templates", headers=owner.headers, json=travel)
    assert created.status_code == 201, created.text
    assert created.json()["variables"] == ["city", "season"] and created.json()["source"] == "tenant"
    assert client.post("/v1/templates", headers=owner.headers, json=travel).status_code == 409
    library_name = client.post("/v1/templates", headers=owner.headers, json={**travel, "name": "logo_reveal"})
    assert library_name.status_code == 409

    listed = client.get("/v1/templates", headers=owner.headers).json()["data"]
    assert {"product_intro", "product_intro_zh", "festival_greeting", "logo_reveal", "travel"} <= {
        t["name"] for t in listed}
    assert [t["name"] for t in client.get("/v1/templates?source=tenant", headers=owner.headers).json()["data"]] \
        == ["travel"]
    assert client.get("/v1/templates/product_intro_zh", headers=owner.headers).json()["language"] == "zh"

    replaced = client.put("/v1/templates/travel", headers=owner.headers,
                          json={**{k: v for k, v in travel.items() if k != "name"}, "body": "{{ city }} at dusk, for {{ audience }}"})
    assert replaced.status_code == 200 and replaced.json()["variables"] == ["city"]
    assert client.put("/v1/templates/logo_reveal", headers=owner.headers,
                      json={"body": "x"}).json()["error"]["code"] == "read_only_template"

    for method, kwargs in [("get", {}), ("put", {"json": {"body": "x"}}), ("delete", {})]:
        response = client.request(method, "/v1/templates/travel", headers=stranger.headers, **kwargs)
        assert response.status_code == 404 and error_of(response)["code"] == "not_found"
    assert client.get("/v1/templates?source=tenant", headers=stranger.headers).json()["data"] == []

    assert client.delete("/v1/templates/travel", headers=owner.headers).json()["deleted"] is True
    assert client.get("/v1/templates/travel", headers=owner.headers).status_code == 404


@pytest.mark.parametrize(("body", "fragment"), [
    ("{{ city", "syntax error"),
    ("{% for x in y %}{{ x }}{% endfor %}", "loops"),
    ("{{ city|format(1) }}", "filter 'format' is not allowed"),
])
def test_a_template_that_could_never_render_is_refused(client, ctx, body, fragment):
    tenant = new_tenant(ctx.sessions)
    response = client.post("/v1/templates", headers=tenant.headers, json={**travel, "body": body})
    assert response.status_code == 400 and fragment in error_of(response)["message"]
    assert error_of(response)["param"] == "body"
    assert client.get("/v1/templates?source=tenant", headers=tenant.headers).json()["data"] == []


def test_a_pre_generated_template_serves_its_first_request_from_the_cache(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=100_000)
    body = {**travel, "defaults": {"city": "Hangzhou", "season": "spring", "audience": "families"},
            "pre_generate": True}
    created = client.post("/v1/templates", headers=tenant.headers, json=body)
    assert created.status_code == 201, created.text
    pre = created.json()["pre_generated"]
    assert created.json()["pre_generate"] is True and pre["status"] == "queued"
    work(ctx, 1)
    first = client.post("/v1/videos", headers=tenant.headers, json={"template": "travel"}).json()
    assert first["cache_hit"]["video_id"] == pre["id"]
    work(ctx, 1)  # the hit is re-labelled as its own video
    first = client.get(f"/v1/videos/{first['id']}", headers=tenant.headers).json()
    assert first["status"] == "completed"
    assert first["billing"]["settled"] == (first["usage"]["total_tokens"] * 2 + 5) // 10  # the cache rate
    # Saving it unchanged generates nothing more; changing what the defaults render does.
    unchanged = client.put("/v1/templates/travel", headers=tenant.headers,
                           json={k: v for k, v in body.items() if k != "name"}).json()
    assert "pre_generated" not in unchanged and count_jobs(ctx, tenant) == 2
    edited = {k: v for k, v in body.items() if k != "name"} | {"defaults": {**body["defaults"], "season": "autumn"}}
    assert client.put("/v1/templates/travel", headers=tenant.headers, json=edited).json()["pre_generated"]
    assert count_jobs(ctx, tenant) == 3
    assert_ledger_clean(ctx.sessions)


def test_a_refused_pre_generation_saves_nothing(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=100_000)
    open_variable = client.post("/v1/templates", headers=tenant.headers, json={**travel, "pre_generate": True})
    assert open_variable.status_code == 400 and error_of(open_variable)["param"] == "variables"
    poor = new_tenant(ctx.sessions, tokens=1)
    body = {**travel, "defaults": {"city": "Hangzhou", "season": "spring", "audience": "families"},
            "pre_generate": True}
    unpaid = client.post("/v1/templates", headers=poor.headers, json=body)
    assert unpaid.status_code == 402, unpaid.text
    for who in (tenant, poor):
        assert client.get("/v1/templates/travel", headers=who.headers).status_code == 404
        assert count_jobs(ctx, who) == 0
    assert balance(client, poor)["pending"] == 0
    assert_ledger_clean(ctx.sessions)


def test_video_from_a_template(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    client.post("/v1/templates", headers=tenant.headers, json=travel)
    body = {"template": "travel", "variables": {"city": "Hangzhou", "season": "spring"}}
    video = client.post("/v1/videos", headers=tenant.headers, json=body)
    assert video.status_code == 200, video.text
    video = video.json()
    assert video["prompt"] == "A cinematic video of Hangzhou in spring, for families."
    assert (video["template"], video["variables"]) == ("travel", {"city": "Hangzhou", "season": "spring"})
    assert (video["size"], video["seconds"]) == ("64x64", "1")  # the template's defaults
    quote = client.post("/v1/quotes", headers=tenant.headers, json=body).json()
    assert quote["input_tokens"] == video["usage"]["input_tokens"]
    assert quote["prompt"]["billed"] == video["prompt"]

    library = client.post("/v1/videos", headers=tenant.headers,
                          json={"template": "product_intro_zh", "variables": {"product": "智能手表"}, **small})
    assert library.status_code == 200 and "智能手表" in library.json()["prompt"]


def test_template_and_enhancement_as_multipart_form_fields(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    client.post("/v1/templates", headers=tenant.headers, json=travel)
    response = client.post("/v1/videos", headers=tenant.headers, files={
        "template": (None, "travel"), "variables": (None, '{"city": "Hangzhou", "season": "spring"}'),
        "enhance_prompt": (None, "true")})
    assert response.status_code == 200, response.text
    video = response.json()
    assert video["user_prompt"] == "A cinematic video of Hangzhou in spring, for families."
    assert video["enhancement"] == "rules" and video["prompt"].startswith(video["user_prompt"])


@pytest.mark.parametrize(("body", "param", "code"), [
    ({"template": "travel", "variables": {"city": "x"}}, "variables", "template_error"),
    ({"template": "travel", "variables": {"city": "x", "season": "y", "sesaon": "z"}}, "variables",
     "template_error"),
    ({"template": "nope"}, "template", "template_not_found"),
    ({"template": "travel", "prompt": "a cat"}, "template", "invalid_value"),
    ({"prompt": "a cat", "variables": {"a": "b"}}, "variables", "invalid_value"),
    ({"template": "travel", "variables": {"city": 5}}, "variables.city", "invalid_value"),
])
def test_template_errors_are_400_and_hold_nothing(client, ctx, body, param, code):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    client.post("/v1/templates", headers=tenant.headers, json=travel)
    response = client.post("/v1/videos", headers=tenant.headers, json=body)
    assert response.status_code == 400, response.text
    assert (error_of(response)["param"], error_of(response)["code"]) == (param, code)
    assert balance(client, tenant)["available"] == 10_000 and count_jobs(ctx, tenant) == 0


def test_another_tenants_template_is_unknown(client, ctx):
    owner, stranger = new_tenant(ctx.sessions), new_tenant(ctx.sessions, tokens=10_000)
    client.post("/v1/templates", headers=owner.headers, json=travel)
    response = client.post("/v1/videos", headers=stranger.headers,
                           json={"template": "travel", "variables": {"city": "x", "season": "y"}})
    assert response.status_code == 400 and error_of(response)["code"] == "template_not_found"


# --- enhancement ----------------------------------------------------------------------------------

def test_enhance_route(client, ctx):
    tenant = new_tenant(ctx.sessions)
    result = client.post("/v1/prompts/enhance", headers=tenant.headers, json={"prompt": "一只红狐狸在雪地里奔跑"}).json()
    assert result["mode"] == "rules" and result["language"] == "zh" and 60 <= result["words"] <= 200
    assert result["enhanced_prompt"].startswith("一只红狐狸在雪地里奔跑") and len(result["settings_added"]) <= 4
    llm = client.post("/v1/prompts/enhance", headers=tenant.headers, json={"prompt": "a fox", "mode": "llm"})
    assert llm.status_code == 400 and error_of(llm)["code"] == "unsupported_parameter"


def test_an_enhanced_job_keeps_both_prompts_and_bills_the_generated_one(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    body = {"prompt": "a red fox", "enhance_prompt": True, **small}
    quote = client.post("/v1/quotes", headers=tenant.headers, json=body).json()
    video = client.post("/v1/videos", headers=tenant.headers, json=body).json()
    assert video["user_prompt"] == "a red fox" and video["enhancement"] == "rules"
    assert video["prompt"].startswith("a red fox. ") and len(video["prompt"].split()) >= 60
    plain = client.post("/v1/quotes", headers=tenant.headers, json={"prompt": video["prompt"], **small}).json()
    assert video["usage"]["input_tokens"] == plain["input_tokens"] == quote["input_tokens"]
    assert quote["prompt"] == {"billed": video["prompt"], "user": "a red fox", "enhancement": "rules"}
    bare = client.post("/v1/quotes", headers=tenant.headers, json={"prompt": "a red fox", **small}).json()
    assert bare["input_tokens"] < quote["input_tokens"]


def test_llm_enhancement_and_its_fallback_on_a_job(tmp_path, database_url, models_dir):
    fake = FakeChat()
    try:
        settings = make_settings(tmp_path, database_url, models_dir, enhance_llm_url=fake.url,
                                 enhance_llm_timeout_s=2.0)
        with TestClient(create_app(settings, workers=0)) as client:
            tenant = new_tenant(client.app.state.ctx.sessions, tokens=10_000)
            body = {"prompt": "a red fox", "enhance_prompt": True, **small}
            video = client.post("/v1/videos", headers=tenant.headers, json=body).json()
            assert video["enhancement"] == "llm" and video["prompt"].startswith("Rewritten: a red fox")
            fake.behaviour = "error"
            fallback = client.post("/v1/videos", headers=tenant.headers, json=body).json()
            assert fallback["enhancement"] == "rules" and fallback["prompt"].startswith("a red fox. ")
            assert any("LLM enhancement failed" in w for w in fallback["warnings"])
    finally:
        fake.close()


# --- batches --------------------------------------------------------------------------------------

def batch_body(**overrides):
    return {"template": "travel", "variables": {"city": ["Hangzhou", "Chengdu"], "season": ["spring", "autumn"],
                                                "audience": "students"}, "ab_groups": ["A", "B"], **overrides}


def test_batch_is_quoted_whole_and_counted_by_status(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=100_000)
    client.post("/v1/templates", headers=tenant.headers, json=travel)
    created = client.post("/v1/batches", headers=tenant.headers, json=batch_body(atomic=True))
    assert created.status_code == 202, created.text
    batch = created.json()
    assert batch["items_total"] == 4 and batch["counts"]["queued"] == 4 and batch["rejected"] == []
    assert [(i["item"], i["ab_group"], i["variables"]["city"], i["variables"]["season"]) for i in batch["items"]] == [
        (0, "A", "Hangzhou", "spring"), (1, "B", "Hangzhou", "autumn"), (2, "A", "Chengdu", "spring"),
        (3, "B", "Chengdu", "autumn")]
    held = [client.get(f"/v1/videos/{i['video_id']}", headers=tenant.headers).json() for i in batch["items"]]
    assert batch["quote"]["total_tokens"] == sum(v["usage"]["total_tokens"] for v in held)
    assert batch["quote"]["amount"] == f"{batch['quote']['total_tokens'] / 1000:.3f}"
    assert balance(client, tenant)["pending"] == batch["quote"]["total_tokens"]
    assert held[1]["batch"] == {"id": batch["id"], "item": 1, "ab_group": "B"}
    assert held[3]["prompt"] == "A cinematic video of Chengdu in autumn, for students."

    client.post(f"/v1/videos/{held[0]['id']}/cancel", headers=tenant.headers)
    counts = client.get(f"/v1/batches/{batch['id']}", headers=tenant.headers).json()["counts"]
    assert (counts["queued"], counts["cancelled"]) == (3, 1)
    zipped = client.post("/v1/batches", headers=tenant.headers,
                         json={"template": "travel", "mode": "zip",
                               "variables": {"city": ["a", "b", "c"], "season": ["x", "y", "z"]}}).json()
    assert zipped["items_total"] == 3 and zipped["items"][2]["variables"] == {"city": "c", "season": "z"}
    listed = client.get("/v1/batches", headers=tenant.headers).json()["data"]
    assert [b["id"] for b in listed] == [zipped["id"], batch["id"]]
    assert_ledger_clean(ctx.sessions)


def test_atomic_batch_without_the_balance_holds_nothing(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    client.post("/v1/templates", headers=tenant.headers, json=travel)
    one = client.post("/v1/quotes", headers=tenant.headers, json={
        "template": "travel", "variables": {"city": "Hangzhou", "season": "spring", "audience": "students"}}).json()
    poor = new_tenant(ctx.sessions, tokens=one["total_tokens"] * 5 // 2)  # room for two and a half items
    client.post("/v1/templates", headers=poor.headers, json=travel)
    before = balance(client, poor)

    atomic = client.post("/v1/batches", headers=poor.headers, json=batch_body(atomic=True))
    assert atomic.status_code == 402 and error_of(atomic)["code"] == "insufficient_balance"
    assert balance(client, poor) == before and count_jobs(ctx, poor) == 0
    with ctx.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Batch).where(Batch.tenant_id == poor.id)) == 0

    partial = client.post("/v1/batches", headers=poor.headers, json=batch_body()).json()
    assert partial["counts"]["queued"] == 2 and partial["counts"]["rejected"] == 2
    assert [r["code"] for r in partial["rejected"]] == ["insufficient_balance"] * 2
    assert partial["quote"]["items"] == 4  # the quote is for the whole batch, whatever was held
    assert balance(client, poor)["pending"] == sum(
        client.get(f"/v1/videos/{i['video_id']}", headers=poor.headers).json()["usage"]["total_tokens"]
        for i in partial["items"])
    assert_ledger_clean(ctx.sessions)


def test_batch_errors_create_nothing(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=100_000)
    client.post("/v1/templates", headers=tenant.headers, json=travel)
    cases = [
        (batch_body(variables={"city": ["a"]}), "variables", "template_error"),
        (batch_body(mode="zip", variables={"city": ["a", "b"], "season": ["x"]}), "variables", "invalid_value"),
        (batch_body(variables={"city": [str(i) for i in range(11)], "season": [str(i) for i in range(10)]}),
         "variables", "batch_too_large"),
        (batch_body(template="nope"), "template", "template_not_found"),
        (batch_body(size="100x100"), "size", "invalid_value"),
    ]
    for body, param, code in cases:
        response = client.post("/v1/batches", headers=tenant.headers, json=body)
        assert response.status_code == 400, response.text
        assert (error_of(response)["param"], error_of(response)["code"]) == (param, code)
    assert balance(client, tenant)["pending"] == 0 and count_jobs(ctx, tenant) == 0


def test_archive_holds_finished_clips_and_a_manifest(client, ctx):
    tenant, stranger = new_tenant(ctx.sessions, tokens=100_000), new_tenant(ctx.sessions)
    client.post("/v1/templates", headers=tenant.headers, json=travel)
    batch = client.post("/v1/batches", headers=tenant.headers,
                        json={"template": "travel", "mode": "zip", "ab_groups": ["A", "B"],
                              "variables": {"city": ["Hangzhou", "成都", "Xi'an"], "season": ["spring", "秋天", "x"]}}
                        ).json()
    client.post(f"/v1/videos/{batch['items'][2]['video_id']}/cancel", headers=tenant.headers)
    work(ctx, 2)
    response = client.get(f"/v1/batches/{batch['id']}/archive", headers=tenant.headers)
    assert response.status_code == 200 and response.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert sorted(archive.namelist()) == ["item-0000.mp4", "item-0001.mp4", "manifest.csv"]
    rows = list(csv.DictReader(io.StringIO(archive.read("manifest.csv").decode())))
    assert [(r["item"], r["ab_group"], r["status"]) for r in rows] == [
        ("0", "A", "completed"), ("1", "B", "completed"), ("2", "A", "cancelled")]
    assert json.loads(rows[1]["variables"]) == {"city": "成都", "season": "秋天"}
    assert rows[1]["prompt"] == "A cinematic video of 成都 in 秋天, for families."
    for row in rows[:2]:
        clip = archive.read(row["file"])
        assert hashlib.sha256(clip).hexdigest() == row["sha256"]
        video = client.get(f"/v1/videos/{row['video_id']}", headers=tenant.headers).json()
        assert int(row["seed"]) == video["seed"]
    assert rows[2]["file"] == "" and rows[2]["sha256"] == ""
    for path in ("", "/archive"):
        hidden = client.get(f"/v1/batches/{batch['id']}{path}", headers=stranger.headers)
        assert hidden.status_code == 404 and error_of(hidden)["code"] == "not_found"
    assert_ledger_clean(ctx.sessions)


# --- regenerate, remix, feedback ------------------------------------------------------------------

def test_regenerate_is_a_new_job_billed_on_its_own(client, ctx):
    tenant, stranger = new_tenant(ctx.sessions, tokens=10_000), new_tenant(ctx.sessions, tokens=10_000)
    parent = client.post("/v1/videos", headers=tenant.headers,
                         json={"prompt": "a red fox", "seed": 7, "negative_prompt": "blur", **small}).json()
    work(ctx, 1)
    child = client.post(f"/v1/videos/{parent['id']}/regenerate", headers=tenant.headers, json={})
    assert child.status_code == 200, child.text
    child = child.json()
    assert child["id"] != parent["id"] and child["remixed_from_video_id"] == parent["id"]
    assert (child["prompt"], child["negative_prompt"], child["size"]) == ("a red fox", "blur", "64x64")
    assert child["billing"]["status"] == "held" and child["usage"] == parent["usage"]
    spent = parent["usage"]["total_tokens"]
    assert balance(client, tenant) == {"object": "balance", "available": 10_000 - 2 * spent, "pending": spent,
                                       "posted": 10_000 - spent}
    edited = client.post(f"/v1/videos/{parent['id']}/regenerate", headers=tenant.headers,
                         json={"prompt": "a red fox at dusk", "enhance_prompt": True}).json()
    assert edited["seed"] == 7 and edited["user_prompt"] == "a red fox at dusk"
    assert edited["enhancement"] == "rules" and edited["prompt"].startswith("a red fox at dusk. ")
    reseeded = client.post(f"/v1/videos/{parent['id']}/regenerate", headers=tenant.headers, json={"seed": 99}).json()
    assert reseeded["seed"] == 99
    hidden = client.post(f"/v1/videos/{parent['id']}/regenerate", headers=stranger.headers, json={})
    assert hidden.status_code == 404 and balance(client, stranger)["pending"] == 0
    assert_ledger_clean(ctx.sessions)


def test_regenerating_a_clip_with_a_drawn_seed_makes_a_new_clip_at_the_full_price(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    parent = client.post("/v1/videos", headers=tenant.headers, json={"prompt": "a red fox", **small}).json()
    work(ctx, 1)
    # The parent is in the cache: the same request again is served from it.
    again = client.post("/v1/videos", headers=tenant.headers, json={"prompt": "a red fox", **small}).json()
    assert again["cache_hit"]["video_id"] == parent["id"]
    work(ctx, 1)  # a worker delivers the hit
    children = []
    for _ in range(2):
        child = client.post(f"/v1/videos/{parent['id']}/regenerate", headers=tenant.headers, json={}).json()
        assert (child["status"], child["cache_hit"], child["billing"]["status"]) == ("queued", None, "held")
        work(ctx, 1)
        children.append(client.get(f"/v1/videos/{child['id']}", headers=tenant.headers).json())
    seeds = [parent["seed"]] + [child["seed"] for child in children]
    assert len(set(seeds)) == 3  # neither the parent's seed nor a sibling's
    files = {parent["id"]: None, **{child["id"]: None for child in children}}
    for video_id in files:
        files[video_id] = client.get(f"/v1/videos/{video_id}/content", headers=tenant.headers).content
    assert len(set(files.values())) == 3
    for child in children:
        assert (child["status"], child["cache_hit"]) == ("completed", None)
        assert child["billing"]["status"] == "settled"
        assert child["billing"]["settled"] == child["usage"]["total_tokens"] == parent["usage"]["total_tokens"]
    assert_ledger_clean(ctx.sessions)


def test_remix_with_the_openai_sdk(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    parent = client.post("/v1/videos", headers=tenant.headers, json={"prompt": "a red fox", **small}).json()
    sdk = OpenAI(base_url="http://testserver/v1", api_key=tenant.key, http_client=client, max_retries=0)
    remixed = sdk.videos.remix(parent["id"], prompt="a blue fox")
    assert remixed.remixed_from_video_id == parent["id"] and remixed.prompt == "a blue fox"
    assert remixed.status == "queued" and remixed.id != parent["id"]


def test_feedback_and_the_preference_export(client, ctx):
    tenant, stranger = new_tenant(ctx.sessions, tokens=10_000), new_tenant(ctx.sessions)
    parent = client.post("/v1/videos", headers=tenant.headers, json={"prompt": "a red fox", **small}).json()
    child = client.post(f"/v1/videos/{parent['id']}/regenerate", headers=tenant.headers,
                        json={"prompt": "a red fox, close-up"}).json()
    down = client.post(f"/v1/videos/{parent['id']}/feedback", headers=tenant.headers,
                       json={"rating": "down", "reason": "off-prompt", "comment": "the fox is grey"})
    assert down.status_code == 201 and down.json()["rating"] == "down"
    client.post(f"/v1/videos/{child['id']}/feedback", headers=tenant.headers, json={"rating": "up"})
    assert client.post(f"/v1/videos/{parent['id']}/feedback", headers=stranger.headers,
                       json={"rating": "up"}).status_code == 404
    bad = client.post(f"/v1/videos/{parent['id']}/feedback", headers=tenant.headers, json={"rating": "meh"})
    assert bad.status_code == 400 and error_of(bad)["param"] == "rating"

    assert client.get("/v1/admin/preferences.jsonl", headers=tenant.headers).status_code == 403
    export = client.get("/v1/admin/preferences.jsonl", headers=admin)
    assert export.status_code == 200 and export.headers["content-type"].startswith("application/jsonl")
    lines = [json.loads(line) for line in export.text.splitlines()]
    assert [(r["video_id"], r["rating"], r["reason"]) for r in lines] == [
        (parent["id"], "down", "off-prompt"), (child["id"], "up", "")]
    assert lines[0]["comment"] == "the fox is grey" and lines[0]["parent"] is None
    assert lines[1]["parent"] == {"video_id": parent["id"], "prompt": "a red fox", "seed": parent["seed"]}
    assert lines[1]["prompt"] == "a red fox, close-up" and lines[1]["seed"] == child["seed"] == parent["seed"]
    assert lines[1]["parameters"]["size"] == "64x64"
    page = client.get(f"/v1/admin/preferences.jsonl?after={lines[0]['feedback_id']}", headers=admin).text
    assert [json.loads(line)["video_id"] for line in page.splitlines()] == [child["id"]]


def test_a_reference_image_needs_a_model_that_accepts_one(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 40, 40)).save(out, format="PNG")
    saved = client.post("/v1/templates", headers=tenant.headers, json={
        **travel, "name": "with-image",
        "reference_image": f"data:image/png;base64,{base64.b64encode(out.getvalue()).decode()}"})
    assert saved.status_code == 201, saved.text
    response = client.post("/v1/videos", headers=tenant.headers,
                           json={"template": "with-image", "variables": {"city": "x", "season": "y"}})
    assert response.status_code == 400 and error_of(response)["code"] == "unsupported_parameter"
    assert error_of(response)["param"] == "template"
    assert balance(client, tenant)["pending"] == 0


def test_every_job_creating_path_screens_the_prompt_that_reaches_the_model(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=100_000)
    client.post("/v1/templates", headers=tenant.headers, json=travel)
    blocked = client.post("/v1/videos", headers=tenant.headers,
                          json={"template": "travel", "variables": {"city": "c0caine", "season": "x"}})
    assert blocked.status_code == 400 and error_of(blocked)["code"] == "content_policy"
    assert "c0caine" not in blocked.text
    atomic = client.post("/v1/batches", headers=tenant.headers, json={
        "template": "travel", "atomic": True, "variables": {"city": ["Hangzhou", "c0caine"], "season": "x"}})
    assert atomic.status_code == 400 and error_of(atomic)["code"] == "content_policy"
    assert balance(client, tenant)["pending"] == 0 and count_jobs(ctx, tenant) == 0
    partial = client.post("/v1/batches", headers=tenant.headers, json={
        "template": "travel", "variables": {"city": ["Hangzhou", "c0caine"], "season": "x"}}).json()
    assert partial["counts"]["queued"] == 1 and [r["code"] for r in partial["rejected"]] == ["content_policy"]
    parent = partial["items"][0]["video_id"]
    for path, body in [("regenerate", {"prompt": "c0caine"}), ("remix", {"prompt": "c0caine"})]:
        refused = client.post(f"/v1/videos/{parent}/{path}", headers=tenant.headers, json=body)
        assert refused.status_code == 400 and error_of(refused)["code"] == "content_policy"
    assert count_jobs(ctx, tenant) == 1
    assert_ledger_clean(ctx.sessions)
