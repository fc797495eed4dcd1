"""Webhooks: Standard Webhooks signatures (verified with the `standardwebhooks` package), a durable
outbox written with the change it reports, retries with backoff, dead letters, 410 Gone, redirects not
followed, SSRF targets refused, rotation overlap, operator alerts; on SQLite and PostgreSQL, against
real local HTTP receivers."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select
from standardwebhooks import Webhook, WebhookVerificationError

from vidfactory.api.app import create_app
from vidfactory.db.models import Alert, WebhookDelivery, WebhookEndpoint, WebhookEvent
from vidfactory.db.session import make_engine, make_session_factory
from vidfactory.db.types import utcnow
from vidfactory.jobs.worker import Worker
from vidfactory.notify.alerts import raise_alert
from vidfactory.notify.delivery import Dispatcher, start_dispatcher
from vidfactory.notify.events import ensure_job_secret, record_event
from vidfactory.notify.signing import new_secret, webhook_headers
from vidfactory.notify.targets import RefusedTarget, parse_networks, resolve_target

from billing_support import fail_job
from conftest import assert_ledger_clean, make_settings, new_tenant
from receivers import start_black_hole, start_receiver

small = {"size": "64x64", "seconds": "1"}
loopback = ["127.0.0.0/8"]
join_deadline_s = 10.0  # far below the poll of the stop test: only a dispatcher that waits it out fails


@pytest.fixture
def receiver():
    server = start_receiver()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture
def client(tmp_path, database_url, models_dir):
    # The loop is driven by the tests (Dispatcher.run_once), so the app starts none.
    settings = make_settings(tmp_path, database_url, models_dir, webhooks_enabled=False,
                             webhook_allowed_networks=loopback, webhook_attempts_max=3, webhook_backoff_s=10,
                             webhook_failures_alert=2)
    with TestClient(create_app(settings, workers=0)) as test_client:
        yield test_client


def dispatch_all(ctx, now=None) -> int:
    dispatcher, sent = Dispatcher(ctx.settings, ctx.sessions), 0
    while batch := dispatcher.run_once(now):
        sent += batch
    return sent


def verified(received, secret: str) -> dict:
    return Webhook(secret).verify(received.body, received.headers)


# --- signatures (pure) -----------------------------------------------------------------------------

def test_signatures_verify_with_standardwebhooks_and_rotation_signs_with_both():
    old, new = new_secret(), new_secret()
    body = json.dumps({"type": "video.completed", "data": {"id": "video_1"}}).encode()
    now = int(utcnow().timestamp())
    single = webhook_headers([old], "msg_1", now, body)
    assert verified(type("R", (), {"body": body, "headers": single}), old)["data"] == {"id": "video_1"}
    both = webhook_headers([new, old], "msg_1", now, body)
    assert len(both["webhook-signature"].split(" ")) == 2
    for secret in (old, new):  # a receiver on either secret accepts during the overlap
        Webhook(secret).verify(body, both)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, both)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(body + b" ", single)


# --- SSRF (pure apart from resolving literal addresses and localhost) -----------------------------

@pytest.mark.parametrize("url", [
    "http://127.0.0.1/hook", "http://localhost:8080/hook", "http://10.1.2.3/", "http://192.168.0.10/",
    "http://172.16.5.5/", "http://169.254.169.254/latest/meta-data/", "http://[::1]/", "http://[fe80::1]/",
    "http://[::ffff:127.0.0.1]/", "http://[::ffff:169.254.169.254]/", "http://224.0.0.1/", "http://0.0.0.0/",
    "http://100.64.0.1/", "http://240.0.0.1/", "http://[fc00::1]/", "ftp://8.8.8.8/", "file:///etc/passwd",
    "http://user:pw@8.8.8.8/", "http://no-such-host.invalid/", "http://8.8.8.8:99999/", "http:///nohost",
    # IPv4 inside IPv6: 6to4 of loopback and of the metadata address, Teredo, NAT64, IPv4-compatible.
    "http://[2002:7f00:1::]/", "http://[2002:a9fe:a9fe::1]/", "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",
    "http://[64:ff9b::7f00:1]/", "http://[::7f00:1]/",
])
def test_non_public_targets_are_refused(url):
    with pytest.raises(RefusedTarget):
        resolve_target(url, [])


def test_public_and_explicitly_allowed_targets_pass():
    assert resolve_target("https://8.8.8.8/hook", []).address == "8.8.8.8"
    assert resolve_target("http://[2002:808:808::1]/", []).address == "2002:808:808::1"  # 6to4 of a public address
    assert resolve_target("http://127.0.0.1:9/hook", parse_networks(loopback)).address == "127.0.0.1"
    # The mapped form is judged as the IPv4 address it is, both ways.
    assert resolve_target("http://[::ffff:127.0.0.1]/", parse_networks(loopback)).address == "127.0.0.1"


# --- API ---------------------------------------------------------------------------------------------

def test_refused_targets_change_nothing(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    for url in ("http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/", "gopher://x/"):
        response = client.post("/v1/webhook_endpoints", headers=tenant.headers, json={"url": url})
        assert response.status_code == 400 and response.json()["error"]["code"] == "webhook_url_refused", url
        video = client.post("/v1/videos", headers=tenant.headers, json={"prompt": "a cat", "webhook_url": url, **small})
        assert video.status_code == 400 and video.json()["error"]["param"] == "webhook_url", video.text
    assert client.get("/v1/webhook_endpoints", headers=tenant.headers).json()["data"] == []
    assert client.get("/v1/balance", headers=tenant.headers).json()["pending"] == 0


def test_endpoint_crud_is_tenant_scoped(client, ctx, receiver):
    tenant, other = new_tenant(ctx.sessions, tokens=10), new_tenant(ctx.sessions, tokens=10)
    created = client.post("/v1/webhook_endpoints", headers=tenant.headers,
                          json={"url": receiver.url(), "event_types": ["video.completed"], "description": "ci"})
    assert created.status_code == 201, created.text
    endpoint = created.json()
    assert endpoint["secret"].startswith("whsec_") and endpoint["status"] == "enabled"
    path = f"/v1/webhook_endpoints/{endpoint['id']}"
    assert "secret" not in client.get(path, headers=tenant.headers).json()  # shown once
    for method in ("GET", "DELETE", "PATCH"):
        response = client.request(method, path, headers=other.headers, json={} if method == "PATCH" else None)
        assert response.status_code == 404, (method, response.text)
    assert client.post(f"{path}/rotate_secret", headers=other.headers).status_code == 404
    assert client.get(f"{path}/deliveries", headers=other.headers).status_code == 404
    patched = client.patch(path, headers=tenant.headers, json={"event_types": [], "enabled": False}).json()
    assert (patched["event_types"], patched["status"]) == ([], "disabled")
    assert client.delete(path, headers=tenant.headers).json()["deleted"] is True
    assert client.get(path, headers=tenant.headers).status_code == 404


def test_every_video_and_billing_event_is_delivered_signed(client, ctx, receiver):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    endpoint = client.post("/v1/webhook_endpoints", headers=tenant.headers, json={"url": receiver.url()}).json()
    video = client.post("/v1/videos", headers=tenant.headers,
                        json={"prompt": "a red fox in snow", "webhook_url": receiver.url("/job"), **small}).json()
    assert video["webhook_url"] == receiver.url("/job")
    Worker(ctx.settings, ctx.sessions, ctx.storage, worker_id="w").run_once()
    assert dispatch_all(ctx) == 10  # five events, two targets each
    job_secret = client.get("/v1/webhook_secret", headers=tenant.headers).json()["secret"]
    for path, secret in (("/hook", endpoint["secret"]), ("/job", job_secret)):
        events = [verified(r, secret) for r in receiver.at(path)]
        assert sorted(e["type"] for e in events) == sorted([
            "video.queued", "billing.hold_created", "video.in_progress", "video.completed", "billing.settled"])
        by_type = {e["type"]: e["data"] for e in events}
        assert by_type["video.completed"]["id"] == video["id"] and by_type["video.completed"]["status"] == "completed"
        assert by_type["billing.settled"]["settled"] == video["billing"]["held"]
        assert by_type["billing.hold_created"]["held"] == video["billing"]["held"]
    # The same event carries the same webhook-id to every target (receivers deduplicate on it).
    assert {r.headers["webhook-id"] for r in receiver.at("/hook")} == {r.headers["webhook-id"]
                                                                       for r in receiver.at("/job")}
    log = client.get("/v1/webhook_deliveries", headers=tenant.headers, params={"video_id": video["id"]}).json()
    assert len(log["data"]) == 10 and {d["status"] for d in log["data"]} == {"delivered"}
    endpoint_log = client.get(f"/v1/webhook_endpoints/{endpoint['id']}/deliveries", headers=tenant.headers).json()
    assert len(endpoint_log["data"]) == 10 // 2 and all(d["last_status_code"] == 200 for d in endpoint_log["data"])
    assert_ledger_clean(ctx.sessions)


def test_cancel_and_failure_release_the_hold_and_say_so(client, ctx, receiver):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    endpoint = client.post("/v1/webhook_endpoints", headers=tenant.headers,
                           json={"url": receiver.url(), "event_types": ["video.cancelled", "billing.released"]}).json()
    video = client.post("/v1/videos", headers=tenant.headers, json={"prompt": "a cat", **small}).json()
    client.post(f"/v1/videos/{video['id']}/cancel", headers=tenant.headers)
    assert dispatch_all(ctx) == 2
    events = {e["type"]: e["data"] for e in (verified(r, endpoint["secret"]) for r in receiver.at("/hook"))}
    assert events["video.cancelled"]["status"] == "cancelled"
    assert events["billing.released"]["released"] == video["billing"]["held"]
    assert events["billing.released"]["settled"] == 0


def test_vouchers_granted_as_compensation_or_by_hand_are_announced(client, ctx, receiver):
    admin = {"Authorization": "Bearer test-admin-token"}
    published = client.post("/v1/admin/price_books", headers=admin, json={
        "compensation": {"ratio": "0.5", "expires_days": 7, "error_types": ["engine_crash"]}})
    assert published.status_code == 201, published.text
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    endpoint = client.post("/v1/webhook_endpoints", headers=tenant.headers,
                           json={"url": receiver.url(), "event_types": ["billing.voucher_granted"]}).json()
    video = client.post("/v1/videos", headers=tenant.headers, json={"prompt": "a storm", **small,
                                                                    "cache": "off"}).json()
    voucher = fail_job(ctx.sessions, video["id"], "engine_crash")
    granted = client.post(f"/v1/admin/tenants/{tenant.id}/vouchers", headers=admin,
                          json={"tokens": 300, "expires_days": 10, "reason": "outage"}).json()
    assert dispatch_all(ctx) == 2
    events = [verified(r, endpoint["secret"])["data"] for r in receiver.at("/hook")]
    assert sorted((e["id"], e["tokens"], e["video_id"]) for e in events) == sorted([
        (voucher.id, voucher.amount, video["id"]), (granted["id"], 300, None)])
    assert_ledger_clean(ctx.sessions)


def test_outbox_rows_exist_only_with_the_change(client, ctx, receiver):
    tenant = new_tenant(ctx.sessions, tokens=1)  # too poor for any video
    client.post("/v1/webhook_endpoints", headers=tenant.headers, json={"url": receiver.url()})
    refused = client.post("/v1/videos", headers=tenant.headers, json={"prompt": "a cat", **small})
    assert refused.status_code == 402
    with pytest.raises(RuntimeError):
        with ctx.sessions.begin() as session:
            record_event(session, tenant.id, "billing.voucher_granted", {"tokens": 5})
            raise RuntimeError("the change rolls back")
    with ctx.sessions() as session:
        assert session.scalar(select(func.count()).select_from(WebhookEvent)) == 0
        assert session.scalar(select(func.count()).select_from(WebhookDelivery)) == 0


def test_retries_back_off_then_dead_letter_and_alert(client, ctx, receiver):
    tenant = new_tenant(ctx.sessions, tokens=10)
    receiver.answer("/hook", 500)
    endpoint = client.post("/v1/webhook_endpoints", headers=tenant.headers, json={"url": receiver.url()}).json()
    with ctx.sessions.begin() as session:
        record_event(session, tenant.id, "billing.voucher_granted", {"tokens": 5})
    start = utcnow()
    dispatcher = Dispatcher(ctx.settings, ctx.sessions)
    # Seconds after the first attempt → attempts made by then: backoff 10 s, then 20 s, then dead.
    for offset_s, attempts_made in ((0, 1), (9, 1), (10, 2), (29, 2), (30, 3), (86_400, 3)):
        dispatcher.run_once(start + timedelta(seconds=offset_s))
        assert len(receiver.at("/hook")) == attempts_made, offset_s
    attempts = receiver.at("/hook")
    assert len(attempts) == 3 and len({r.headers["webhook-id"] for r in attempts}) == 1
    (delivery,) = client.get(f"/v1/webhook_endpoints/{endpoint['id']}/deliveries", headers=tenant.headers).json()["data"]
    assert (delivery["status"], delivery["attempts"], delivery["last_status_code"]) == ("failed", 3, 500)
    with ctx.sessions() as session:
        alerts = list(session.scalars(select(Alert).where(Alert.kind == "webhook_endpoint_failing")))
    assert len(alerts) == 1 and endpoint["id"] in alerts[0].message  # raised once, at the threshold
    receiver.answer("/hook", 200)
    with ctx.sessions.begin() as session:
        record_event(session, tenant.id, "billing.voucher_granted", {"tokens": 6})
    assert dispatch_all(ctx) == 1
    again = client.get(f"/v1/webhook_endpoints/{endpoint['id']}", headers=tenant.headers).json()
    assert again["consecutive_failures"] == 0


def test_gone_disables_the_endpoint_and_redirects_are_not_followed(client, ctx, receiver):
    tenant = new_tenant(ctx.sessions, tokens=10)
    receiver.answer("/gone", 410)
    receiver.answer("/moved", (302, {"Location": receiver.url("/elsewhere")}))
    gone = client.post("/v1/webhook_endpoints", headers=tenant.headers, json={"url": receiver.url("/gone")}).json()
    moved = client.post("/v1/webhook_endpoints", headers=tenant.headers, json={"url": receiver.url("/moved")}).json()
    with ctx.sessions.begin() as session:
        record_event(session, tenant.id, "billing.voucher_granted", {"tokens": 5})
    dispatch_all(ctx)
    assert (len(receiver.at("/gone")), len(receiver.at("/moved")), receiver.at("/elsewhere")) == (1, 1, [])
    state = client.get(f"/v1/webhook_endpoints/{gone['id']}", headers=tenant.headers).json()
    assert state["status"] == "disabled" and "410" in state["disabled_reason"]
    (dead,) = client.get(f"/v1/webhook_endpoints/{gone['id']}/deliveries", headers=tenant.headers).json()["data"]
    assert dead["status"] == "failed" and dead["attempts"] == 1
    (retrying,) = client.get(f"/v1/webhook_endpoints/{moved['id']}/deliveries", headers=tenant.headers).json()["data"]
    assert retrying["status"] == "pending" and retrying["last_status_code"] == 302
    with ctx.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Alert).where(
            Alert.kind == "webhook_endpoint_disabled")) == 1
    with ctx.sessions.begin() as session:
        record_event(session, tenant.id, "billing.voucher_granted", {"tokens": 6})
    assert len(client.get(f"/v1/webhook_endpoints/{gone['id']}/deliveries", headers=tenant.headers).json()["data"]) == 1
    enabled = client.patch(f"/v1/webhook_endpoints/{gone['id']}", headers=tenant.headers, json={"enabled": True})
    assert enabled.json()["status"] == "enabled"


def test_rotation_signs_with_old_and_new_secret(client, ctx, receiver):
    tenant = new_tenant(ctx.sessions, tokens=10)
    endpoint = client.post("/v1/webhook_endpoints", headers=tenant.headers, json={"url": receiver.url()}).json()
    rotated = client.post(f"/v1/webhook_endpoints/{endpoint['id']}/rotate_secret", headers=tenant.headers).json()
    assert rotated["secret"] != endpoint["secret"] and rotated["previous_secret_expires_at"] > 0
    with ctx.sessions.begin() as session:
        record_event(session, tenant.id, "billing.voucher_granted", {"tokens": 5})
    dispatch_all(ctx)
    (received,) = receiver.at("/hook")
    assert verified(received, endpoint["secret"]) == verified(received, rotated["secret"])
    with ctx.sessions.begin() as session:  # the overlap ends: only the new secret signs
        row = session.get(WebhookEndpoint, endpoint["id"])
        row.previous_secret_expires_at = utcnow() - timedelta(seconds=1)
        record_event(session, tenant.id, "billing.voucher_granted", {"tokens": 6})
    dispatch_all(ctx)
    latest = receiver.at("/hook")[-1]
    verified(latest, rotated["secret"])
    with pytest.raises(WebhookVerificationError):
        verified(latest, endpoint["secret"])


def test_concurrent_dispatchers_deliver_each_row_once(client, ctx, receiver):
    tenant = new_tenant(ctx.sessions, tokens=10)
    client.post("/v1/webhook_endpoints", headers=tenant.headers, json={"url": receiver.url()})
    events = 40
    with ctx.sessions.begin() as session:
        for index in range(events):
            record_event(session, tenant.id, "billing.voucher_granted", {"tokens": index + 1})
    settings = ctx.settings.model_copy(update={"webhook_batch_max": 3})

    def drain() -> None:
        dispatcher = Dispatcher(settings, ctx.sessions)
        while dispatcher.run_once():
            pass

    threads = [threading.Thread(target=drain) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    ids = [r.headers["webhook-id"] for r in receiver.at("/hook")]
    assert len(ids) == events and len(set(ids)) == events
    with ctx.sessions() as session:
        assert set(session.scalars(select(WebhookDelivery.status))) == {"delivered"}
        assert set(session.scalars(select(WebhookDelivery.attempts))) == {1}


def test_operator_alerts_reach_the_operator_webhook(tmp_path, database_url, models_dir, receiver):
    secret = new_secret()
    settings = make_settings(tmp_path, database_url, models_dir, webhooks_enabled=False,
                             operator_webhook_url=receiver.url("/ops"), operator_webhook_secret=secret)
    with TestClient(create_app(settings, workers=0)) as client:
        ctx = client.app.state.ctx
        tenant = new_tenant(ctx.sessions, tokens=10)
        with ctx.sessions.begin() as session:
            raise_alert(session, "failure_rate", "9 of 10 jobs failed in 5 minutes", tenant_id=tenant.id)
        assert dispatch_all(ctx) == 1
        (received,) = receiver.at("/ops")
        event = verified(received, secret)
        assert event["type"] == "alert.raised" and event["data"]["kind"] == "failure_rate"
        # The operator's deliveries are not in any tenant's log.
        assert client.get("/v1/webhook_deliveries", headers=tenant.headers).json()["data"] == []
    with pytest.raises(ValueError):
        make_settings(tmp_path, database_url, models_dir, operator_webhook_url=receiver.url("/ops"))


def wait_for(condition, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_a_refused_target_is_dead_lettered_at_once(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=10)
    with ctx.sessions.begin() as session:  # a URL that passed its check once, refused when delivered
        ensure_job_secret(session, tenant.id)
        record_event(session, tenant.id, "billing.voucher_granted", {"tokens": 5},
                     job_webhook_url="http://[2002:7f00:1::]:9/hook")
    assert dispatch_all(ctx) == 1
    with ctx.sessions() as session:
        (delivery,) = session.scalars(select(WebhookDelivery))
    assert (delivery.status, delivery.attempts) == ("failed", 1) and "refused" in delivery.last_error


@pytest.fixture
def black_hole():
    hole = start_black_hole()
    yield hole
    hole.close()


def test_a_black_holed_endpoint_does_not_delay_a_healthy_one(tmp_path, database_url, models_dir, receiver,
                                                             black_hole):
    settings = make_settings(tmp_path, database_url, models_dir, webhooks_enabled=False,
                             webhook_allowed_networks=loopback, webhook_send_deadline_s=6.0, webhook_lease_s=12.0,
                             webhook_read_timeout_s=30.0,  # the deadline, not the read timeout, cuts a hanging send
                             webhook_poll_s=0.05, webhook_circuit_failures=2, webhook_circuit_open_s=600)
    with TestClient(create_app(settings, workers=0)) as client:
        ctx = client.app.state.ctx
        tenant = new_tenant(ctx.sessions, tokens=10)
        hole = client.post("/v1/webhook_endpoints", headers=tenant.headers, json={"url": black_hole.url()}).json()
        client.post("/v1/webhook_endpoints", headers=tenant.headers, json={"url": receiver.url()})
        events = 10
        with ctx.sessions.begin() as session:
            for index in range(events):
                record_event(session, tenant.id, "billing.voucher_granted", {"tokens": index + 1})
        stop = threading.Event()
        loop = threading.Thread(target=Dispatcher(settings, ctx.sessions).run, args=(stop,))
        started = time.monotonic()
        loop.start()
        try:
            wait_for(lambda: len(receiver.at("/hook")) == events, timeout_s=60)
            # Every healthy delivery landed while the black hole's first sends were still hanging.
            assert time.monotonic() - started < settings.webhook_send_deadline_s
            assert black_hole.accepted <= settings.webhook_endpoint_concurrency_max

            def hole_rows() -> list[WebhookDelivery]:
                with ctx.sessions() as session:
                    return list(session.scalars(select(WebhookDelivery).where(
                        WebhookDelivery.endpoint_id == hole["id"])))

            # Its two sends time out at the deadline; then its circuit is open: the rest wait unspent.
            wait_for(lambda: sum(row.last_error is not None for row in hole_rows()) == 2, timeout_s=30)
        finally:
            stop.set()
            loop.join(30)
        rows = hole_rows()
        assert sorted(row.attempts for row in rows) == [0] * (events - 2) + [1, 1]
        assert all(row.status == "pending" for row in rows)
        assert {row.last_error for row in rows if row.attempts} == {f"no answer within {settings.webhook_send_deadline_s:g} s"}
        assert black_hole.accepted == 2  # one connection per attempt: nothing was sent twice


def test_a_stop_ends_the_idle_dispatcher_at_once_not_after_its_poll(tmp_path, sqlite_url, models_dir):
    """A shutdown (and every test app's exit) does not wait out the dispatcher's idle poll."""
    settings = make_settings(tmp_path, sqlite_url, models_dir, webhook_poll_s=3600.0)
    engine = make_engine(sqlite_url)
    claimed = threading.Event()
    event.listen(engine, "before_cursor_execute",
                 lambda _c, _cur, statement, *_: "webhook_deliveries" in statement and claimed.set())
    stop = threading.Event()
    try:
        [thread] = start_dispatcher(settings, make_session_factory(engine), stop)
        assert claimed.wait(join_deadline_s)  # it looked for work, found none, and rests for its poll
        stop.set()
        thread.join(join_deadline_s)
        assert not thread.is_alive()
    finally:
        stop.set()
        engine.dispose()
