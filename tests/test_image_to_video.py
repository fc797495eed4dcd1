"""Image-to-video through the API, on SQLite and PostgreSQL, with a tiny Wan2.2 TI2V-5B: a reference image
sent as the openai SDK sends it (a multipart file) or as a data URL in JSON is checked, stored with the
job, cropped and given to the engine as the first frame; refused for text-only models and bad files
with nothing held, queued or stored; part of the result cache's and the idempotency key's fingerprints;
carried over to regenerated videos."""

from __future__ import annotations

import base64
import io
import threading
from pathlib import Path

import numpy as np
import pytest
from alembic import command
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import inspect

from vidfactory.api.app import create_app
from vidfactory.db.migrate import alembic_config
from vidfactory.db.session import make_engine
from vidfactory.engines.registry import load_engine
from vidfactory.jobs.submit import VideoRequest, submit
from vidfactory.jobs.worker import Worker
from vidfactory.media.encode import probe_mp4
from vidfactory.media.reference import read_reference
from vidfactory.settings import ModelConfig
from vidfactory.tenancy import authenticate

from conftest import assert_ledger_clean, make_settings, new_tenant
from fake_hosted import FakeDashScope, FakeOpenAIVideo, api_key
from fixtures_models import tiny_model_dir, tiny_ti2v_dir  # noqa: F401  (fixtures)
from vidfactory.settings import HostedConfig

reference_columns = {"reference_key", "reference_sha256", "reference_width", "reference_height",
                     "reference_content_type"}


@pytest.fixture
def client(tmp_path, database_url, models_dir, tiny_ti2v_dir):  # noqa: F811
    # 1 s at 4 fps: 5 frames; 128 px is the 5B's smallest side (multiples of 32).
    ti2v = ModelConfig(id="ti2v", engine="wan", preset="wan2.2-ti2v-5b", path=str(tiny_ti2v_dir),
                       default_size="128x128", default_seconds=1, fps=4, steps=2)
    # Four uploads race at once below; a tenant's cap on concurrent uploads (2 by default, refused beyond,
    # tested in test_request_bounds) would answer 429 whenever three of them overlap.
    settings = make_settings(tmp_path, database_url, models_dir, uploads_concurrent_max=4,
                             models=[ti2v, ModelConfig(id="wan-tiny", engine="wan-tiny")])
    with TestClient(create_app(settings, workers=0)) as test_client:
        yield test_client


@pytest.fixture
def ctx(client):
    return client.app.state.ctx


class Recorder:
    """The real engine; keeps each request and the frames it made, before the output chain labels them."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.model_id = engine.model_id
        self.runs: list[tuple[object, np.ndarray]] = []

    def generate(self, request, on_progress, is_cancelled):
        video = self.engine.generate(request, on_progress, is_cancelled)
        self.runs.append((request, video.frames))
        return video


def run_worker(ctx, jobs: int) -> list[Recorder]:
    recorders: list[Recorder] = []

    def loader(config, models_dir):
        recorders.append(Recorder(load_engine(config, models_dir)))
        return recorders[-1]

    worker = Worker(ctx.settings, ctx.sessions, ctx.storage, worker_id="i2v-worker", engine_loader=loader)
    for _ in range(jobs):
        assert worker.run_once()
    return recorders


def picture(seed: int, width: int = 192, height: int = 128, fmt: str = "PNG") -> bytes:
    """A smooth random picture (blurred noise: a photo-like image that PNG still compresses)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC).save(out, format=fmt)
    return out.getvalue()


def data_url(data: bytes, kind: str = "png") -> str:
    return f"data:image/{kind};base64,{base64.b64encode(data).decode()}"


def upload(client, tenant, image: bytes, headers: dict | None = None, **fields):
    """As the openai SDK sends a video with `input_reference`: every field a form part, the image a file."""
    form = {"model": "ti2v", "prompt": "a lantern on a lake", **fields}
    return client.post("/v1/videos", headers={**tenant.headers, **(headers or {})},
                       data={k: str(v) for k, v in form.items()},
                       files={"input_reference": ("first.png", image, "image/png")})


