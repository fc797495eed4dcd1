"""Wan2.1-T2V-1.3B at true size with random weights: vanilla diffusers vs vidfactory's engine settings.

Builds the real architecture (transformer: 30 layers, 12 heads × 128, ffn 8960, text dim 4096; the real
Wan2.1 VAE; the real UMT5-XXL encoder) from configs with random weights — no download — and times
480×832, 81 frames, 50 steps, guidance 5.0, same seed, in one process:

    vanilla     bf16 transformer and text encoder, fp32 VAE, native attention, no compile (diffusers defaults)
    vidfactory  the same weights after engines.speed.apply_speed: attention backend (auto: flash3 → flash →
                sage → cudnn → native), regional torch.compile of the transformer blocks, FP8 weights
                (torchao, sm ≥ 8.9). No step caching (it changes the output).

First it times one attention call at the video's sequence length through every kernel available
(`--attention-only` stops there), so that the `auto` order can be checked against this GPU.

Reports seconds per video, seconds per denoising step, peak GPU memory, the relative difference of the
two outputs (‖a − b‖ / ‖a‖ over the decoded frames), and achieved TFLOP/s against the ≈ 28 PFLOP one
video costs (the model's own FLOP count is printed too). Each setting runs a short warm-up first, so the
timed run excludes compilation (its time is reported separately).

Needs only PyTorch and the project's wheels: `make gpu-wheels` puts them in .whl/ and
`bench/gpu_device.sh` installs them on a bare GPU host (no network) and runs this script. `--tiny` runs
the same comparison on the CPU with the tiny model (no speed-ups apply there: it checks the script, not
the speed).

    python bench/gpu_wan.py [--steps 50] [--frames 81] [--height 480] [--width 832] [--json out.json]
    python bench/gpu_wan.py --tiny
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
from transformers import UMT5Config, UMT5EncoderModel

from vidfactory.engines.presets import PRESETS, TINY, latent_tokens
from vidfactory.engines.speed import AUTO_ORDER, DIFFUSERS_BACKENDS, SpeedSettings, apply_speed
from vidfactory.engines.tiny import build_tiny_pipeline, build_tiny_tokenizer

VIDEO_FLOP = 28e15  # the figure for 480×832×81, 50 steps, guidance on
PROMPT = "A red fox runs through a snowy forest at dawn, cinematic lighting, slow motion"
NEGATIVE = "blurry, low quality, static frame"
SEED = 1234
WARMUP_STEPS = 2
ATTENTION_REPEATS = 10


@dataclass
class Run:
    setting: str
    applied: dict
    warmup_s: float
    video_s: float
    step_s: float
    peak_memory_gib: float


def true_size_pipeline(device: torch.device) -> WanPipeline:
    """Wan2.1-T2V-1.3B's architecture with random weights, made directly on the device."""
    p = PRESETS["wan2.1-t2v-1.3b"]
    t = p.transformer
    torch.manual_seed(0)
    with torch.device(device):
        transformer = WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=t.num_attention_heads, attention_head_dim=t.attention_head_dim,
            in_channels=p.vae.z_dim, out_channels=p.vae.z_dim, text_dim=t.text_dim, freq_dim=t.freq_dim,
            ffn_dim=t.ffn_dim, num_layers=t.num_layers).to(torch.bfloat16)
        vae = AutoencoderKLWan().to(torch.float32)
        text_encoder = UMT5EncoderModel(UMT5Config(
            vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
            feed_forward_proj="gated-gelu", relative_attention_num_buckets=32, dropout_rate=0.0,
            is_encoder_decoder=False, tie_word_embeddings=False)).to(torch.bfloat16)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        flow_shift=p.flow_shift)
    pipeline = WanPipeline(tokenizer=build_tiny_tokenizer(), text_encoder=text_encoder, vae=vae,
                           scheduler=scheduler, transformer=transformer)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def tiny_pipeline() -> WanPipeline:
    pipeline = build_tiny_pipeline(TINY)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def generate(pipeline: WanPipeline, args, device: torch.device, steps: int) -> tuple[np.ndarray, float, list[float]]:
    step_ends: list[float] = []

    def on_step(pipe, index, timestep, kwargs):
        synchronize(device)
        step_ends.append(time.perf_counter())
        return {}

    synchronize(device)
    started = time.perf_counter()
    frames = pipeline(prompt=PROMPT, negative_prompt=NEGATIVE, height=args.height, width=args.width,
                      num_frames=args.frames, num_inference_steps=steps, guidance_scale=5.0,
                      generator=torch.Generator("cpu").manual_seed(SEED), output_type="np",
                      callback_on_step_end=on_step).frames[0]
    synchronize(device)
    return frames, time.perf_counter() - started, step_ends


