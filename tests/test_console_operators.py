"""The operator pages without a browser: each action works and lands in the audit log under the operator's
name, a tenant's people get 403 on every one, a form without its CSRF token changes nothing, and bad
input is answered next to the field it names."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from vidfactory.accounts import PasswordHasher, create_user, csrf_token, session_cookie, sign_in
from vidfactory.api.app import create_app
from vidfactory.billing import ledger
from vidfactory.api.render import video_object
from vidfactory.db.models import AuditEntry, Plan, Tenant
from vidfactory.db.types import utcnow
from vidfactory.jobs import queue, workers
from vidfactory.jobs.submit import VideoRequest, submit
from vidfactory.notify.alerts import raise_alert
from vidfactory.tenancy import authenticate, plan_fields

from conftest import make_settings, new_tenant

password = "correct horse battery"
operator_pages = ("/tenants", "/plans", "/price-books", "/workers", "/alerts", "/users")


@pytest.fixture
def console(tmp_path, database_url, models_dir):
    settings = make_settings(tmp_path, database_url, models_dir, password_hash_time_cost=1,
                             password_hash_memory_kib=1024)
    with TestClient(create_app(settings, workers=0), follow_redirects=False) as client:
        yield client


class Person:
    """A signed-in user of the console: its client carries the session cookie; `form` adds the CSRF token."""

    def __init__(self, client: TestClient, user_id: str, token: str) -> None:
        self.client, self.user_id, self.token = client, user_id, token
        client.cookies.set(session_cookie, token)

    def post(self, path: str, **fields: str):
        return self.client.post(path, data={"csrf_token": csrf_token(self.token), **fields})


def person(client: TestClient, role: str, tenant_id: str | None = None) -> Person:
    ctx = client.app.state.ctx
    hasher = PasswordHasher.from_settings(ctx.settings)
    email = f"{role}-{uuid.uuid4().hex[:8]}@example.com"
    with ctx.sessions.begin() as session:
        user = create_user(session, hasher, email, role, password, tenant_id)
        user_id = user.id
    with ctx.sessions.begin() as session:
        token = sign_in(session, hasher, email, password, ttl_s=3600, failures_max=5).token
    return Person(client, user_id, token)


def audited(client: TestClient, kind: str, actor: str) -> list[AuditEntry]:
    with client.app.state.ctx.sessions() as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.kind == kind, AuditEntry.actor == actor)))


def test_tenant_owners_and_members_get_403_on_every_operator_page(console):
    tenant = new_tenant(console.app.state.ctx.sessions)
    for role in ("owner", "member"):
        user = person(console, role, tenant.id)
        for path in operator_pages:
            answer = user.client.get(path)
            assert answer.status_code == 403, (role, path)
            assert "Your role does not allow this page." in answer.text
        assert user.post("/tenants", name="sneaky", plan="free").status_code == 403
    console.cookies.clear()
    assert console.get("/tenants").status_code == 303  # signed out: to the sign-in page


def test_operator_creates_a_tenant_changes_its_plan_credits_grants_and_suspends(console):
    operator = person(console, "operator")
    name = f"acme-{uuid.uuid4().hex[:6]}"
    created = operator.post("/tenants", name=name, plan="free")
    assert created.status_code == 303
    tenant_path = created.headers["location"].split("?")[0]
    tenant_id = tenant_path.rsplit("/", 1)[1]
    assert "Tenant created." in operator.client.get(created.headers["location"]).text
    assert name in operator.client.get("/tenants").text

    assert operator.post(f"{tenant_path}/plan", plan="pro").status_code == 303
    assert operator.post(f"{tenant_path}/credit", tokens="5000", memo="welcome").status_code == 303
    assert operator.post(f"{tenant_path}/voucher", tokens="700", expires_days="10", reason="launch").status_code == 303
    assert operator.post(f"{tenant_path}/suspend", reason="unpaid invoice").status_code == 303
    page = operator.client.get(tenant_path).text
    assert re.search(r'id="tenant-plan">pro<', page) and re.search(r'id="tenant-available">5000<', page)
    assert re.search(r'id="tenant-vouchers">700<', page) and "unpaid invoice" in page
    assert operator.post(f"{tenant_path}/resume").status_code == 303
    with console.app.state.ctx.sessions() as session:
        tenant = session.get(Tenant, tenant_id)
        assert tenant.plan_id == "pro" and tenant.suspended_at is None
        assert ledger.balance(session, tenant_id).available == 5000
    actor = f"user:{operator.user_id}"
    for kind in ("tenant.created", "tenant.plan_changed", "tenant.suspended", "tenant.resumed"):
        assert [entry.subject for entry in audited(console, kind, actor)] == [f"tenant:{tenant_id}"], kind
    assert len(audited(console, "ledger.credit", actor)) == 1 and len(audited(console, "ledger.grant", actor)) == 1


def test_a_credit_or_voucher_form_posted_twice_moves_tokens_once(console):
    operator = person(console, "operator")
    tenant = new_tenant(console.app.state.ctx.sessions)
    path = f"/tenants/{tenant.id}"
    page = operator.client.get(path).text
    [credit_id, voucher_id] = re.findall(r'name="submission" value="([0-9a-f]{32})"', page)
    assert credit_id not in operator.client.get(path).text  # new with each page
    for _ in range(2):  # a double click, or the browser resending the form
        assert operator.post(f"{path}/credit", tokens="900", memo="top-up", submission=credit_id).status_code == 303
        assert operator.post(f"{path}/voucher", tokens="40", expires_days="5", reason="sorry",
                             submission=voucher_id).status_code == 303
    assert operator.post(f"{path}/credit", tokens="100", memo="top-up",
                         submission=uuid.uuid4().hex).status_code == 303  # another form: another credit
    with console.app.state.ctx.sessions() as session:
        assert ledger.balance(session, tenant.id).available == 1000
        assert ledger.voucher_balance(session, tenant.id).available == 40
    actor = f"user:{operator.user_id}"
    assert len(audited(console, "ledger.credit", actor)) == 2 and len(audited(console, "ledger.grant", actor)) == 1


def test_tenant_forms_answer_bad_input_next_to_the_field(console):
    operator = person(console, "operator")
    tenant = new_tenant(console.app.state.ctx.sessions)
    path = f"/tenants/{tenant.id}"
    negative = operator.post(f"{path}/credit", tokens="-5", memo="")
    assert negative.status_code == 400
    assert re.search(r'id="credit-tokens-error"[^>]*>Must be more than 0\.<', negative.text)
    assert 'aria-describedby="credit-tokens-error"' in negative.text and 'value="-5"' in negative.text
    words = operator.post(f"{path}/voucher", tokens="lots", expires_days="10", reason="x")
    assert re.search(r'id="voucher-tokens-error"[^>]*>Enter a whole number\.<', words.text)
    unknown = operator.post(f"{path}/plan", plan="platinum")
    assert unknown.status_code == 400 and re.search(r'id="plan-plan-error"[^>]*>There is no such plan\.<', unknown.text)
    on_create = operator.post("/tenants", name="new one", plan="platinum")
    assert re.search(r'id="create-plan-error"[^>]*>There is no such plan\.<', on_create.text)
    operator.client.cookies.set("vf_lang", "zh")
    chinese = operator.post(f"{path}/credit", tokens="0")
    assert re.search(r'id="credit-tokens-error"[^>]*>必须大于 0。<', chinese.text)
    with console.app.state.ctx.sessions() as session:
        assert ledger.balance(session, tenant.id).available == 0 and session.get(Tenant, tenant.id).plan_id == "enterprise"


def test_operator_forms_without_their_csrf_token_change_nothing(console):
    operator = person(console, "operator")
    tenant = new_tenant(console.app.state.ctx.sessions)
    refused = operator.client.post(f"/tenants/{tenant.id}/credit", data={"tokens": "100"})
    assert refused.status_code == 403 and "did not come from this page" in refused.text
    forged = operator.client.post("/tenants", data={"name": "forged", "plan": "free", "csrf_token": "x" * 40})
    assert forged.status_code == 403
    with console.app.state.ctx.sessions() as session:
        assert ledger.balance(session, tenant.id).available == 0
    assert "forged" not in operator.client.get("/tenants").text


def test_the_tenant_list_pages(console):
    operator = person(console, "operator")
    sessions = console.app.state.ctx.sessions
    made = [new_tenant(sessions).id for _ in range(27)]
    first = operator.client.get("/tenants").text
    following = re.search(r'href="/tenants\?after=([^"]+)"', first).group(1)
    second = operator.client.get(f"/tenants?after={following}").text
    shown = set(re.findall(r'href="/tenants/(ten_\w+)"', first)) | set(re.findall(r'href="/tenants/(ten_\w+)"', second))
    assert set(made) <= shown and 'rel="next"' not in second
    assert operator.client.get("/tenants/ten_nosuchtenant").status_code == 404


def test_operator_manages_users_and_every_change_is_audited(console):
    operator = person(console, "operator")
    actor = f"user:{operator.user_id}"
    tenant = new_tenant(console.app.state.ctx.sessions)
    created = operator.post("/users", email="Nia@Example.com", role="member", tenant=tenant.id)
    assert created.status_code == 200 and "Created nia@example.com." in created.text
    first_password = re.search(r'id="shown-password">([^<]+)<', created.text).group(1)
    ctx = console.app.state.ctx
    hasher = PasswordHasher.from_settings(ctx.settings)
    for _ in range(5):
        with ctx.sessions.begin() as session:
            sign_in(session, hasher, "nia@example.com", "not the password", ttl_s=3600, failures_max=5)
    listed = operator.client.get("/users").text
    user_id = re.search(r'id="user-(usr_\w+)" data-email="nia@example.com"', listed).group(1)
    assert re.search(rf'id="user-{user_id}".*?locked', listed, re.S)
    assert operator.post(f"/users/{user_id}/unlock").status_code == 303
    with ctx.sessions.begin() as session:
        assert sign_in(session, hasher, "nia@example.com", first_password, ttl_s=3600, failures_max=5).error is None
    reset = operator.post(f"/users/{user_id}/reset-password")
    new_password = re.search(r'id="shown-password">([^<]+)<', reset.text).group(1)
    assert new_password != first_password
    with ctx.sessions.begin() as session:
        token = sign_in(session, hasher, "nia@example.com", new_password, ttl_s=3600, failures_max=5).token
    member = TestClient(console.app, follow_redirects=False)
    member.cookies.set(session_cookie, token)
    assert member.get("/videos").status_code == 200
    assert operator.post(f"/users/{user_id}/sign-out").status_code == 303
    assert member.get("/videos").status_code == 303  # signed out
    assert operator.post(f"/users/{user_id}/disable").status_code == 303
    assert "disabled" in re.search(rf'id="user-{user_id}".*?</tr>', operator.client.get("/users").text, re.S).group(0)
    for kind in ("user.created", "user.unlocked", "user.password_reset", "user.sessions_revoked", "user.disabled"):
        assert [entry.subject for entry in audited(console, kind, actor)] == [f"user:{user_id}"], kind


def test_user_forms_answer_bad_input_next_to_the_field(console):
    operator = person(console, "operator")
    no_tenant = operator.post("/users", email="solo@example.com", role="owner", tenant="")
    assert no_tenant.status_code == 400 and 'id="create-tenant-error"' in no_tenant.text
    unknown = operator.post("/users", email="solo@example.com", role="member", tenant="no such tenant")
    assert re.search(r'id="create-tenant-error"[^>]*>There is no such tenant\.<', unknown.text)
    bad_email = operator.post("/users", email="not-an-address", role="operator", tenant="")
    assert 'id="create-email-error"' in bad_email.text and 'value="not-an-address"' in bad_email.text
    again = operator.post("/users", email="twice@example.com", role="reviewer")
    assert again.status_code == 200
    assert operator.post("/users", email="twice@example.com", role="reviewer").status_code == 409
    assert operator.post("/users/usr_nosuchuser/unlock").status_code == 404
    assert operator.client.post("/users", data={"email": "x@example.com", "role": "operator"}).status_code == 403


def test_workers_show_device_memory_models_current_job_and_last_seen(console):
    operator = person(console, "operator")
    ctx = console.app.state.ctx
    assert "No worker has registered" in operator.client.get("/workers").text
    tenant = new_tenant(ctx.sessions, tokens=100_000)
    with ctx.sessions() as session:
        caller = authenticate(session, tenant.key)
    video_id = submit(ctx.sessions, ctx.settings, ctx.counters, caller,
                      VideoRequest(prompt="a quiet harbour at dawn", model="wan-tiny", size="64x64", seconds="1"),
                      video_object, screens=ctx.screens).body["id"]
    with ctx.sessions.begin() as session:
        workers.register(session, "w-console", workers.DeviceReport("Test GPU", 80 * 1024**3, 60 * 1024**3, devices=2),
                         ["wan-tiny"], utcnow())
        workers.heartbeat(session, "w-console", memory_free_bytes=60 * 1024**3, models_held=["wan-tiny"], now=utcnow())
        assert queue.claim(session, worker_id="w-console", models=["wan-tiny"], lease_s=30.0, now=utcnow()).id == video_id
    row = re.search(r'id="worker-w-console".*?</tr>', operator.client.get("/workers").text, re.S).group(0)
    assert "Test GPU × 2" in row and "60.0 of 80.0 GiB free" in row and "wan-tiny" in row
    assert video_id in row and "live" in row and " s ago" in row
    api = console.get("/v1/admin/workers", headers={"Authorization": "Bearer test-admin-token"}).json()
    assert [w["current_jobs"] for w in api["data"] if w["id"] == "w-console"] == [[video_id]]


def test_operator_acknowledges_an_alert_once_and_it_is_audited(console):
    operator = person(console, "operator")
    ctx = console.app.state.ctx
    assert "No alerts" in operator.client.get("/alerts").text
    with ctx.sessions.begin() as session:
        alert_id = raise_alert(session, "failure_rate", "9 of 10 jobs failed in 5 minutes").id
    page = operator.client.get("/alerts").text
    assert "9 of 10 jobs failed" in page and f'action="/alerts/{alert_id}/acknowledge"' in page
    assert operator.client.post(f"/alerts/{alert_id}/acknowledge").status_code == 403  # no CSRF token
    assert operator.post(f"/alerts/{alert_id}/acknowledge").status_code == 303
    assert operator.post(f"/alerts/{alert_id}/acknowledge").status_code == 303  # again: nothing changes
    page = operator.client.get("/alerts").text
    assert f'action="/alerts/{alert_id}/acknowledge"' not in page
    assert f"acknowledged by user:{operator.user_id}" in page
    assert [e.subject for e in audited(console, "alert.acknowledged", f"user:{operator.user_id}")] == [f"alert:{alert_id}"]
    admin = {"Authorization": "Bearer test-admin-token"}
    [listed] = [a for a in console.get("/v1/admin/alerts", headers=admin).json()["data"] if a["id"] == alert_id]
    assert listed["acknowledged_by"] == f"user:{operator.user_id}" and listed["acknowledged_at"] is not None
    assert console.post("/v1/admin/alerts/alert_nosuch/acknowledge", headers=admin).status_code == 404
    assert operator.post("/alerts/alert_nosuch/acknowledge").status_code == 404


def test_every_plan_field_is_shown_and_edited_within_its_limits(console):
    operator = person(console, "operator")
    listed = operator.client.get("/plans").text
    for name in plan_fields:
        assert f'name="{name}"' not in listed  # the list shows; the plan's page edits
    page = operator.client.get("/plans/pro").text
    for name in plan_fields:
        assert f'name="{name}"' in page, name
    current = {name: re.search(rf'name="{name}"[^>]*value="([^"]*)"', page) for name in plan_fields}
    form = {name: match.group(1) for name, match in current.items() if match}
    form.update(priority="7", retention_days="45", review_deadline_action="approve", step_cache_allowed="on")
    assert operator.post("/plans/pro", **form).status_code == 303
    too_big = operator.post("/plans/pro", **{**form, "priority": "101", "concurrent_jobs": "many"})
    assert too_big.status_code == 400
    assert re.search(r'id="priority-error"[^>]*>Must be at most 100\.<', too_big.text)
    assert re.search(r'id="concurrent_jobs-error"[^>]*>Enter a whole number\.<', too_big.text)
    contradicts = operator.post("/plans/pro", **{**form, "concurrent_jobs": "9", "active_jobs_max": "3"})
    assert re.search(r'id="active_jobs_max-error"[^>]*>Must be at least the jobs running at once', contradicts.text)
    with console.app.state.ctx.sessions() as session:
        plan = session.get(Plan, "pro")
        assert (plan.priority, plan.retention_days, plan.review_deadline_action, plan.step_cache_allowed) == \
            (7, 45, "approve", True)
    [entry] = audited(console, "plan.updated", f"user:{operator.user_id}")
    assert entry.data["priority"] == {"from": 5, "to": 7} and set(entry.data) == {
        "priority", "retention_days", "review_deadline_action", "step_cache_allowed"}
    assert operator.client.get("/plans/platinum").status_code == 404


def test_a_price_book_is_previewed_against_the_one_in_force_then_published(console):
    operator = person(console, "operator")
    page = operator.client.get("/price-books").text
    body = json.loads(re.search(r'<textarea id="body" name="body"[^>]*>(.*?)</textarea>', page, re.S).group(1)
                      .replace("&#34;", '"').replace("&quot;", '"'))
    body["unit_price"] = str(2 * float(body["unit_price"]))
    sample = {"model": "wan-tiny", "size": "832x480", "seconds": "5", "input_tokens": "100"}
    preview = operator.post("/price-books", action="preview", body=json.dumps(body), **sample)
    assert preview.status_code == 200
    amounts = re.findall(r'<td class="amount">([^<]+)</td>', preview.text)
    assert len(amounts) == 2
    in_force, proposed = (float(amount.split()[1]) for amount in amounts)
    assert proposed == 2 * in_force > 0
    assert 'id="version-2"' not in operator.client.get("/price-books").text  # a preview publishes nothing
    too_long = operator.post("/price-books", action="preview", body=json.dumps(body), **{**sample, "seconds": "3000"})
    assert "Cannot price this sample" in too_long.text
    broken = operator.post("/price-books", action="publish", body="{not json", **sample)
    assert broken.status_code == 400 and re.search(r'id="body-error"[^>]*>This is not JSON', broken.text)
    assert "{not json" in broken.text
    negative = operator.post("/price-books", action="preview", body=json.dumps({**body, "unit_price": "-1"}), **sample)
    assert re.search(r'id="body-error"[^>]*>Not a valid price book at unit_price', negative.text)
    bad_sample = operator.post("/price-books", action="preview", body=json.dumps(body), **{**sample, "seconds": "-3"})
    assert re.search(r'id="seconds-error"[^>]*>Must be at least 1\.<', bad_sample.text)
    published = operator.post("/price-books", action="publish", body=json.dumps(body), **sample)
    assert published.status_code == 303
    listing = operator.client.get(published.headers["location"]).text
    assert re.search(r'id="version-2">.*?in force', listing, re.S)
    [entry] = audited(console, "price_book.published", f"user:{operator.user_id}")
    assert entry.subject == "price_book:2"
    admin = {"Authorization": "Bearer test-admin-token"}
    api = console.post("/v1/admin/price_books/preview", headers=admin,
                       json={"body": body, "sample": {"model": "wan-tiny", "size": "832x480", "seconds": 5}}).json()
    assert api["in_force"]["version"] == 2 and api["in_force"]["quote"] == api["proposed"]["quote"]
