"""Server-Sent Events from the one outbox: a video's stream (its events and progress, ending when it
finishes) and a tenant's stream, resumable with Last-Event-ID, opened with an API key or a console
session, and another tenant's video answering 404. Progress keeps moving after denoising."""

from __future__ import annotations

import json
import threading

import httpx
import pytest
from fastapi.testclient import TestClient

from vidfactory.accounts import PasswordHasher, create_user, session_cookie, sign_in
from vidfactory.api.app import create_app
from vidfactory.db.models import Job
from vidfactory.db.types import utcnow
from vidfactory.jobs import queue, worker as worker_module

from conftest import make_settings, new_tenant
from live import live_server
from test_api_videos import small, work

read_deadline_s = 60.0


@pytest.fixture
def server(tmp_path, sqlite_url, models_dir):
    settings = make_settings(tmp_path, sqlite_url, models_dir, events_poll_s=0.02, rate_limit_enabled=False)
    with live_server(settings) as live:
        yield live


def read_events(response: httpx.Response, count: int | None = None) -> list[dict]:
    """Parse an SSE body into events ({id, event, data}) until it ends or `count` events have arrived."""
    events, current = [], {}
    for line in response.iter_lines():
        if line == "":
            if "event" in current:
                events.append(current)
                if count is not None and len(events) == count:
                    break
            current = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(": ")
            current[field] = json.loads(value) if field == "data" else value
    return events


def submit(server, tenant) -> str:
    created = httpx.post(f"{server.url}/v1/videos", headers=tenant.headers, json={"prompt": "a red fox", **small},
                         timeout=read_deadline_s)
    assert created.status_code == 200, created.text
    return created.json()["id"]


def test_a_videos_stream_follows_it_to_the_end_and_resumes_after_the_last_event_seen(server):
    tenant = new_tenant(server.ctx.sessions, tokens=10_000)
    video_id = submit(server, tenant)
    seen: list[dict] = []

    def follow() -> None:
        with httpx.stream("GET", f"{server.url}/v1/videos/{video_id}/events", headers=tenant.headers,
                          timeout=read_deadline_s) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            seen.extend(read_events(response))

    reader = threading.Thread(target=follow)
    reader.start()
    work(server.ctx)
    reader.join(read_deadline_s)
    assert not reader.is_alive(), "the stream did not end with the video"
    assert seen[-1]["event"] == "end"
    types = [e["event"] for e in seen if e["event"] not in ("video.progress", "end")]
    assert types[:2] == ["video.queued", "billing.hold_created"]
    assert [t for t in types if t.startswith("video.")][-1] == "video.completed"
    assert "video.in_progress" in types and "billing.settled" in types  # the settlement, committed with it
    progress = [e["data"]["progress"] for e in seen if e["event"] == "video.progress"]
    assert progress == sorted(progress) and progress[-1] == 100
    ids = [int(e["id"]) for e in seen if "id" in e]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    # Reconnecting after the in_progress event replays exactly what came after it, then ends.
    resume_at = next(e["id"] for e in seen if e["event"] == "video.in_progress")
    with httpx.stream("GET", f"{server.url}/v1/videos/{video_id}/events", timeout=read_deadline_s,
                      headers={**tenant.headers, "Last-Event-ID": resume_at}) as response:
        replayed = [e for e in read_events(response) if "id" in e]
    assert [e["id"] for e in replayed] == [str(i) for i in ids if i > int(resume_at)]


def test_the_tenant_stream_carries_only_its_own_events_and_resumes(server):
    tenant, other = new_tenant(server.ctx.sessions, tokens=10_000), new_tenant(server.ctx.sessions, tokens=10_000)
    first, _, second = submit(server, tenant), submit(server, other), submit(server, tenant)
    with httpx.stream("GET", f"{server.url}/v1/events", headers=tenant.headers, timeout=read_deadline_s) as response:
        events = read_events(response, count=4)  # each submission: video.queued and billing.hold_created
    assert [(e["event"], e["data"]["data"].get("id") or e["data"]["data"].get("video_id")) for e in events] == [
        ("video.queued", first), ("billing.hold_created", first), ("video.queued", second),
        ("billing.hold_created", second)]
    with httpx.stream("GET", f"{server.url}/v1/events", timeout=read_deadline_s,
                      headers={**tenant.headers, "Last-Event-ID": events[1]["id"]}) as response:
        resumed = read_events(response, count=2)
    assert [e["id"] for e in resumed] == [events[2]["id"], events[3]["id"]]


