"""A batch with A/B groups end to end in a real browser (Chromium through Playwright): the grid, the whole
batch's quote, submission, progress reaching completion without a reload, and A beside B with their
thumbs."""

from __future__ import annotations

import re
import uuid

import httpx

from browser import browser, console, new_person, page, sign_in  # noqa: F401  (fixtures)

generation_timeout_ms = 180_000  # two tiny clips on a loaded machine


def test_a_batch_with_ab_groups_end_to_end(page, console):
    email, tenant = new_person(console, "member", tokens=1_000_000)
    template = f"ab-{uuid.uuid4().hex[:6]}"
    saved = httpx.post(f"{console.url}/v1/templates", headers=tenant.headers, timeout=60, json={
        "name": template, "body": "A {{ style }} clip of {{ product }}.", "form": {"style": "warm"},
        "size": "64x64", "seconds": 1})
    assert saved.status_code == 201, saved.text
    sign_in(page, email)
    page.wait_for_url(re.compile(r"/videos$"))
    page.get_by_role("navigation").get_by_role("link", name="Batches").click()
    page.get_by_role("link", name="New batch").click()
    page.get_by_label("Template").select_option(template)
    page.get_by_role("button", name="Use this template").click()
    page.get_by_label("product · row 1").fill("a red kettle")
    page.get_by_label("product · row 2").fill("a blue kettle")
    assert page.get_by_label("A/B groups").input_value() == "A, B"
    page.wait_for_function("() => document.querySelector('#batch-quote-items')?.innerText === '2'")
    assert re.fullmatch(r"\S+ \d+(\.\d+)?", page.locator("#batch-quote-total").inner_text())
    page.get_by_role("button", name="Create the batch").click()
    page.wait_for_url(re.compile(r"/batches/batch_[0-9a-f]+$"))
    batch_id = page.url.rsplit("/", 1)[1]
    page.evaluate("window.notReloaded = true")
    page.locator("#batch-progress[data-done=true]").wait_for(timeout=generation_timeout_ms)
    assert page.evaluate("window.notReloaded") is True  # the panel followed by itself
    assert page.locator("#batch-progress tr[data-status=completed]").count() == 2
    batch = httpx.get(f"{console.url}/v1/batches/{batch_id}", headers=tenant.headers, timeout=60).json()
    first_a = next(item for item in batch["items"] if item["ab_group"] == "A")
    rated = httpx.post(f"{console.url}/v1/videos/{first_a['video_id']}/feedback", headers=tenant.headers,
                       json={"rating": "up"}, timeout=60)
    assert rated.status_code == 201, rated.text
    page.get_by_role("link", name="Compare A and B").click()
    pair = page.get_by_role("region", name="Pair 1")
    for group, product in (("A", "a red kettle"), ("B", "a blue kettle")):
        figure = pair.locator(f"figure[data-group={group}]")
        assert product in figure.inner_text() and figure.locator("video").count() == 1
    assert "Thumbs up 1 · down 0" in pair.locator("figure[data-group=A]").inner_text()
    assert page.locator("#totals-A .up").inner_text() == "1" and page.locator("#totals-B .up").inner_text() == "0"
