"""The console in a real browser (Chromium through Playwright): signing in and out, the lock after five
wrong passwords, a form refused without its CSRF token, what a member may not open, another tenant's
video answering 404, both languages, the API docs served without any CDN, the gallery's pages and live
tiles, and the review desk driven by its keys."""

from __future__ import annotations

import hashlib
import re

import httpx

from vidfactory.accounts import session_cookie
from vidfactory.web import videos as videos_page

from browser import browser, console, new_person, page, password, sign_in  # noqa: F401  (fixtures)


def test_sign_in_lands_on_the_videos_and_sign_out_ends_the_session(page, console):
    email, _ = new_person(console, "owner")
    page.goto("/")
    assert page.url.endswith("/sign-in")
    sign_in(page, email)
    page.wait_for_url(re.compile(r"/videos$"))
    nav = page.get_by_role("navigation")
    for label in ("Videos", "Billing", "Developers", "Account"):
        assert nav.get_by_role("link", name=label).is_visible()
    cookie = next(c for c in page.context.cookies() if c["name"] == session_cookie)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/sign-in$"))
    page.goto("/videos")
    assert "/sign-in" in page.url  # the old cookie no longer opens anything
    reused = httpx.get(f"{console.url}/videos", cookies={session_cookie: cookie["value"]}, follow_redirects=False,
                       timeout=60)
    assert reused.status_code == 303


def test_five_wrong_passwords_lock_sign_in(page, console):
    email, _ = new_person(console, "member")
    for _ in range(5):
        sign_in(page, email, "not the password")
        assert page.get_by_role("alert").inner_text() == "The email or password is not right."
    sign_in(page, email)
    assert "locked" in page.get_by_role("alert").inner_text()
    assert page.url.endswith("/sign-in") and not any(c["name"] == session_cookie for c in page.context.cookies())


def test_a_form_posted_without_its_csrf_token_is_refused(page, console):
    email, _ = new_person(console, "viewer")
    sign_in(page, email)
    page.wait_for_url(re.compile(r"/videos$"))
    page.goto("/account")
    page.get_by_label("Current password").fill(password)
    page.get_by_label("New password").fill("another long password")
    page.locator("form[action='/account/password'] input[name=csrf_token]").evaluate("input => input.remove()")
    with page.expect_response(lambda r: r.url.endswith("/account/password")) as answer:
        page.get_by_role("button", name="Save").click()
    assert answer.value.status == 403
    assert "did not come from this page" in page.get_by_role("alert").inner_text()
    page.context.clear_cookies()
    sign_in(page, email)  # the password did not change
    page.wait_for_url(re.compile(r"/videos$"))


def test_a_member_cannot_reach_billing_or_keys(page, console):
    email, _ = new_person(console, "member")
    sign_in(page, email)
    page.wait_for_url(re.compile(r"/videos$"))
    nav = page.get_by_role("navigation")
    assert nav.get_by_role("link", name="Videos").is_visible()
    assert nav.get_by_role("link", name="Billing").count() == 0 and nav.get_by_role("link", name="Developers").count() == 0
    for path in ("/billing", "/developers"):
        assert page.goto(path).status == 403
        assert page.get_by_role("alert").inner_text() == "Your role does not allow this page."


def test_another_tenants_video_page_is_404(page, console):
    _, tenant_a = new_person(console, "owner", tokens=100_000)
    created = httpx.post(f"{console.url}/v1/videos", headers=tenant_a.headers,
                         json={"prompt": "a lighthouse at dusk", "size": "64x64", "seconds": "1"}, timeout=120)
    assert created.status_code == 200, created.text
    video_id = created.json()["id"]
    email_b, _ = new_person(console, "owner")
    sign_in(page, email_b)
    page.wait_for_url(re.compile(r"/videos$"))
    assert page.goto(f"/videos/{video_id}").status == 404
    assert page.goto(f"/videos/{video_id}/status").status == 404
    assert page.goto(f"/videos/{video_id}/file?variant=video").status == 404


def test_the_console_speaks_the_browsers_language_and_switches(browser, console):
    context = browser.new_context(base_url=console.url, locale="zh-CN")
    chinese = context.new_page()
    chinese.goto("/sign-in")
    assert chinese.get_by_role("heading").inner_text() == "登录"
    chinese.get_by_role("link", name="English").click()
    chinese.wait_for_url(re.compile(r"/sign-in$"))
    assert chinese.get_by_role("heading").inner_text() == "Sign in"
    context.close()


def test_the_api_docs_load_nothing_from_elsewhere_and_offer_authorize(page, console):
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto("/docs")
    page.get_by_role("button", name="Authorize").click()
    assert page.get_by_text("an API key (vf_...) or the admin token").is_visible()
    assert requested and all(url.startswith(console.url) for url in requested), requested


