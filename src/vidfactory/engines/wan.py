"""The Wan engine: a diffusers `WanPipeline` loaded once and kept in memory across generations."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline, WanPipeline
from PIL import Image

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
from vidfactory.engines.lora import ResidentAdapters
from vidfactory.engines.lora_training import (
    CheckpointCallback,
    TrainingProgress,
    TrainingResult,
    TrainingSample,
    TrainingSettings,
    train_lora,
)
from vidfactory.engines.memory import MEMORY_MODES
from vidfactory.engines.parallel import DevicePlan, agree_with_leader, enable_context_parallel, join_group
from vidfactory.engines.presets import FRAME_STRIDE, WanPreset, check_shape
from vidfactory.engines.speed import SpeedSettings, apply_speed, step_cache

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
FRAMES_MAX = 481  # 30 s at Wan's native 16 fps
STEPS_MAX = 200
SEED_MAX = 2**64 - 1
# Prompt tokens the encoder reads (billing truncates to the price book's max, 512 by default); the
# sequence is one longer for the end-of-sequence token, so a 512-token billed prompt is read whole.
TEXT_TOKENS_MAX = 512


class WanEngine:
    """Runs Wan2.1/2.2 checkpoints in diffusers layout: text-to-video, two-expert A14B, and the TI2V-5B's
    image-to-video when a request carries a reference image.

    The model stays loaded across generations. `generate` calls are serialised: the pipeline and its
    scheduler hold per-call state, and so does the memory mode.
    """

    def __init__(self, model_id: str, path: str, device: str | None = None, *, frames_max: int = FRAMES_MAX,
                 preset: WanPreset | None = None, speed: SpeedSettings = SpeedSettings(),
                 mag_ratios: tuple[float, ...] = (), devices: DevicePlan = DevicePlan(), styles_resident_max: int = 4):
        self.model_id = model_id
        self.path = path
        self.frames_max = frames_max
        self.preset = preset
        self.speed = speed
        self.mag_ratios = mag_ratios
        self.devices = devices
        if devices.parallel:
            join_group(devices)
            device = device or str(devices.device())
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self._lock = threading.Lock()
        self.adapters = ResidentAdapters(styles_resident_max)
        started = time.perf_counter()
        self._load()
        self.load_s = time.perf_counter() - started  # the model switch cost the worker records

    def _load(self) -> None:
        self.pipeline = _load_pipeline(self.path, self.device)
        if self.preset is not None:
            _use_flow_shift(self.pipeline, self.preset.flow_shift)
        if self.devices.parallel:
            enable_context_parallel(self.pipeline, self.devices)
        self.speed_applied = apply_speed(self.pipeline, self.speed, self.device)
        self.memory_mode = "none"
        self._image_pipeline: DiffusionPipeline | None = None
        self.adapters.forget()

    def generate(
        self, request: GenerationRequest, on_progress: ProgressCallback, is_cancelled: CancelCheck
    ) -> GeneratedVideo:
        # 1. Refuse what the model cannot produce, before touching the accelerator.
        self._check_for_model(request)
        _check_request(request, self.frames_max)
        with self._lock:
            # 2. A job cancelled while waiting for the lock needs no prompt encoding either.
            if is_cancelled():
                raise GenerationCancelled("cancelled before the first denoising step")
            # 3. The memory mode this attempt runs in (an out-of-memory retry asks for a more frugal one).
            mode_applied = self._use_memory_mode(request.memory_mode)
            # 4. This request's styles and only those (none: the base weights exactly).
            self.adapters.apply(self.pipeline, request.adapters)
            # 5. Denoise and decode; errors from the caller's callbacks pass through untouched.
            try:
                frames, cache_applied = self._run(request, on_progress, is_cancelled)
            except _CallbackRaised as wrapped:
                raise wrapped.__cause__ from None  # the caller's own exception, as they raised it
        # 6. [F, H, W, 3] floats in [0, 1] -> uint8, with the settings that produced them.
        settings = {**self.speed_applied, "memory_mode": mode_applied, "step_cache": cache_applied}
        if self.devices.parallel:
            settings["context_parallel"] = f"ulysses x{self.devices.world_size}"
        return GeneratedVideo(frames=_to_uint8(frames, request), fps=request.fps, engine_settings=settings)

    def train_style(self, samples: list[TrainingSample], settings: TrainingSettings, on_progress: TrainingProgress,
                    is_cancelled: CancelCheck, on_checkpoint: CheckpointCallback,
                    resume_from: bytes | None = None) -> TrainingResult:
        """A LoRA style on this model's transformer (engines/lora_training.py); generations wait meanwhile."""
        with self._lock:
            return train_lora(self.pipeline, samples, settings, on_progress, is_cancelled, on_checkpoint,
                              resume_from)

    def _check_for_model(self, request: GenerationRequest) -> None:
        if self.preset is not None:
            check_shape(self.preset, request.width, request.height, request.num_frames, self.frames_max)
        if request.guidance_scale_2 is not None and self.pipeline.config.boundary_ratio is None:
            raise InvalidInput(f"{self.model_id}: guidance_scale_2 applies only to two-expert models "
                               f"(Wan2.2 A14B); this model has one transformer")
        if request.image is None:
            return
        if not self.pipeline.config.expand_timesteps:
            raise InvalidInput(f"{self.model_id}: this model takes no reference image (image-to-video needs "
                               f"the wan2.2-ti2v-5b or wan-tiny-i2v preset)")
        image = request.image
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
            raise InvalidInput(f"the reference image must be uint8 [height, width, 3], got {image.dtype} "
                               f"{list(image.shape)}")

    def _use_memory_mode(self, mode: str) -> str:
        if mode not in MEMORY_MODES:
            raise InvalidInput(f"unknown memory mode {mode!r}; known: {', '.join(MEMORY_MODES)}")
        offloaded = ("model_cpu_offload", "group_offload")
        if mode != self.memory_mode and self.memory_mode in offloaded:
            # Offload hooks do not come off cleanly: start again from the files (counted as a reload).
            self._load()
        self.memory_mode = mode
        return _apply_memory_mode(self.pipeline, mode, self.device)

    def _pipeline_for(self, request: GenerationRequest) -> DiffusionPipeline:
        if request.image is None:
            return self.pipeline
        if self._image_pipeline is None:
            # Imported here: importing it makes transformers warn about torchvision in every process.
            from diffusers import WanImageToVideoPipeline

            # The TI2V-5B's image path: the same components (no copy), no CLIP image encoder.
            config = self.pipeline.config
            self._image_pipeline = WanImageToVideoPipeline(
                **self.pipeline.components, boundary_ratio=config.boundary_ratio,
                expand_timesteps=config.expand_timesteps)
            self._image_pipeline.set_progress_bar_config(disable=True)
        return self._image_pipeline

    def _run(
        self, request: GenerationRequest, on_progress: ProgressCallback, is_cancelled: CancelCheck
    ) -> tuple[np.ndarray, str]:
        # A CPU generator gives the same initial noise for a seed on every device.
        generator = torch.Generator("cpu").manual_seed(request.seed)
        pipeline = self._pipeline_for(request)
        extra: dict[str, Any] = {"prompt": request.prompt, "negative_prompt": request.negative_prompt}
        if request.image is not None:
            extra = {"image": Image.fromarray(request.image), **self._prompt_embeds(request)}
        if pipeline.config.boundary_ratio is not None:
            extra["guidance_scale_2"] = request.guidance_scale_2
        try:
            with step_cache(pipeline, request.step_cache, request.num_inference_steps,
                            self.mag_ratios) as cache_applied:
                output = pipeline(
                    height=request.height,
                    width=request.width,
                    num_frames=request.num_frames,
                    num_inference_steps=request.num_inference_steps,
                    guidance_scale=request.guidance_scale,
                    generator=generator,
                    output_type="np",
                    callback_on_step_end=_step_callback(on_progress, is_cancelled, self.devices.parallel),
                    max_sequence_length=TEXT_TOKENS_MAX + 1,
                    **extra,
                )
        except (GenerationCancelled, _CallbackRaised):
            raise
        except Exception as exc:
            raise self._map_failure(exc) from exc
        return output.frames[0], cache_applied

    def _prompt_embeds(self, request: GenerationRequest) -> dict[str, torch.Tensor]:
        """Encoded by the text-to-video pipeline: diffusers' image pipeline cleans prompts with ftfy (a
        dependency we leave out), which would make the text the model reads differ from the text billed."""
        positive, negative = self.pipeline.encode_prompt(
            prompt=request.prompt, negative_prompt=request.negative_prompt,
            do_classifier_free_guidance=request.guidance_scale > 1.0, max_sequence_length=TEXT_TOKENS_MAX + 1,
            device=self.pipeline._execution_device)
        return {"prompt_embeds": positive, "negative_prompt_embeds": negative}

    def _map_failure(self, exc: Exception) -> EngineError:
        if not _is_out_of_memory(exc):
            return EngineError(f"{self.model_id}: generation failed: {type(exc).__name__}: {exc}")
        # Free the failed call's cached blocks so the next (perhaps smaller) job can fit.
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return OutOfMemory(
            f"{self.model_id}: out of memory on {self.device} in memory mode {self.memory_mode}: {exc}"
        )


