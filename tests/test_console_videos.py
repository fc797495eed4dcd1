"""The Videos pages without a browser: the gallery pages and shows each queued video's place in the queue;
a video's page deletes, regenerates, remixes and records feedback through the same services as the API;
a viewer only reads; another tenant's video answers 404 to every page and action; a form without its
CSRF token changes nothing."""

from __future__ import annotations

import re
import uuid

import pytest
from fastapi.testclient import TestClient

from vidfactory.accounts import PasswordHasher, create_user, csrf_token, session_cookie, sign_in
from vidfactory.api.app import create_app
from vidfactory.db.models import Feedback
from vidfactory.web import videos as videos_page

from conftest import TenantHandle, make_settings, new_tenant

password = "correct horse battery"


@pytest.fixture
def client(tmp_path, database_url, models_dir):
    settings = make_settings(tmp_path, database_url, models_dir, password_hash_time_cost=1,
                             password_hash_memory_kib=1024)
    with TestClient(create_app(settings, workers=0)) as test_client:
        yield test_client


class Person:
    """A signed-in console user: their cookie and form token, and their tenant's API key."""

    def __init__(self, client: TestClient, role: str, tenant: TenantHandle) -> None:
        ctx = client.app.state.ctx
        hasher = PasswordHasher.from_settings(ctx.settings)
        email = f"{role}-{uuid.uuid4().hex[:8]}@example.com"
        with ctx.sessions.begin() as session:
            create_user(session, hasher, email, role, password, tenant.id)
        with ctx.sessions.begin() as session:
            token = sign_in(session, hasher, email, password, ttl_s=3600, failures_max=5).token
        self.client, self.tenant, self.csrf = client, tenant, csrf_token(token)
        self.headers = {"Cookie": f"{session_cookie}={token}"}

    def get(self, path: str):
        return self.client.get(path, headers=self.headers, follow_redirects=False)

    def post(self, path: str, data: dict[str, str] | None = None, *, with_csrf: bool = True):
        form = {**(data or {}), **({"csrf_token": self.csrf} if with_csrf else {})}
        return self.client.post(path, data=form, headers=self.headers, follow_redirects=False)


def _video(client: TestClient, tenant: TenantHandle, prompt: str = "a lighthouse at dusk") -> str:
    created = client.post("/v1/videos", headers=tenant.headers, json={"prompt": prompt, "size": "64x64", "seconds": "1"})
    assert created.status_code == 200, created.text
    return created.json()["id"]


def _api(client: TestClient, tenant: TenantHandle, video_id: str):
    return client.get(f"/v1/videos/{video_id}", headers=tenant.headers)


def test_the_gallery_pages_and_shows_each_queued_videos_place(client, monkeypatch):
    tenant = new_tenant(client.app.state.ctx.sessions, tokens=1_000_000)
    viewer = Person(client, "viewer", tenant)
    assert "No videos yet." in viewer.get("/videos").text
    made = [_video(client, tenant, f"clip number {n}") for n in range(5)]
    monkeypatch.setattr(videos_page, "videos_per_page", 3)
    first = viewer.get("/videos")
    assert first.status_code == 200
    shown = re.findall(r'id="tile-(video_[0-9a-f]+)"', first.text)
    assert shown == made[::-1][:3]  # newest first, one page only
    # Every queued tile asks for itself again and says where it stands: the oldest is next.
    assert first.text.count('hx-trigger="every ') == 3
    older = re.search(r'href="/videos\?after=(video_[0-9a-f]+)" rel="next"', first.text).group(1)
    second = viewer.get(f"/videos?after={older}")
    assert re.findall(r'id="tile-(video_[0-9a-f]+)"', second.text) == made[::-1][3:]
    assert 'rel="next"' not in second.text and 'rel="first"' in second.text
    tile = viewer.get(f"/videos/{made[0]}/tile")
    assert tile.status_code == 200 and 'data-position="1"' in tile.text and "#1 in the queue" in tile.text
    assert 'data-position="5"' in viewer.get(f"/videos/{made[4]}/tile").text


