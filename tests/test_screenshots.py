"""`make screenshots`: every main page of the console (the navigation's pages, `nav_pages` in
web/console.py, each as the first role that reaches it, plus sign-in and a video's page) in English and
Chinese, as PNGs in the folder VIDFACTORY_SCREENSHOTS_DIR names (the target names docs/screenshots/,
which the README shows). Without that variable the browser run skips: `make test` writes nothing into
the repository, and only checks the plan."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

from vidfactory.web.console import nav_pages, page_roles

from browser import browser, console, new_person, password  # noqa: F401  (fixtures)

shots_dir_env = "VIDFACTORY_SCREENSHOTS_DIR"
locales = {"en": "en-US", "zh": "zh-CN"}
viewport = {"width": 1100, "height": 760}
clip_wait_s = 300.0
htmx_settle_ms = 30_000


def plan() -> list[tuple[str, str, str]]:
    """(name, path, role) for each page of the navigation: the first role the role table lets in."""
    return [(page, path, page_roles[page][0]) for page, path, _ in nav_pages]


def test_the_plan_covers_every_page_of_the_navigation():
    planned = {page for page, _, _ in plan()}
    assert planned == {page for page, _, _ in nav_pages}
    assert all(role in page_roles[page] for page, _, role in plan())


def _finished(console, tenant, video_id: str) -> None:
    deadline = time.monotonic() + clip_wait_s
    while httpx.get(f"{console.url}/v1/videos/{video_id}", headers=tenant.headers, timeout=60).json()["status"] \
            in ("queued", "in_progress"):
        assert time.monotonic() < deadline, f"{video_id} did not finish"
        time.sleep(0.5)  # polling the API with a deadline: a clip takes seconds on a CPU


def _demo(console) -> tuple[dict[str, str], str]:
    """People for each role, two finished clips and one held for review; returns emails by role and a
    finished video's id."""
    owner, tenant = new_person(console, "owner", tokens=2_000_000)
    people = {"owner": owner}
    for role in ("member", "viewer"):
        people[role], _ = new_person(console, role, tenant)
    for role in ("operator", "reviewer"):
        people[role], _ = new_person(console, role)
    made = []
    for prompt in ("a lighthouse at dusk, warm style", "a paper boat on a rainy street",
                   "a nude marble statue in a museum"):
        created = httpx.post(f"{console.url}/v1/videos", headers=tenant.headers, timeout=120,
                             json={"prompt": prompt, "size": "64x64", "seconds": "1"})
        assert created.status_code == 200, created.text
        made.append(created.json()["id"])
    for video_id in made[:2]:
        _finished(console, tenant, video_id)
    return people, made[0]


@pytest.mark.skipif(not os.environ.get(shots_dir_env), reason=f"made by `make screenshots` ({shots_dir_env})")
def test_screenshots_of_every_main_page_in_both_languages(browser, console):
    out = Path(os.environ[shots_dir_env])
    out.mkdir(parents=True, exist_ok=True)
    people, video_id = _demo(console)
    shots = [(name, path, role) for name, path, role in plan()] + [("video", f"/videos/{video_id}", "owner")]
    missing = []  # pages the navigation lists that do not answer: the rest are still taken
    for locale, browser_locale in locales.items():
        contexts = {}
        for name, path, role in [("sign-in", "/sign-in", None)] + shots:
            if role not in contexts:
                contexts[role] = context = browser.new_context(base_url=console.url, locale=browser_locale,
                                                               viewport=viewport)
                context.set_default_timeout(htmx_settle_ms)
                if role is not None:
                    _sign_in(context.new_page(), people[role])
            page = contexts[role].pages[0] if contexts[role].pages else contexts[role].new_page()
            answer = page.goto(path)
            if answer.status != 200:
                missing.append(f"{path} as {role}: {answer.status}")
                continue
            page.wait_for_load_state("load")
            # htmx's loads (the live quote) and swaps finish before the picture is taken.
            page.wait_for_function("() => !document.querySelector('.htmx-request, .htmx-settling, .htmx-swapping')")
            page.screenshot(path=out / f"{name}-{locale}.png", full_page=True)
        for context in contexts.values():
            context.close()
    assert not missing, missing


def _sign_in(page, email: str) -> None:
    """Through the form, found by its fields' ids: its labels are in the context's language."""
    page.goto("/sign-in")
    page.locator("#email").fill(email)
    page.locator("#password").fill(password)
    page.locator("form[action='/sign-in'] button[type=submit]").click()
    page.wait_for_url(lambda url: "/sign-in" not in url)
