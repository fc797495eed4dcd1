"""The Templates and Batches pages without a browser: a refusal shown next to the field it names, what a
viewer may not do, another tenant's template or batch answering 404, and forms without their CSRF token
refused."""

from __future__ import annotations

import base64
import io
import re
import uuid

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from vidfactory.accounts import PasswordHasher, create_user
from vidfactory.api.app import create_app

from conftest import TenantHandle, make_settings, new_tenant

password = "correct horse battery"
csrf_pattern = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def app(tmp_path, sqlite_url, models_dir):
    settings = make_settings(tmp_path, sqlite_url, models_dir, password_hash_time_cost=1,
                             password_hash_memory_kib=1024, signin_address_failures_per_minute=1000)
    with TestClient(create_app(settings, workers=0)) as client:
        yield client.app


class Person:
    """A signed-in browser stand-in: its own cookies, and the CSRF token of its session."""

    def __init__(self, app, role: str, tenant: TenantHandle) -> None:
        ctx = app.state.ctx
        self.tenant = tenant
        self.email = f"{role}-{uuid.uuid4().hex[:8]}@example.com"
        with ctx.sessions.begin() as session:
            create_user(session, PasswordHasher.from_settings(ctx.settings), self.email, role, password, tenant.id)
        self.client = TestClient(app)
        token = csrf_pattern.search(self.client.get("/sign-in").text).group(1)
        signed = self.client.post("/sign-in", data={"email": self.email, "password": password, "csrf_token": token},
                                  follow_redirects=False)
        assert signed.status_code == 303, signed.text
        self.csrf = csrf_pattern.search(self.client.get("/account").text).group(1)

    def post(self, path: str, data: dict[str, str | list[str]], csrf: bool = True):
        return self.client.post(path, data=data | ({"csrf_token": self.csrf} if csrf else {}), follow_redirects=False)


def person(app, role: str, tenant: TenantHandle | None = None, tokens: int = 0) -> Person:
    return Person(app, role, tenant or new_tenant(app.state.ctx.sessions, tokens=tokens))


def template_fields(**overrides) -> dict[str, str]:
    fields = {"name": f"promo-{uuid.uuid4().hex[:6]}", "description": "a promo", "language": "en",
              "body": "A {{ style }} clip of {{ product }} in {{ place }}.", "style": "warm", "size": "64x64",
              "seconds": "1", "defaults": "place=a park"}
    return fields | overrides


def field_error(html: str, field: str) -> str:
    """The words in the message slot under `field` (the console's words, then the API's own)."""
    found = re.search(rf'<p id="{field}-error" class="field-error"[^>]* data-code="[a-z_]+">(.*?)</p>', html, re.S)
    assert found, f"no error next to {field}: {html}"
    return found.group(1)


def test_a_template_is_created_and_its_errors_sit_next_to_their_fields(app):
    owner = person(app, "owner")
    bad_body = owner.post("/templates/new", template_fields(body="A {{ product "))
    assert bad_body.status_code == 400 and "syntax error" in field_error(bad_body.text, "body")
    assert 'value="a promo"' in bad_body.text  # what was typed stays
    assert "not allowed" in field_error(owner.post("/templates/new", template_fields(body="{{ product|join }}")).text,
                                        "body")
    assert field_error(owner.post("/templates/new", template_fields(seconds="soon")).text, "seconds")
    assert field_error(owner.post("/templates/new", template_fields(name="Not A Name")).text, "name")
    assert "never uses" in field_error(owner.post("/templates/new", template_fields(defaults="colour=red")).text,
                                       "defaults")
    assert field_error(owner.post("/templates/new", template_fields(defaults="no equals sign")).text, "defaults")
    assert field_error(owner.post("/templates/new", template_fields(default_style="nosuchstyle")).text,
                       "default_style")
    assert field_error(owner.post("/templates/new", template_fields(name="product_intro")).text, "name")
    fields = template_fields()
    created = owner.post("/templates/new", fields)
    assert created.status_code == 303 and created.headers["location"] == f"/templates/{fields['name']}?saved=1"
    listed = owner.client.get("/templates").text
    assert f'id="template-{fields["name"]}"' in listed and 'id="template-product_intro"' in listed
    edited = owner.post(f"/templates/{fields['name']}", template_fields(body="A {{ product }} at {{ place }}."))
    assert edited.status_code == 303
    page = owner.client.get(edited.headers["location"]).text
    assert 'id="saved"' in page and "A {{ product }} at {{ place }}." in page
    assert owner.post("/templates/product_intro", template_fields()).status_code == 404  # the library is read-only


