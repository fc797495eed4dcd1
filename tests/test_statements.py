"""Statements and usage on SQLite and PostgreSQL: a month's statement equals the ledger to the token; an
ended month's statement never changes; JSON, CSV and PDF; usage grouped by day, model and key."""

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from vidfactory.billing import ledger
from vidfactory.billing.statements import statement
from vidfactory.db.models import Statement, Transfer
from vidfactory.db.types import utcnow

from billing_support import admin, fail_job, finish_without_media, small
from conftest import new_tenant


def this_month() -> str:
    return utcnow().strftime("%Y-%m")


def busy_tenant(client):
    """Top-ups, a completed job, a failed job (with a voucher), a cache hit, a cancelled job, a job still
    queued, a voucher granted by hand and partly spent."""
    ctx = client.app.state.ctx
    client.post("/v1/admin/price_books", headers=admin, json={"compensation": {"ratio": "0.25"}})
    tenant = new_tenant(ctx.sessions, tokens=50_000)
    client.post(f"/v1/admin/tenants/{tenant.id}/credits", headers=admin, json={"tokens": 1234})
    client.post(f"/v1/admin/tenants/{tenant.id}/vouchers", headers=admin, json={"tokens": 7, "reason": "welcome"})
    post = lambda prompt, **kw: client.post("/v1/videos", headers=tenant.headers,
                                            json={"prompt": prompt, **small, **kw}).json()
    done = post("a completed clip")
    finish_without_media(ctx.sessions, done["id"])
    failed = post("a failed clip")
    fail_job(ctx.sessions, failed["id"], "engine_crash")
    hit = post("a completed clip")
    assert hit["cache_hit"]["video_id"] == done["id"]
    finish_without_media(ctx.sessions, hit["id"])
    cancelled = post("a cancelled clip")
    client.post(f"/v1/videos/{cancelled['id']}/cancel", headers=tenant.headers)
    queued = post("a queued clip")
    return tenant, {"done": done, "failed": failed, "hit": hit, "cancelled": cancelled, "queued": queued}


def test_a_months_statement_equals_the_ledger(client):
    ctx = client.app.state.ctx
    tenant, jobs = busy_tenant(client)
    body = client.get(f"/v1/statements/{this_month()}", headers=tenant.headers).json()
    with ctx.sessions() as s:
        paid, vouchers = ledger.balance(s, tenant.id), ledger.voucher_balance(s, tenant.id)
        transfers = list(s.scalars(select(Transfer).where(Transfer.tenant_id == tenant.id)))
    assert body["final"] is False and body["reconciled"] is True
    assert body["opening_balance"] == 0 and body["vouchers"]["opening_balance"] == 0
    assert body["closing_balance"] == paid.posted and body["vouchers"]["closing_balance"] == vouchers.posted
    assert body["pending_at_close"] == paid.pending + vouchers.pending == jobs["queued"]["usage"]["total_tokens"]
    assert body["top_ups"] == 50_000 + 1234
    posts = [t for t in transfers if t.kind == "post"]
    assert body["charges"]["tokens"] == sum(t.amount for t in posts)
    from_vouchers = sum(t.amount for t in posts if t.debit_account_id == ledger.voucher_account_id(tenant.id))
    assert body["charges"]["voucher_tokens"] == body["vouchers"]["spent"] == from_vouchers >= 7  # spent first
    grants = [t.amount for t in transfers if t.kind == "grant"]
    assert body["vouchers"]["granted"] == sum(grants) and len(grants) == 2  # by hand + compensation
    total = jobs["done"]["usage"]["total_tokens"]
    hit_charge = (total * 2 + 5) // 10
    assert body["charges"]["tokens"] == total + hit_charge
    line = body["charges"]["lines"]
    assert [(l["model"], l["price_book_version"], l["jobs"], l["tokens"], l["cache_hit_tokens"]) for l in line] == [
        ("wan-tiny", 2, 2, total + hit_charge, hit_charge)]
    assert line[0]["amount"] == {"currency": "CNY", "value": f"{(total + hit_charge) / 1000:.3f}"}
    # Released: the failed and cancelled holds in full, the cache hit's 80%.
    voided = jobs["failed"]["usage"]["total_tokens"] + jobs["cancelled"]["usage"]["total_tokens"]
    assert body["refunds"]["released_tokens"] == voided + (total - hit_charge)
    assert body["transfers"] == len(transfers)


def test_formats_and_admin_view(client):
    tenant, _ = busy_tenant(client)
    month = this_month()
    as_json = client.get(f"/v1/statements/{month}", headers=tenant.headers).json()
    as_csv = client.get(f"/v1/statements/{month}?format=csv", headers=tenant.headers)
    assert as_csv.headers["content-type"].startswith("text/csv")
    rows = {(r["section"], r["item"]): r for r in csv.DictReader(io.StringIO(as_csv.text))}
    assert int(rows[("balance", "closing")]["tokens"]) == as_json["closing_balance"]
    assert int(rows[("vouchers", "granted")]["tokens"]) == as_json["vouchers"]["granted"]
    as_pdf = client.get(f"/v1/statements/{month}?format=pdf", headers=tenant.headers)
    assert as_pdf.headers["content-type"] == "application/pdf" and as_pdf.content.startswith(b"%PDF")
    by_admin = client.get(f"/v1/admin/tenants/{tenant.id}/statements/{month}", headers=admin).json()
    assert by_admin["closing_balance"] == as_json["closing_balance"]
    assert client.get(f"/v1/admin/tenants/ten_nobody/statements/{month}", headers=admin).status_code == 404
    for bad in ("2026-13", "26-01", "2999-01"):
        assert client.get(f"/v1/statements/{bad}", headers=tenant.headers).status_code == 400, bad


