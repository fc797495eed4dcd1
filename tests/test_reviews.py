"""The review queue: a held prompt never runs before an admin approves it; a held clip is neither
delivered nor charged before approval; a rejection refunds; every decision happens once."""


import threading
from datetime import timedelta

from openai import OpenAI
from sqlalchemy import select

from vidfactory.api.render import video_object
from vidfactory.db.models import Job, WebhookEvent
from vidfactory.db.types import utcnow
from vidfactory.jobs import maintenance, queue
from vidfactory.jobs.submit import VideoRequest, submit
from vidfactory.jobs.worker import Worker
from vidfactory.notify.endpoints import create_endpoint
from vidfactory.tenancy import authenticate, update_plan

from conftest import assert_ledger_clean, new_tenant

admin = {"Authorization": "Bearer test-admin-token"}
small = {"size": "64x64", "seconds": "1"}


def submit_for_review(ctx, tenant, reason="matched: example") -> str:
    with ctx.sessions() as session:
        caller = authenticate(session, tenant.key)
    outcome = submit(ctx.sessions, ctx.settings, ctx.counters, caller,
                     VideoRequest(prompt="a quiet harbour at dawn", model="wan-tiny", size="64x64", seconds="1"),
                     video_object, review=queue.Review("prompt", reason), screens=ctx.screens)
    return outcome.body["id"]


def claim(ctx, worker="w1"):
    with ctx.sessions.begin() as session:
        job = queue.claim(session, worker_id=worker, models=["wan-tiny"], lease_s=30.0, now=utcnow())
        return None if job is None else job.id


def balance(client, tenant):
    return client.get("/v1/balance", headers=tenant.headers).json()


def hold_clip_for_review(ctx, tenant) -> str:
    """Submit normally, claim, and hold the finished clip for review as the output checks would."""
    created = submit(ctx.sessions, ctx.settings, ctx.counters, _caller(ctx, tenant),
                     VideoRequest(prompt="a lighthouse", model="wan-tiny", size="64x64", seconds="1"), video_object,
                     screens=ctx.screens)
    job_id = created.body["id"]
    assert claim(ctx) == job_id
    with ctx.sessions.begin() as session:
        job = session.get(Job, job_id)
        queue.hold_for_review(session, job, "w1", [queue.AssetRecord("video", "k/video.mp4", "video/mp4", 3, "ab")],
                              queue.Review("qc", "flicker 0.31 > 0.20"))
    return job_id


def _caller(ctx, tenant):
    with ctx.sessions() as session:
        return authenticate(session, tenant.key)


