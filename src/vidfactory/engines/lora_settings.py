"""What a LoRA training is asked for and gives back, and the limits it is checked against: no torch here, so
the API and the queue validate and price a training without importing the engine (lora_training.py)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from vidfactory.engines.base import InvalidInput
from vidfactory.engines.presets import FRAME_STRIDE, TrainingDefaults

__all__ = [
    "CAPTION_CHARS_MAX",
    "LEARNING_RATE_MAX",
    "RANK_MAX",
    "SAMPLES_MAX",
    "STEPS_MAX",
    "CheckpointCallback",
    "TrainingProgress",
    "TrainingResult",
    "TrainingSample",
    "TrainingSettings",
    "check_settings",
    "settings_for",
]

RANK_MAX = 128
STEPS_MAX = 20_000  # the engine's ceiling; plans cap lower
LEARNING_RATE_MAX = 0.05
SAMPLES_MAX = 1_000
CAPTION_CHARS_MAX = 2_000

TrainingProgress = Callable[[int, int, float], None]  # (step, steps, loss)
CheckpointCallback = Callable[[int, bytes], None]  # (step, checkpoint) to keep where the next worker finds it


@dataclass(frozen=True)
class TrainingSample:
    frames: np.ndarray  # uint8 [F, H, W, 3]; an image is one frame
    caption: str


@dataclass(frozen=True)
class TrainingSettings:
    rank: int
    learning_rate: float
    steps: int
    buckets: tuple[tuple[int, int], ...]
    num_frames: int
    checkpoint_every: int
    gradient_checkpointing: bool
    seed: int = 0
    flow_shift: float = 3.0  # biases sampled times toward noise, as the preset's scheduler does


@dataclass(frozen=True)
class TrainingResult:
    adapter: bytes  # safetensors, keys `transformer.<module>.lora_A.weight` / `lora_B.weight`
    rank: int
    steps: int
    losses: list[float] = field(default_factory=list)  # one per step, from step 1


def settings_for(defaults: TrainingDefaults, flow_shift: float, **overrides: object) -> TrainingSettings:
    """The preset's defaults with the tenant's overrides (None keeps the default)."""
    base = TrainingSettings(rank=defaults.rank, learning_rate=defaults.learning_rate, steps=defaults.steps,
                            buckets=defaults.buckets, num_frames=defaults.num_frames,
                            checkpoint_every=defaults.checkpoint_every,
                            gradient_checkpointing=defaults.gradient_checkpointing, flow_shift=flow_shift)
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


def check_settings(settings: TrainingSettings) -> None:
    """Raise InvalidInput naming the first setting out of range."""
    if not 1 <= settings.rank <= RANK_MAX:
        raise InvalidInput(f"rank must be between 1 and {RANK_MAX}, got {settings.rank}")
    if not 0 < settings.learning_rate <= LEARNING_RATE_MAX or not math.isfinite(settings.learning_rate):
        raise InvalidInput(f"learning_rate must be in (0, {LEARNING_RATE_MAX}], got {settings.learning_rate}")
    if not 1 <= settings.steps <= STEPS_MAX:
        raise InvalidInput(f"steps must be between 1 and {STEPS_MAX}, got {settings.steps}")
    if settings.num_frames < 1 or settings.num_frames % FRAME_STRIDE != 1:
        raise InvalidInput(f"num_frames must be {FRAME_STRIDE}k+1, got {settings.num_frames}")
    if not settings.buckets or settings.checkpoint_every < 1:
        raise InvalidInput("training needs at least one resolution bucket and checkpoint_every >= 1")