def test_pre_generation_makes_the_defaults_video_when_saved(app):
    owner = person(app, "owner", tokens=1_000_000)
    fields = template_fields(body="A {{ style }} clip of {{ product }}.", defaults="product=a red kettle",
                             pre_generate="on")
    open_variable = owner.post("/templates/new", fields | {"defaults": ""})
    assert "product" in field_error(open_variable.text, "defaults")  # nothing to pre-generate with
    created = owner.post("/templates/new", fields)
    assert created.status_code == 303
    video_id = re.search(r"video=(video_[0-9a-f]+)", created.headers["location"]).group(1)
    page = owner.client.get(created.headers["location"]).text
    assert f'href="/videos/{video_id}" id="pre-generated"' in page
    assert 'id="pre_generate" checked' in page  # an edit keeps it on unless unticked
    assert "pre-generated</span>" in owner.client.get("/templates").text
    assert owner.client.get(f"/videos/{video_id}").status_code == 200


def test_a_viewer_reads_templates_but_cannot_create_or_edit_them(app):
    owner = person(app, "owner")
    fields = template_fields()
    assert owner.post("/templates/new", fields).status_code == 303
    viewer = person(app, "viewer", owner.tenant)
    assert viewer.client.get("/templates").status_code == 200
    listed = viewer.client.get("/templates").text
    assert "/templates/new" not in listed and "/batches/new" not in listed
    shown = viewer.client.get(f"/templates/{fields['name']}")
    assert shown.status_code == 200 and "<fieldset disabled>" in shown.text
    assert viewer.client.get("/templates/new").status_code == 403
    assert viewer.post("/templates/new", template_fields()).status_code == 403
    assert viewer.post(f"/templates/{fields['name']}", fields).status_code == 403


def test_another_tenants_template_is_404_and_a_form_without_its_token_is_refused(app):
    owner = person(app, "owner")
    fields = template_fields()
    assert owner.post("/templates/new", fields).status_code == 303
    stranger = person(app, "owner")
    assert stranger.client.get(f"/templates/{fields['name']}").status_code == 404
    assert stranger.post(f"/templates/{fields['name']}", fields).status_code == 404
    assert stranger.client.get("/templates/..%2F..").status_code == 404
    refused = owner.post("/templates/new", template_fields(), csrf=False)
    assert refused.status_code == 403 and "did not come from this page" in refused.text


def owner_with_template(app, tokens: int = 1_000_000) -> tuple[Person, str]:
    owner = person(app, "owner", tokens=tokens)
    fields = template_fields(body="A {{ style }} clip of {{ product }}.", defaults="")
    assert owner.post("/templates/new", fields).status_code == 303
    return owner, fields["name"]


def grid(template: str, *products: str, **overrides) -> dict[str, str | list[str]]:
    return {"template": template, "cell.product": list(products), "groups": "A, B", "size": "64x64",
            "seconds": "1"} | overrides


def test_a_batch_is_quoted_whole_then_made_from_the_grid(app):
    owner, template = owner_with_template(app)
    page = owner.client.get(f"/batches/new?template={template}")
    assert page.status_code == 200 and page.text.count('name="cell.product"') == 2
    quote = owner.post("/batches/quote", grid(template, "a red kettle", "", "a blue kettle"))
    assert quote.status_code == 200
    assert re.search(r'id="batch-quote-items">2<', quote.text)  # the empty row is left out
    assert re.search(r"<td>1</td><td>A</td>", quote.text) and re.search(r"<td>2</td><td>B</td>", quote.text)
    added = owner.post("/batches", grid(template, "a red kettle") | {"action": "add_row"})
    assert added.status_code == 200 and added.text.count('name="cell.product"') == 2
    created = owner.post("/batches", grid(template, "a red kettle", "a blue kettle"))
    assert created.status_code == 303
    batch_id = created.headers["location"].rsplit("/", 1)[1]
    shown = owner.client.get(created.headers["location"]).text
    assert 'data-done="false"' in shown and f'hx-get="/batches/{batch_id}/progress"' in shown
    assert 'id="item-0" data-status="queued"' in shown and 'id="compare-link"' in shown
    assert 'id="item-1"' in owner.client.get(f"/batches/{batch_id}/progress").text
    assert 'data-group="A"' in owner.client.get(f"/batches/{batch_id}/compare").text
    assert batch_id in owner.client.get("/batches").text
    archive = owner.client.get(f"/batches/{batch_id}/archive")
    assert archive.status_code == 200 and archive.headers["content-type"] == "application/zip"


