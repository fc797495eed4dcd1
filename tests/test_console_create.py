"""The Create page without a browser: a refused request's error beside the field it names, in the page's
language (translated by the API's code and param); nothing held when it is refused."""

from __future__ import annotations

import hashlib
import html
import io
import re
import uuid

import pytest
from fastapi.testclient import TestClient

from vidfactory.accounts import PasswordHasher, create_user
from vidfactory.api.app import create_app
from vidfactory.db.models import Job
from vidfactory.jobs.spec import InvalidRequest
from vidfactory.web.errors import field_error

from conftest import TenantHandle, make_settings, new_tenant

password = "correct horse battery"


@pytest.fixture
def client(tmp_path, sqlite_url, models_dir):
    settings = make_settings(tmp_path, sqlite_url, models_dir, password_hash_time_cost=1,
                             password_hash_memory_kib=1024)
    with TestClient(create_app(settings, workers=0)) as test_client:
        yield test_client


def sign_in(client: TestClient, role: str = "member", tokens: int = 1_000_000) -> TenantHandle:
    ctx = client.app.state.ctx
    tenant = new_tenant(ctx.sessions, tokens=tokens)
    email = f"{role}-{uuid.uuid4().hex[:8]}@example.com"
    with ctx.sessions.begin() as session:
        create_user(session, PasswordHasher.from_settings(ctx.settings), email, role, password, tenant.id)
    form = client.get("/sign-in")
    signed = client.post("/sign-in", data={"email": email, "password": password, "csrf_token": csrf(form.text)})
    assert signed.status_code == 200, signed.text
    return tenant


def csrf(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def slot(page: str, name: str) -> str:
    """The text of a field's error slot (`<p id="NAME-error">`), tags stripped."""
    found = re.search(rf'<p id="{name}-error"[^>]*>(.*?)</p>', page, re.S)
    assert found is not None, f"no slot for {name}"
    return html.unescape(re.sub(r"<[^>]+>", " ", found.group(1))).strip()


def form(**fields: str) -> dict[str, str]:
    return {"industry": "tech", "style": "warm", "keywords": "a lighthouse at dusk", "model": "wan-tiny",
            "size": "64x64", "seconds": "1", **fields}


def test_an_error_is_translated_by_code_and_param_with_a_generic_fallback():
    size = InvalidRequest("size", "model wan-tiny supports sides from 64 to 256 px; got 1000x1000")
    chinese = field_error("zh", size, fields=("size", "seconds"))
    assert (chinese.param, chinese.code, chinese.status) == ("size", "invalid_value", 400)
    assert chinese.message == "该模型无法生成此尺寸。" and "1000x1000" in chinese.detail
    unknown = field_error("en", {"error": {"code": "never_heard_of", "message": "m", "param": "elsewhere"}},
                          fields=("size",), status=409)
    assert (unknown.param, unknown.status) == ("", 409)
    assert unknown.message == "This could not be done. The details below say why."
    renamed = field_error("en", InvalidRequest("prompt", "prompt is empty"), ("keywords",), {"prompt": "keywords"})
    assert renamed.param == "keywords" and renamed.message.startswith("Describe the video")


def test_an_invalid_size_is_shown_beside_the_size_field_in_chinese_and_holds_nothing(client):
    tenant = sign_in(client)
    page = client.get("/create", headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    answer = client.post("/create", headers={"Accept-Language": "zh-CN,zh;q=0.9"},
                         data=form(size="1000x1000", csrf_token=csrf(page.text)), follow_redirects=False)
    assert answer.status_code == 400
    assert slot(answer.text, "size").startswith("该模型无法生成此尺寸。")
    assert 'id="size" name="size" aria-invalid="true"' in answer.text
    assert slot(answer.text, "seconds") == "" and 'id="form-error"' not in answer.text
    balance = client.get("/v1/balance", headers=tenant.headers).json()
    assert balance["available"] == 1_000_000 and balance["pending"] == 0
    assert client.get("/v1/videos", headers=tenant.headers).json()["data"] == []
    # The live quote says the same beside the field, swapped in out of band.
    quote = client.post("/create/quote", data=form(size="1000x1000", csrf_token=csrf(page.text)))
    assert 'hx-swap-oob="true"' in quote.text and slot(quote.text, "size").startswith("The model cannot make")


def picture(width: int = 192, height: int = 128) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 120, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_reference_picture_is_taken_by_an_image_model_and_refused_beside_its_field_otherwise(client):
    tenant = sign_in(client)
    token = csrf(client.get("/create").text)
    sent = client.post("/create", data=form(model="wan-tiny-i2v", size="128x128", csrf_token=token),
                       files={"reference": ("first.png", picture(), "image/png")}, follow_redirects=False)
    assert sent.status_code == 303, sent.text
    video_id = sent.headers["location"].rsplit("/", 1)[1]
    with client.app.state.ctx.sessions() as session:
        job = session.get(Job, video_id)
        assert job.reference_sha256 == hashlib.sha256(picture()).hexdigest()
    held = client.get("/v1/balance", headers=tenant.headers).json()["pending"]
    refusals = {
        "This model makes videos from text only": (form(model="wan-tiny", csrf_token=token), picture()),
        "This picture cannot be used": (form(model="wan-tiny-i2v", csrf_token=token), b"not a picture"),
    }
    for words, (fields, data) in refusals.items():
        answer = client.post("/create", data=fields, files={"reference": ("x.png", data, "image/png")})
        assert answer.status_code == 400 and slot(answer.text, "reference").startswith(words), answer.text
    client.app.state.ctx.settings.output_nsfw_threshold = 0.0  # the API's image screen flags every picture
    answer = client.post("/create", data=form(model="wan-tiny-i2v", size="128x128", csrf_token=token),
                         files={"reference": ("first.png", picture(), "image/png")})
    assert answer.status_code == 400 and slot(answer.text, "reference").startswith("This picture was refused")
    assert client.get("/v1/balance", headers=tenant.headers).json()["pending"] == held
    assert [video["id"] for video in client.get("/v1/videos", headers=tenant.headers).json()["data"]] == [video_id]


def test_the_live_quote_warns_past_the_token_limit_and_shows_the_enhanced_prompt(client):
    sign_in(client)
    token = csrf(client.get("/create").text)
    short = client.post("/create/quote", data=form(csrf_token=token))
    assert 'id="token-limit"' not in short.text and 'id="quote-total"' in short.text
    long = client.post("/create/quote", headers={"Accept-Language": "zh"},
                       data=form(keywords="lighthouse " * 180, csrf_token=token))
    limit = re.search(r'id="token-limit"[^>]*>(.*?)</p>', long.text).group(1)
    assert "模型只读取前 512 个" in limit
    assert re.search(r'id="quote-input">512<', long.text)
    enhanced = client.post("/create/quote", data=form(enhance="on", csrf_token=token))
    shown = re.search(r'id="quote-prompt" data-enhanced="rules">(.*?)</span>', enhanced.text, re.S).group(1)
    assert shown.startswith("a lighthouse at dusk") and len(shown.split()) >= 60
