"""Vouchers on SQLite and PostgreSQL: spent before paid balance (holds and settles), expired through the
ledger by the sweeper, granted as compensation under the pinned price book's policy, granted by hand."""

from datetime import timedelta

import pytest

from vidfactory.billing import ledger
from vidfactory.billing.verify import verify
from vidfactory.db.types import utcnow
from vidfactory.jobs import maintenance

from billing_support import admin, fail_job, finish_without_media, job_row, small, transfers_of_job
from conftest import assert_ledger_clean, new_tenant


def later(days=30):
    return utcnow() + timedelta(days=days)


def grant(sessions, tenant_id, amount, expires_at):
    with sessions.begin() as s:
        return ledger.grant_voucher(s, tenant_id, amount, expires_at, memo="test")


def balances(sessions, tenant_id):
    with sessions() as s:
        return ledger.balance(s, tenant_id), ledger.voucher_balance(s, tenant_id)


def test_vouchers_are_held_and_spent_before_paid_balance(sessions):
    tenant = new_tenant(sessions, tokens=1000)
    grant(sessions, tenant.id, 300, later())
    with sessions.begin() as s:
        only_vouchers = ledger.hold(s, tenant_id=tenant.id, amount=200, job_id="video_v1", expires_at=later(1))
        split = ledger.hold(s, tenant_id=tenant.id, amount=150, job_id="video_v2", expires_at=later(1))
    assert [leg.debit_account_id for leg in only_vouchers.legs] == [ledger.voucher_account_id(tenant.id)]
    assert only_vouchers.voucher_id is None and only_vouchers.id == only_vouchers.legs[0].id
    assert [(leg.debit_account_id, leg.amount) for leg in split.legs] == [
        (ledger.voucher_account_id(tenant.id), 100), (ledger.tenant_account_id(tenant.id), 50)]
    paid, vouchers = balances(sessions, tenant.id)
    assert (paid.available, paid.pending, vouchers.available, vouchers.pending) == (950, 50, 0, 300)
    with sessions.begin() as s:
        posts = ledger.settle(s, [split.id, split.voucher_id], 120)  # the voucher leg is charged first
    assert [(p.pending_id, p.amount) for p in posts] == [(split.voucher_id, 100), (split.id, 20)]
    with sessions.begin() as s:
        ledger.void_all(s, [only_vouchers.id])
    paid, vouchers = balances(sessions, tenant.id)
    assert (paid.posted, paid.available, vouchers.posted, vouchers.available) == (980, 980, 200, 200)


def test_admission_counts_vouchers_and_refuses_beyond_both(sessions):
    tenant = new_tenant(sessions, tokens=50)
    grant(sessions, tenant.id, 100, later())
    with pytest.raises(ledger.InsufficientBalance) as refused, sessions.begin() as s:
        ledger.hold(s, tenant_id=tenant.id, amount=151, job_id="video_v3", expires_at=later(1))
    assert (refused.value.needed, refused.value.available) == (151, 150)
    paid, vouchers = balances(sessions, tenant.id)
    assert (paid.pending, vouchers.pending) == (0, 0)  # nothing held when refused
    with sessions.begin() as s:
        assert ledger.hold(s, tenant_id=tenant.id, amount=150, job_id="video_v4", expires_at=later(1)).amount == 150


def test_expiry_goes_through_the_ledger_soonest_expiring_first(sessions):
    tenant = new_tenant(sessions, tokens=0)
    now = utcnow()
    first = grant(sessions, tenant.id, 100, now + timedelta(days=1))
    second = grant(sessions, tenant.id, 50, now + timedelta(days=2))
    with sessions.begin() as s:
        spent = ledger.hold(s, tenant_id=tenant.id, amount=30, job_id="video_v5", expires_at=later(1))
        ledger.settle(s, [spent.id], 30)
    assert maintenance.expire_vouchers(sessions, now) == 0  # nothing due yet
    assert maintenance.expire_vouchers(sessions, now + timedelta(days=1, seconds=1)) == 1
    assert maintenance.expire_vouchers(sessions, now + timedelta(days=1, seconds=1)) == 0  # once per grant
    _, vouchers = balances(sessions, tenant.id)
    assert vouchers.available == 50  # the 30 spent came out of the first grant: 70 of it expired
    with sessions() as s:
        expiries = {g.id: e.amount for g, e in ledger.voucher_grants(s, tenant.id) if e is not None}
    assert expiries == {first.id: 70}
    assert maintenance.expire_vouchers(sessions, now + timedelta(days=3)) == 1
    _, vouchers = balances(sessions, tenant.id)
    assert (vouchers.available, vouchers.posted) == (0, 0)
    with sessions() as s:
        assert {g.id: e.amount for g, e in ledger.voucher_grants(s, tenant.id)} == {first.id: 70, second.id: 50}
        # Only the stand-in job id is missing; every balance and every expiry checks out.
        assert verify(s) == ["holds name job video_v5, which does not exist"]