def error_of(response) -> dict:
    return response.json()["error"]


def stored_references(ctx) -> list[Path]:
    return sorted(ctx.storage.root.rglob("reference.*"))


def balance(client, tenant) -> dict:
    return client.get("/v1/balance", headers=tenant.headers).json()


def test_the_uploaded_image_is_the_clips_first_frame(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=100_000)
    lake, forest = picture(1), picture(2)
    # The same image under two prompts and seeds, and another image: the 5B keeps the first latent frame
    # clean (it is the encoded image), so the first frame depends on the image alone.
    first = upload(client, tenant, lake, seed=1, cache="off")
    assert first.status_code == 200, first.text
    second = upload(client, tenant, lake, prompt="a storm over the sea", seed=2, cache="off").json()
    third = upload(client, tenant, forest, seed=1, cache="off").json()
    video = first.json()
    assert video["input_reference"] == {"sha256": second["input_reference"]["sha256"], "width": 192,
                                        "height": 128, "content_type": "image/png"}
    assert third["input_reference"]["sha256"] != video["input_reference"]["sha256"]
    [recorder] = run_worker(ctx, 3)
    (request, frames_a), (_, frames_b), (_, frames_c) = recorder.runs
    # The 192×128 upload, centre-cropped to the clip's 1:1 (the engine resizes it to 128×128).
    expected = np.asarray(Image.open(io.BytesIO(lake)).convert("RGB"))[:, 32:160]
    assert np.array_equal(request.image, expected)
    assert np.array_equal(frames_a[0], frames_b[0])
    assert not np.array_equal(frames_a[1:], frames_b[1:])  # the prompt and seed shape the rest
    assert not np.array_equal(frames_a[0], frames_c[0])
    done = client.get(f"/v1/videos/{video['id']}", headers=tenant.headers).json()
    assert done["status"] == "completed" and done["input_reference"] == video["input_reference"]
    assert ctx.storage.read(f"tenants/{tenant.id}/{video['id']}/reference.png") == lake  # the bytes as uploaded
    assert_ledger_clean(ctx.sessions)


def test_a_data_url_in_json_is_the_same_request_as_the_file(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=100_000)
    key = {"Idempotency-Key": "spring-campaign"}
    as_file = upload(client, tenant, picture(3), headers=key, seed=5)
    as_json = client.post("/v1/videos", headers={**tenant.headers, **key},
                          json={"model": "ti2v", "prompt": "a lantern on a lake", "seed": 5,
                                "input_reference": data_url(picture(3))})
    assert as_file.status_code == as_json.status_code == 200, as_json.text
    assert as_json.json() == as_file.json() and as_json.headers["idempotent-replayed"] == "true"
    other_image = client.post("/v1/videos", headers={**tenant.headers, **key},
                              json={"model": "ti2v", "prompt": "a lantern on a lake", "seed": 5,
                                    "input_reference": data_url(picture(4, fmt="JPEG"), "jpeg")})
    assert other_image.status_code == 409 and error_of(other_image)["code"] == "idempotency_conflict"
    without_image = client.post("/v1/videos", headers={**tenant.headers, **key},
                                json={"model": "ti2v", "prompt": "a lantern on a lake", "seed": 5})
    assert without_image.status_code == 409
    assert [p.parent.name for p in stored_references(ctx)] == [as_file.json()["id"]]
    assert len(client.get("/v1/videos", headers=tenant.headers).json()["data"]) == 1


too_big = b"\x89PNG\r\n\x1a\n" + bytes(6_000_000)


