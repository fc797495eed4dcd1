"""The console's Billing and Developers pages without a browser, on SQLite and PostgreSQL: owners only,
every form refused without its CSRF token, a key made in the console works for the API, is shown once
and stops at revocation, statements download as the API serves them, usage and prices are drawn."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import update

from vidfactory.accounts import PasswordHasher, create_user, session_cookie, sign_in
from vidfactory.accounts.sessions import csrf_token
from vidfactory.db.models import VoucherCode
from vidfactory.db.types import utcnow
from vidfactory.notify import endpoints
from vidfactory.tenancy import key_use_resolution_s, list_keys, note_key_used

from billing_support import admin, finish_without_media, small
from conftest import TenantHandle, new_tenant

password = "correct horse battery"
hasher = PasswordHasher(time_cost=1, memory_kib=1024)


def person(client, role: str, tenant: TenantHandle | None = None, tokens: int = 0) -> tuple[str, TenantHandle]:
    """A signed-in user's session token (and their tenant: a new one unless given)."""
    ctx = client.app.state.ctx
    tenant = tenant or new_tenant(ctx.sessions, tokens=tokens)
    email = f"{role}-{uuid.uuid4().hex[:8]}@example.com"
    with ctx.sessions.begin() as session:
        create_user(session, hasher, email, role, password, tenant.id)
    with ctx.sessions.begin() as session:
        outcome = sign_in(session, hasher, email, password, ttl_s=3600, failures_max=5)
    assert outcome.error is None
    return outcome.token, tenant


def as_user(client, token: str):
    client.cookies.set(session_cookie, token)
    return client


def post(client, token: str, path: str, **fields):
    return as_user(client, token).post(path, data={"csrf_token": csrf_token(token), **fields}, follow_redirects=False)


def test_only_owners_reach_billing_and_developers(client):
    owner, tenant = person(client, "owner")
    for role in ("member", "viewer"):
        token, _ = person(client, role, tenant)
        for path in ("/billing", "/developers", f"/billing/statements/{utcnow():%Y-%m}?format=csv"):
            answer = as_user(client, token).get(path)
            assert answer.status_code == 403 and "Your role does not allow this page." in answer.text
        for path in ("/developers/keys", "/developers/webhooks", "/billing/vouchers/redeem"):
            assert post(client, token, path, label="x", url="https://example.com/h", code="x").status_code == 403
    page = as_user(client, owner).get("/developers")
    assert page.status_code == 200 and 'href="/developers"' in page.text and 'href="/billing"' in page.text
    client.cookies.clear()
    assert client.get("/billing", follow_redirects=False).headers["location"] == "/sign-in?next=/billing"


def test_every_form_is_refused_without_its_token(client):
    owner, tenant = person(client, "owner")
    ctx = client.app.state.ctx
    with ctx.sessions.begin() as session:
        endpoint = endpoints.create_endpoint(session, tenant.id, "https://example.com/hook", "", [])
        endpoint_id = endpoint.id
    key_id = re.search(r'<tr id="(key_[0-9a-f]+)"', as_user(client, owner).get("/developers").text).group(1)
    for path in ("/billing/vouchers/redeem", "/developers/keys", f"/developers/keys/{key_id}/revoke", "/developers/webhooks",
                 f"/developers/webhooks/{endpoint_id}/test", f"/developers/webhooks/{endpoint_id}/delete"):
        for token in ("", "not-the-token"):
            answer = as_user(client, owner).post(path, data={"csrf_token": token, "label": "x",
                                                             "url": "https://example.com/other"})
            assert answer.status_code == 403 and "did not come from this page" in answer.text
    assert client.get("/v1/balance", headers=tenant.headers).status_code == 200  # the key was not revoked
    with ctx.sessions() as session:
        assert [e.id for e in endpoints.list_endpoints(session, tenant.id)] == [endpoint_id]
        assert endpoints.deliveries(session, tenant.id, limit=10) == []