def test_feedback_regenerate_remix_and_delete_work_from_the_page(client):
    ctx = client.app.state.ctx
    tenant = new_tenant(ctx.sessions, tokens=1_000_000)
    member = Person(client, "member", tenant)
    video_id = _video(client, tenant)
    page = member.get(f"/videos/{video_id}")
    assert page.status_code == 200
    for action in ("regenerate", "remix", "delete"):
        assert f'action="/videos/{video_id}/{action}"' in page.text

    answer = member.post(f"/videos/{video_id}/feedback", {"rating": "down", "reason": "blurry", "comment": "soft"})
    assert answer.status_code == 303
    assert "feedback is recorded" in member.get(answer.headers["location"]).text
    with ctx.sessions() as session:
        [kept] = session.query(Feedback).filter_by(job_id=video_id).all()
        assert (kept.rating, kept.reason, kept.comment) == ("down", "blurry", "soft")
    bad = member.post(f"/videos/{video_id}/feedback", {"rating": "sideways"})
    assert bad.status_code == 400 and "Choose thumbs up or thumbs down." in bad.text

    again = member.post(f"/videos/{video_id}/regenerate")
    assert again.status_code == 303
    child = _api(client, tenant, again.headers["location"].rsplit("/", 1)[1]).json()
    assert child["remixed_from_video_id"] == video_id and child["prompt"] == "a lighthouse at dusk"

    remixed = member.post(f"/videos/{video_id}/remix", {"prompt": "a lighthouse at dawn"})
    assert remixed.status_code == 303
    child = _api(client, tenant, remixed.headers["location"].rsplit("/", 1)[1]).json()
    assert child["remixed_from_video_id"] == video_id and child["prompt"] == "a lighthouse at dawn"
    blank = member.post(f"/videos/{video_id}/remix", {"prompt": "   "})
    assert blank.status_code == 400 and 'id="prompt-error"' in blank.text

    deleted = member.post(f"/videos/{video_id}/delete")
    assert deleted.status_code == 303 and deleted.headers["location"] == "/videos"
    assert _api(client, tenant, video_id).status_code == 404
    assert member.get(f"/videos/{video_id}").status_code == 404


def test_a_viewer_reads_but_changes_nothing(client):
    tenant = new_tenant(client.app.state.ctx.sessions, tokens=1_000_000)
    viewer = Person(client, "viewer", tenant)
    video_id = _video(client, tenant)
    page = viewer.get(f"/videos/{video_id}")
    assert page.status_code == 200 and "/delete" not in page.text and "/feedback" not in page.text
    for action in ("delete", "regenerate", "remix", "feedback"):
        assert viewer.post(f"/videos/{video_id}/{action}", {"rating": "up", "prompt": "x"}).status_code == 403
    assert _api(client, tenant, video_id).json()["status"] == "queued"


def test_another_tenants_video_is_404_to_every_page_and_action(client):
    sessions = client.app.state.ctx.sessions
    tenant_a = new_tenant(sessions, tokens=1_000_000)
    video_id = _video(client, tenant_a)
    owner_b = Person(client, "owner", new_tenant(sessions, tokens=1_000_000))
    for path in ("", "/status", "/tile", "/provenance", "/file?variant=video"):
        assert owner_b.get(f"/videos/{video_id}{path}").status_code == 404, path
    for action in ("delete", "regenerate", "remix", "feedback"):
        assert owner_b.post(f"/videos/{video_id}/{action}", {"rating": "up", "prompt": "x"}).status_code == 404
    assert _api(client, tenant_a, video_id).json()["status"] == "queued"
    assert f"tile-{video_id}" not in owner_b.get("/videos").text


def test_a_form_without_its_csrf_token_changes_nothing(client):
    tenant = new_tenant(client.app.state.ctx.sessions, tokens=1_000_000)
    owner = Person(client, "owner", tenant)
    video_id = _video(client, tenant)
    for action in ("delete", "regenerate", "remix", "feedback"):
        answer = owner.post(f"/videos/{video_id}/{action}", {"rating": "up", "prompt": "x"}, with_csrf=False)
        assert answer.status_code == 403 and "did not come from this page" in answer.text
    listed = client.get("/v1/videos", headers=tenant.headers).json()["data"]
    assert [video["id"] for video in listed] == [video_id]