def test_expiry_leaves_held_vouchers_to_their_job(sessions):
    tenant = new_tenant(sessions, tokens=0)
    now = utcnow()
    grant(sessions, tenant.id, 100, now + timedelta(days=1))
    with sessions.begin() as s:
        held = ledger.hold(s, tenant_id=tenant.id, amount=40, job_id="video_v6", expires_at=later(5))
    assert maintenance.expire_vouchers(sessions, now + timedelta(days=2)) == 1
    _, vouchers = balances(sessions, tenant.id)
    assert (vouchers.available, vouchers.pending, vouchers.posted) == (0, 40, 40)
    with sessions.begin() as s:
        ledger.settle(s, [held.id], 40)
    _, vouchers = balances(sessions, tenant.id)
    assert (vouchers.available, vouchers.posted) == (0, 0)


def test_failed_job_earns_a_voucher_per_the_pinned_price_book(client):
    ctx = client.app.state.ctx
    published = client.post("/v1/admin/price_books", headers=admin, json={
        "compensation": {"ratio": "0.5", "expires_days": 7, "error_types": ["engine_crash", "oom"]}})
    assert published.status_code == 201, published.text
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    videos = [client.post("/v1/videos", headers=tenant.headers, json={"prompt": f"clip {n}", **small,
                                                                     "cache": "off"}).json() for n in range(3)]
    voucher = fail_job(ctx.sessions, videos[0]["id"], "oom")
    total = videos[0]["usage"]["total_tokens"]
    assert voucher is not None and voucher.kind == "grant" and voucher.amount == -(-total // 2)  # rounded up
    assert timedelta(days=6, hours=23) < voucher.expires_at - utcnow() <= timedelta(days=7)
    assert fail_job(ctx.sessions, videos[1]["id"], "invalid_input") is None  # not in the policy
    kinds = [t.kind for t in transfers_of_job(ctx.sessions, videos[0]["id"])]
    assert kinds == ["hold", "void"]
    listed = client.get("/v1/vouchers", headers=tenant.headers).json()
    assert listed["available"] == voucher.amount and listed["grants"][0]["id"] == voucher.id
    assert listed["grants"][0]["expired"] is None
    assert_ledger_clean(ctx.sessions)


def test_default_price_book_grants_no_voucher(client):
    ctx = client.app.state.ctx
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    video = client.post("/v1/videos", headers=tenant.headers, json={"prompt": "x", **small}).json()
    assert fail_job(ctx.sessions, video["id"], "engine_crash") is None  # its ratio is 0


def test_admin_grants_a_voucher_by_hand_once_per_key(client):
    ctx = client.app.state.ctx
    tenant = new_tenant(ctx.sessions, tokens=0)
    url = f"/v1/admin/tenants/{tenant.id}/vouchers"
    body = {"tokens": 500, "expires_days": 10, "reason": "outage on 1 December"}
    first = client.post(url, headers={**admin, "Idempotency-Key": "g1"}, json=body)
    again = client.post(url, headers={**admin, "Idempotency-Key": "g1"}, json=body)
    assert first.status_code == again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert first.json()["memo"] == "outage on 1 December" and first.json()["kind"] == "grant"
    assert client.post(url, headers=admin, json={"tokens": 5}).status_code == 400  # a reason is required
    assert client.post(url, headers=admin, json={**body, "tokens": 0}).status_code == 400
    assert client.post("/v1/admin/tenants/ten_nobody/vouchers", headers=admin, json=body).status_code == 404
    assert client.get("/v1/vouchers", headers=tenant.headers).json()["available"] == 500
    # Vouchers alone admit a job; the hold draws on them.
    video = client.post("/v1/videos", headers=tenant.headers, json={"prompt": "on vouchers", **small})
    assert video.status_code == 200, video.text
    assert client.get("/v1/vouchers", headers=tenant.headers).json()["pending"] == video.json()["usage"]["total_tokens"]
    assert_ledger_clean(ctx.sessions)


def test_a_split_hold_settles_and_bills_as_one(client):
    ctx = client.app.state.ctx
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    grant(ctx.sessions, tenant.id, 5, later())
    video = client.post("/v1/videos", headers=tenant.headers, json={"prompt": "split", **small}).json()
    job = job_row(ctx.sessions, video["id"])
    assert job.voucher_hold_id is not None and len(job.hold_leg_ids) == 2
    finish_without_media(ctx.sessions, video["id"])
    done = client.get(f"/v1/videos/{video['id']}", headers=tenant.headers).json()
    total = video["usage"]["total_tokens"]
    assert done["billing"] == {"price_book_version": 1, "held": total, "settled": total, "released": 0,
                               "status": "settled"}
    listed = client.get("/v1/videos", headers=tenant.headers).json()["data"][0]
    assert listed["billing"] == done["billing"]
    _, vouchers = balances(ctx.sessions, tenant.id)
    assert vouchers.posted == 0
    assert_ledger_clean(ctx.sessions)
