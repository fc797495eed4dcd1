"""Prompt screening at the API, on SQLite and PostgreSQL: a blocked prompt is refused with its category
only and changes nothing; a `review` match holds the job; each tenant's lexicon applies to it alone."""

import pytest
from sqlalchemy import func, select

from vidfactory.db.models import IdempotencyRecord, Job, Transfer

from conftest import assert_ledger_clean, new_tenant
from test_cli import Cli, assert_refused

admin = {"Authorization": "Bearer test-admin-token"}
small = {"size": "64x64", "seconds": "1"}


def counts(ctx) -> tuple[int, int, int]:
    with ctx.sessions() as session:
        return tuple(session.scalar(select(func.count()).select_from(table))
                     for table in (Job, Transfer, IdempotencyRecord))


def lexicon_url(tenant_id: str) -> str:
    return f"/v1/admin/tenants/{tenant_id}/lexicon"


@pytest.mark.parametrize("path", ["/v1/videos", "/v1/quotes"])
def test_blocked_prompt_is_refused_with_its_category_and_changes_nothing(client, ctx, path):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    before_balance = client.get("/v1/balance", headers=tenant.headers).json()
    before = counts(ctx)
    response = client.post(path, headers={**tenant.headers, "Idempotency-Key": "k1"},
                           json={"prompt": "a lab cooking m.e.t.h and h3r0in", **small})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("content_policy", "prompt")
    assert "drugs" in error["message"]
    assert "heroin" not in response.text and "meth" not in response.text.replace("method", "")
    assert counts(ctx) == before
    assert client.get("/v1/balance", headers=tenant.headers).json() == before_balance
    assert client.get("/v1/videos", headers=tenant.headers).json()["data"] == []
    assert_ledger_clean(ctx.sessions)


def test_review_match_holds_the_job_until_an_admin_approves(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    quote = client.post("/v1/quotes", headers=tenant.headers, json={"prompt": "a knight's sword duel, kill scene", **small})
    assert quote.status_code == 200 and any("review" in w for w in quote.json()["warnings"])
    created = client.post("/v1/videos", headers=tenant.headers, json={"prompt": "a knight's sword duel, kill scene", **small})
    assert created.status_code == 200
    video_id = created.json()["id"]
    reviews = client.get("/v1/admin/reviews", headers=admin).json()["data"]
    assert [(r["id"], r["review"]["source"]) for r in reviews] == [(video_id, "prompt")]
    assert "violence" in reviews[0]["review"]["reason"]
    with ctx.sessions() as session:
        job = session.get(Job, video_id)
        assert (job.status, job.review_status) == ("queued", "pending")
    assert client.post(f"/v1/admin/reviews/{video_id}/approve", headers=admin).status_code == 200
    assert_ledger_clean(ctx.sessions)


def test_clean_prompt_is_not_held(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    created = client.post("/v1/videos", headers=tenant.headers, json={"prompt": "a skilled chef in Sussex", **small})
    assert created.status_code == 200
    assert client.get("/v1/admin/reviews", headers=admin).json()["data"] == []


def test_tenant_lexicon_applies_to_its_tenant_only(client, ctx):
    acme = new_tenant(ctx.sessions, tokens=10_000)
    other = new_tenant(ctx.sessions, tokens=10_000)
    added = client.post(lexicon_url(acme.id), headers=admin,
                        json={"term": "rival cola", "category": "brand", "action": "block"})
    assert added.status_code == 201
    assert client.post(lexicon_url(acme.id), headers=admin,
                       json={"term": "gun", "category": "studio", "action": "allow"}).status_code == 201
    listed = client.get(lexicon_url(acme.id), headers=admin).json()["data"]
    assert {e["term"] for e in listed} == {"rival cola", "gun"}
    assert client.get(lexicon_url(other.id), headers=admin).json()["data"] == []

    prompt = {"prompt": "an ad mocking R1VAL-COLA", **small}
    refused = client.post("/v1/videos", headers=acme.headers, json=prompt)
    assert refused.status_code == 400 and "brand" in refused.json()["error"]["message"]
    assert client.post("/v1/videos", headers=other.headers, json=prompt).status_code == 200

    # acme allows "gun" (a platform review term); the other tenant's prompt is still held.
    gun = {"prompt": "a cowboy spinning his gun", **small}
    assert client.post("/v1/videos", headers=acme.headers, json=gun).status_code == 200
    assert client.post("/v1/videos", headers=other.headers, json=gun).status_code == 200
    held = client.get("/v1/admin/reviews", headers=admin).json()["data"]
    assert [r["tenant_id"] for r in held] == [other.id]

    removed = client.delete(lexicon_url(acme.id), headers=admin, params={"term": "rival cola"})
    assert removed.status_code == 200
    assert client.post("/v1/videos", headers=acme.headers, json=prompt).status_code == 200
    assert client.delete(lexicon_url(acme.id), headers=admin, params={"term": "rival cola"}).status_code == 404
    assert_ledger_clean(ctx.sessions)


def test_lexicon_admin_refuses_bad_input_and_unknown_tenants(client, ctx):
    tenant = new_tenant(ctx.sessions)
    bad = [{"term": "!!!", "category": "x", "action": "block"},
           {"term": "ok", "category": "Bad Category", "action": "block"},
           {"term": "ok", "category": "x", "action": "delete"},
           {"term": "a\tb", "category": "x", "action": "block"}]
    for body in bad:
        response = client.post(lexicon_url(tenant.id), headers=admin, json=body)
        assert response.status_code == 400, body
    assert client.get(lexicon_url(tenant.id), headers=admin).json()["data"] == []
    assert client.get(lexicon_url("ten_missing"), headers=admin).status_code == 404
    assert client.get(lexicon_url(tenant.id), headers=tenant.headers).status_code == 403  # not an admin


def test_cli_lexicon_add_list_remove(tmp_path, database_url, models_dir, sessions):
    tenant = new_tenant(sessions, name="acme")  # the database is at head: each command costs a process start
    cli = Cli(tmp_path, models_dir, database_url)
    added = cli.json("admin", "lexicon", "add", "acme", "rival cola", "--category", "brand", "--action", "review")
    assert added == {"tenant_id": tenant.id, "term": "rival cola", "category": "brand", "action": "review"}
    assert cli.json("admin", "lexicon", "list", "acme")["data"] == [
        {"term": "rival cola", "category": "brand", "action": "review"}]
    assert_refused(cli("admin", "lexicon", "add", "acme", "x", "--category", "brand", "--action", "maybe"), "action")
    assert_refused(cli("admin", "lexicon", "add", "nobody", "x", "--category", "brand"), "nobody")
    cli.ok("admin", "lexicon", "remove", "acme", "rival cola")
    assert_refused(cli("admin", "lexicon", "remove", "acme", "rival cola"), "no lexicon term")
    assert cli.json("admin", "lexicon", "list", "acme")["data"] == []
