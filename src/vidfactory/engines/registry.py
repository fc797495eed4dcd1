"""From a model's configuration to a loaded engine: where its weights live and which class runs them."""

from __future__ import annotations

from pathlib import Path

from vidfactory.engines.base import EngineError
from vidfactory.engines.speed import SpeedSettings
from vidfactory.engines.tiny import ensure_tiny_model
from vidfactory.engines.wan import WanEngine
from vidfactory.settings import ModelConfig

__all__ = ["load_engine", "model_path"]


def model_path(config: ModelConfig, models_dir: Path) -> str:
    """The directory or cached hub id holding the model's diffusers files (the tiny preset is built here)."""
    if config.engine == "wan-tiny":
        return str(ensure_tiny_model(Path(models_dir) / config.id))
    if config.engine == "wan":
        if not config.path:
            raise EngineError(
                f"model {config.id!r} (engine 'wan') has no path: set it to a diffusers-layout directory "
                f"or a hub id already in the local Hugging Face cache, e.g. Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
            )
        return config.path
    raise EngineError(f"model {config.id!r}: unknown engine {config.engine!r} (known: 'wan', 'wan-tiny')")


def load_engine(config: ModelConfig, models_dir: Path, speed: SpeedSettings = SpeedSettings(),
                mag_ratios: tuple[float, ...] = ()) -> WanEngine:
    """Load the model once; the engine keeps it in memory for every later generation."""
    return WanEngine(config.id, model_path(config, models_dir), preset=config.wan_preset, speed=speed,
                     mag_ratios=mag_ratios)
