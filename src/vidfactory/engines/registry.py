"""From a model's configuration to a loaded engine: which class runs it (where its weights live and whether
they are all there: engines/checkpoints.py)."""

from __future__ import annotations

from pathlib import Path

from vidfactory.engines.base import Engine
from vidfactory.engines.checkpoints import model_path
from vidfactory.engines.dashscope import DashScopeEngine
from vidfactory.engines.openai_video import OpenAIVideoEngine
from vidfactory.engines.parallel import DevicePlan, ParallelError
from vidfactory.engines.speed import SpeedSettings
from vidfactory.engines.wan import WanEngine
from vidfactory.settings import ModelConfig

__all__ = ["load_engine"]


def load_engine(config: ModelConfig, models_dir: Path, speed: SpeedSettings = SpeedSettings(),
                devices: DevicePlan = DevicePlan(), styles_resident_max: int = 4) -> Engine:
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
                     mag_ratios=tuple(config.step_cache_mag_ratios), devices=devices,
                     styles_resident_max=styles_resident_max)