def test_an_ended_months_statement_never_changes(client):
    ctx = client.app.state.ctx
    tenant = new_tenant(ctx.sessions, tokens=0)
    with ctx.sessions.begin() as s:
        first = ledger.credit(s, tenant.id, 300)
        second = ledger.credit(s, tenant.id, 200)
    in_march = datetime(2026, 3, 15, tzinfo=UTC)
    with ctx.sessions.begin() as s:  # as if made in March (the audit chain is not what this test is about)
        s.execute(update(Transfer).where(Transfer.id == first.id).values(created_at=in_march))
    march = client.get("/v1/statements/2026-03", headers=tenant.headers).json()
    assert (march["final"], march["top_ups"], march["closing_balance"]) == (True, 300, 300)
    with ctx.sessions.begin() as s:  # a transfer later dated into March does not reopen the statement
        s.execute(update(Transfer).where(Transfer.id == second.id).values(created_at=in_march + timedelta(days=1)))
    assert client.get("/v1/statements/2026-03", headers=tenant.headers).json() == march
    with ctx.sessions() as s:
        assert s.get(Statement, (tenant.id, "2026-03")).body == march
    april = client.get("/v1/statements/2026-04", headers=tenant.headers).json()
    assert april["opening_balance"] == 500 and april["top_ups"] == 0  # the ledger itself has both


def test_usage_groups_charges(client):
    tenant, jobs = busy_tenant(client)
    today = utcnow().date()
    by_model = client.get("/v1/usage?group_by=model", headers=tenant.headers).json()
    total = jobs["done"]["usage"]["total_tokens"]
    usage = jobs["done"]["usage"]
    assert by_model["data"] == [{"group": "wan-tiny", "jobs": 2, "input_tokens": 2 * usage["input_tokens"],
                                 "output_tokens": 2 * usage["output_tokens"],
                                 "charged_tokens": total + (total * 2 + 5) // 10, "cache_hits": 1}]
    by_day = client.get(f"/v1/usage?group_by=day&from={today}&to={today + timedelta(days=1)}",
                        headers=tenant.headers).json()
    assert [g["group"] for g in by_day["data"]] == [today.isoformat()]
    by_key = client.get("/v1/usage?group_by=key", headers=tenant.headers).json()
    assert len(by_key["data"]) == 1 and by_key["data"][0]["group"].startswith("key_")
    empty = client.get(f"/v1/usage?from={today - timedelta(days=9)}&to={today - timedelta(days=8)}",
                       headers=tenant.headers).json()
    assert empty["data"] == [] and empty["total_charged_tokens"] == 0
    for bad in ("group_by=campaign", "from=2026-02-30", f"from={today}&to={today}",
                "from=2020-01-01&to=2026-01-01"):
        refused = client.get(f"/v1/usage?{bad}", headers=tenant.headers)
        assert refused.status_code == 400, (bad, refused.text)
    by_admin = client.get(f"/v1/admin/tenants/{tenant.id}/usage?group_by=model", headers=admin).json()
    assert by_admin["data"] == by_model["data"]


def test_usage_groups_by_template_and_batch(client):
    ctx = client.app.state.ctx
    tenant = new_tenant(ctx.sessions, tokens=500_000)
    single = client.post("/v1/videos", headers=tenant.headers,
                         json={"template": "product_intro", "variables": {"product": "a smart watch"}}).json()
    plain = client.post("/v1/videos", headers=tenant.headers, json={"prompt": "no template", **small}).json()
    batch = client.post("/v1/batches", headers=tenant.headers, json={
        "template": "product_intro", "variables": {"product": ["a kettle", "a lamp"]}, "atomic": True}).json()
    job_ids = [single["id"], plain["id"], *(item["video_id"] for item in batch["items"])]
    for job_id in job_ids:
        finish_without_media(ctx.sessions, job_id)
    charged = {job_id: client.get(f"/v1/videos/{job_id}", headers=tenant.headers).json()["usage"]["total_tokens"]
               for job_id in job_ids}
    by_template = client.get("/v1/usage?group_by=template", headers=tenant.headers).json()["data"]
    assert [(g["group"], g["jobs"], g["charged_tokens"]) for g in by_template] == [
        ("", 1, charged[plain["id"]]), ("product_intro", 3, sum(charged.values()) - charged[plain["id"]])]
    by_batch = client.get("/v1/usage?group_by=batch", headers=tenant.headers).json()["data"]
    batch_tokens = sum(charged[item["video_id"]] for item in batch["items"])
    assert [(g["group"], g["jobs"], g["charged_tokens"]) for g in by_batch] == [
        ("", 2, charged[single["id"]] + charged[plain["id"]]), (batch["id"], 2, batch_tokens)]


def test_statement_function_refuses_months_that_have_not_started(sessions):
    tenant = new_tenant(sessions)
    with pytest.raises(ValueError), sessions.begin() as s:
        statement(s, tenant.id, "2999-01")


@pytest.mark.parametrize("month", ["9999-12", "9999-11", "1969-12", "2026-13"])
def test_a_month_out_of_range_is_a_clear_400(client, month):
    tenant = new_tenant(client.app.state.ctx.sessions)
    for path in (f"/v1/statements/{month}", f"/v1/admin/tenants/{tenant.id}/statements/{month}"):
        response = client.get(path, headers=admin if "admin" in path else tenant.headers)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == "month"
