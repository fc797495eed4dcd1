"""A template saved with a reference image (a data URL), on SQLite and PostgreSQL, with the tiny Wan2.2
TI2V-5B: every video and batch item made from it starts from that image (each job its own copy, so a
replaced or deleted template never changes a job's first frame); a request's own input_reference wins;
GET answers the image's SHA-256 and size, never its bytes; refusals hold, queue and store nothing, and a
picture the output classifier flags (sent, saved with a template, or brought by one) is refused."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from conftest import assert_ledger_clean, new_tenant
from fixtures_models import tiny_model_dir, tiny_ti2v_dir  # noqa: F401  (fixtures)
from test_image_to_video import (  # noqa: F401  (client, ctx: fixtures)
    balance,
    client,
    ctx,
    data_url,
    error_of,
    picture,
    run_worker,
    stored_references,
    upload,
)

lantern = {"name": "lantern", "body": "A lantern on a lake at {{ time }}, {{ style }}.",
           "form": {"style": "cinematic"}, "seconds": 1, "size": "128x128"}


def save(client, tenant, image: bytes | None, method: str = "post", **fields):
    body = {**lantern, **fields} | ({} if image is None else {"reference_image": data_url(image)})
    if method == "post":
        return client.post("/v1/templates", headers=tenant.headers, json=body)
    body.pop("name")
    return client.put(f"/v1/templates/{lantern['name']}", headers=tenant.headers, json=body)


def from_template(client, tenant, time: str = "dusk", headers: dict | None = None, **fields):
    return client.post("/v1/videos", headers={**tenant.headers, **(headers or {})},
                       json={"template": "lantern", "variables": {"time": time}, "cache": "off", **fields})


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def template_files(ctx, tenant) -> list[bytes]:
    return [path.read_bytes() for path in sorted((ctx.storage.root / "tenants" / tenant.id / "templates").rglob("*.*"))]


def first_frame_in(data: bytes) -> np.ndarray:
    """The picture as the worker hands it to the engine: centre-cropped to the clip's 1:1."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))[:, 32:160]


def test_every_video_and_batch_item_from_the_template_starts_from_its_image(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=100_000)
    lake, forest = picture(1), picture(2)
    saved = save(client, tenant, lake)
    assert saved.status_code == 201, saved.text
    image = {"sha256": sha(lake), "width": 192, "height": 128, "content_type": "image/png"}
    assert saved.json()["reference_image"] == image
    listed = client.get("/v1/templates?source=tenant", headers=tenant.headers)
    assert listed.json()["data"][0]["reference_image"] == image
    assert "base64" not in listed.text and len(listed.text) < 2_000  # the image's identity, not its bytes
    assert client.get("/v1/templates/lantern", headers=tenant.headers).json()["reference_image"] == image

    video = from_template(client, tenant, seed=1)
    assert video.status_code == 200, video.text
    assert video.json()["input_reference"] == image
    own = from_template(client, tenant, seed=1, input_reference=data_url(forest)).json()
    assert own["input_reference"]["sha256"] == sha(forest)  # the request's own image wins
    batch = client.post("/v1/batches", headers=tenant.headers, json={
        "template": "lantern", "variables": {"time": ["noon", "midnight"]}, "seed": 2})
    assert batch.status_code == 202, batch.text
    items = [client.get(f"/v1/videos/{item['video_id']}", headers=tenant.headers).json()
             for item in batch.json()["items"]]
    assert [item["input_reference"] for item in items] == [image, image]
    # Each job its own copy of the template's bytes.
    jobs = [video.json()["id"], *(item["id"] for item in items)]
    assert all(ctx.storage.read(f"tenants/{tenant.id}/{job}/reference.png") == lake for job in jobs)

    [recorder] = run_worker(ctx, 4)
    frames = {request.prompt: (request.image, made) for request, made in recorder.runs}
    # Four jobs, three prompts: the override shares one.
    times = ("dusk", "noon", "midnight")
    assert set(frames) == {f"A lantern on a lake at {time}, cinematic." for time in times}
    firsts = [made[0] for request, made in recorder.runs
              if np.array_equal(request.image, first_frame_in(lake))]
    assert len(firsts) == 3 and all(np.array_equal(firsts[0], other) for other in firsts[1:])
    [(_, overridden)] = [(r, m) for r, m in recorder.runs if np.array_equal(r.image, first_frame_in(forest))]
    assert not np.array_equal(overridden[0], firsts[0])
    assert_ledger_clean(ctx.sessions)


def test_replacing_or_deleting_the_template_keeps_each_jobs_image(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=100_000)
    lake, forest = picture(3), picture(4)
    save(client, tenant, lake)
    key = {"Idempotency-Key": "spring-campaign"}
    before = from_template(client, tenant, headers=key, seed=5).json()
    assert from_template(client, tenant, headers=key, seed=5).headers["idempotent-replayed"] == "true"
    replaced = save(client, tenant, forest, method="put")
    assert replaced.status_code == 200 and replaced.json()["reference_image"]["sha256"] == sha(forest)
    assert template_files(ctx, tenant) == [forest]  # the old file went with the old version
    # The same key now asks for another image: not a replay of the old clip.
    again = from_template(client, tenant, headers=key, seed=5)
    assert again.status_code == 409 and error_of(again)["code"] == "idempotency_conflict"
    after = from_template(client, tenant, seed=5).json()
    assert after["input_reference"]["sha256"] == sha(forest)
    assert client.delete("/v1/templates/lantern", headers=tenant.headers).json()["deleted"]
    assert template_files(ctx, tenant) == []
    shown = client.get(f"/v1/videos/{before['id']}", headers=tenant.headers).json()
    assert shown["input_reference"]["sha256"] == sha(lake)
    [recorder] = run_worker(ctx, 2)
    assert [r.image.tobytes() for r, _ in recorder.runs] == [first_frame_in(lake).tobytes(),
                                                             first_frame_in(forest).tobytes()]
    assert client.get(f"/v1/videos/{before['id']}", headers=tenant.headers).json()["status"] == "completed"
    # A PUT without an image removes it: videos from the template are text-to-video again.
    save(client, tenant, None)
    assert from_template(client, tenant).json()["input_reference"] is None