def test_a_batchs_refusals_sit_next_to_their_fields(app):
    owner, template = owner_with_template(app)
    repeated = owner.post("/batches/quote", grid(template, "a kettle", groups="A, A"))
    assert "distinct" in field_error(repeated.text, "groups")  # the live quote fills the field's slot
    not_a_seed = owner.post("/batches", grid(template, "a kettle", seed="soon"))
    assert not_a_seed.status_code == 400 and field_error(not_a_seed.text, "seed")
    assert 'value="a kettle"' in not_a_seed.text  # the grid stays as typed
    too_long = owner.post("/batches", grid(template, "k" * 600))
    assert too_long.status_code == 400 and "500" in field_error(too_long.text, "grid")
    poor, poor_template = owner_with_template(app, tokens=0)
    broke = poor.post("/batches", grid(poor_template, "a kettle"))
    assert broke.status_code == 303  # not atomic: the item is reported as not made, nothing is held
    assert "the balance could not hold it" in poor.client.get(broke.headers["location"]).text
    assert owner.client.get("/batches/new?template=nosuch").status_code == 404


def test_a_viewer_reads_batches_and_another_tenant_gets_404(app):
    owner, template = owner_with_template(app)
    batch_path = owner.post("/batches", grid(template, "a kettle", "a pot")).headers["location"]
    viewer = person(app, "viewer", owner.tenant)
    assert viewer.client.get("/batches").status_code == 200 and "/batches/new" not in viewer.client.get("/batches").text
    assert viewer.client.get(batch_path).status_code == 200
    assert viewer.client.get(f"/batches/new?template={template}").status_code == 403
    assert viewer.post("/batches", grid(template, "a kettle")).status_code == 403
    assert viewer.post("/batches/quote", grid(template, "a kettle")).status_code == 403
    stranger = person(app, "owner", tokens=1_000_000)
    for suffix in ("", "/progress", "/compare", "/archive"):
        assert stranger.client.get(batch_path + suffix).status_code == 404
    assert stranger.client.get(f"/batches/new?template={template}").status_code == 404
    assert stranger.post("/batches", grid(template, "a kettle")).status_code == 404


def test_batch_forms_without_their_token_are_refused(app):
    owner, template = owner_with_template(app)
    assert owner.post("/batches/quote", grid(template, "a kettle"), csrf=False).status_code == 403
    refused = owner.post("/batches", grid(template, "a kettle"), csrf=False)
    assert refused.status_code == 403 and "did not come from this page" in refused.text
    assert owner.client.get("/batches").text.count('id="batch-') == 0


def test_an_edit_in_the_console_keeps_the_templates_reference_image(app):
    owner = person(app, "owner")
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 120, 40)).save(buffer, format="PNG")
    api = TestClient(app)
    sent = {"name": "with-image", "body": "A clip of {{ product }}.", "size": "64x64", "seconds": 1,
            "reference_image": "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()}
    saved = api.post("/v1/templates", json=sent, headers=owner.tenant.headers)
    assert saved.status_code == 201, saved.text
    image = saved.json()["reference_image"]
    edited = owner.post("/templates/with-image", template_fields(body="A close clip of {{ product }}.", defaults=""))
    assert edited.status_code == 303
    after = api.get("/v1/templates/with-image", headers=owner.tenant.headers).json()
    assert after["body"] == "A close clip of {{ product }}." and after["reference_image"] == image