@pytest.mark.parametrize(("fields", "image", "code", "words"), [
    ({"model": "wan-tiny", "size": "64x64"}, picture(1), "unsupported_parameter", "generates from text only"),
    ({}, b"just some text, not an image", "invalid_image", "not a PNG, JPEG or WebP"),
    ({}, picture(1, fmt="GIF"), "invalid_image", "not a PNG, JPEG or WebP"),
    ({}, too_big, "invalid_image", "at most 6000000 bytes"),
    ({}, b"", "invalid_image", "empty"),
])
def test_a_refused_upload_holds_queues_and_stores_nothing(client, ctx, fields, image, code, words):
    tenant = new_tenant(ctx.sessions, tokens=100_000)
    response = upload(client, tenant, image, **fields)
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert (error["code"], error["param"]) == (code, "input_reference") and words in error["message"]
    assert balance(client, tenant)["available"] == 100_000
    assert client.get("/v1/videos", headers=tenant.headers).json()["data"] == []
    assert stored_references(ctx) == []


@pytest.mark.parametrize(("value", "code", "words"), [
    ("https://example.com/cat.png", "invalid_value", "not fetched"),
    ("data:image/gif;base64,R0lGODlhAQABAAAAACw=", "invalid_value", "expected a data URL"),
    ("data:image/png;base64,not base64!", "invalid_value", "not valid base64"),
    (data_url(b"not an image at all"), "invalid_image", "not a PNG, JPEG or WebP"),
    (12345, "invalid_value", "data:image/...;base64 URL"),
])
def test_a_bad_data_url_is_refused_by_name(client, ctx, value, code, words):
    tenant = new_tenant(ctx.sessions, tokens=100_000)
    response = client.post("/v1/videos", headers=tenant.headers,
                           json={"model": "ti2v", "prompt": "a cat", "input_reference": value})
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert (error["code"], error["param"]) == (code, "input_reference") and words in error["message"]
    assert balance(client, tenant)["available"] == 100_000


def test_only_input_reference_takes_a_file(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=100_000)
    response = client.post("/v1/videos", headers=tenant.headers, data={"model": "ti2v", "prompt": "a cat"},
                           files={"mask": ("mask.png", picture(1), "image/png")})
    assert response.status_code == 400 and error_of(response)["param"] == "mask"


def test_a_quote_prices_an_image_request_like_text_and_refuses_it_for_text_models(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=100_000)
    text = client.post("/v1/quotes", headers=tenant.headers, json={"model": "ti2v", "prompt": "a cat"}).json()
    image = client.post("/v1/quotes", headers=tenant.headers, data={"model": "ti2v", "prompt": "a cat"},
                        files={"input_reference": ("a.png", picture(1), "image/png")})
    assert image.status_code == 200 and image.json()["total_tokens"] == text["total_tokens"]
    refused = client.post("/v1/quotes", headers=tenant.headers, json={
        "prompt": "a cat", "model": "wan-tiny", "input_reference": data_url(picture(1))})
    assert refused.status_code == 400 and error_of(refused)["param"] == "input_reference"
    assert stored_references(ctx) == []


def test_a_submission_that_fails_leaves_no_file(client, ctx):
    poor = new_tenant(ctx.sessions, tokens=10)
    response = upload(client, poor, picture(1))
    assert response.status_code == 402
    assert stored_references(ctx) == []


def test_a_transaction_that_does_not_commit_takes_its_file_with_it(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=100_000)
    with ctx.sessions() as session:
        caller = authenticate(session, tenant.key)

    def render_fails(session, job):  # after the file is written, before the commit
        raise RuntimeError("the response could not be rendered")

    request = VideoRequest(prompt="a lantern on a lake", model="ti2v", reference=read_reference(picture(1)))
    with pytest.raises(RuntimeError, match="could not be rendered"):
        submit(ctx.sessions, ctx.settings, ctx.counters, caller, request, render_fails, screens=ctx.screens,
               storage=ctx.storage)
    assert stored_references(ctx) == []
    assert balance(client, tenant)["available"] == 100_000
    assert client.get("/v1/videos", headers=tenant.headers).json()["data"] == []