def timed(pipeline: WanPipeline, setting: str, applied: dict, args, device: torch.device) -> tuple[Run, np.ndarray]:
    warm_started = time.perf_counter()
    generate(pipeline, args, device, WARMUP_STEPS)  # compiles, autotunes, fills allocator caches
    warmup_s = time.perf_counter() - warm_started
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    frames, video_s, step_ends = generate(pipeline, args, device, args.steps)
    gaps = np.diff(step_ends)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    run = Run(setting=setting, applied=applied, warmup_s=round(warmup_s, 2), video_s=round(video_s, 2),
              step_s=round(float(np.median(gaps)) if len(gaps) else video_s, 4), peak_memory_gib=round(peak, 2))
    return run, frames


def model_flop(args) -> float:
    """2·params·tokens for the linear layers + 4·tokens²·dim per layer for attention; ×2 with guidance."""
    p = TINY if args.tiny else PRESETS["wan2.1-t2v-1.3b"]
    tokens = latent_tokens(p, args.width, args.height, args.frames)
    t = p.transformer
    per_forward = 2 * t.params * tokens + 4 * tokens**2 * t.dim * t.num_layers
    return per_forward * 2 * args.steps


def attention_sweep(args, device: torch.device) -> list[dict]:
    """One attention call at this video's true shape through each kernel diffusers can dispatch to here:
    which backend `auto` should prefer on this GPU, measured rather than assumed."""
    from diffusers.models.attention_dispatch import dispatch_attention_fn

    p = TINY if args.tiny else PRESETS["wan2.1-t2v-1.3b"]
    t = p.transformer
    tokens = latent_tokens(p, args.width, args.height, args.frames)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    generator = torch.Generator(device).manual_seed(SEED)
    q, k, v = (torch.randn(1, tokens, t.num_attention_heads, t.attention_head_dim, device=device, dtype=dtype,
                           generator=generator) for _ in range(3))
    reference = None
    rows = []
    for name in ("native", *AUTO_ORDER):
        try:
            call = lambda: dispatch_attention_fn(q, k, v, backend=DIFFUSERS_BACKENDS[name])  # noqa: E731
            out = call()  # the first call also loads or compiles the kernel
            synchronize(device)
        except (RuntimeError, ImportError, ValueError, TypeError) as exc:
            rows.append({"backend": name, "ms": None, "note": str(exc).splitlines()[0][:120]})
            continue
        started = time.perf_counter()
        for _ in range(ATTENTION_REPEATS):
            call()
        synchronize(device)
        ms = (time.perf_counter() - started) / ATTENTION_REPEATS * 1e3
        reference = out if reference is None else reference
        difference = float((out.float() - reference.float()).norm() / reference.float().norm())
        rows.append({"backend": name, "ms": round(ms, 3), "note": f"relative difference {difference:.2g}"})
    return rows


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return float(np.linalg.norm(a64 - b64) / max(np.linalg.norm(a64), 1e-12))


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return f"{name}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    return f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), no GPU, torch {torch.__version__}"