def test_a_stream_closes_after_its_lifetime_and_the_reconnect_misses_nothing(tmp_path, sqlite_url, models_dir):
    settings = make_settings(tmp_path, sqlite_url, models_dir, events_poll_s=0.02, events_stream_max_s=0.3,
                             rate_limit_enabled=False)
    with TestClient(create_app(settings, workers=0)) as client:
        tenant = new_tenant(client.app.state.ctx.sessions, tokens=10_000)
        first = client.post("/v1/videos", headers=tenant.headers, json={"prompt": "a red fox", **small})
        with client.stream("GET", "/v1/events", headers=tenant.headers) as response:
            before = read_events(response)  # to the close: no count
        second = client.post("/v1/videos", headers=tenant.headers, json={"prompt": "a red owl", **small})
        with client.stream("GET", "/v1/events", headers={**tenant.headers, "Last-Event-ID": before[-1]["id"]}
                           ) as response:
            after = read_events(response)
    assert [(e["event"], e["data"]["data"].get("id")) for e in before] == [
        ("video.queued", first.json()["id"]), ("billing.hold_created", None)]
    assert [(e["event"], e["data"]["data"].get("id")) for e in after] == [
        ("video.queued", second.json()["id"]), ("billing.hold_created", None)]


def test_streams_take_a_console_session_and_hide_other_tenants_videos(server):
    owner, stranger = new_tenant(server.ctx.sessions, tokens=10_000), new_tenant(server.ctx.sessions)
    video_id = submit(server, owner)
    hasher = PasswordHasher(time_cost=1, memory_kib=1024)
    with server.ctx.sessions.begin() as session:
        create_user(session, hasher, "ana@example.com", "viewer", "correct horse battery", owner.id)
        token = sign_in(session, hasher, "ana@example.com", "correct horse battery", ttl_s=60, failures_max=5).token
    with httpx.stream("GET", f"{server.url}/v1/events", cookies={session_cookie: token},
                      timeout=read_deadline_s) as response:
        assert [e["event"] for e in read_events(response, count=1)] == ["video.queued"]
    assert httpx.get(f"{server.url}/v1/events", timeout=read_deadline_s).status_code == 401
    assert httpx.get(f"{server.url}/v1/events", cookies={session_cookie: "forged"}).status_code == 401
    missing = httpx.get(f"{server.url}/v1/videos/{video_id}/events", headers=stranger.headers)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    bad = httpx.get(f"{server.url}/v1/events", headers={**owner.headers, "Last-Event-ID": "x"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "Last-Event-ID"


def test_progress_moves_through_decoding_and_post_processing(client, ctx, monkeypatch):
    written: list[int] = []
    report = queue.report_progress

    def recording(session, job_id, worker_id, progress):
        written.append(progress)
        report(session, job_id, worker_id, progress)

    monkeypatch.setattr(worker_module.queue, "report_progress", recording)
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    created = client.post("/v1/videos", headers=tenant.headers, json={"prompt": "a red fox", **small})
    work(ctx)
    assert client.get(f"/v1/videos/{created.json()['id']}", headers=tenant.headers).json()["status"] == "completed"
    after_denoising = [p for p in written if p > worker_module.generation_share_pct]
    assert written == sorted(written)
    # The decode, each stage of the output pipeline and storage each move it on.
    assert len(set(after_denoising)) >= 5 and max(after_denoising) == worker_module.stored_progress_pct


def test_a_queued_videos_stream_says_its_place_in_the_queue_and_when_it_should_start(server):
    tenant = new_tenant(server.ctx.sessions, tokens=10_000)
    first, second = submit(server, tenant), submit(server, tenant)
    with httpx.stream("GET", f"{server.url}/v1/videos/{second}/events", headers=tenant.headers,
                      timeout=read_deadline_s) as response:
        events = read_events(response, count=3)  # video.queued, billing.hold_created, then its progress
    assert events[-1]["event"] == "video.progress"
    assert events[-1]["data"] | {"id": None} == {"id": None, "object": "video", "status": "queued", "progress": 0,
                                                 "queue_position": 2, "estimated_start_s": None}
    with server.ctx.sessions.begin() as session:  # a worker runs the first: the second is next, with an estimate
        job = queue.claim(session, worker_id="w", models=[server.ctx.settings.models[0].id], lease_s=30,
                          now=utcnow())
        assert job.id == first
        queue.complete(session, job, "w", [], charge=job.total_tokens)
    with server.ctx.sessions() as session:
        place = queue.queue_place(session, session.get(Job, second), utcnow())
    assert place.position == 1 and place.estimated_start_s is not None and place.estimated_start_s >= 0
