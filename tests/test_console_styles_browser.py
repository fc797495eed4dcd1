"""A style trained from the console in a real browser: the ZIP chosen and sent from the Trainings page, the
training's page following it to the end without a reload (its event stream), then the loss curve and a
preview clip that plays."""

from __future__ import annotations

import re

from browser import browser, console, new_person, page, sign_in  # noqa: F401  (fixtures)
from test_style_training import RED_DATASET, dataset

training_wait_ms = 300_000  # four steps and a preview, on a loaded CPU


def test_a_training_started_in_the_browser_is_followed_to_its_preview(page, console):
    email, _ = new_person(console, "owner", tokens=1_000_000)
    sign_in(page, email)
    page.wait_for_url(re.compile(r"/videos$"))
    page.goto("/trainings")
    page.get_by_label("Dataset (ZIP)").set_input_files(
        {"name": "looks.zip", "mimeType": "application/zip", "buffer": dataset(RED_DATASET)})
    page.get_by_label("Style name").fill("house-red")
    page.get_by_label("Steps").fill("4")
    page.get_by_label("Caption").fill("a red brand scene")
    page.get_by_role("button", name="Start training").click()
    page.wait_for_url(re.compile(r"/trainings/train_[0-9a-f]+$"))
    page.evaluate("window.stillThisPage = true")  # a reload would forget it
    page.locator("#training-panel[data-status=completed]").wait_for(timeout=training_wait_ms)
    assert page.evaluate("window.stillThisPage === true")
    assert page.locator("#training-step").inner_text() == "4 / 4"
    assert page.locator("#loss-curve polyline").count() == 1
    duration = page.locator("#training-panel video").evaluate(
        "video => video.readyState >= 1 ? video.duration : new Promise(done => "
        "video.addEventListener('loadedmetadata', () => done(video.duration)))")
    assert duration > 0
