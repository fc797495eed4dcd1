"""Styles: LoRA adapters checked before they are stored, kept per tenant, and applied per job."""

from __future__ import annotations

import hashlib
from decimal import Decimal

import numpy as np
import pytest
import torch
from alembic import command
from fastapi.testclient import TestClient
from safetensors.torch import save
from sqlalchemy import inspect

from vidfactory.api.app import create_app
from vidfactory.billing.pricebook import PriceBookBody, body_sha256, quote
from vidfactory.db.models import Job
from vidfactory.engines.registry import load_engine
from vidfactory.jobs.worker import Worker
from vidfactory.settings import ModelConfig

from vidfactory.db.migrate import alembic_config
from vidfactory.db.session import make_engine, make_session_factory
from vidfactory.engines.base import GenerationRequest, StyleAdapter
from vidfactory.engines.presets import PRESETS, TINY, TINY_I2V
from vidfactory.engines.wan import WanEngine
from vidfactory.styles.adapters import check_adapter
from vidfactory.styles.errors import InvalidAdapter

from conftest import assert_ledger_clean, make_settings, new_tenant
from fixtures_models import tiny_model_dir  # noqa: F401  (fixture)
from styles_support import community_adapter, peft_adapter, pickled
from test_cli import Cli, assert_refused

limits = dict(bytes_max=10_000_000, rank_max=16)


@pytest.mark.parametrize("layout", ["peft", "wan-down-up-alpha", "wan-A-B"])
def test_the_uploaded_layouts_diffusers_loads_are_accepted(layout):
    data = {"peft": peft_adapter, "wan-down-up-alpha": community_adapter,
            "wan-A-B": lambda: community_adapter(down_up=False)}[layout]()
    adapter = check_adapter(data, TINY, **limits)
    assert (adapter.rank, adapter.modules, adapter.size_bytes) == (4, 16, len(data))
    assert adapter.layout == ("diffusers" if layout == "peft" else "wan")
    assert check_adapter(data, TINY_I2V, **limits).rank == 4  # same attention layers, other latent channels


def _refusal(data: bytes, base=TINY, **overrides) -> InvalidAdapter:
    with pytest.raises(InvalidAdapter) as refused:
        check_adapter(data, base, **{**limits, **overrides})
    return refused.value


