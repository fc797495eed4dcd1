"""From a model's configuration to a loaded engine: where its weights live and which class runs them."""

from __future__ import annotations

from pathlib import Path

from vidfactory.engines.base import Engine, EngineError
from vidfactory.engines.dashscope import DashScopeEngine
from vidfactory.engines.openai_video import OpenAIVideoEngine
from vidfactory.engines.parallel import DevicePlan, ParallelError
from vidfactory.engines.speed import SpeedSettings
from vidfactory.engines.tiny import ensure_tiny_model
from vidfactory.engines.wan import WanEngine
from vidfactory.settings import ModelConfig

__all__ = ["load_engine", "model_path"]


def model_path(config: ModelConfig, models_dir: Path) -> str:
    """The directory or cached hub id holding the model's diffusers files (the tiny preset is built here);
    for a hosted model, the one whose tokenizer/ billing counts with."""
    if config.is_hosted:
        if not config.path:
            raise EngineError(
                f"model {config.id!r} (engine {config.engine!r}) has no path: set it to a directory or cached "
                f"hub id whose tokenizer/ matches the hosted model (Wan: the UMT5 tokenizer of a Wan checkpoint)"
            )
        return config.path
    if config.engine == "wan-tiny":
        return str(ensure_tiny_model(Path(models_dir) / config.id))
    if config.engine == "wan":
        if not config.path:
            raise EngineError(
                f"model {config.id!r} (engine 'wan') has no path: set it to a diffusers-layout directory "
                f"or a hub id already in the local Hugging Face cache, e.g. Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
            )
        return config.path
    raise EngineError(f"model {config.id!r}: unknown engine {config.engine!r} "
                      f"(known: 'wan', 'wan-tiny', 'dashscope', 'openai-video')")


def load_engine(config: ModelConfig, models_dir: Path, speed: SpeedSettings = SpeedSettings(),
                devices: DevicePlan = DevicePlan()) -> Engine:
    """Load the model once; the engine keeps it in memory for every later generation. Hosted engines
    load nothing: they keep an HTTP connection pool, and never span devices."""
    if devices.parallel and config.is_hosted:
        raise ParallelError(f"model {config.id!r} is hosted: only a local Wan model runs across devices")
    if config.engine == "dashscope":
        assert config.hosted is not None
        return DashScopeEngine(config.id, config.hosted)
    if config.engine == "openai-video":
        assert config.hosted is not None
        return OpenAIVideoEngine(config.id, config.hosted)
    return WanEngine(config.id, model_path(config, models_dir), preset=config.wan_preset, speed=speed,
                     mag_ratios=tuple(config.step_cache_mag_ratios), devices=devices)
