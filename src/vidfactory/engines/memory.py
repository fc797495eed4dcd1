"""GPU-memory planner: the estimated peak memory of one generation, per preset, shape and memory mode.

An estimate, deliberately simple and pinned by tests so that a change to it is a decision:

    peak = runtime overhead + the largest of the phases that are on the device at once
    denoise activations  = latent tokens × (ffn_dim + 8 × dim) × 2 bytes (bf16; cond and uncond run
                           one after the other, so one pass is live at a time)
    decode activations   = 4 frames (one latent frame) × pixels × decoder channels per pixel × 4 bytes
                           × 6 live tensors (fp32 VAE; Wan decodes frame by frame with a feature cache)
                           + the decoded clip F × pixels × 3 × 4 bytes
    weights              = transformer(s) and text encoder in bf16, VAE in fp32

On a worker spanning N devices (context parallelism, engines/parallel.py) every figure is per device:
each device holds all the weights and decodes the whole clip, and denoises 1/N of the latent tokens.

Memory modes, from the fastest to the most frugal; each one keeps the savings of the modes before it:
    none               everything resident
    vae_tiling         the VAE decodes 256x256-pixel tiles
    model_cpu_offload  one whole component on the device at a time (+ tiling)
    group_offload      transformer and text encoder stream two blocks at a time (+ tiling)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from vidfactory.engines.presets import WanPreset, latent_tokens

__all__ = [
    "MEMORY_MODES",
    "MemoryEstimate",
    "estimate",
    "free_accelerator_cache",
    "frugal_peak_bytes",
    "mode_that_fits",
    "next_memory_mode",
    "probe_device",
]

MEMORY_MODES = ("none", "vae_tiling", "model_cpu_offload", "group_offload")
GIB = 1024**3
RUNTIME_OVERHEAD_BYTES = GIB  # CUDA context, cuBLAS workspaces, allocator fragmentation
BF16_BYTES = 2
FP32_BYTES = 4
DECODE_LIVE_TENSORS = 6
DECODE_FRAMES_PER_CHUNK = 4  # one latent frame decodes to 4 frames
TILE_PX = 256 * 256  # diffusers' AutoencoderKLWan tile_sample_min_height × _width
GROUP_BLOCKS_RESIDENT = 2  # the block running and the one being prefetched
TEXT_ENCODER_LAYERS = 24  # UMT5-XXL


@dataclass(frozen=True)
class MemoryEstimate:
    mode: str
    latent_tokens: int
    weights_bytes: int  # all weights, wherever they live
    peak_bytes: int  # on the device, at the worst moment


def _denoise_bytes(p: WanPreset, tokens: int) -> int:
    t = p.transformer
    return tokens * (t.ffn_dim + 8 * t.dim) * BF16_BYTES


def _decode_bytes(p: WanPreset, width: int, height: int, num_frames: int, tiled: bool) -> int:
    pixels = width * height
    working = min(pixels, TILE_PX) if tiled else pixels
    activations = DECODE_FRAMES_PER_CHUNK * working * p.vae.decode_channels_per_px * FP32_BYTES
    return activations * DECODE_LIVE_TENSORS + num_frames * pixels * 3 * FP32_BYTES


def estimate(p: WanPreset, width: int, height: int, num_frames: int, mode: str, devices: int = 1
             ) -> MemoryEstimate:
    if mode not in MEMORY_MODES:
        raise ValueError(f"unknown memory mode {mode!r}; known: {', '.join(MEMORY_MODES)}")
    assert width > 0 and height > 0 and num_frames >= 1 and devices >= 1
    tokens = -(-latent_tokens(p, width, height, num_frames) // devices)  # this device's share
    expert = p.transformer.params * BF16_BYTES
    text = p.text_encoder_params * BF16_BYTES
    vae = p.vae.params * FP32_BYTES
    denoise = _denoise_bytes(p, tokens)
    decode = _decode_bytes(p, width, height, num_frames, tiled=mode != "none")
    weights = expert * p.experts + text + vae
    if mode in ("none", "vae_tiling"):
        phases = weights + max(denoise, decode)
    elif mode == "model_cpu_offload":
        phases = max(text, expert + denoise, vae + decode)
    else:
        streamed_expert = expert * GROUP_BLOCKS_RESIDENT // p.transformer.num_layers
        streamed_text = text * GROUP_BLOCKS_RESIDENT // TEXT_ENCODER_LAYERS
        phases = max(streamed_text, streamed_expert + denoise, vae + decode)
    return MemoryEstimate(mode=mode, latent_tokens=tokens, weights_bytes=weights,
                          peak_bytes=RUNTIME_OVERHEAD_BYTES + phases)


def frugal_peak_bytes(p: WanPreset, width: int, height: int, num_frames: int, devices: int = 1) -> int:
    """The least memory per device any mode needs: a worker whose devices have less can never run it."""
    return estimate(p, width, height, num_frames, MEMORY_MODES[-1], devices).peak_bytes


def mode_that_fits(p: WanPreset, width: int, height: int, num_frames: int, memory_bytes: int,
                   *, at_least: str = MEMORY_MODES[0], devices: int = 1) -> str | None:
    """The fastest mode, no faster than `at_least`, whose per-device estimate fits in `memory_bytes`
    (each device's memory); None if none."""
    start = MEMORY_MODES.index(at_least)
    for mode in MEMORY_MODES[start:]:
        if estimate(p, width, height, num_frames, mode, devices).peak_bytes <= memory_bytes:
            return mode
    return None


def next_memory_mode(mode: str) -> str | None:
    """The next more frugal mode (what an out-of-memory retry uses), None after the last."""
    index = MEMORY_MODES.index(mode)
    return MEMORY_MODES[index + 1] if index + 1 < len(MEMORY_MODES) else None


def probe_device() -> tuple[str, int, int]:
    """(name, total bytes, free bytes) of the device this process generates on: the GPU, else host memory."""
    import torch  # here: the planner's arithmetic above is imported by the API, which never loads torch

    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        return torch.cuda.get_device_name(), total, free
    page = os.sysconf("SC_PAGE_SIZE")
    return "cpu", os.sysconf("SC_PHYS_PAGES") * page, os.sysconf("SC_AVPHYS_PAGES") * page


def free_accelerator_cache() -> None:
    """Return an unloaded model's cached blocks to the device, so that the next model can use them."""
    import torch  # here, as in probe_device

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
