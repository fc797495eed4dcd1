"""Styles on a two-expert model (the Wan2.2 A14B layout at tiny size, `wan-tiny-a14b`): an adapter is checked
against both experts and loaded into both, its second-expert weights (`transformer_2.` keys) into the
low-noise expert where it has them; a one-expert model refuses those; training stays one-expert only."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from fastapi.testclient import TestClient
from safetensors.torch import load, save

from vidfactory.api.app import create_app
from vidfactory.engines.base import GenerationRequest, StyleAdapter
from vidfactory.engines.presets import TINY, TINY_A14B
from vidfactory.engines.tiny import ensure_tiny_model
from vidfactory.engines.wan import WanEngine
from vidfactory.settings import ModelConfig
from vidfactory.styles.adapters import check_adapter
from vidfactory.styles.errors import InvalidAdapter

from conftest import make_settings, new_tenant
from styles_support import peft_adapter
from test_style_training import train

limits = dict(bytes_max=10_000_000, rank_max=16)


def two_part(high: bytes, low: bytes) -> bytes:
    """One file with each expert's own weights: `transformer.` and `transformer_2.` keys."""
    second = {f"transformer_2.{key.removeprefix('transformer.')}": tensor for key, tensor in load(low).items()}
    return save({**load(high), **second})


def test_an_adapter_is_checked_against_both_experts():
    single, both = peft_adapter(seed=1), two_part(peft_adapter(seed=1), peft_adapter(seed=2, rank=8))
    assert check_adapter(single, TINY_A14B, **limits).modules == 16
    checked = check_adapter(both, TINY_A14B, **limits)
    assert (checked.modules, checked.rank, checked.layout) == (32, 8, "diffusers")
    with pytest.raises(InvalidAdapter) as one_expert:
        check_adapter(both, TINY, **limits)
    assert one_expert.value.code == "adapter_base_mismatch" and "second expert" in str(one_expert.value)
    tensors = load(both)
    tensors["transformer_2.blocks.0.attn1.to_q.lora_A.weight"] = tensors[
        "transformer_2.blocks.0.attn1.to_q.lora_A.weight"][:, :16].contiguous()
    with pytest.raises(InvalidAdapter) as misfit:
        check_adapter(save(tensors), TINY_A14B, **limits)
    assert misfit.value.code == "adapter_base_mismatch" and "'blocks.0.attn1.to_q'" in str(misfit.value)


@pytest.fixture(scope="module")
def a14b_dir(tmp_path_factory):
    return ensure_tiny_model(tmp_path_factory.mktemp("tiny-a14b") / "wan-tiny-a14b", TINY_A14B)


def _style(data: bytes) -> StyleAdapter:
    return StyleAdapter(sha256=hashlib.sha256(data).hexdigest(), scale=1.0, read=lambda: data)


def _frames(engine: WanEngine, adapters=()) -> np.ndarray:
    # 4 steps: with shift 12 and boundary 0.875 the last step(s) run on the low-noise expert.
    request = GenerationRequest(prompt="a red fox in the snow", negative_prompt="", width=64, height=64,
                                num_frames=5, fps=8, num_inference_steps=4, guidance_scale=4.0, seed=7,
                                guidance_scale_2=3.0, adapters=tuple(adapters))
    return engine.generate(request, lambda done, total: None, lambda: False).frames


def test_both_experts_take_the_style_and_each_its_own_part(a14b_dir):
    same = peft_adapter(seed=1, magnitude=4.0)
    split = two_part(same, peft_adapter(seed=2, magnitude=4.0))
    engine = WanEngine("wan-tiny-a14b", str(a14b_dir), "cpu", preset=TINY_A14B)
    base = _frames(engine)
    styled_same = _frames(engine, [_style(same)])
    for expert in (engine.pipeline.transformer, engine.pipeline.transformer_2):
        assert hashlib.sha256(same).hexdigest() in expert.peft_config
    styled_split = _frames(engine, [_style(split)])
    assert not np.array_equal(styled_same, base)
    # The same high-noise weights, other low-noise ones: the low-noise expert ran its own part.
    assert not np.array_equal(styled_split, styled_same)
    assert np.array_equal(_frames(engine), base)  # nothing leaks into the next, unstyled, job


def test_a_two_expert_model_takes_uploaded_styles_and_refuses_training_precisely(tmp_path, sqlite_url, models_dir):
    settings = make_settings(tmp_path, sqlite_url, models_dir, models=[
        ModelConfig(id="wan-tiny-a14b", engine="wan-tiny", preset="wan-tiny-a14b", steps=4)])
    with TestClient(create_app(settings, workers=0)) as client:
        tenant = new_tenant(client.app.state.ctx.sessions, tokens=10_000)
        split = two_part(peft_adapter(seed=1), peft_adapter(seed=2))
        uploaded = client.post("/v1/styles", headers=tenant.headers, data={"name": "house", "model": "wan-tiny-a14b"},
                               files={"file": ("house.safetensors", split, "application/octet-stream")})
        assert uploaded.status_code == 201, uploaded.text
        assert (uploaded.json()["model"], uploaded.json()["status"]) == ("wan-tiny-a14b", "ready")
        refused = train(client, tenant, model="wan-tiny-a14b").json()["error"]
        assert (refused["code"], refused["param"]) == ("unsupported_parameter", "model")
        assert "two experts" in refused["message"] and "upload an adapter" in refused["message"]
