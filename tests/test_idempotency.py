"""Idempotency-Key under concurrency, on SQLite and PostgreSQL: a retry of a request still in flight gets
the first outcome (or 409 idempotency_in_progress), never a 402/429 of its own; a failed first request
frees the key; a dead one's reservation is taken over; operator and tenant key spaces are separate."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from vidfactory import idempotency
from vidfactory.api.app import create_app
from vidfactory.billing import ledger
from vidfactory.db.models import IdempotencyRecord
from vidfactory.db.types import utcnow
from vidfactory.idempotency import IdempotencyConflict, IdempotencyInProgress, run_once

from conftest import assert_ledger_clean, make_settings, new_tenant
from faultproxy import wait_for

small = {"size": "64x64", "seconds": "1"}
reservation_s = 120.0


def once(ctx, tenant, idempotency, effect, reservation_s: float = reservation_s):
    return run_once(ctx.sessions, tenant.id, idempotency, effect, reservation_s=reservation_s)
admin = {"Authorization": "Bearer test-admin-token"}


def test_retries_racing_the_first_request_replay_it_and_never_see_402(client, ctx):
    """The balance covers one video: six copies of one request at once make one video, all six say so."""
    tenant = new_tenant(ctx.sessions, tokens=1, plan="free")
    quote = client.post("/v1/quotes", headers=tenant.headers, json={"prompt": "a cat", **small}).json()
    with ctx.sessions.begin() as session:
        ledger.credit(session, tenant.id, quote["total_tokens"] - 1)
    headers = {**tenant.headers, "Idempotency-Key": "order-7"}
    barrier, responses = threading.Barrier(6), []

    def submit() -> None:
        barrier.wait()
        responses.append(client.post("/v1/videos", headers=headers, json={"prompt": "a cat", **small}))

    threads = [threading.Thread(target=submit) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.status_code for r in responses] == [200] * 6, [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 5
    assert len(client.get("/v1/videos", headers=tenant.headers).json()["data"]) == 1
    assert client.get("/v1/balance", headers=tenant.headers).json()["available"] == 0
    assert_ledger_clean(ctx.sessions)


def test_a_request_still_running_is_in_progress_not_a_conflict(ctx, monkeypatch):
    monkeypatch.setattr(idempotency, "in_flight_wait_s", 0.2)
    tenant = new_tenant(ctx.sessions)
    entered, release = threading.Event(), threading.Event()
    effects: list[str] = []

    def slow(session):
        entered.set()
        assert release.wait(30)
        effects.append("first")
        return 201, {"made": "first"}

    first: list = []
    thread = threading.Thread(target=lambda: first.append(once(ctx, tenant, ("k", "a"), slow)))
    thread.start()
    assert entered.wait(30)
    with pytest.raises(IdempotencyInProgress):
        once(ctx, tenant, ("k", "a"), lambda s: (201, {"made": "second"}))
    with pytest.raises(IdempotencyConflict):  # another body under the key is still a conflict
        once(ctx, tenant, ("k", "b"), lambda s: (201, {"made": "other"}))
    release.set()
    thread.join(30)
    again = once(ctx, tenant, ("k", "a"), lambda s: (201, {"made": "second"}))
    assert (again.replayed, again.body, first[0].replayed, effects) == (True, {"made": "first"}, False, ["first"])


def test_a_failed_request_frees_its_key_and_a_dead_ones_is_taken_over(ctx):
    tenant = new_tenant(ctx.sessions)

    def refused(session):
        raise RuntimeError("402 from the balance check")

    with pytest.raises(RuntimeError):
        once(ctx, tenant, ("k", "a"), refused)
    assert once(ctx, tenant, ("k", "a"), lambda s: (201, {"ok": 1})).replayed is False
    with ctx.sessions.begin() as session:  # a process killed after reserving: its reservation has run out
        session.add(IdempotencyRecord(tenant_id=tenant.id, key="dead", request_sha256="a", reservation="x" * 32,
                                      reserved_until=utcnow() - timedelta(seconds=1)))
    taken = once(ctx, tenant, ("dead", "a"), lambda s: (201, {"ok": 2}))
    assert (taken.replayed, taken.body) == (False, {"ok": 2})
    assert once(ctx, tenant, ("dead", "a"), lambda s: (201, {"ok": 3})).body == {"ok": 2}


def test_a_key_whose_request_outlives_its_reservation_goes_to_the_retry_and_applies_once(
        tmp_path, postgres_url, models_dir, monkeypatch):
    """A request still holding its key after `idempotency_reservation_s` (its API process hung, or was
    killed: nobody is left to release the key) loses it to the client's retry, so a client is not kept
    waiting on a dead process; the retry's effect commits, the first one's rolls back: credited once."""
    monkeypatch.setattr(idempotency, "in_flight_wait_s", 0.1)
    entered, release = threading.Event(), threading.Event()
    credit = ledger.credit

    def stalled_credit(*args, **kwargs):
        if not entered.is_set():  # the first request only
            entered.set()
            assert release.wait(30)
        return credit(*args, **kwargs)

    monkeypatch.setattr(ledger, "credit", stalled_credit)
    settings = make_settings(tmp_path, postgres_url, models_dir, idempotency_reservation_s=1.0)
    with TestClient(create_app(settings, workers=0)) as client:
        ctx = client.app.state.ctx
        tenant = new_tenant(ctx.sessions)
        url, headers = f"/v1/admin/tenants/{tenant.id}/credits", {**admin, "Idempotency-Key": "topup-9"}
        first: list = []
        thread = threading.Thread(target=lambda: first.append(client.post(url, headers=headers, json={"tokens": 50})))
        thread.start()
        assert entered.wait(30)
        waiting = client.post(url, headers=headers, json={"tokens": 50})
        assert (waiting.status_code, waiting.json()["error"]["code"]) == (409, "idempotency_in_progress")
        retried = wait_for(lambda: (r := client.post(url, headers=headers, json={"tokens": 50})).status_code == 201
                           and r, 30, "the reservation to lapse")
        release.set()
        thread.join(30)
        assert (first[0].status_code, first[0].json()["error"]["code"]) == (409, "idempotency_in_progress")
        replayed = client.post(url, headers=headers, json={"tokens": 50})
        assert replayed.headers["idempotent-replayed"] == "true" and replayed.json() == retried.json()
        with ctx.sessions() as session:
            assert ledger.balance(session, tenant.id).posted == 50
        assert_ledger_clean(ctx.sessions)


def test_tenant_keys_cannot_occupy_or_probe_the_operators(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    squatted = client.post("/v1/videos", headers={**tenant.headers, "Idempotency-Key": "admin-credit:topup-1"},
                           json={"prompt": "a cat", **small})
    assert squatted.status_code == 200, squatted.text
    credit = client.post(f"/v1/admin/tenants/{tenant.id}/credits", headers={**admin, "Idempotency-Key": "topup-1"},
                         json={"tokens": 50})
    assert credit.status_code == 201, credit.text
    again = client.post("/v1/videos", headers={**tenant.headers, "Idempotency-Key": "topup-1"},
                        json={"prompt": "a cat", **small})
    assert again.status_code == 200 and "idempotent-replayed" not in again.headers  # a key of its own


@pytest.mark.parametrize("route", ["credits", "vouchers"])
def test_the_longest_key_on_admin_grants_is_stored_and_replayed(client, ctx, route):
    tenant = new_tenant(ctx.sessions)
    body = {"tokens": 40} if route == "credits" else {"tokens": 40, "expires_days": 3, "reason": "outage"}
    headers = {**admin, "Idempotency-Key": "k" * 255}
    first = client.post(f"/v1/admin/tenants/{tenant.id}/{route}", headers=headers, json=body)
    again = client.post(f"/v1/admin/tenants/{tenant.id}/{route}", headers=headers, json=body)
    assert (first.status_code, again.status_code) == (201, 201), first.text
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    too_long = client.post(f"/v1/admin/tenants/{tenant.id}/{route}", headers={**admin, "Idempotency-Key": "k" * 256},
                           json=body)
    assert too_long.status_code == 400