@pytest.mark.parametrize(("value", "code", "words"), [
    ("https://example.com/shoe.png", "invalid_value", "not fetched; send the image itself, as a data URL"),
    ("data:image/gif;base64,R0lGODlhAQABAAAAACw=", "invalid_value", "expected a data URL"),
    (data_url(b"not an image at all"), "invalid_image", "not a PNG, JPEG or WebP"),
    (data_url(picture(1, fmt="GIF")), "invalid_image", "not a PNG, JPEG or WebP"),
])
def test_a_bad_image_is_refused_by_name_and_saves_nothing(client, ctx, value, code, words):
    tenant = new_tenant(ctx.sessions, tokens=100_000)
    created = client.post("/v1/templates", headers=tenant.headers, json={**lantern, "reference_image": value})
    assert created.status_code == 400, created.text
    assert (error_of(created)["code"], error_of(created)["param"]) == (code, "reference_image")
    assert words in error_of(created)["message"]
    assert client.get("/v1/templates?source=tenant", headers=tenant.headers).json()["data"] == []
    save(client, tenant, picture(1))
    replaced = client.put("/v1/templates/lantern", headers=tenant.headers,
                          json={**{k: v for k, v in lantern.items() if k != "name"}, "body": "changed",
                                "reference_image": value})
    assert replaced.status_code == 400
    kept = client.get("/v1/templates/lantern", headers=tenant.headers).json()
    assert kept["body"] == lantern["body"] and kept["reference_image"]["sha256"] == sha(picture(1))
    assert template_files(ctx, tenant) == [picture(1)]


def test_a_text_only_model_refuses_the_templates_image_by_name(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=100_000)
    save(client, tenant, picture(1), size="64x64")
    video = from_template(client, tenant, model="wan-tiny")
    batch = client.post("/v1/batches", headers=tenant.headers, json={
        "template": "lantern", "model": "wan-tiny", "variables": {"time": ["noon", "dusk"]}})
    quote = client.post("/v1/quotes", headers=tenant.headers,
                        json={"template": "lantern", "variables": {"time": "noon"}, "model": "wan-tiny"})
    for refused in (video, batch, quote):
        assert refused.status_code == 400, refused.text
        error = error_of(refused)
        assert (error["code"], error["param"]) == ("unsupported_parameter", "template")
        assert "'lantern' has a reference image" in error["message"]
    assert balance(client, tenant)["available"] == 100_000
    assert client.get("/v1/videos", headers=tenant.headers).json()["data"] == []
    assert stored_references(ctx) == []


def test_a_picture_the_output_classifier_flags_is_refused_before_anything_is_held_or_stored(client, ctx):
    """The real open_nsfw classifier at threshold 0 flags every picture, as it would a clip's frames."""
    tenant = new_tenant(ctx.sessions, tokens=100_000)
    assert save(client, tenant, picture(1)).status_code == 201
    ctx.settings.output_nsfw_threshold = 0.0
    refused = {
        "input_reference": [upload(client, tenant, picture(2)),
                            client.post("/v1/videos", headers=tenant.headers,
                                        json={"model": "ti2v", "prompt": "a cat", "input_reference": data_url(picture(2))})],
        "template": [from_template(client, tenant),
                     client.post("/v1/batches", headers=tenant.headers,
                                 json={"template": "lantern", "variables": {"time": ["noon", "dusk"]}})],
        "reference_image": [client.post("/v1/templates", headers=tenant.headers,
                                        json={**lantern, "name": "other", "reference_image": data_url(picture(3))}),
                            save(client, tenant, picture(3), method="put")],
    }
    for param, responses in refused.items():
        for response in responses:
            assert response.status_code == 400, response.text
            assert (error_of(response)["code"], error_of(response)["param"]) == ("content_policy", param)
    assert balance(client, tenant)["available"] == 100_000
    assert client.get("/v1/videos", headers=tenant.headers).json()["data"] == []
    assert client.get("/v1/batches", headers=tenant.headers).json()["data"] == []
    assert stored_references(ctx) == [] and template_files(ctx, tenant) == [picture(1)]
    assert [t["name"] for t in client.get("/v1/templates?source=tenant", headers=tenant.headers).json()["data"]] \
        == ["lantern"]
    ctx.settings.output_screening_enabled = False  # off for clips, off for pictures
    assert upload(client, tenant, picture(2)).status_code < 300
    ctx.settings.output_screening_enabled, ctx.settings.output_nsfw_threshold = True, 0.8
    assert upload(client, tenant, picture(2)).status_code < 300  # the same picture, at the shipped threshold
    assert_ledger_clean(ctx.sessions)