def test_a_console_key_works_for_the_api_is_shown_once_and_revocation_stops_it(client):
    owner, tenant = person(client, "owner", tokens=1000)
    created = post(client, owner, "/developers/keys", label="ci pipeline")
    assert created.status_code == 201
    secret = re.search(r'id="new-key-secret" type="text" readonly value="([^"]+)"', created.text).group(1)
    key_id = re.search(r'data-key-id="([^"]+)"', created.text).group(1)
    assert re.search(rf'<tr id="{key_id}">.*?<td>never</td>', created.text, re.S)
    bearer = {"Authorization": f"Bearer {secret}"}
    assert client.get("/v1/balance", headers=bearer).json()["available"] == 1000
    later = as_user(client, owner).get("/developers").text
    assert secret not in later and f"<code>{secret[:10]}…</code>" in later and "ci pipeline" in later
    assert re.search(rf'<tr id="{key_id}">.*?<td>{utcnow():%Y-%m-%d} ', later, re.S)  # its last use
    other_owner, _ = person(client, "owner")
    assert post(client, other_owner, f"/developers/keys/{key_id}/revoke").status_code == 404  # not theirs
    assert client.get("/v1/balance", headers=bearer).status_code == 200
    revoked = post(client, owner, f"/developers/keys/{key_id}/revoke")
    assert revoked.status_code == 303
    assert client.get("/v1/balance", headers=bearer).status_code == 401
    assert client.get("/v1/balance", headers=tenant.headers).status_code == 200  # the tenant's other key lives
    too_long = post(client, owner, "/developers/keys", label="x" * 101)
    assert too_long.status_code == 400 and "new-key-secret" not in too_long.text
    assert re.search(r'id="label-error"[^>]*data-code="invalid_value">A key&#39;s label is at most 100', too_long.text)
    controlled = post(client, owner, "/developers/keys", label="ci\x1bpipeline")
    assert controlled.status_code == 400 and "new-key-secret" not in controlled.text
    assert re.search(r'id="label-error"[^>]*data-code="invalid_value">[^<]*no control characters', controlled.text)


def test_a_webhook_endpoint_is_added_tested_and_removed_from_the_page(client):
    owner, tenant = person(client, "owner")
    refused = post(client, owner, "/developers/webhooks", url="http://127.0.0.1:9/hook")
    assert refused.status_code == 400 and re.search(r'id="url-error"[^>]*data-code="webhook_url_refused"', refused.text)
    assert "cannot receive webhooks" in refused.text and "non-public address" in refused.text  # words, then detail
    assert 'value="http://127.0.0.1:9/hook"' in refused.text
    zh = as_user(client, owner).post("/developers/webhooks", headers={"Accept-Language": "zh-CN"},
                                     data={"csrf_token": csrf_token(owner), "url": "ftp://example.com/x"})
    assert zh.status_code == 400 and "此地址无法接收 Webhook" in zh.text
    added = post(client, owner, "/developers/webhooks", url="http://93.184.215.14/hook", description="orders")
    assert added.status_code == 201
    secret = re.search(r'id="new-endpoint-secret" type="text" readonly value="(whsec_[^"]+)"', added.text).group(1)
    listed = client.get("/v1/webhook_endpoints", headers=tenant.headers).json()["data"]
    assert [e["url"] for e in listed] == ["http://93.184.215.14/hook"] and "secret" not in listed[0]
    endpoint_id = listed[0]["id"]
    assert secret not in as_user(client, owner).get("/developers").text
    tested = post(client, owner, f"/developers/webhooks/{endpoint_id}/test")
    assert tested.status_code == 303 and tested.headers["location"] == f"/developers#{endpoint_id}"
    log = client.get(f"/v1/webhook_endpoints/{endpoint_id}/deliveries", headers=tenant.headers).json()["data"]
    assert [(d["event_type"], d["status"]) for d in log] == [("webhook.test", "pending")]
    panel = as_user(client, owner).get(f"/developers/webhooks/{endpoint_id}/deliveries")
    assert "webhook.test" in panel.text and 'hx-trigger="every 1s"' in panel.text  # polls while pending
    other_owner, _ = person(client, "owner")
    assert post(client, other_owner, f"/developers/webhooks/{endpoint_id}/test").status_code == 404
    assert as_user(client, other_owner).get(f"/developers/webhooks/{endpoint_id}/deliveries").status_code == 404
    assert post(client, owner, f"/developers/webhooks/{endpoint_id}/delete").status_code == 303
    assert client.get("/v1/webhook_endpoints", headers=tenant.headers).json()["data"] == []


def test_the_api_sends_a_test_event_to_one_endpoint(client):
    tenant = new_tenant(client.app.state.ctx.sessions)
    made = [client.post("/v1/webhook_endpoints", headers=tenant.headers,
                        json={"url": f"http://93.184.215.14/{name}", "event_types": ["video.completed"]}).json()
            for name in ("a", "b")]
    sent = client.post(f"/v1/webhook_endpoints/{made[0]['id']}/test", headers=tenant.headers)
    assert sent.status_code == 201
    assert sent.json()["event_type"] == "webhook.test" and sent.json()["endpoint_id"] == made[0]["id"]
    assert client.get(f"/v1/webhook_endpoints/{made[1]['id']}/deliveries", headers=tenant.headers).json()["data"] == []
    other = new_tenant(client.app.state.ctx.sessions)
    assert client.post(f"/v1/webhook_endpoints/{made[0]['id']}/test", headers=other.headers).status_code == 404


