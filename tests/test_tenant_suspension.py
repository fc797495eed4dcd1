"""Suspending a tenant (admin API and CLI): new submissions and new keys are refused with 403
tenant_suspended; queued and running jobs finish and settle; reads and cancels go on; audited."""

from __future__ import annotations

from sqlalchemy import select

from vidfactory.db.models import AuditEntry
from vidfactory.jobs.worker import Worker

from conftest import assert_ledger_clean, new_tenant

admin = {"Authorization": "Bearer test-admin-token"}
small = {"prompt": "a cat", "size": "64x64", "seconds": "1", "cache": "off"}


def test_suspension_blocks_new_work_and_keys_and_lets_queued_jobs_finish(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=100_000)
    queued = client.post("/v1/videos", headers=tenant.headers, json=small).json()
    suspended = client.post(f"/v1/admin/tenants/{tenant.id}/suspend", headers=admin, json={"reason": "chargeback"})
    assert suspended.status_code == 200, suspended.text
    assert suspended.json()["suspended_reason"] == "chargeback" and suspended.json()["suspended_at"] > 0
    for path, body in (("/v1/videos", small), (f"/v1/videos/{queued['id']}/regenerate", {})):
        refused = client.post(path, headers=tenant.headers, json=body)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "tenant_suspended" and "chargeback" in refused.json()["error"]["message"]
    key = client.post(f"/v1/admin/tenants/{tenant.id}/keys", headers=admin)
    assert key.status_code == 403 and key.json()["error"]["code"] == "tenant_suspended"
    # What was queued runs and settles; the tenant still reads its videos and balance.
    assert Worker(ctx.settings, ctx.sessions, ctx.storage, worker_id="w").run_once()
    done = client.get(f"/v1/videos/{queued['id']}", headers=tenant.headers).json()
    assert done["status"] == "completed"
    assert client.get("/v1/balance", headers=tenant.headers).json()["pending"] == 0
    again = client.post(f"/v1/admin/tenants/{tenant.id}/suspend", headers=admin, json={"reason": "twice"})
    assert again.json()["suspended_reason"] == "chargeback"  # already suspended: unchanged
    resumed = client.post(f"/v1/admin/tenants/{tenant.id}/resume", headers=admin).json()
    assert resumed["suspended_at"] is None
    assert client.post("/v1/videos", headers=tenant.headers, json=small).status_code == 200
    with ctx.sessions() as session:
        kinds = list(session.scalars(select(AuditEntry.kind).where(AuditEntry.subject == f"tenant:{tenant.id}")))
    assert kinds.count("tenant.suspended") == 1 and kinds.count("tenant.resumed") == 1
    assert_ledger_clean(ctx.sessions)


def test_suspension_needs_a_reason_and_a_tenant(client, ctx):
    tenant = new_tenant(ctx.sessions)
    assert client.post(f"/v1/admin/tenants/{tenant.id}/suspend", headers=admin, json={}).status_code == 400
    missing = client.post("/v1/admin/tenants/ten_00000000000000000000/suspend", headers=admin, json={"reason": "x"})
    assert missing.status_code == 404
    assert client.post(f"/v1/admin/tenants/{tenant.id}/suspend", headers=tenant.headers,
                       json={"reason": "x"}).status_code == 403