def test_held_prompt_is_not_claimed_until_approved(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    job_id = submit_for_review(ctx, tenant)
    video = client.get(f"/v1/videos/{job_id}", headers=tenant.headers).json()
    assert video["status"] == "queued" and video["review"]["status"] == "pending"
    assert video["review"]["source"] == "prompt"
    assert "matched" not in str(video)  # the reason is for admins only
    assert balance(client, tenant)["pending"] == video["usage"]["total_tokens"]
    assert claim(ctx) is None

    listed = client.get("/v1/admin/reviews", headers=admin).json()["data"]
    assert [(r["id"], r["review"]["reason"]) for r in listed] == [(job_id, "matched: example")]
    approved = client.post(f"/v1/admin/reviews/{job_id}/approve", headers=admin)
    assert approved.status_code == 200 and approved.json()["review"]["status"] == "approved"
    assert client.get("/v1/admin/reviews", headers=admin).json()["data"] == []

    worker = Worker(ctx.settings, ctx.sessions, ctx.storage, worker_id="test-worker")
    assert worker.run_once()
    done = client.get(f"/v1/videos/{job_id}", headers=tenant.headers).json()
    assert done["status"] == "completed" and done["billing"]["status"] == "settled"
    assert_ledger_clean(ctx.sessions)


def test_rejected_prompt_is_refunded_and_never_runs(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    job_id = submit_for_review(ctx, tenant)
    rejected = client.post(f"/v1/admin/reviews/{job_id}/reject", headers=admin, json={"reason": "policy"})
    assert rejected.status_code == 200
    video = client.get(f"/v1/videos/{job_id}", headers=tenant.headers).json()
    assert video["status"] == "failed" and video["error"]["code"] == "content_rejected"
    assert video["billing"]["status"] == "voided"
    assert balance(client, tenant) == {"object": "balance", "available": 10_000, "pending": 0, "posted": 10_000}
    assert claim(ctx) is None
    again = client.post(f"/v1/admin/reviews/{job_id}/approve", headers=admin)
    assert again.status_code == 409 and again.json()["error"]["code"] == "invalid_state"
    assert_ledger_clean(ctx.sessions)


def test_held_clip_is_neither_delivered_nor_charged_until_approved(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    job_id = hold_clip_for_review(ctx, tenant)
    video = client.get(f"/v1/videos/{job_id}", headers=tenant.headers).json()
    assert video["status"] == "in_progress" and video["billing"]["status"] == "held"
    content = client.get(f"/v1/videos/{job_id}/content", headers=tenant.headers)
    assert content.status_code == 409
    # No worker owns it any more: the lease reaper must not requeue it.
    assert maintenance.reap_expired_leases(ctx.sessions, utcnow()) == 0
    alerts = client.get("/v1/admin/alerts", headers=admin).json()["data"]
    assert [(a["kind"], a["video_id"]) for a in alerts] == [("review_required", job_id)]

    assert client.post(f"/v1/admin/reviews/{job_id}/approve", headers=admin).status_code == 200
    done = client.get(f"/v1/videos/{job_id}", headers=tenant.headers).json()
    assert done["status"] == "completed" and done["billing"]["settled"] == done["usage"]["total_tokens"]
    assert balance(client, tenant)["available"] == 10_000 - done["usage"]["total_tokens"]
    second = client.post(f"/v1/admin/reviews/{job_id}/reject", headers=admin, json={})
    assert second.status_code == 409
    assert_ledger_clean(ctx.sessions)


def test_rejected_clip_is_refunded(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    job_id = hold_clip_for_review(ctx, tenant)
    assert client.post(f"/v1/admin/reviews/{job_id}/reject", headers=admin, json={"reason": "x"}).status_code == 200
    video = client.get(f"/v1/videos/{job_id}", headers=tenant.headers).json()
    assert (video["status"], video["billing"]["status"]) == ("failed", "voided")
    assert balance(client, tenant)["available"] == 10_000
    assert_ledger_clean(ctx.sessions)


def test_tenant_cancels_a_clip_waiting_for_review(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    job_id = hold_clip_for_review(ctx, tenant)
    cancelled = client.post(f"/v1/videos/{job_id}/cancel", headers=tenant.headers).json()
    assert cancelled["status"] == "cancelled" and cancelled["billing"]["status"] == "voided"
    assert client.post(f"/v1/admin/reviews/{job_id}/approve", headers=admin).status_code == 409
    assert_ledger_clean(ctx.sessions)


def test_review_routes_need_the_admin_token_and_known_videos(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    job_id = submit_for_review(ctx, tenant)
    assert client.get("/v1/admin/reviews", headers=tenant.headers).status_code == 403
    assert client.post(f"/v1/admin/reviews/{job_id}/approve", headers=tenant.headers).status_code == 403
    assert client.post("/v1/admin/reviews/video_nope/approve", headers=admin).status_code == 404
    plain = client.post("/v1/videos", headers=tenant.headers, json={"prompt": "a fox", **small}).json()
    not_held = client.post(f"/v1/admin/reviews/{plain['id']}/approve", headers=admin)
    assert not_held.status_code == 409


# --- a review ends: the object says so, the tenant and the operator hear of it, a deadline decides ------------

def set_plan(ctx, plan_id: str, **changes) -> None:
    with ctx.sessions.begin() as session:
        update_plan(session, plan_id, changes)


def review_alerts(client, job_id):
    alerts = client.get("/v1/admin/alerts", headers=admin).json()["data"]
    return [a for a in alerts if a["kind"] == "review_required" and a["video_id"] == job_id]


def test_a_held_prompt_says_until_when_and_is_announced(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    with ctx.sessions.begin() as session:
        create_endpoint(session, tenant.id, "https://hooks.example.com/vf", "", ["video.review_required"])
    before = utcnow()
    job_id = submit_for_review(ctx, tenant)
    review = client.get(f"/v1/videos/{job_id}", headers=tenant.headers).json()["review"]
    assert review["status"] == "pending" and review["on_deadline"] == "refund"
    assert int(before.timestamp()) + 3600 <= review["deadline_at"] <= int(utcnow().timestamp()) + 3600
    with ctx.sessions() as session:
        [event] = session.scalars(select(WebhookEvent).where(WebhookEvent.type == "video.review_required"))
        assert event.payload["data"]["id"] == job_id and event.payload["data"]["review"] == review
        assert "matched" not in str(event.payload)  # the reason is for admins only
    [alert] = review_alerts(client, job_id)
    assert "matched: example" in alert["message"] and alert["tenant_id"] == tenant.id


def test_a_held_clip_is_announced_once(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    job_id = hold_clip_for_review(ctx, tenant)
    assert len(review_alerts(client, job_id)) == 1
    assert client.get(f"/v1/videos/{job_id}", headers=tenant.headers).json()["review"]["on_deadline"] == "refund"


def test_an_undecided_review_is_refunded_at_the_deadline(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    job_id = submit_for_review(ctx, tenant)
    deadline = client.get(f"/v1/videos/{job_id}", headers=tenant.headers).json()["review"]["deadline_at"]
    assert maintenance.decide_overdue_reviews(ctx.sessions, utcnow()) == 0
    assert maintenance.decide_overdue_reviews(ctx.sessions, utcnow() + timedelta(seconds=3601)) == 1
    video = client.get(f"/v1/videos/{job_id}", headers=tenant.headers).json()
    assert video["status"] == "failed" and video["error"]["code"] == "review_expired"
    assert video["review"]["status"] == "rejected" and video["review"]["deadline_at"] == deadline
    assert balance(client, tenant)["pending"] == 0 and balance(client, tenant)["available"] == 10_000
    assert claim(ctx) is None
    entries = client.get("/v1/admin/audit", headers=admin, params={"limit": 100}).json()["data"]
    assert [(e["subject"], e["actor"]) for e in entries if e["kind"] == "review.expired"] == [
        (f"video:{job_id}", "review_deadline")]
    # Decided once: an admin arriving late finds nothing to decide.
    assert client.post(f"/v1/admin/reviews/{job_id}/approve", headers=admin).status_code == 409
    assert maintenance.decide_overdue_reviews(ctx.sessions, utcnow() + timedelta(hours=2)) == 0
    assert_ledger_clean(ctx.sessions)


def test_a_plan_may_approve_at_the_deadline(client, ctx):
    set_plan(ctx, "enterprise", review_deadline_s=60, review_deadline_action="approve")
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    job_id = hold_clip_for_review(ctx, tenant)
    assert maintenance.decide_overdue_reviews(ctx.sessions, utcnow() + timedelta(seconds=61)) == 1
    video = client.get(f"/v1/videos/{job_id}", headers=tenant.headers).json()
    assert video["status"] == "completed" and video["billing"]["status"] == "settled"
    assert video["review"]["status"] == "approved"
    assert_ledger_clean(ctx.sessions)


def test_create_and_poll_returns_when_the_review_deadline_passes(client, ctx):
    """The openai SDK polls while a video is queued or in progress: a held video must end for it to return."""
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    assert client.post(f"/v1/admin/tenants/{tenant.id}/lexicon", headers=admin,
                       json={"term": "harbour", "category": "studio", "action": "review"}).status_code == 201
    sdk = OpenAI(base_url="http://testserver/v1", api_key=tenant.key, http_client=client, max_retries=0)
    stop = threading.Event()

    def deadline_passes() -> None:  # the workers' maintenance, two hours on
        while not stop.is_set():
            if maintenance.decide_overdue_reviews(ctx.sessions, utcnow() + timedelta(hours=2)):
                return
            stop.wait(0.05)

    thread = threading.Thread(target=deadline_passes)
    thread.start()
    try:
        video = sdk.videos.create_and_poll(prompt="a quiet harbour at dawn", model="wan-tiny", seconds="1",
                                           size="64x64", poll_interval_ms=20)
    finally:
        stop.set()
        thread.join(30)
    assert video.status == "failed" and video.error.code == "review_expired"
    assert_ledger_clean(ctx.sessions)
