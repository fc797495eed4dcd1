"""LoRA style training step time on the tiny Wan model (CPU), beside one inference forward at the same shape.

A training step is one transformer forward + backward through the LoRA layers + an AdamW update; the ratio to
a plain forward (no_grad, the same latents and caption) is what training costs per step over generating.
Times come from the trainer's own progress callback (`engines/lora_training.py`); the first steps are warm-up.

    python bench/training.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from common import git_revision, machine, sized  # noqa: E402
from vidfactory.engines.lora_training import TrainingSample, settings_for, train_lora  # noqa: E402
from vidfactory.engines.presets import TINY  # noqa: E402
from vidfactory.engines.tiny import build_tiny_pipeline  # noqa: E402

SHAPES = sized([(32, 5), (64, 17), (128, 17)], [(32, 5)])  # (side px, frames)
STEPS = sized(60, 6)
WARMUP = sized(10, 2)
CAPTION = "a clip in the house style"
FORWARDS = sized(30, 3)


def samples(side: int, frames: int) -> list[TrainingSample]:
    rng = np.random.default_rng(0)
    return [TrainingSample(rng.integers(0, 255, (frames, side, side, 3), dtype=np.uint8), CAPTION)
            for _ in range(4)]


def step_times(pipeline, side: int, frames: int) -> tuple[float, float]:
    """(median seconds per training step after warm-up, seconds to encode the dataset and reach step 1)."""
    stamps: list[float] = []
    settings = settings_for(TINY.training, TINY.flow_shift, steps=STEPS, buckets=((side, side),),
                            num_frames=frames, checkpoint_every=STEPS)
    started = time.perf_counter()
    train_lora(pipeline, samples(side, frames), settings, lambda *_: stamps.append(time.perf_counter()),
               lambda: False, lambda *_: None)
    gaps = [b - a for a, b in zip(stamps[WARMUP:], stamps[WARMUP + 1:])]
    return statistics.median(gaps), stamps[0] - started


def forward_time(pipeline, side: int, frames: int) -> float:
    transformer = pipeline.transformer
    latent = torch.randn(1, TINY.vae.z_dim, (frames - 1) // 4 + 1, side // 8, side // 8)
    text, _ = pipeline.encode_prompt(CAPTION, do_classifier_free_guidance=False, max_sequence_length=226)
    timestep = torch.tensor([500.0])
    times = []
    with torch.no_grad():
        for _ in range(FORWARDS):
            started = time.perf_counter()
            transformer(hidden_states=latent, timestep=timestep, encoder_hidden_states=text, return_dict=False)
            times.append(time.perf_counter() - started)
    return statistics.median(times[1:] or times)


def main() -> None:
    pipeline = build_tiny_pipeline()
    pipeline.set_progress_bar_config(disable=True)
    print(f"# LoRA training step, wan-tiny — {machine()}, commit {git_revision()}, torch threads "
          f"{torch.get_num_threads()}, rank {TINY.training.rank}, {STEPS} steps (median after {WARMUP})\n")
    print("| clip | training step ms (median) | inference forward ms (median) | step ÷ forward | "
          "encode + first step s |")
    print("|---|---|---|---|---|")
    for side, frames in SHAPES:
        step_s, first_s = step_times(pipeline, side, frames)
        forward_s = forward_time(pipeline, side, frames)
        print(f"| {side}×{side}, {frames} frames | {step_s * 1e3:.1f} | {forward_s * 1e3:.1f} | "
              f"{step_s / forward_s:.2f}× | {first_s:.2f} |")


if __name__ == "__main__":
    main()