def shape_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options every GPU bench script takes: the video's shape, --tiny and --json."""
    parser.add_argument("--tiny", action="store_true", help="the tiny model on the CPU (checks the script)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--frames", type=int, default=None)
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--json", default=None, help="also write the results here")
    return parser


def with_shape_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Unset shape options take the true-size video's values (the tiny model's with --tiny)."""
    defaults = (64, 64, 9, 4) if args.tiny else (480, 832, 81, 50)
    args.height, args.width, args.frames, args.steps = (
        given if given is not None else default
        for given, default in zip((args.height, args.width, args.frames, args.steps), defaults))
    return args


def main() -> None:
    parser = shape_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--attention-only", action="store_true",
                        help="only time one attention call per kernel at the video's shape (seconds, not minutes)")
    args = with_shape_defaults(parser.parse_args())

    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    if not args.tiny and device.type != "cuda":
        raise SystemExit("no CUDA device: run with --tiny on a CPU")
    # 1. which attention kernel is fastest here, at this video's sequence length
    sweep = attention_sweep(args, device)
    print("| attention backend | ms per call | note |\n|---|---|---|")
    for row in sweep:
        print(f"| {row['backend']} | {row['ms']} | {row['note']} |")
    if args.attention_only:
        return
    # 2. one set of random weights for both settings
    pipeline = tiny_pipeline() if args.tiny else true_size_pipeline(device)
    # 3. vanilla: diffusers as loaded
    vanilla, vanilla_frames = timed(pipeline, "vanilla diffusers", {"attention_backend": "native"}, args, device)
    # 4. vidfactory: the engine's speed settings on the same weights (FP8 quantizes them in place)
    applied = apply_speed(pipeline, SpeedSettings(attention_backend="auto", compile_transformer=True,
                                                  fp8_weights=True), device)
    fast, fast_frames = timed(pipeline, "vidfactory", applied, args, device)

    flop = model_flop(args)
    result = {
        "machine": describe(device), "date": time.strftime("%Y-%m-%d"),
        "shape": f"{args.width}x{args.height}, {args.frames} frames, {args.steps} steps, guidance 5.0",
        "model": "wan-tiny (random)" if args.tiny else "Wan2.1-T2V-1.3B architecture (random weights)",
        "runs": [asdict(vanilla), asdict(fast)],
        "speedup": round(vanilla.video_s / fast.video_s, 3),
        "step_speedup": round(vanilla.step_s / fast.step_s, 3),
        "relative_difference": relative_difference(vanilla_frames, fast_frames),
        "model_pflop": round(flop / 1e15, 6),
        # The 28 PFLOP figure is the full-size video's: meaningless for the tiny model.
        "tflops_vs_28_pflop": {r.setting: None if args.tiny else round(VIDEO_FLOP / r.video_s / 1e12, 1)
                               for r in (vanilla, fast)},
        "model_tflops": {r.setting: round(flop / r.video_s / 1e12, 6) for r in (vanilla, fast)},
        "attention_sweep": sweep,
        "nonfinite_frames": bool(not np.isfinite(vanilla_frames).all() or not np.isfinite(fast_frames).all()),
    }
    print(f"# gpu_wan — {result['machine']}, {result['date']}, {result['model']}, {result['shape']}")
    print("| setting | s/video | s/step | peak GiB | warm-up s | TFLOP/s (28 PFLOP) | TFLOP/s (model count) | applied |")
    print("|---|---|---|---|---|---|---|---|")
    for run in (vanilla, fast):
        print(f"| {run.setting} | {run.video_s} | {run.step_s} | {run.peak_memory_gib} | {run.warmup_s} | "
              f"{result['tflops_vs_28_pflop'][run.setting]} | {result['model_tflops'][run.setting]} | "
              f"{run.applied} |")
    print(f"speed-up {result['speedup']}× per video, {result['step_speedup']}× per step; relative difference "
          f"{result['relative_difference']:.3g}; model FLOP {result['model_pflop']} PFLOP")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=2)


if __name__ == "__main__":
    main()
