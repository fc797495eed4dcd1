"""The Wan engine: a diffusers `WanPipeline` loaded once and kept in memory across generations."""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import WanPipeline

from vidfactory.engines.base import (
    CancelCheck,
    EngineError,
    GeneratedVideo,
    GenerationCancelled,
    GenerationRequest,
    InvalidInput,
    OutOfMemory,
    ProgressCallback,
)

__all__ = [
    "FRAMES_MAX",
    "SIDE_MAX_PX",
    "SIDE_MIN_PX",
    "SIDE_MULTIPLE_PX",
    "STEPS_MAX",
    "TEXT_TOKENS_MAX",
    "WanEngine",
]

SIDE_MIN_PX = 16
SIDE_MAX_PX = 2048
SIDE_MULTIPLE_PX = 16  # VAE 8x spatial compression times the transformer's 2x2 patches
FRAME_STRIDE = 4  # the VAE's temporal compression: valid clips have 4k + 1 frames
FRAMES_MAX = 481  # 30 s at Wan's native 16 fps
STEPS_MAX = 200
SEED_MAX = 2**64 - 1
# Prompt tokens the encoder reads (billing truncates to the price book's max, 512 by default); the
# sequence is one longer for the end-of-sequence token, so a 512-token billed prompt is read whole.
TEXT_TOKENS_MAX = 512


class WanEngine:
    """Runs Wan2.1/2.2 text-to-video checkpoints in diffusers layout (and the tiny preset).

    `generate` calls are serialised: the pipeline and its scheduler hold per-call state.
    """

    def __init__(self, model_id: str, path: str, device: str | None = None, *, frames_max: int = FRAMES_MAX):
        self.model_id = model_id
        self.frames_max = frames_max
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.pipeline = _load_pipeline(path, self.device)
        self._lock = threading.Lock()

    def generate(
        self, request: GenerationRequest, on_progress: ProgressCallback, is_cancelled: CancelCheck
    ) -> GeneratedVideo:
        # 1. Refuse what the model cannot produce, before touching the accelerator.
        _check_request(request, self.frames_max)
        with self._lock:
            # 2. A job cancelled while waiting for the lock needs no prompt encoding either.
            if is_cancelled():
                raise GenerationCancelled("cancelled before the first denoising step")
            # 3. Denoise and decode; errors from the caller's callbacks pass through untouched.
            try:
                frames = self._run(request, on_progress, is_cancelled)
            except _CallbackRaised as wrapped:
                raise wrapped.__cause__ from None  # the caller's own exception, as they raised it
        # 4. [F, H, W, 3] floats in [0, 1] -> uint8.
        return GeneratedVideo(frames=_to_uint8(frames, request), fps=request.fps)

    def _run(
        self, request: GenerationRequest, on_progress: ProgressCallback, is_cancelled: CancelCheck
    ) -> np.ndarray:
        # A CPU generator gives the same initial noise for a seed on every device.
        generator = torch.Generator("cpu").manual_seed(request.seed)
        try:
            output = self.pipeline(
                prompt=request.prompt,
                negative_prompt=request.negative_prompt,
                height=request.height,
                width=request.width,
                num_frames=request.num_frames,
                num_inference_steps=request.num_inference_steps,
                guidance_scale=request.guidance_scale,
                generator=generator,
                output_type="np",
                callback_on_step_end=_step_callback(on_progress, is_cancelled),
                max_sequence_length=TEXT_TOKENS_MAX + 1,
            )
        except (GenerationCancelled, _CallbackRaised):
            raise
        except Exception as exc:
            raise self._map_failure(exc) from exc
        return output.frames[0]

    def _map_failure(self, exc: Exception) -> EngineError:
        if not _is_out_of_memory(exc):
            return EngineError(f"{self.model_id}: generation failed: {type(exc).__name__}: {exc}")
        # Free the failed call's cached blocks so the next (perhaps smaller) job can fit.
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return OutOfMemory(
            f"{self.model_id}: out of memory on {self.device}: {exc}; "
            f"retry with fewer frames, a smaller size, or on a larger accelerator"
        )


class _CallbackRaised(Exception):
    """Carries an exception from the caller's on_progress/is_cancelled through diffusers unchanged."""


