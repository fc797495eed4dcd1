"""The audit trail on SQLite and PostgreSQL: every transfer and admin action is chained; concurrent
appends chain linearly; `ledger verify` names the first broken link after a row is changed or removed."""

import json
import threading

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from vidfactory.api.app import create_app
from vidfactory.billing import audit, ledger
from vidfactory.billing.verify import verify
from vidfactory.db.models import AuditEntry, Transfer

from billing_support import admin
from conftest import assert_ledger_clean, new_tenant


def entries(sessions) -> list[AuditEntry]:
    with sessions() as s:
        return list(s.scalars(select(AuditEntry).order_by(AuditEntry.seq)))


def test_every_transfer_is_audited_in_its_transaction(sessions):
    tenant = new_tenant(sessions, tokens=100)
    with sessions.begin() as s:
        held = ledger.hold(s, tenant_id=tenant.id, amount=40, job_id="video_a1", expires_at=audit.utcnow())
        ledger.post(s, held.id, 10)
    with pytest.raises(ledger.InsufficientBalance), sessions.begin() as s:
        ledger.hold(s, tenant_id=tenant.id, amount=10_000, job_id="video_a2", expires_at=audit.utcnow())
    with sessions() as s:
        transfer_ids = list(s.scalars(select(Transfer.id).order_by(Transfer.seq)))
    audited = [e.subject for e in entries(sessions) if e.kind.startswith("ledger.")]
    assert audited == transfer_ids  # one entry per transfer, none for the refused hold
    kinds = [e.kind for e in entries(sessions)]
    assert kinds[-2:] == ["ledger.hold", "ledger.post"] and "ledger.credit" in kinds
    assert "tenant.created" in kinds and "api_key.created" in kinds and "price_book.published" in kinds
    assert audit.verify_chain(sessions()) is None


def test_admin_actions_are_audited_with_their_actor(sessions, settings):
    with TestClient(create_app(settings, workers=0)) as client:
        tenant = client.post("/v1/admin/tenants", headers=admin, json={"name": "acme"}).json()
        key = client.post(f"/v1/admin/tenants/{tenant['id']}/keys", headers=admin).json()
        client.post(f"/v1/admin/tenants/{tenant['id']}/credits", headers=admin, json={"tokens": 10})
        client.post("/v1/admin/price_books", headers=admin, json={"method": "table"})
        client.put(f"/v1/admin/tenants/{tenant['id']}/price_book", headers=admin, json={"version": 1})
        client.post(f"/v1/admin/tenants/{tenant['id']}/vouchers", headers=admin, json={"tokens": 5, "reason": "r"})
        revoked = client.post(f"/v1/admin/keys/{key['id']}/revoke", headers=admin)
        assert revoked.status_code == 200 and revoked.json()["revoked"] is True
        assert client.get("/v1/balance", headers={"Authorization": f"Bearer {key['key']}"}).status_code == 401
        listed = client.get("/v1/admin/audit?limit=1000", headers=admin).json()
    assert listed["verified"] is True and listed["first_broken"] is None
    by_admin = [(e["kind"], e["subject"]) for e in listed["data"] if e["actor"] == "admin"]
    assert [kind for kind, _ in by_admin] == [
        "tenant.created", "api_key.created", "ledger.credit", "price_book.published", "tenant.price_book_pinned",
        "ledger.grant", "api_key.revoked"]
    assert ("api_key.revoked", f"api_key:{key['id']}") in by_admin
    assert key["key"] not in json.dumps(listed)  # the key itself is never logged


