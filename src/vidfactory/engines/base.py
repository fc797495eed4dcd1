"""The Engine protocol: what the worker asks of any video model, and the plain values it exchanges."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

__all__ = [
    "Engine",
    "EngineError",
    "GenerationCancelled",
    "GenerationRequest",
    "GeneratedVideo",
    "OutOfMemory",
    "InvalidInput",
    "ProgressCallback",
    "CancelCheck",
]

ProgressCallback = Callable[[int, int], None]  # (steps_done, steps_total)
CancelCheck = Callable[[], bool]


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    negative_prompt: str
    width: int
    height: int
    num_frames: int
    fps: int
    num_inference_steps: int
    guidance_scale: float
    seed: int


@dataclass(frozen=True)
class GeneratedVideo:
    frames: np.ndarray  # uint8 [F, H, W, 3]
    fps: int
    # What the job records about how it was made (a hosted engine: remote task id, actual prompt, usage).
    metadata: dict[str, Any] = field(default_factory=dict)


class EngineError(Exception):
    """Base of every engine failure; `error_type` is what the job records and billing/alerts read."""

    error_type = "engine_error"
    transient = False


class OutOfMemory(EngineError):
    error_type = "out_of_memory"
    transient = True


class InvalidInput(EngineError):
    error_type = "invalid_input"


class GenerationCancelled(EngineError):
    """Raised from the step callback when the job was cancelled: diffusers stops without decoding."""

    error_type = "cancelled"


class Engine(Protocol):
    model_id: str

    def generate(
        self, request: GenerationRequest, on_progress: ProgressCallback, is_cancelled: CancelCheck
    ) -> GeneratedVideo: ...
