"""The Create page in a real browser: the reference picture previewed before anything is sent, and the
API's errors beside the field they name, live while typing and after Generate."""

from __future__ import annotations

import io
import re

from browser import browser, console, new_person, page, sign_in  # noqa: F401  (fixtures)


def png(width: int = 96, height: int = 64) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (30, 90, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_reference_picture_is_previewed_and_errors_sit_beside_their_fields(page, console):
    email, _ = new_person(console, "member", tokens=1_000_000)
    sign_in(page, email)
    page.wait_for_url(re.compile(r"/videos$"))
    page.goto("/create")
    page.locator("#quote-total").wait_for()
    page.get_by_label("Reference picture (optional)").set_input_files(
        {"name": "first.png", "mimeType": "image/png", "buffer": png()})
    preview = page.locator("#reference-preview img")
    preview.wait_for()
    assert preview.get_attribute("src").startswith("blob:")
    assert preview.evaluate("image => image.complete ? image.naturalWidth : new Promise(done => "
                            "image.addEventListener('load', () => done(image.naturalWidth)))") == 96
    page.get_by_role("button", name="Remove the picture").click()
    page.locator("#reference-preview").wait_for(state="hidden")
    assert page.get_by_label("Reference picture (optional)").input_value() == ""
    page.get_by_label("Reference picture (optional)").set_input_files(
        {"name": "first.png", "mimeType": "image/png", "buffer": png()})
    # While typing: a seed that is no number is refused by the API's schema, beside the seed field.
    page.get_by_label("Seed (empty: random)").fill("soon")
    seed_error = page.locator("#seed-error[data-code=invalid_value]")
    seed_error.wait_for()
    assert seed_error.inner_text().startswith("The seed must be a whole number")
    page.get_by_label("Seed (empty: random)").fill("7")
    page.locator("#seed-error:empty").wait_for(state="attached")
    # After Generate: a text-only model refuses the picture, beside the picture's field; nothing is made.
    page.get_by_label("Model").select_option("wan-tiny")
    with page.expect_response(lambda r: r.url.endswith("/create") and r.request.method == "POST") as answer:
        page.get_by_role("button", name="Generate").click()
    assert answer.value.status == 400
    assert page.locator("#reference-error[data-code=unsupported_parameter]").inner_text().startswith("This model makes videos from text only")
    assert page.get_by_label("Reference picture (optional)").get_attribute("aria-invalid") == "true"
    page.get_by_role("button", name="Remove the picture").wait_for(state="hidden")