def _use_flow_shift(pipeline: DiffusionPipeline, flow_shift: float) -> None:
    """The preset's flow shift (resolution-dependent in the Wan reference code) over the checkpoint's."""
    scheduler = pipeline.scheduler
    if "flow_shift" in scheduler.config and scheduler.config.flow_shift != flow_shift:
        pipeline.scheduler = type(scheduler).from_config(scheduler.config, flow_shift=flow_shift)


def _apply_memory_mode(pipeline: DiffusionPipeline, mode: str, device: torch.device) -> str:
    """Put the pipeline in `mode` (from "none" or "vae_tiling"); returns what was applied."""
    if mode == "none":
        pipeline.vae.disable_tiling()
        return mode
    pipeline.vae.enable_tiling()
    if mode == "vae_tiling":
        return mode
    if device.type != "cuda":
        return f"vae_tiling ({mode} needs an accelerator: the weights are already in host memory)"
    if mode == "model_cpu_offload":
        pipeline.enable_model_cpu_offload(device=device)
    else:
        pipeline.enable_group_offload(onload_device=device, offload_type="block_level", num_blocks_per_group=1,
                                      use_stream=True)
    return mode


class _CallbackRaised(Exception):
    """Carries an exception from the caller's on_progress/is_cancelled through diffusers unchanged."""


def _step_callback(on_progress: ProgressCallback, is_cancelled: CancelCheck, parallel: bool):
    def callback(pipe: DiffusionPipeline, step: int, timestep: Any, callback_kwargs: dict) -> dict:
        try:
            on_progress(step + 1, pipe.num_timesteps)
            cancelled = is_cancelled()
        except Exception as exc:
            raise _CallbackRaised() from exc
        if parallel:  # every rank stops at the same step, or the others wait in a collective forever
            cancelled = agree_with_leader(cancelled)
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
