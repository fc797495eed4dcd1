"""The Engine protocol: what the worker asks of any video model, and the plain values it exchanges."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from vidfactory.failures import ErrorType

__all__ = [
    "Engine",
    "EngineError",
    "GenerationAbandoned",
    "GenerationCancelled",
    "GenerationRequest",
    "GeneratedVideo",
    "HostedEngine",
    "OutOfMemory",
    "InvalidInput",
    "ProgressCallback",
    "CancelCheck",
    "RemoteTaskCallback",
    "StyleAdapter",
]

ProgressCallback = Callable[[int, int], None]  # (steps_done, steps_total)
CancelCheck = Callable[[], bool]
# A hosted engine calls it with a remote task's id as soon as the task exists, before waiting for it: the
# caller records it, so that a later attempt resumes the task (GenerationRequest.resume_task_id) instead of
# paying for another. An exception from it stops the attempt; the task just created is cancelled.
RemoteTaskCallback = Callable[[str], None]


@dataclass(frozen=True)
class StyleAdapter:
    """A LoRA adapter a generation applies at `scale`, named by its SHA-256 (the same bytes are the same
    adapter, whoever uploaded them). `read` returns its safetensors bytes, called only when it is not
    already loaded."""

    sha256: str
    scale: float
    read: Callable[[], bytes] = field(compare=False, repr=False)


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
    guidance_scale_2: float | None = None  # two-expert models: the low-noise expert's guidance
    image: np.ndarray | None = None  # uint8 [H, W, 3]: the first frame (image-to-video presets)
    memory_mode: str = "none"  # engines/memory.py MEMORY_MODES
    step_cache: str = "none"  # engines/speed.py STEP_CACHES; changes the output, so the caller decides
    # Hosted engines: the remote task an earlier attempt of this job created. It is polled instead of
    # creating a new one while it is pending, running or succeeded; failed, cancelled or gone, a new one runs.
    resume_task_id: str | None = None
    adapters: tuple[StyleAdapter, ...] = ()  # styles (local Wan engines only); none: the base model exactly


@dataclass(frozen=True)
class GeneratedVideo:
    frames: np.ndarray  # uint8 [F, H, W, 3]
    fps: int
    engine_settings: dict[str, str] = field(default_factory=dict)  # what ran: recorded on the job
    # What the job records about how it was made (a hosted engine: remote task id, actual prompt, usage).
    metadata: dict[str, Any] = field(default_factory=dict)


class EngineError(Exception):
    """Base of every engine failure; `error_type` is what the job records and billing/alerts read."""

    error_type: ErrorType = ErrorType.engine_crash
    transient = False


class OutOfMemory(EngineError):
    """The device ran out of memory: the worker retries once with the next more frugal memory mode."""

    error_type = ErrorType.oom
    transient = True


class InvalidInput(EngineError):
    error_type = ErrorType.invalid_input


class GenerationCancelled(EngineError):
    """Raised from the step callback when the job was cancelled: diffusers stops without decoding."""

    error_type = ErrorType.cancelled


class GenerationAbandoned(EngineError):
    """Raised by the caller's is_cancelled when this attempt is no longer the caller's (another worker took
    the job over): the engine stops, and a hosted engine leaves its remote task running for the new owner."""

    error_type = ErrorType.worker_lost
    transient = True


class Engine(Protocol):
    model_id: str

    def generate(
        self, request: GenerationRequest, on_progress: ProgressCallback, is_cancelled: CancelCheck
    ) -> GeneratedVideo: ...


class HostedEngine(Engine, Protocol):
    """An engine whose work runs as a remote task: it reports the task's id as soon as it exists."""

    def generate(
        self, request: GenerationRequest, on_progress: ProgressCallback, is_cancelled: CancelCheck,
        on_remote_task: RemoteTaskCallback | None = None,
    ) -> GeneratedVideo: ...
