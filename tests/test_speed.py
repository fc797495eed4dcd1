"""Speed and memory settings on the tiny engine: what is asked, what is applied, and what the job records;
missing kernels fall back cleanly; step caching is on for one generation only."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from fixtures_models import tiny_model_dir  # noqa: F401 - a fixture

from vidfactory.engines.base import GenerationRequest, InvalidInput
from vidfactory.engines.presets import TINY
from vidfactory.engines.speed import SpeedSettings
from vidfactory.engines.wan import WanEngine

REQUEST = GenerationRequest(prompt="a lantern on a lake", negative_prompt="", width=32, height=32, num_frames=5,
                            fps=8, num_inference_steps=3, guidance_scale=5.0, seed=11)


def never() -> bool:
    return False


def ignore(done: int, total: int) -> None:
    return None


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> WanEngine:  # noqa: F811 - the imported fixture
    return WanEngine("wan-tiny", str(tiny_model_dir), device="cpu", preset=TINY,
                     speed=SpeedSettings(attention_backend="flash", compile_transformer=True, fp8_weights=True))


def test_unavailable_speed_ups_fall_back_and_say_why(engine: WanEngine) -> None:
    video = engine.generate(REQUEST, ignore, never)
    assert video.engine_settings == {
        "attention_backend": "native (flash needs CUDA)", "compile": "off (needs CUDA)",
        "fp8_weights": "off (needs CUDA)", "memory_mode": "none", "step_cache": "none"}


def test_step_caching_applies_to_one_generation_only(engine: WanEngine) -> None:
    cached = engine.generate(replace(REQUEST, step_cache="first_block"), ignore, never)
    assert cached.engine_settings["step_cache"] == "first_block"
    assert not engine.pipeline.transformer.is_cache_enabled  # the hooks came off afterwards
    taylor = engine.generate(replace(REQUEST, step_cache="taylorseer"), ignore, never)
    assert taylor.engine_settings["step_cache"] == "taylorseer"
    mag = engine.generate(replace(REQUEST, step_cache="mag"), ignore, never)
    assert mag.engine_settings["step_cache"].startswith("none (mag needs calibrated mag_ratios")


def test_memory_modes_switch_between_generations(engine: WanEngine) -> None:
    plain = engine.generate(REQUEST, ignore, never)
    tiled = engine.generate(replace(REQUEST, memory_mode="vae_tiling"), ignore, never)
    assert tiled.engine_settings["memory_mode"] == "vae_tiling" and engine.pipeline.vae.use_tiling
    offload = engine.generate(replace(REQUEST, memory_mode="model_cpu_offload"), ignore, never)
    assert offload.engine_settings["memory_mode"].startswith("vae_tiling (model_cpu_offload needs an accelerator")
    back = engine.generate(REQUEST, ignore, never)
    assert back.engine_settings["memory_mode"] == "none" and not engine.pipeline.vae.use_tiling
    assert np.array_equal(plain.frames, back.frames)
    with pytest.raises(InvalidInput, match="unknown memory mode"):
        engine.generate(replace(REQUEST, memory_mode="sequential"), ignore, never)


def test_every_attention_backend_setting_names_a_diffusers_kernel() -> None:
    from diffusers.models.attention_dispatch import AttentionBackendName

    from vidfactory.engines.speed import ATTENTION_BACKENDS, AUTO_ORDER, DIFFUSERS_BACKENDS
    from vidfactory.settings import Settings

    kernels = {backend.value for backend in AttentionBackendName}
    assert set(ATTENTION_BACKENDS) == {"auto", *DIFFUSERS_BACKENDS} and set(AUTO_ORDER) < set(DIFFUSERS_BACKENDS)
    assert set(DIFFUSERS_BACKENDS.values()) <= kernels
    for backend in ATTENTION_BACKENDS:
        assert Settings(attention_backend=backend).attention_backend == backend
    with pytest.raises(ValueError):
        Settings(attention_backend="xformers")


def test_a_kernel_asked_for_on_a_cpu_runs_native_and_says_why(tiny_model_dir: Path) -> None:  # noqa: F811
    engine = WanEngine("wan-tiny", str(tiny_model_dir), device="cpu", preset=TINY,
                       speed=SpeedSettings(attention_backend="cudnn"))
    assert engine.speed_applied["attention_backend"] == "native (cudnn needs CUDA)"
    assert engine.generate(REQUEST, ignore, never).frames.shape == (5, 32, 32, 3)


def test_magcache_calibration_matches_diffusers_and_enables_mag(
        engine: WanEngine, tiny_model_dir: Path, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    import logging

    from diffusers.hooks import MagCacheConfig
    from diffusers.utils import logging as diffusers_logging

    from vidfactory.engines.calibrate import mag_ratios
    from vidfactory.engines.speed import transformers_of

    request = replace(REQUEST, num_inference_steps=6)
    ratios = mag_ratios(engine, request)
    assert len(ratios) == 6 and ratios[0] == 1.0 and all(np.isfinite(r) and r > 0 for r in ratios)
    assert mag_ratios(engine, request) == ratios  # same seed, same checkpoint: same ratios

    # diffusers' own calibration mode on the same run logs the conditional branch's ratios first.
    diffusers_logging.set_verbosity_info()
    logger = logging.getLogger("diffusers.hooks.mag_cache")
    logger.addHandler(caplog.handler)
    try:
        for model in transformers_of(engine.pipeline):
            model.enable_cache(MagCacheConfig(calibrate=True, num_inference_steps=6))
        engine.generate(request, ignore, never)
    finally:
        for model in transformers_of(engine.pipeline):
            model.disable_cache()
        logger.removeHandler(caplog.handler)
        diffusers_logging.set_verbosity_warning()
    logged = [r.getMessage() for r in caplog.records if "MagCache Calibration Results" in r.getMessage()]
    theirs = [float(x) for x in logged[0].split(": ", 1)[1].strip("[]").split(",")]
    assert np.allclose(ratios, theirs, rtol=1e-4)

    calibrated = WanEngine("wan-tiny", str(tiny_model_dir), device="cpu", preset=TINY, mag_ratios=ratios)
    video = calibrated.generate(replace(request, step_cache="mag"), ignore, never)
    assert video.engine_settings["step_cache"] == "mag"


def test_mag_ratios_must_be_positive_finite_numbers() -> None:
    from pydantic import ValidationError

    from vidfactory.settings import ModelConfig

    config = ModelConfig(id="m", engine="wan-tiny", step_cache_mag_ratios=[1.0, 0.9])
    assert config.step_cache_mag_ratios == [1.0, 0.9]
    for bad in ([0.0], [-1.0], [float("nan")], [float("inf")]):
        with pytest.raises(ValidationError):
            ModelConfig(id="m", engine="wan-tiny", step_cache_mag_ratios=bad)


def test_a_models_own_mag_ratios_reach_its_engine(tiny_model_dir: Path) -> None:  # noqa: F811
    from vidfactory.engines.registry import load_engine
    from vidfactory.settings import ModelConfig

    config = ModelConfig(id=tiny_model_dir.name, engine="wan-tiny", step_cache_mag_ratios=[1.0, 0.97, 0.95])
    engine = load_engine(config, tiny_model_dir.parent)
    video = engine.generate(replace(REQUEST, step_cache="mag"), ignore, never)
    assert engine.mag_ratios == (1.0, 0.97, 0.95) and video.engine_settings["step_cache"] == "mag"
