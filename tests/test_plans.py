"""/v1/admin/plans on SQLite and PostgreSQL: an admin lists, reads, creates and changes plans, every change
audited; allowing step caching makes the plan's tenants' new jobs run with the worker's step cache while
jobs already queued keep what they were submitted with; tenant keys are refused; bad input changes nothing."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from conftest import assert_ledger_clean, make_settings, new_tenant
from vidfactory.api.app import create_app
from vidfactory.jobs.worker import Worker

admin = {"Authorization": "Bearer test-admin-token"}
small = {"size": "64x64", "seconds": "1"}


@pytest.fixture
def cached_client(tmp_path, database_url, models_dir):
    """Workers set to First Block Cache: it runs only for plans that allow it."""
    settings = make_settings(tmp_path, database_url, models_dir, step_cache="first_block")
    with TestClient(create_app(settings, workers=0)) as test_client:
        yield test_client


def audit_entries(client, kind: str) -> list[dict]:
    page = client.get("/v1/admin/audit?limit=100", headers=admin).json()
    assert page["verified"] is True
    return [entry for entry in page["data"] if entry["kind"] == kind]


def submit(client, tenant) -> str:
    created = client.post("/v1/videos", headers=tenant.headers, json={"prompt": "a heron at dawn", **small})
    assert created.status_code == 200, created.text
    return created.json()["id"]


def test_allowing_step_caching_applies_to_jobs_submitted_afterwards(cached_client):
    client, ctx = cached_client, cached_client.app.state.ctx
    tenant = new_tenant(ctx.sessions, tokens=10_000, plan="pro")
    queued_before = submit(client, tenant)
    changed = client.patch("/v1/admin/plans/pro", headers=admin, json={"step_cache_allowed": True})
    assert changed.status_code == 200, changed.text
    assert changed.json()["step_cache_allowed"] is True and changed.json()["tenants"] >= 1
    submitted_after = submit(client, tenant)
    worker = Worker(ctx.settings, ctx.sessions, ctx.storage, worker_id="w")
    assert worker.run_once() and worker.run_once()
    ran = {video_id: client.get(f"/v1/videos/{video_id}", headers=tenant.headers).json()
           for video_id in (queued_before, submitted_after)}
    assert {video["status"] for video in ran.values()} == {"completed"}
    assert ran[queued_before]["engine_settings"]["step_cache"] == "none"  # kept what it was submitted with
    assert ran[submitted_after]["engine_settings"]["step_cache"] == "first_block"
    [entry] = audit_entries(client, "plan.updated")
    assert (entry["subject"], entry["actor"]) == ("plan:pro", "admin")
    assert entry["data"] == {"step_cache_allowed": {"from": False, "to": True}}
    assert_ledger_clean(ctx.sessions)


def test_admin_lists_reads_and_creates_plans(client, ctx):
    listed = client.get("/v1/admin/plans", headers=admin).json()
    assert [plan["id"] for plan in listed["data"]] == ["enterprise", "free", "pro"]
    new_tenant(ctx.sessions, plan="free")
    free = client.get("/v1/admin/plans/free", headers=admin).json()
    assert free == {"object": "plan", "id": "free", "priority": 0, "requests_per_minute": 30,
                    "tenant_requests_per_minute": 60, "read_requests_per_minute": 300,
                    "tenant_read_requests_per_minute": 600, "concurrent_jobs": 1, "active_jobs_max": 4,
                    "step_cache_allowed": False, "review_deadline_s": 3600, "review_deadline_action": "refund",
                    "training_samples_max": 20, "training_steps_max": 500, "concurrent_trainings": 1,
                    "retention_days": 7, "tenants": 1}
    created = client.post("/v1/admin/plans", headers=admin, json={"id": "studio", "priority": 7,
                                                                  "step_cache_allowed": True})
    assert created.status_code == 201, created.text
    assert created.json()["priority"] == 7 and created.json()["tenants"] == 0
    assert client.post("/v1/admin/plans", headers=admin, json={"id": "studio"}).status_code == 409
    tenant = client.post("/v1/admin/tenants", headers=admin, json={"name": "acme", "plan": "studio"})
    assert tenant.status_code == 201, tenant.text
    [entry] = audit_entries(client, "plan.created")
    assert entry["subject"] == "plan:studio" and entry["data"]["step_cache_allowed"] is True
    assert client.get("/v1/admin/plans/gold", headers=admin).status_code == 404
    assert client.patch("/v1/admin/plans/gold", headers=admin, json={"priority": 1}).status_code == 404


def test_plan_routes_refuse_tenant_keys_and_missing_tokens(client, ctx):
    tenant = new_tenant(ctx.sessions)
    for method, path, body in [("GET", "/v1/admin/plans", None), ("GET", "/v1/admin/plans/pro", None),
                               ("PATCH", "/v1/admin/plans/pro", {"step_cache_allowed": True}),
                               ("POST", "/v1/admin/plans", {"id": "mine"})]:
        refused = client.request(method, path, headers=tenant.headers, json=body)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "admin_only", refused.text
        assert client.request(method, path, json=body).status_code == 401
    assert client.get("/v1/admin/plans/pro", headers=admin).json()["step_cache_allowed"] is False
    assert [p["id"] for p in client.get("/v1/admin/plans", headers=admin).json()["data"]] == \
        ["enterprise", "free", "pro"]


@pytest.mark.parametrize(("body", "param"), [
    ({"priority": -1}, "priority"),
    ({"priority": 101}, "priority"),
    ({"priority": "5"}, "priority"),
    ({"priority": None}, "priority"),
    ({"requests_per_minute": 0}, "requests_per_minute"),
    ({"tenant_requests_per_minute": 10**7}, "tenant_requests_per_minute"),
    ({"step_cache_allowed": "yes"}, "step_cache_allowed"),
    ({"step_cache_allowed": 1}, "step_cache_allowed"),
    ({"step_cache_allowed": True, "concurrent_jobs": 60}, "active_jobs_max"),  # more running than active
    ({"id": "renamed"}, "id"),
])
def test_bad_plan_changes_are_400_and_change_nothing(client, body, param):
    before = client.get("/v1/admin/plans/pro", headers=admin).json()
    refused = client.patch("/v1/admin/plans/pro", headers=admin, json=body)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["param"] == param
    assert client.get("/v1/admin/plans/pro", headers=admin).json() == before
    assert audit_entries(client, "plan.updated") == []


def test_a_change_to_the_same_values_is_not_audited(client):
    unchanged = client.patch("/v1/admin/plans/pro", headers=admin, json={"priority": 5})
    assert unchanged.status_code == 200 and unchanged.json()["priority"] == 5
    assert audit_entries(client, "plan.updated") == []


def test_an_admin_moves_a_tenant_to_another_plan(client, ctx):
    tenant = new_tenant(ctx.sessions, plan="free")
    moved = client.post(f"/v1/admin/tenants/{tenant.id}/plan", json={"plan": "pro"}, headers=admin)
    assert moved.status_code == 200 and moved.json()["plan"] == "pro"
    unknown = client.post(f"/v1/admin/tenants/{tenant.id}/plan", json={"plan": "platinum"}, headers=admin)
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "plan"
    assert client.post(f"/v1/admin/tenants/{tenant.id}/plan", json={"plan": "pro"}).status_code == 401
    [entry] = [e for e in audit_entries(client, "tenant.plan_changed") if e["subject"] == f"tenant:{tenant.id}"]
    assert entry["data"] == {"from": "free", "to": "pro"} and entry["actor"] == "admin"
