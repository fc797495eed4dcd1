"""The four Wan presets: each builds at tiny size with its real component layout, survives
save_pretrained → from_pretrained offline, generates through the engine, and refuses shapes it cannot make."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLWan, WanPipeline, WanTransformer3DModel

from vidfactory.engines.base import GenerationRequest, InvalidInput
from vidfactory.engines.presets import PRESETS, TINY, TINY_I2V, latent_tokens, preset
from vidfactory.engines.registry import load_engine
from vidfactory.engines.tiny import ensure_tiny_model
from vidfactory.engines.wan import WanEngine
from vidfactory.jobs.spec import shape_for
from vidfactory.settings import ModelConfig


def never() -> bool:
    return False


def ignore(done: int, total: int) -> None:
    return None


@pytest.fixture(scope="module")
def preset_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("presets")
    return {pid: ensure_tiny_model(root / pid, p) for pid, p in PRESETS.items()}


@pytest.fixture(scope="module")
def engines(preset_dirs) -> dict[str, WanEngine]:
    return {pid: WanEngine(pid, str(path), device="cpu", preset=PRESETS[pid]) for pid, path in preset_dirs.items()}


def small_request(preset_id: str, **change) -> GenerationRequest:
    p = PRESETS[preset_id]
    side = p.side_multiple_px
    request = GenerationRequest(prompt="a red fox in the snow", negative_prompt="blurry", width=side * 4,
                                height=side * 2, num_frames=5, fps=p.fps, num_inference_steps=2,
                                guidance_scale=p.guidance_scale, seed=3, guidance_scale_2=p.guidance_scale_2)
    return replace(request, **change)


@pytest.mark.parametrize("preset_id", list(PRESETS))
def test_each_preset_reloads_offline_with_its_component_layout(preset_dirs, preset_id, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    p = PRESETS[preset_id]
    pipeline = WanPipeline.from_pretrained(preset_dirs[preset_id], dtype=torch.float32, local_files_only=True)
    assert pipeline.transformer.config.in_channels == pipeline.vae.config.z_dim == p.vae.z_dim
    assert pipeline.vae.config.scale_factor_spatial == p.vae.spatial
    assert pipeline.vae.config.scale_factor_temporal == 4
    assert (pipeline.transformer_2 is not None) == (p.experts == 2)
    assert pipeline.config.boundary_ratio == p.boundary_ratio
    assert pipeline.config.expand_timesteps == p.expand_timesteps
    assert pipeline.scheduler.config.flow_shift == p.flow_shift


def test_the_a14b_has_two_experts_and_the_5b_48_latent_channels() -> None:
    a14b, ti2v = PRESETS["wan2.2-t2v-a14b"], PRESETS["wan2.2-ti2v-5b"]
    assert (a14b.experts, a14b.boundary_ratio, a14b.guidance_scale_2) == (2, 0.875, 3.0)
    assert (ti2v.vae.z_dim, ti2v.expand_timesteps, ti2v.image_to_video) == (48, True, True)
    assert (ti2v.width, ti2v.height, ti2v.num_frames, ti2v.fps) == (1280, 704, 121, 24)
    one = PRESETS["wan2.1-t2v-1.3b"]
    assert (one.width, one.height, one.num_frames, one.fps) == (832, 480, 81, 16)


@pytest.mark.parametrize("preset_id", list(PRESETS))
def test_each_preset_generates_through_the_engine(preset_dirs, preset_id) -> None:
    p = PRESETS[preset_id]
    config = ModelConfig(id=preset_id, engine="wan", preset=preset_id, path=str(preset_dirs[preset_id]))
    engine = load_engine(config, preset_dirs[preset_id].parent)
    steps: list[int] = []
    request = small_request(preset_id)
    video = engine.generate(request, lambda done, total: steps.append(done), never)
    assert video.frames.shape == (5, request.height, request.width, 3) and video.frames.dtype == np.uint8
    assert steps == [1, 2]
    assert video.engine_settings["memory_mode"] == "none"
    assert video.engine_settings["step_cache"] == "none"
    assert engine.load_s > 0
    assert p.side_multiple_px == (32 if p.vae.spatial == 16 else 16)


def test_the_a14b_low_noise_guidance_changes_the_output(engines) -> None:
    engine = engines["wan2.2-t2v-a14b"]
    # 4 steps: with shift 12 and boundary 0.875 the last step(s) run on the low-noise expert.
    request = small_request("wan2.2-t2v-a14b", num_inference_steps=4)
    base = engine.generate(request, ignore, never).frames
    other = engine.generate(replace(request, guidance_scale_2=9.0), ignore, never).frames
    assert not np.array_equal(base, other)


def test_the_5b_conditions_on_a_reference_image(engines) -> None:
    engine = engines["wan2.2-ti2v-5b"]
    request = small_request("wan2.2-ti2v-5b")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (request.height, request.width, 3), dtype=np.uint8) for _ in range(2)]
    first, second = (engine.generate(replace(request, image=image), ignore, never).frames for image in images)
    text_only = engine.generate(request, ignore, never).frames
    assert first.shape == text_only.shape == (5, request.height, request.width, 3)
    assert not np.array_equal(first, second)
    assert not np.array_equal(first, text_only)


@pytest.mark.parametrize(
    ("preset_id", "change", "message"),
    [
        ("wan2.2-ti2v-5b", {"width": 80}, "wan2.2-ti2v-5b: width must be a positive multiple of 32 px, got 80"),
        ("wan2.2-ti2v-5b", {"num_frames": 120}, r"4k\+1 .*\(e\.g\. 117 or 121; default 121\), got 120"),
        ("wan2.1-t2v-1.3b", {"num_frames": 80}, r"4k\+1 .*\(e\.g\. 77 or 81; default 81\), got 80"),
        ("wan2.1-t2v-1.3b", {"guidance_scale_2": 3.0}, "guidance_scale_2 applies only to two-expert"),
        ("wan2.1-t2v-1.3b", {"image": np.zeros((32, 64, 3), np.uint8)}, "takes no reference image"),
        ("wan2.2-ti2v-5b", {"image": np.zeros((32, 64), np.uint8)}, r"uint8 \[height, width, 3\]"),
    ],
)
def test_wrong_input_gets_a_precise_error(engines, preset_id, change, message) -> None:
    engine = engines[preset_id]
    steps: list[int] = []
    with pytest.raises(InvalidInput, match=message):
        engine.generate(small_request(preset_id, **change), lambda done, total: steps.append(done), never)
    assert steps == []


def test_a_model_config_takes_its_defaults_from_the_preset() -> None:
    config = ModelConfig(id="ti2v", engine="wan", preset="wan2.2-ti2v-5b", path="/models/ti2v")
    shape = shape_for(config, None, None)
    assert (shape.width, shape.height, shape.fps, shape.num_frames) == (1280, 704, 24, 121)
    assert (config.steps, config.guidance_scale, config.size_multiple_px) == (50, 5.0, 32)
    a14b = ModelConfig(id="a14b", engine="wan", preset="wan2.2-t2v-a14b", path="/m", steps=20)
    assert (a14b.steps, a14b.guidance_scale, a14b.guidance_scale_2) == (20, 4.0, 3.0)  # explicit wins
    assert shape_for(a14b, None, None).num_frames == 81
    with pytest.raises(ValueError, match="unknown preset 'wan3'"):
        ModelConfig(id="x", engine="wan", preset="wan3", path="/m")


def test_true_size_parameter_counts_match_the_architectures() -> None:
    """The planner's weight sizes: rebuilt on the meta device (no memory), compared exactly."""
    for p in (*PRESETS.values(), TINY, TINY_I2V):
        t = p.transformer
        with torch.device("meta"):
            model = WanTransformer3DModel(
                patch_size=(1, 2, 2), num_attention_heads=t.num_attention_heads,
                attention_head_dim=t.attention_head_dim, in_channels=p.vae.z_dim, out_channels=p.vae.z_dim,
                text_dim=t.text_dim, freq_dim=t.freq_dim, ffn_dim=t.ffn_dim, num_layers=t.num_layers)
        assert sum(x.numel() for x in model.parameters()) == t.params, p.id
    with torch.device("meta"):
        vae = AutoencoderKLWan()
    assert sum(x.numel() for x in vae.parameters()) == PRESETS["wan2.1-t2v-1.3b"].vae.params


def test_latent_tokens_follow_the_vae_compression() -> None:
    assert latent_tokens(PRESETS["wan2.1-t2v-1.3b"], 832, 480, 81) == 21 * 30 * 52
    assert latent_tokens(PRESETS["wan2.2-ti2v-5b"], 1280, 704, 121) == 31 * 22 * 40
    with pytest.raises(InvalidInput, match="unknown Wan preset"):
        preset("wan9")