@pytest.mark.parametrize("fmt", ["csv", "pdf"])
def test_statement_downloads_match_the_api(client, fmt):
    owner, tenant = person(client, "owner", tokens=5000)
    month = f"{utcnow():%Y-%m}"
    page = as_user(client, owner).get("/billing").text
    assert f'href="/billing/statements/{month}?format={fmt}"' in page
    console = as_user(client, owner).get(f"/billing/statements/{month}?format={fmt}")
    api = client.get(f"/v1/statements/{month}?format={fmt}", headers=tenant.headers)
    assert console.status_code == api.status_code == 200
    assert console.headers["content-type"] == api.headers["content-type"]
    assert console.headers["content-disposition"] == api.headers["content-disposition"]
    if fmt == "csv":
        assert console.content == api.content and "top_ups,credits,,,,5000" in console.text
    else:
        assert console.content.startswith(b"%PDF")
    assert as_user(client, owner).get("/billing/statements/2026-13?format=csv").status_code == 404


def test_the_billing_page_draws_usage_vouchers_and_prices(client):
    owner, tenant = person(client, "owner", tokens=50_000)
    ctx = client.app.state.ctx
    empty = as_user(client, owner).get("/billing").text
    assert "Nothing charged in the last 30 days." in empty and "No vouchers yet." in empty
    video = client.post("/v1/videos", headers=tenant.headers, json={"prompt": "a red kite", **small}).json()
    finish_without_media(ctx.sessions, video["id"])
    client.post(f"/v1/admin/tenants/{tenant.id}/vouchers", headers=admin, json={"tokens": 70, "reason": "welcome"})
    charged = video["usage"]["total_tokens"]
    page = as_user(client, owner).get("/billing").text
    assert f"{charged:,} tokens charged" in page
    assert page.count("<rect ") >= 30 + 1 and f"{utcnow():%Y-%m-%d}: {charged:,} tokens" in page
    assert re.search(r'<code>wan-tiny</code></td><td>1</td><td>' + f"{charged:,}", page)
    assert "welcome" in page and 'id="vouchers-available">70 tokens' in page
    assert "Prices in force" in page and "×2" in page and "CNY 0.3" in page  # 100 + 100 × 2 tokens at 0.001
    zh = as_user(client, owner).get("/billing", headers={"Accept-Language": "zh-CN"}).text
    assert "当前价格" in zh and "对账单" in zh


def test_a_voucher_code_is_redeemed_once_from_the_page(client):
    owner, tenant = person(client, "owner")
    issued = client.post("/v1/admin/voucher_codes", headers=admin, json={"tokens": 500, "reason": "spring promotion"})
    assert issued.status_code == 201 and issued.json()["code"].startswith("VF-")
    code = issued.json()["code"]
    wrong = post(client, owner, "/billing/vouchers/redeem", code="VF-0000-0000-0000-0000-0000")
    assert wrong.status_code == 400 and re.search(r'id="code-error"[^>]*data-code="voucher_code_invalid"', wrong.text)
    redeemed = post(client, owner, "/billing/vouchers/redeem", code=f"  {code.lower()} ")
    assert redeemed.status_code == 200 and "Redeemed: 500 tokens" in redeemed.text
    assert 'id="vouchers-available">500 tokens' in redeemed.text and "spring promotion" in redeemed.text
    assert client.get("/v1/vouchers", headers=tenant.headers).json()["available"] == 500
    again = post(client, owner, "/billing/vouchers/redeem", code=code)
    assert again.status_code == 400 and "already used" in again.text
    other = new_tenant(client.app.state.ctx.sessions)
    refused = client.post("/v1/vouchers/redeem", headers=other.headers, json={"code": code})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "voucher_code_invalid"
    assert client.get("/v1/vouchers", headers=other.headers).json()["available"] == 0


def test_the_api_redeems_a_code_before_its_deadline_only(client):
    tenant = new_tenant(client.app.state.ctx.sessions)
    code = client.post("/v1/admin/voucher_codes", headers=admin,
                       json={"tokens": 9, "reason": "r", "redeem_within_days": 1}).json()["code"]
    with client.app.state.ctx.sessions.begin() as session:
        session.execute(update(VoucherCode).values(redeem_by=utcnow() - timedelta(seconds=1)))
    assert client.post("/v1/vouchers/redeem", headers=tenant.headers, json={"code": code}).status_code == 400
    assert client.post("/v1/vouchers/redeem", headers=tenant.headers, json={"code": "x" * 65}).status_code == 400
    assert client.post("/v1/admin/voucher_codes", headers=tenant.headers,
                       json={"tokens": 9, "reason": "r"}).status_code == 403


def test_a_keys_last_use_is_written_once_a_minute(client):
    tenant = new_tenant(client.app.state.ctx.sessions)
    with client.app.state.ctx.sessions() as session:
        key_id = list_keys(session, tenant.id)[0].id
    now = utcnow()
    with client.app.state.ctx.sessions.begin() as session:
        assert note_key_used(session, key_id, now)
        assert not note_key_used(session, key_id, now + timedelta(seconds=key_use_resolution_s - 1))
        assert note_key_used(session, key_id, now + timedelta(seconds=key_use_resolution_s))
