"""Bounded work per request: the cheap checks (the model takes an image, the tenant has a balance) come
before an image is decoded; images decode within a pixel budget; a tenant's quotes and uploads in flight
are capped. On SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import io
import threading

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from vidfactory.api.app import create_app
from vidfactory.api.ratelimit import CapReached, PixelBudget
from vidfactory.settings import ModelConfig

from conftest import make_settings, new_tenant
from fixtures_models import tiny_ti2v_dir  # noqa: F401  (fixture)


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def png(side: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (side, side), (200, 40, 40)).save(out, format="PNG")
    return out.getvalue()


def truncated_png(side: int) -> bytes:
    """A header that passes every check, and pixels that cannot be decoded: only a decode can tell."""
    whole = png(side)
    return whole[: len(whole) // 2]


@pytest.fixture
def client(tmp_path, database_url, models_dir, tiny_ti2v_dir):  # noqa: F811
    ti2v = ModelConfig(id="ti2v", engine="wan", preset="wan2.2-ti2v-5b", path=str(tiny_ti2v_dir),
                       default_size="128x128", default_seconds=1, fps=4, steps=2)
    settings = make_settings(tmp_path, database_url, models_dir, uploads_concurrent_max=1, quotes_concurrent_max=1,
                             models=[ti2v, ModelConfig(id="wan-tiny", engine="wan-tiny")])
    with TestClient(create_app(settings, workers=0)) as test_client:
        yield test_client


@pytest.fixture
def ctx(client):
    return client.app.state.ctx


@pytest.mark.parametrize("route", ["/v1/quotes", "/v1/videos"])
def test_an_image_for_a_text_only_model_is_refused_before_it_is_decoded(client, ctx, route):
    tenant = new_tenant(ctx.sessions)
    response = client.post(route, headers=tenant.headers, json={
        "prompt": "a cat", "model": "wan-tiny", "input_reference": data_url(truncated_png(512))})
    assert response.status_code == 400, response.text
    assert (response.json()["error"]["code"], response.json()["error"]["param"]) == (
        "unsupported_parameter", "input_reference")


def test_a_submission_without_balance_is_402_before_its_image_is_decoded(client, ctx):
    tenant = new_tenant(ctx.sessions)
    body = {"prompt": "a cat", "model": "ti2v", "input_reference": data_url(truncated_png(512))}
    response = client.post("/v1/videos", headers=tenant.headers, json=body)
    assert response.status_code == 402, response.text
    # A quote needs no balance: the image is decoded, and found broken.
    quote = client.post("/v1/quotes", headers=tenant.headers, json=body)
    assert quote.status_code == 400 and quote.json()["error"]["code"] == "invalid_image"


def test_a_tenants_quotes_and_uploads_in_flight_are_capped(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=100_000)
    with ctx.caps.hold(f"quotes:{tenant.id}", 1):  # one quote of the tenant's is running
        busy = client.post("/v1/quotes", headers=tenant.headers, json={"prompt": "a cat"})
        other = new_tenant(ctx.sessions)
        assert client.post("/v1/quotes", headers=other.headers, json={"prompt": "a cat"}).status_code == 200
    assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
    assert busy.json()["error"]["code"] == "too_many_quotes"
    assert client.post("/v1/quotes", headers=tenant.headers, json={"prompt": "a cat"}).status_code == 200
    body = {"prompt": "a cat", "model": "ti2v", "input_reference": data_url(png(128))}
    with ctx.caps.hold(f"uploads:{tenant.id}", 1):  # one of its images is being decoded
        busy = client.post("/v1/videos", headers=tenant.headers, json=body)
    assert busy.status_code == 429 and busy.json()["error"]["code"] == "too_many_uploads"
    assert client.get("/v1/balance", headers=tenant.headers).json()["pending"] == 0
    assert client.post("/v1/videos", headers=tenant.headers, json=body).status_code == 200


def test_the_pixel_budget_bounds_decodes_in_flight():
    budget = PixelBudget(100)
    holding, release = threading.Event(), threading.Event()

    def decode() -> None:
        with budget.hold(60, wait_s=1):
            holding.set()
            assert release.wait(10)

    thread = threading.Thread(target=decode)
    thread.start()
    assert holding.wait(10)
    with pytest.raises(CapReached):
        with budget.hold(60, wait_s=0.05):
            pass
    with budget.hold(40, wait_s=0):  # what is left fits
        pass
    waiter = threading.Thread(target=lambda: budget.hold(60, wait_s=10).__enter__())
    waiter.start()  # waits for room, which the first decode's end makes
    release.set()
    thread.join(10)
    waiter.join(10)
    assert not waiter.is_alive()