def _step_callback(on_progress: ProgressCallback, is_cancelled: CancelCheck):
    def callback(pipe: WanPipeline, step: int, timestep: Any, callback_kwargs: dict) -> dict:
        try:
            on_progress(step + 1, pipe.num_timesteps)
            cancelled = is_cancelled()
        except Exception as exc:
            raise _CallbackRaised() from exc
        if cancelled:
            # Raising (unlike pipe._interrupt) stops before the VAE decode, the most expensive part.
            raise GenerationCancelled(f"cancelled after denoising step {step + 1} of {pipe.num_timesteps}")
        return {}

    return callback


def _load_pipeline(path: str, device: torch.device) -> WanPipeline:
    if not path:
        raise EngineError("no model path: set the model's path to a diffusers directory or a cached hub id")
    # bf16 halves memory on GPUs; the VAE stays fp32, as the diffusers Wan examples load it.
    dtype = {"default": torch.bfloat16, "vae": torch.float32} if device.type == "cuda" else torch.float32
    try:
        pipeline = WanPipeline.from_pretrained(path, dtype=dtype, local_files_only=True)
    except Exception as exc:  # mapped, not swallowed: from_pretrained fails in many types
        raise EngineError(_load_hint(path, exc)) from exc
    pipeline.set_progress_bar_config(disable=True)
    try:
        return pipeline.to(device)
    except RuntimeError as exc:  # not OutOfMemory: a model that does not fit will not fit on retry
        raise EngineError(f"cannot move the model at {path!r} to {device}: {exc}") from exc


def _load_hint(path: str, exc: BaseException) -> str:
    where = "a local directory" if Path(path).is_absolute() or Path(path).exists() else "a hub id"
    reason = str(exc).rstrip(". ")
    return (
        f"cannot load a Wan model from {path!r} ({where}): {reason}. Loading never downloads: point the "
        f"model's path at a diffusers-layout directory (model_index.json, transformer/, vae/, text_encoder/, "
        f"tokenizer/, scheduler/), e.g. one made with `hf download "
        f"Wan-AI/Wan2.1-T2V-1.3B-Diffusers --local-dir DIR`, or at a hub id already in the local HF cache"
    )


def _is_out_of_memory(exc: Exception) -> bool:
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    # CUDA OOMs from cuBLAS/cuDNN arrive as plain RuntimeErrors, and so do CPU allocation failures.
    marks = ("out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "can't allocate memory")
    return isinstance(exc, RuntimeError) and any(mark in str(exc) for mark in marks)


def _check_request(request: GenerationRequest, frames_max: int) -> None:
    for name, side in (("width", request.width), ("height", request.height)):
        if not SIDE_MIN_PX <= side <= SIDE_MAX_PX or side % SIDE_MULTIPLE_PX:
            raise InvalidInput(
                f"{name} must be a multiple of {SIDE_MULTIPLE_PX} between {SIDE_MIN_PX} and {SIDE_MAX_PX}, "
                f"got {side}"
            )
    if not 1 <= request.num_frames <= frames_max or request.num_frames % FRAME_STRIDE != 1:
        raise InvalidInput(
            f"num_frames must be {FRAME_STRIDE}k+1 between 1 and {frames_max} (e.g. 17, 33, 81), "
            f"got {request.num_frames}"
        )
    if not 1 <= request.num_inference_steps <= STEPS_MAX:
        raise InvalidInput(
            f"num_inference_steps must be between 1 and {STEPS_MAX}, got {request.num_inference_steps}"
        )
    if not request.prompt.strip():
        raise InvalidInput("prompt must not be empty")
    if not math.isfinite(request.guidance_scale) or request.guidance_scale < 0:
        raise InvalidInput(f"guidance_scale must be a finite number >= 0, got {request.guidance_scale}")
    if not 0 <= request.seed <= SEED_MAX:
        raise InvalidInput(f"seed must be between 0 and {SEED_MAX}, got {request.seed}")
    if request.fps < 1:
        raise InvalidInput(f"fps must be >= 1, got {request.fps}")


def _to_uint8(frames: np.ndarray, request: GenerationRequest) -> np.ndarray:
    expected = (request.num_frames, request.height, request.width, 3)
    if frames.shape != expected:
        raise EngineError(f"the pipeline returned frames of shape {frames.shape}, expected {expected}")
    if not np.isfinite(frames).all():
        raise EngineError("the model produced non-finite pixels (NaN/inf): numerical failure in the pipeline")
    return (np.clip(frames, 0.0, 1.0) * 255.0).round().astype(np.uint8)
