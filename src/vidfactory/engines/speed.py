"""Speed settings for a loaded Wan pipeline: attention backend, regional torch.compile, FP8 weights, and
step caching. Each returns what it actually applied (a plain string) so that the job can record it; a
kernel or library that is missing falls back to the plain path and says why instead of failing the job.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from diffusers import DiffusionPipeline
from diffusers.models import ModelMixin

__all__ = [
    "ATTENTION_BACKENDS",
    "AUTO_ORDER",
    "STEP_CACHES",
    "SpeedSettings",
    "apply_speed",
    "step_cache",
    "transformers_of",
]

log = logging.getLogger(__name__)

ATTENTION_BACKENDS = ("auto", "native", "flash3", "flash", "sage", "cudnn")
# Our names -> diffusers' backend names. flash3 is FlashAttention 3 (Hopper, package flash_attn_interface);
# cudnn is torch's own cuDNN attention: no extra package, and up to 75% faster than FlashAttention 2 on
# H100 per the PyTorch 2.5 release notes, yet torch's default SDPA choice ranks it after flash.
DIFFUSERS_BACKENDS = {"native": "native", "flash3": "_flash_3", "flash": "flash", "sage": "sage",
                      "cudnn": "_native_cudnn"}
# auto: the first kernel that loads. cudnn comes last among them as the one that needs no extra package.
AUTO_ORDER = ("flash3", "flash", "sage", "cudnn")
STEP_CACHES = ("none", "first_block", "mag", "taylorseer")
FP8_COMPUTE_CAPABILITY_MIN = (8, 9)  # Ada and Hopper have FP8 tensor cores
FIRST_BLOCK_THRESHOLD = 0.05  # diffusers' default; larger skips more steps and drifts more
TAYLORSEER_INTERVAL = 5


@dataclass(frozen=True)
class SpeedSettings:
    attention_backend: str = "auto"  # auto: AUTO_ORDER's first available kernel, else native
    compile_transformer: bool = False
    fp8_weights: bool = False

    def __post_init__(self) -> None:
        assert self.attention_backend in ATTENTION_BACKENDS, self.attention_backend


def transformers_of(pipeline: DiffusionPipeline) -> list[ModelMixin]:
    """The pipeline's denoisers: one, or Wan2.2 A14B's two experts."""
    return [m for m in (pipeline.transformer, getattr(pipeline, "transformer_2", None)) if m is not None]


def apply_speed(pipeline: DiffusionPipeline, speed: SpeedSettings, device: torch.device) -> dict[str, str]:
    """Apply once after loading (before the first generation); returns what each setting became."""
    models = transformers_of(pipeline)
    # 1. FP8 before compiling, so the compiled graphs see the quantized linear layers.
    applied = {"fp8_weights": _fp8(models, device) if speed.fp8_weights else "off"}
    # 2. The attention kernel every attention layer dispatches to.
    applied["attention_backend"] = _attention(models, speed.attention_backend, device)
    # 3. Regional compilation: each repeated block compiles once and is reused by all 30-40 of them.
    applied["compile"] = _compile(models, device) if speed.compile_transformer else "off"
    return applied


def _attention(models: list[ModelMixin], wanted: str, device: torch.device) -> str:
    if wanted == "native" or device.type != "cuda":
        # Native scaled-dot-product attention is what every model starts with: nothing to set.
        return "native" if wanted in ("auto", "native") else f"native ({wanted} needs CUDA)"
    candidates = AUTO_ORDER if wanted == "auto" else (wanted,)
    reasons = []
    for backend in candidates:
        try:
            for model in models:
                model.set_attention_backend(DIFFUSERS_BACKENDS[backend])
        except (RuntimeError, ImportError, ValueError) as exc:  # the kernel's package is missing
            reasons.append(f"{backend} unavailable: {exc}".splitlines()[0])
            continue
        return backend
    for model in models:
        model.set_attention_backend("native")
    return "native" + (f" ({'; '.join(reasons)})" if reasons and wanted != "auto" else "")


def _compile(models: list[ModelMixin], device: torch.device) -> str:
    if device.type != "cuda":
        return "off (needs CUDA)"
    for model in models:
        model.compile_repeated_blocks(fullgraph=True)
    return "regional"


def _fp8(models: list[ModelMixin], device: torch.device) -> str:
    if device.type != "cuda":
        return "off (needs CUDA)"
    capability = torch.cuda.get_device_capability(device)
    if capability < FP8_COMPUTE_CAPABILITY_MIN:
        return f"off (compute capability {capability[0]}.{capability[1]} < 8.9)"
    try:
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, quantize_
    except ImportError:
        return "off (torchao not installed: pip install 'vidfactory[gpu]')"
    for model in models:
        quantize_(model, Float8DynamicActivationFloat8WeightConfig())
    return "float8 dynamic (torchao)"


def _cache_config(name: str, steps: int, mag_ratios: tuple[float, ...]):
    from diffusers.hooks import FirstBlockCacheConfig, MagCacheConfig, TaylorSeerCacheConfig

    if name == "first_block":
        return FirstBlockCacheConfig(threshold=FIRST_BLOCK_THRESHOLD)
    if name == "taylorseer":
        return TaylorSeerCacheConfig(cache_interval=TAYLORSEER_INTERVAL)
    if name == "mag" and mag_ratios:
        return MagCacheConfig(mag_ratios=list(mag_ratios), num_inference_steps=steps)
    return None


@contextmanager
def step_cache(pipeline: DiffusionPipeline, name: str, steps: int,
               mag_ratios: tuple[float, ...] = ()) -> Iterator[str]:
    """Step caching for one generation (fresh state per call); yields what was applied."""
    assert name in STEP_CACHES, name
    config = None if name == "none" else _cache_config(name, steps, mag_ratios)
    if config is None:
        yield "none" if name == "none" else f"none ({name} needs calibrated mag_ratios for this model)"
        return
    models = transformers_of(pipeline)
    for model in models:
        model.enable_cache(config)
    try:
        yield name
    finally:
        for model in models:
            model.disable_cache()
