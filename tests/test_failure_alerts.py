"""An operator alert when jobs fail above a rate (SQLite and PostgreSQL): platform failures count, failures
the caller caused do not, and one alert is raised per window."""

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from vidfactory.api.app import create_app
from vidfactory.db.types import utcnow
from vidfactory.jobs import maintenance

from billing_support import admin, fail_job, finish_without_media, small
from conftest import make_settings, new_tenant


@pytest.fixture
def client(tmp_path, database_url, models_dir):
    settings = make_settings(tmp_path, database_url, models_dir, failure_alert_jobs_min=2,
                             failure_alert_ratio_min=0.5, failure_alert_window_s=600)
    with TestClient(create_app(settings, workers=0)) as test_client:
        yield test_client


def submit(client, tenant, count):
    return [client.post("/v1/videos", headers=tenant.headers,
                        json={"prompt": f"clip {n}", "cache": "off", **small}).json()["id"] for n in range(count)]


def alerts(client):
    return [a for a in client.get("/v1/admin/alerts", headers=admin).json()["data"]
            if a["kind"] == maintenance.failure_rate_alert_kind]


def test_failures_above_the_rate_raise_one_alert_per_window(client):
    ctx = client.app.state.ctx
    tenant = new_tenant(ctx.sessions, tokens=100_000)
    first, second, third, fourth = submit(client, tenant, 4)
    finish_without_media(ctx.sessions, first)
    finish_without_media(ctx.sessions, second)
    fail_job(ctx.sessions, third, "engine_crash")
    now = utcnow()
    assert not maintenance.alert_on_failure_rate(ctx.sessions, ctx.settings, now)  # 1 failure: under the minimum
    fail_job(ctx.sessions, fourth, "oom")
    assert maintenance.alert_on_failure_rate(ctx.sessions, ctx.settings, utcnow())  # 2 of 4 failed
    assert not maintenance.alert_on_failure_rate(ctx.sessions, ctx.settings, utcnow())  # once per window
    raised = alerts(client)
    assert len(raised) == 1 and "2 of 4 jobs failed" in raised[0]["message"]
    # A window later the old failures no longer count.
    assert not maintenance.alert_on_failure_rate(ctx.sessions, ctx.settings, utcnow() + timedelta(seconds=601))


def test_failures_the_caller_caused_do_not_count(client):
    ctx = client.app.state.ctx
    tenant = new_tenant(ctx.sessions, tokens=100_000)
    for job_id in submit(client, tenant, 3):
        fail_job(ctx.sessions, job_id, "invalid_input")
    assert not maintenance.alert_on_failure_rate(ctx.sessions, ctx.settings, utcnow())
    assert alerts(client) == []
