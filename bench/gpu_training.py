"""LoRA style training step time for Wan2.1-T2V-1.3B at true size with random weights, on one GPU.

The architecture of bench/gpu_wan.py (bf16 transformer and text encoder, fp32 VAE, no download) trained by
`engines/lora_training.py` with the preset's defaults (rank, learning rate, gradient checkpointing, the
832×480 bucket, 33 frames): seconds per step after warm-up, the time to encode the dataset, and peak GPU
memory. `--tiny` runs the same script on the CPU with the tiny model (it checks the script, not the speed).
Run on a GPU host through bench/gpu_device.sh's wheel set:

    python bench/gpu_training.py [--steps 20] [--json out.json]
    python bench/gpu_training.py --tiny
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from gpu_wan import describe, tiny_pipeline, true_size_pipeline  # noqa: E402
from vidfactory.engines.lora_training import TrainingSample, settings_for, train_lora  # noqa: E402
from vidfactory.engines.presets import PRESETS, TINY  # noqa: E402

WARMUP = 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="the tiny model on the CPU (checks the script)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    if not args.tiny and device.type != "cuda":
        raise SystemExit("no CUDA device: run with --tiny on a CPU")
    preset = TINY if args.tiny else PRESETS["wan2.1-t2v-1.3b"]
    pipeline = tiny_pipeline() if args.tiny else true_size_pipeline(device)
    steps = args.steps or (8 if args.tiny else 20)
    settings = settings_for(preset.training, preset.flow_shift, steps=steps, checkpoint_every=steps)
    width, height = settings.buckets[0]
    rng = np.random.default_rng(0)
    samples = [TrainingSample(rng.integers(0, 255, (settings.num_frames, height, width, 3), dtype=np.uint8),
                              "a clip in the house style") for _ in range(2)]

    stamps: list[float] = []

    def on_step(*_: object) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        stamps.append(time.perf_counter())

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    result = train_lora(pipeline, samples, settings, on_step, lambda: False, lambda *_: None)
    gaps = [b - a for a, b in zip(stamps[WARMUP:], stamps[WARMUP + 1:])] or [stamps[-1] - started]
    report = {
        "device": describe(device), "preset": preset.id, "rank": settings.rank, "steps": steps,
        "clip": f"{width}x{height}x{settings.num_frames}", "step_s": statistics.median(gaps),
        "encode_and_first_step_s": stamps[0] - started, "first_loss": result.losses[0],
        "last_loss": result.losses[-1],
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0,
    }
    print("| device | preset | clip | rank | s per step (median) | encode + first step s | peak GiB |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {report['device']} | {preset.id} | {report['clip']} | {settings.rank} | "
          f"{report['step_s']:.3f} | {report['encode_and_first_step_s']:.2f} | {report['peak_memory_gib']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