def test_racing_retries_of_one_upload_make_one_video_and_keep_one_file(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=100_000)
    image, start = picture(7), threading.Barrier(4)
    answers: list[dict] = []

    def post() -> None:
        start.wait()
        response = upload(client, tenant, image, headers={"Idempotency-Key": "retry-storm"})
        assert response.status_code == 200, response.text
        answers.append(response.json())

    threads = [threading.Thread(target=post) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({answer["id"] for answer in answers}) == 1 and len(answers) == 4
    assert [p.parent.name for p in stored_references(ctx)] == [answers[0]["id"]]
    assert balance(client, tenant)["pending"] == answers[0]["usage"]["total_tokens"]


def test_a_stored_image_that_changed_fails_the_job_and_refunds(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=100_000)
    video = upload(client, tenant, picture(8)).json()
    ctx.storage.put(f"tenants/{tenant.id}/{video['id']}/reference.png", picture(9))  # not what was checked and hashed
    [recorder] = run_worker(ctx, 1)
    failed = client.get(f"/v1/videos/{video['id']}", headers=tenant.headers).json()
    assert failed["status"] == "failed" and "does not match its SHA-256" in failed["error"]["message"]
    assert recorder.runs == [] and balance(client, tenant)["available"] == 100_000
    assert_ledger_clean(ctx.sessions)


def test_the_cache_never_serves_a_clip_of_another_image_or_of_none(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=100_000)
    made = upload(client, tenant, picture(1), seed=9).json()
    run_worker(ctx, 1)

    def served(image: bytes | None, prompt: str = "a lantern on a lake", cache: str = "exact"):
        if image is None:
            body = {"model": "ti2v", "prompt": prompt, "seed": 9, "cache": cache}
            video = client.post("/v1/videos", headers=tenant.headers, json=body).json()
        else:
            video = upload(client, tenant, image, prompt=prompt, seed=9, cache=cache).json()
        return None if video["cache_hit"] is None else video["cache_hit"]["video_id"]

    assert served(picture(1)) == made["id"]
    assert served(picture(1), "A lantern on a lake!", cache="similar") == made["id"]
    assert served(picture(2)) is None
    assert served(picture(2), "A lantern on a lake!", cache="similar") is None
    assert served(None) is None
    assert served(None, "A lantern on a lake!", cache="similar") is None


def test_regenerate_and_remix_start_from_the_parents_image(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=100_000)
    parent = upload(client, tenant, picture(5), seed=3, cache="off").json()
    child = client.post(f"/v1/videos/{parent['id']}/regenerate", headers=tenant.headers, json={}).json()
    remix = client.post(f"/v1/videos/{parent['id']}/remix", headers=tenant.headers,
                        json={"prompt": "the lake at dawn"}).json()
    for video in (child, remix):
        assert video["remixed_from_video_id"] == parent["id"]
        assert video["input_reference"] == parent["input_reference"]
    # The parent goes; its children keep their own copies.
    assert client.post(f"/v1/videos/{parent['id']}/cancel", headers=tenant.headers).status_code == 200
    assert client.delete(f"/v1/videos/{parent['id']}", headers=tenant.headers).status_code == 200
    assert [p.parent.name for p in stored_references(ctx)] == sorted([child["id"], remix["id"]])
    [recorder] = run_worker(ctx, 2)
    expected = np.asarray(Image.open(io.BytesIO(picture(5))).convert("RGB"))[:, 32:160]
    assert all(np.array_equal(request.image, expected) for request, _ in recorder.runs)
    assert_ledger_clean(ctx.sessions)


def test_an_openai_compatible_server_is_sent_the_image_and_dashscope_is_refused_it(
        tmp_path, database_url, models_dir, tiny_model_dir):  # noqa: F811
    remote, dashscope = FakeOpenAIVideo(), FakeDashScope()

    def hosted(engine: str, service) -> ModelConfig:
        config = HostedConfig(base_url=service.base_url, api_key=api_key, remote_model="wan2.2-i2v",
                              poll_interval_s=0.01, task_timeout_s=5.0, request_timeout_s=2.0)
        return ModelConfig(id=engine, engine=engine, path=str(tiny_model_dir), default_size="64x64",
                           default_seconds=1, fps=8, hosted=config)

    settings = make_settings(tmp_path, database_url, models_dir,
                             models=[hosted("openai-video", remote), hosted("dashscope", dashscope)])
    try:
        with TestClient(create_app(settings, workers=0)) as client:
            ctx = client.app.state.ctx
            tenant = new_tenant(ctx.sessions, tokens=100_000)
            refused = upload(client, tenant, picture(6), model="dashscope")
            assert refused.status_code == 400 and error_of(refused)["code"] == "unsupported_parameter"
            video = upload(client, tenant, picture(6), model="openai-video").json()
            Worker(ctx.settings, ctx.sessions, ctx.storage, worker_id="hosted-worker").run_once()
            done = client.get(f"/v1/videos/{video['id']}", headers=tenant.headers).json()
            assert done["status"] == "completed", done["error"]
            sent = Image.open(io.BytesIO(remote.calls("POST", "/v1/videos")[0].body["input_reference"]))
            # The 192×128 upload's centre 128×128, at the video's 64×64.
            crop = Image.open(io.BytesIO(picture(6))).convert("RGB").crop((32, 0, 160, 128))
            expected = np.asarray(crop.resize((64, 64), Image.Resampling.LANCZOS), dtype=float)
            assert sent.size == (64, 64) and np.abs(np.asarray(sent.convert("RGB")) - expected).mean() < 1
            assert dashscope.requests == []
            assert_ledger_clean(ctx.sessions)
    finally:
        remote.close()
        dashscope.close()


def test_the_migration_adds_and_removes_the_reference_columns(database_url):
    engine = make_engine(database_url)
    config = alembic_config()

    def columns() -> set[str]:
        return {c["name"] for c in inspect(engine).get_columns("jobs")}

    assert reference_columns <= columns()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0012_jobs_completed_index")
    assert not reference_columns & columns()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    assert reference_columns <= columns()
    engine.dispose()


def test_the_embedded_defaults_include_a_tiny_image_to_video_model(tmp_path, database_url, models_dir):
    """wan-tiny-i2v, configured by default, runs image-to-video on a CPU as the README's example asks it."""
    settings = make_settings(tmp_path, database_url, models_dir)
    assert [(m.id, m.takes_reference_image) for m in settings.models] == [("wan-tiny", False),
                                                                           ("wan-tiny-i2v", True)]
    with TestClient(create_app(settings, workers=0)) as client:
        ctx = client.app.state.ctx
        tenant = new_tenant(ctx.sessions, tokens=100_000)
        sent = client.post("/v1/videos", headers=tenant.headers,
                           data={"model": "wan-tiny-i2v", "prompt": "the lantern drifts away"},
                           files={"input_reference": ("lantern.png", picture(3), "image/png")})
        assert sent.status_code in (200, 202), sent.text
        assert (sent.json()["size"], sent.json()["seconds"]) == ("128x128", "1")
        [recorder] = run_worker(ctx, 1)
        [(request, frames)] = recorder.runs
        assert request.image is not None and frames.shape == (9, 128, 128, 3)
        done = client.get(f"/v1/videos/{sent.json()['id']}", headers=tenant.headers).json()
        assert done["status"] == "completed", done
        clip = client.get(f"/v1/videos/{done['id']}/content", headers=tenant.headers)
        probe = probe_mp4(clip.content)
        assert (probe.width, probe.height, probe.frames) == (128, 128, 9)
        text_only = client.post("/v1/videos", headers=tenant.headers, data={"model": "wan-tiny", "prompt": "x"},
                                files={"input_reference": ("lantern.png", picture(3), "image/png")})
        assert text_only.status_code == 400 and "image-to-video models: wan-tiny-i2v" in text_only.text
    assert_ledger_clean(ctx.sessions)