def test_review_decisions_are_audited(sessions, settings):
    from vidfactory.api.render import video_object
    from vidfactory.jobs import queue
    from vidfactory.jobs.submit import VideoRequest, submit
    from vidfactory.tenancy import authenticate

    with TestClient(create_app(settings, workers=0)) as client:
        ctx = client.app.state.ctx
        tenant = new_tenant(ctx.sessions, tokens=10_000)
        with ctx.sessions() as s:
            caller = authenticate(s, tenant.key)
        ids = [submit(ctx.sessions, ctx.settings, ctx.counters, caller,
                      VideoRequest(prompt=f"held {n}", model="wan-tiny", size="64x64", seconds="1"), video_object,
                      review=queue.Review("prompt", "matched"), screens=ctx.screens).body["id"] for n in range(2)]
        assert client.post(f"/v1/admin/reviews/{ids[0]}/approve", headers=admin).status_code == 200
        assert client.post(f"/v1/admin/reviews/{ids[1]}/reject", headers=admin, json={}).status_code == 200
    decisions = [(e.kind, e.subject, e.actor) for e in entries(sessions) if e.kind.startswith("review.")]
    assert decisions == [("review.approved", f"video:{ids[0]}", "admin"),
                         ("review.rejected", f"video:{ids[1]}", "admin")]


def test_concurrent_appends_chain_linearly(sessions):
    tenants = [new_tenant(sessions) for _ in range(4)]
    barrier = threading.Barrier(20)

    def top_up(n: int) -> None:
        barrier.wait()
        with sessions.begin() as s:
            ledger.credit(s, tenants[n % 4].id, 10 + n)

    threads = [threading.Thread(target=top_up, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    chain = entries(sessions)
    assert [e.seq for e in chain] == list(range(1, len(chain) + 1))
    assert all(b.prev_hash == a.hash for a, b in zip(chain, chain[1:]))
    assert sum(e.kind == "ledger.credit" for e in chain) == 20
    assert_ledger_clean(sessions)


def test_verify_names_the_first_tampered_row(sessions):
    tenant = new_tenant(sessions, tokens=100)
    new_tenant(sessions, tokens=200)
    assert_ledger_clean(sessions)
    target = next(e for e in entries(sessions) if e.kind == "ledger.credit" and e.data["tenant_id"] == tenant.id)
    changed = {**target.data, "amount": 1_000_000}
    with sessions.begin() as s:
        s.execute(text("UPDATE audit_log SET data = :data WHERE seq = :seq"),
                  {"data": json.dumps(changed), "seq": target.seq})
    with sessions() as s:
        breaches = verify(s)
    assert breaches == [
        f"audit log broken at entry {target.seq}: contents do not match its hash (the entry was changed)"]


def test_verify_finds_a_removed_entry_and_a_forged_link(sessions):
    new_tenant(sessions, tokens=100)
    chain = entries(sessions)
    last = chain[-1]
    with sessions.begin() as s:
        s.execute(text("DELETE FROM audit_log WHERE seq = :seq"), {"seq": last.seq})
    with sessions() as s:
        assert audit.verify_chain(s).seq == last.seq and "removed" in audit.verify_chain(s).reason
    middle = chain[1]
    with sessions.begin() as s:
        s.execute(text("UPDATE audit_log SET prev_hash = :h WHERE seq = :seq"), {"h": "f" * 64, "seq": middle.seq})
    with sessions() as s:
        found = audit.verify_chain(s)
    assert (found.seq, found.reason) == (middle.seq, "prev_hash does not match the previous entry's hash")


def test_cli_ledger_verify_reports_the_tampered_row(tmp_path, database_url, models_dir, sessions):
    from test_cli import Cli

    cli = Cli(tmp_path, models_dir, database_url)
    tenant = new_tenant(sessions, tokens=100)
    assert cli.ok("ledger", "verify").returncode == 0
    target = next(e for e in entries(sessions) if e.kind == "ledger.credit" and e.data["tenant_id"] == tenant.id)
    with sessions.begin() as s:
        s.execute(text("UPDATE audit_log SET actor = 'someone-else' WHERE seq = :seq"), {"seq": target.seq})
    found = cli("ledger", "verify", "--json")
    assert found.returncode == 1
    assert json.loads(found.stdout)["breaches"] == [
        f"audit log broken at entry {target.seq}: contents do not match its hash (the entry was changed)"]