def test_what_is_not_a_fitting_safetensors_lora_is_refused_precisely():
    assert _refusal(pickled()).code == "not_safetensors"
    assert "pickled" in str(_refusal(pickled()))
    assert _refusal(b"\x80\x04\x95" + bytes(64)).code == "not_safetensors"  # a raw pickle stream
    assert "header length" in str(_refusal(b"not a tensor file at all"))
    truncated = peft_adapter()[:-10]
    assert "file holds" in str(_refusal(truncated))
    wrong_base = _refusal(peft_adapter(), PRESETS["wan2.1-t2v-1.3b"])
    assert wrong_base.code == "adapter_base_mismatch" and "1536 in" in str(wrong_base)
    assert _refusal(peft_adapter(rank=8), rank_max=4).code == "rank_too_large"
    assert _refusal(peft_adapter(), bytes_max=100).code == "adapter_too_large"
    stray = save({"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.zeros(4, 32),
                  "transformer.blocks.0.attn1.to_q.lora_B.weight": torch.zeros(32, 4),
                  "transformer.blocks.9.attn1.to_q.lora_A.weight": torch.zeros(4, 32),
                  "transformer.blocks.9.attn1.to_q.lora_B.weight": torch.zeros(32, 4)})
    assert "'blocks.9.attn1.to_q' is not a linear layer of wan-tiny" in str(_refusal(stray))
    wrong_shape = save({"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.zeros(4, 48),
                        "transformer.blocks.0.attn1.to_q.lora_B.weight": torch.zeros(32, 4)})
    assert _refusal(wrong_shape).code == "adapter_base_mismatch"
    half = save({"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.zeros(4, 32)})
    assert "without its lora_B" in str(_refusal(half))
    integers = save({"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.zeros(4, 32, dtype=torch.int32),
                     "transformer.blocks.0.attn1.to_q.lora_B.weight": torch.zeros(32, 4)})
    assert "I32" in str(_refusal(integers))
    unknown_layout = save({"model.layers.0.q.weight": torch.zeros(4, 32)})
    assert _refusal(unknown_layout).param == "file"


def test_the_migration_adds_and_removes_styles(database_url):
    engine = make_engine(database_url)
    config = alembic_config()

    def shape() -> tuple[bool, bool, bool]:
        inspector = inspect(engine)
        return ("styles" in inspector.get_table_names(),
                "styles" in {c["name"] for c in inspector.get_columns("jobs")},
                "style_id" in {c["name"] for c in inspector.get_columns("templates")})

    assert shape() == (True, True, True)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0022_idem_scopes_suspension")
    assert shape() == (False, False, False)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    assert shape() == (True, True, True)
    engine.dispose()


def _upload(client, tenant, data: bytes, name: str = "brand", filename: str = "brand.safetensors", **fields):
    return client.post("/v1/styles", headers=tenant.headers, data={"name": name, **fields},
                       files={"file": (filename, data, "application/octet-stream")})


def _stored_adapters(settings, tenant) -> list:
    root = settings.resolved_storage_dir / "tenants" / tenant.id / "styles"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_a_style_is_uploaded_listed_downloaded_and_deleted_and_private_to_its_tenant(client, ctx, settings):
    owner, other = new_tenant(ctx.sessions), new_tenant(ctx.sessions)
    data = community_adapter()
    created = _upload(client, owner, data, default_scale="0.8", description="house look")
    assert created.status_code == 201, created.text
    style = created.json()
    assert {k: style[k] for k in ("object", "name", "model", "status", "source", "default_scale", "rank")} == {
        "object": "style", "name": "brand", "model": "wan-tiny", "status": "ready", "source": "uploaded",
        "default_scale": 0.8, "rank": 4}
    assert style["sha256"] == hashlib.sha256(data).hexdigest() and style["size_bytes"] == len(data)
    assert [s["id"] for s in client.get("/v1/styles", headers=owner.headers).json()["data"]] == [style["id"]]
    for ref in ("brand", style["id"]):
        assert client.get(f"/v1/styles/{ref}", headers=owner.headers).json()["id"] == style["id"]
    content = client.get("/v1/styles/brand/content", headers=owner.headers)
    assert content.status_code == 200 and content.content == data
    assert _upload(client, owner, data).json()["error"]["code"] == "style_exists"
    # Another tenant: not listed, not found, not downloadable, not deletable.
    assert client.get("/v1/styles", headers=other.headers).json()["data"] == []
    for method, path in (("GET", "brand"), ("GET", style["id"]), ("GET", f"{style['id']}/content"),
                         ("DELETE", style["id"])):
        answer = client.request(method, f"/v1/styles/{path}", headers=other.headers)
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"
    deleted = client.delete("/v1/styles/brand", headers=owner.headers)
    assert deleted.json() == {"object": "style.deleted", "id": style["id"], "name": "brand", "deleted": True}
    assert client.get("/v1/styles/brand", headers=owner.headers).status_code == 404
    assert _stored_adapters(settings, owner) == []


def test_a_refused_upload_stores_nothing(client, ctx, settings):
    tenant = new_tenant(ctx.sessions)
    wrong_shape = save({"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.zeros(4, 48),
                        "transformer.blocks.0.attn1.to_q.lora_B.weight": torch.zeros(32, 4)})
    refusals = [
        (_upload(client, tenant, b"{not: safetensors}"), "not_safetensors"),
        (_upload(client, tenant, pickled(), filename="brand.safetensors"), "not_safetensors"),
        (_upload(client, tenant, peft_adapter(), filename="brand.pt"), "not_safetensors"),
        (_upload(client, tenant, wrong_shape), "adapter_base_mismatch"),
        (_upload(client, tenant, peft_adapter(), model="wan-nope"), "model_not_found"),
        (_upload(client, tenant, peft_adapter(), name="style_" + "0" * 32), "invalid_value"),
        (_upload(client, tenant, peft_adapter(), default_scale="99"), "invalid_value"),
    ]
    for answer, code in refusals:
        assert answer.status_code == 400 and answer.json()["error"]["code"] == code, answer.text
    assert "pickled" in refusals[1][0].json()["error"]["message"]
    assert refusals[0][0].json()["error"]["param"] == "file"
    assert client.get("/v1/styles", headers=tenant.headers).json()["data"] == []
    assert _stored_adapters(settings, tenant) == []


def test_the_cli_adds_and_removes_a_tenant_style(tmp_path, sqlite_url, models_dir):
    engine = make_engine(sqlite_url)
    tenant = new_tenant(make_session_factory(engine))
    engine.dispose()
    cli = Cli(tmp_path, models_dir, sqlite_url)
    (tmp_path / "house.safetensors").write_bytes(peft_adapter())
    added = cli.json("admin", "style", "add", tenant.id, "house", str(tmp_path / "house.safetensors"),
                     "--scale", "0.5")
    assert (added["name"], added["model"], added["rank"], added["default_scale"]) == ("house", "wan-tiny", 4, 0.5)
    assert_refused(cli("admin", "style", "remove", tenant.id, "nope"), "has no style 'nope'")


def _request(adapters=(), seed: int = 7) -> GenerationRequest:
    return GenerationRequest(prompt="a red fox in the snow", negative_prompt="", width=64, height=64, num_frames=5,
                             fps=8, num_inference_steps=2, guidance_scale=5.0, seed=seed, adapters=tuple(adapters))


def _style(data: bytes, scale: float = 1.0) -> StyleAdapter:
    return StyleAdapter(sha256=hashlib.sha256(data).hexdigest(), scale=scale, read=lambda: data)


def _frames(engine, request) -> np.ndarray:
    return engine.generate(request, lambda done, total: None, lambda: False).frames


def test_one_engine_switches_styles_between_jobs_without_leaking_one_into_the_next(tiny_model_dir):
    first, second = peft_adapter(seed=1, magnitude=4.0), community_adapter(seed=2, magnitude=4.0)
    engine = WanEngine("wan-tiny", str(tiny_model_dir), "cpu", preset=TINY, styles_resident_max=1)
    base = _frames(engine, _request())
    styled_first = _frames(engine, _request([_style(first)]))
    styled_second = _frames(engine, _request([_style(second, 0.5)]))  # evicts the first (one resident)
    after = _frames(engine, _request())
    assert list(engine.adapters.names) == [hashlib.sha256(second).hexdigest()]
    # Each equals what a fresh pipeline makes with that adapter alone; the unstyled job is the base exactly.
    fresh = WanEngine("wan-tiny", str(tiny_model_dir), "cpu", preset=TINY)
    assert np.array_equal(styled_second, _frames(fresh, _request([_style(second, 0.5)])))
    fresh = WanEngine("wan-tiny", str(tiny_model_dir), "cpu", preset=TINY)
    assert np.array_equal(styled_first, _frames(fresh, _request([_style(first)])))
    assert np.array_equal(after, base)
    assert not np.array_equal(styled_first, base) and not np.array_equal(styled_second, styled_first)


class Recording:
    """The worker's real engine; keeps each generation's frames, in the order the jobs ran."""

    def __init__(self, engine) -> None:
        self.engine, self.model_id, self.frames = engine, engine.model_id, []

    def generate(self, request, on_progress, is_cancelled):
        video = self.engine.generate(request, on_progress, is_cancelled)
        self.frames.append(video.frames)
        return video


@pytest.fixture
def styled_app(tmp_path, database_url, models_dir):
    settings = make_settings(tmp_path, database_url, models_dir, output_screening_enabled=False,
                             models=[ModelConfig(id="wan-tiny", engine="wan-tiny", steps=2)])
    with TestClient(create_app(settings, workers=0)) as client:
        yield client, client.app.state.ctx


def _video(client, tenant, key: str | None = None, **fields):
    body = {"prompt": "a lighthouse at dusk", "size": "64x64", "seconds": "1", "seed": 5, **fields}
    return client.post("/v1/videos", headers={**tenant.headers, **({"Idempotency-Key": key} if key else {})},
                       json=body)


def test_styled_videos_get_their_own_adapter_the_same_one_for_every_tenant_and_block_deletion(styled_app):
    client, ctx = styled_app
    owner, other = new_tenant(ctx.sessions, tokens=100_000), new_tenant(ctx.sessions, tokens=100_000)
    house, accent = peft_adapter(seed=1, magnitude=4.0), community_adapter(seed=2, magnitude=4.0)
    assert _upload(client, owner, house, name="house").status_code == 201
    assert _upload(client, owner, accent, name="accent", default_scale="0.5").status_code == 201
    assert _upload(client, other, house, name="their-house").status_code == 201  # same bytes, new name
    # Another tenant's style is no style at all to this one.
    refused = _video(client, other, style="accent").json()["error"]
    assert (refused["code"], refused["param"]) == ("style_not_found", "style")
    plain = _video(client, owner).json()
    styled = _video(client, owner, style="house").json()
    assert styled["styles"] == [{"id": styled["styles"][0]["id"], "name": "house",
                                 "sha256": hashlib.sha256(house).hexdigest(), "scale": 1.0}]
    assert styled["usage"]["total_tokens"] == plain["usage"]["total_tokens"]  # the default book: same price
    both = _video(client, owner, styles=[{"style": "accent"}, {"style": "house", "scale": 0.25}]).json()
    theirs = _video(client, other, style="their-house").json()
    again = _video(client, owner, cache="off").json()
    # Queued videos use `house`: it cannot be deleted (nor would a template lose it) until they are done.
    blocked = client.delete("/v1/styles/house", headers=owner.headers)
    assert blocked.status_code == 409 and blocked.json()["error"]["code"] == "style_in_use"
    recording = Recording(load_engine(ctx.settings.models[0], ctx.settings.models_dir))
    worker = Worker(ctx.settings, ctx.sessions, ctx.storage, worker_id="w", engine_loader=lambda c, p: recording)
    while worker.run_once():
        pass
    frames = dict(zip([v["id"] for v in (plain, styled, both, theirs, again)], recording.frames))
    assert len(recording.frames) == 5, "every video generated: styled ones are no cache hits of plain ones"
    assert np.array_equal(frames[styled["id"]], frames[theirs["id"]])  # one adapter, one seed: same frames
    assert not np.array_equal(frames[styled["id"]], frames[plain["id"]])
    assert not np.array_equal(frames[both["id"]], frames[styled["id"]])
    assert np.array_equal(frames[again["id"]], frames[plain["id"]])  # unstyled after styled: the base model
    with ctx.sessions() as session:
        applied = session.get(Job, both["id"]).engine_settings["styles"]
    assert applied == [{"sha256": hashlib.sha256(accent).hexdigest(), "scale": 0.5},
                       {"sha256": hashlib.sha256(house).hexdigest(), "scale": 0.25}]
    assert client.get(f"/v1/videos/{styled['id']}", headers=owner.headers).json()["status"] == "completed"
    assert client.delete("/v1/styles/house", headers=owner.headers).status_code == 200
    assert_ledger_clean(ctx.sessions)


def test_the_cache_and_idempotency_tell_styles_apart_and_templates_lose_a_deleted_default(styled_app):
    client, ctx = styled_app
    tenant = new_tenant(ctx.sessions, tokens=100_000)
    assert _upload(client, tenant, peft_adapter(seed=1), name="swap").status_code == 201
    first = _video(client, tenant, key="k1", style="swap")
    assert _video(client, tenant, key="k1", style="swap").headers.get("Idempotent-Replayed") == "true"
    # The same name for other bytes is another request: the key cannot replay the first one's clip.
    assert client.post(f"/v1/videos/{first.json()['id']}/cancel", headers=tenant.headers).status_code == 200
    assert client.delete("/v1/styles/swap", headers=tenant.headers).status_code == 200
    assert _upload(client, tenant, peft_adapter(seed=3), name="swap").status_code == 201
    conflict = _video(client, tenant, key="k1", style="swap")
    assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "idempotency_conflict"
    # A template's default style is applied, with its scale; deleting the style removes the default.
    template = client.post("/v1/templates", headers=tenant.headers, json={
        "name": "house-look", "body": "a {{ thing }} in the house style", "style": "swap", "style_scale": 0.75})
    assert template.status_code == 201, template.text
    from_template = client.post("/v1/videos", headers=tenant.headers, json={
        "template": "house-look", "variables": {"thing": "kettle"}, "size": "64x64", "seconds": "1"}).json()
    assert [(s["name"], s["scale"]) for s in from_template["styles"]] == [("swap", 0.75)]
    plain = _video(client, tenant).json()  # the same request, unstyled
    with ctx.sessions() as session:
        plain_job, styled_job = session.get(Job, plain["id"]), session.get(Job, first.json()["id"])
        assert plain_job.cache_fingerprint != styled_job.cache_fingerprint
        assert plain_job.cache_shape_key != styled_job.cache_shape_key  # `similar` lookups stay apart too
    assert client.post(f"/v1/videos/{from_template['id']}/cancel", headers=tenant.headers).status_code == 200
    assert client.delete("/v1/styles/swap", headers=tenant.headers).status_code == 200
    assert client.get("/v1/templates/house-look", headers=tenant.headers).json()["style"] is None
    assert_ledger_clean(ctx.sessions)


def test_a_price_book_can_price_styled_videos_apart_and_older_books_keep_their_digest():
    book = PriceBookBody(styled_output_ratio=Decimal("1.5"))
    plain = quote(book, input_tokens=11, width=64, height=64, seconds=1)
    styled = quote(book, input_tokens=11, width=64, height=64, seconds=1, styled=True)
    assert (plain.output_tokens, styled.output_tokens) == (22, 33) and styled.total_tokens == 44
    assert body_sha256(PriceBookBody()) == body_sha256(PriceBookBody(styled_output_ratio=Decimal("1")))
    assert "styled_output_ratio" in PriceBookBody(styled_output_ratio=Decimal("2")).canonical_json()