def test_create_quotes_live_flags_a_blocked_word_and_the_clip_plays_and_downloads(page, console, tmp_path):
    email, tenant = new_person(console, "member", tokens=1_000_000)
    sign_in(page, email)
    page.wait_for_url(re.compile(r"/videos$"))
    page.get_by_role("navigation").get_by_role("link", name="Create").click()
    total = page.locator("#quote-total")
    first = total.inner_text()
    page.get_by_label("Size").select_option("1280x720")
    page.wait_for_function("before => document.querySelector('#quote-total').innerText !== before", arg=first)
    bigger = total.inner_text()
    page.get_by_label("Duration (seconds)").select_option("8")
    page.wait_for_function("before => document.querySelector('#quote-total').innerText !== before", arg=bigger)
    # A blocked word is flagged while typing, by its category only: the page never spells out the list.
    page.get_by_label("Keywords").fill("csam")
    screening = page.locator("#screening[data-action=block]")
    screening.wait_for()
    assert "minors" in screening.inner_text() and "csam" not in screening.inner_text()
    page.get_by_label("Keywords").fill("a lighthouse at dusk")
    page.locator("#screening[data-action=pass]").wait_for()
    page.get_by_label("Size").select_option("64x64")
    page.get_by_label("Duration (seconds)").select_option("1")
    page.get_by_role("button", name="Generate").click()
    page.wait_for_url(re.compile(r"/videos/video_"))
    video_id = page.url.rsplit("/", 1)[1]
    # The stream brings the finished state into the page without a reload.
    page.locator("#status-panel[data-status=completed]").wait_for(timeout=180_000)
    duration = page.locator("video").evaluate(
        "v => new Promise(done => v.readyState >= 1 ? done(v.duration) : "
        "v.addEventListener('loadedmetadata', () => done(v.duration)))")
    assert duration > 0
    with page.expect_download() as download:
        page.get_by_role("link", name="Download").click()
    saved = tmp_path / "clip.mp4"
    download.value.save_as(saved)
    api = httpx.get(f"{console.url}/v1/videos/{video_id}", headers=tenant.headers, timeout=60).json()
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == api["hashes"]["video"]["sha256"]


def test_a_reviewer_approves_a_held_job_and_the_owners_page_follows_by_itself(browser, page, console):
    owner_email, tenant = new_person(console, "owner", tokens=1_000_000)
    created = httpx.post(f"{console.url}/v1/videos", headers=tenant.headers, timeout=120,
                         json={"prompt": "a nude marble statue in a museum", "size": "64x64", "seconds": "1"})
    assert created.status_code == 200, created.text
    video_id = created.json()["id"]
    sign_in(page, owner_email)
    page.wait_for_url(re.compile(r"/videos$"))
    page.goto(f"/videos/{video_id}")
    assert page.locator("#status-panel").get_attribute("data-status") == "queued"
    reviewer_email, _ = new_person(console, "reviewer")
    desk = browser.new_context(base_url=console.url, locale="en-US")
    desk.set_default_timeout(60_000)
    reviewer = desk.new_page()
    sign_in(reviewer, reviewer_email)
    reviewer.wait_for_url(re.compile(r"/review$"))
    reviewer.locator(f"#review-{video_id}").get_by_role("button", name="Approve").click()
    reviewer.wait_for_url(re.compile(r"/review$"))
    assert reviewer.locator(f"#review-{video_id}").count() == 0
    desk.close()
    page.locator("#status-panel[data-status=completed]").wait_for(timeout=180_000)  # no reload


def _video(console, tenant, prompt: str) -> str:
    created = httpx.post(f"{console.url}/v1/videos", headers=tenant.headers, timeout=120,
                         json={"prompt": prompt, "size": "64x64", "seconds": "1"})
    assert created.status_code == 200, created.text
    return created.json()["id"]


def test_a_reviewer_rejects_by_keyboard_with_a_note_and_the_owners_page_shows_it_by_itself(browser, page, console):
    owner_email, tenant = new_person(console, "owner", tokens=1_000_000)
    video_id = _video(console, tenant, "a nude marble statue in a museum")
    sign_in(page, owner_email)
    page.wait_for_url(re.compile(r"/videos$"))
    page.goto(f"/videos/{video_id}")
    assert page.locator("#status-panel .held").is_visible()
    reviewer_email, _ = new_person(console, "reviewer")
    desk = browser.new_context(base_url=console.url, locale="en-US")
    desk.set_default_timeout(60_000)
    reviewer = desk.new_page()
    sign_in(reviewer, reviewer_email)
    reviewer.wait_for_url(re.compile(r"/review$"))
    item = reviewer.locator(f"#review-{video_id}")
    assert "nude" in item.locator(".reason").inner_text()
    for _ in range(reviewer.locator("[data-review-item]").count()):  # j moves down to this job's item
        if item.get_attribute("aria-current") is not None:
            break
        reviewer.keyboard.press("j")
    reviewer.keyboard.press("r")
    note = "Nudity is not allowed here"
    reviewer.keyboard.type(note)
    reviewer.keyboard.press("Enter")
    item.wait_for(state="detached")
    desk.close()
    page.locator("#status-panel[data-status=failed]").wait_for(timeout=60_000)  # no reload
    assert note in page.locator("#failure").inner_text()


def test_the_gallery_pages_and_a_tile_follows_its_video_without_reloading(page, console, monkeypatch):
    monkeypatch.setattr(videos_page, "videos_per_page", 2)
    email, tenant = new_person(console, "member", tokens=1_000_000)
    oldest, middle = (_video(console, tenant, f"filler clip {n}") for n in range(2))
    for video_id in (oldest, middle):  # only the newest is made: the others wait for no worker
        httpx.post(f"{console.url}/v1/videos/{video_id}/cancel", headers=tenant.headers, timeout=60)
    newest = _video(console, tenant, "a lighthouse at dusk")
    sign_in(page, email)
    page.wait_for_url(re.compile(r"/videos$"))
    tiles = page.locator(".gallery .tile")
    assert tiles.evaluate_all("tiles => tiles.map(t => t.id)") == [f"tile-{newest}", f"tile-{middle}"]
    page.evaluate("window.notReloaded = true")
    page.locator(f"#tile-{newest}[data-status=completed] img").wait_for(timeout=180_000)
    assert page.evaluate("window.notReloaded") is True
    page.get_by_role("link", name="Older").click()
    page.wait_for_url(re.compile(r"/videos\?after="))
    assert tiles.evaluate_all("tiles => tiles.map(t => t.id)") == [f"tile-{oldest}"]
    assert page.get_by_role("link", name="Older").count() == 0 and page.get_by_role("link", name="Newest").is_visible()
