"""One video on 1 device vs the same video split across N devices (diffusers' Ulysses context parallelism).

Launched by torchrun on a host with N GPUs:

    torchrun --nproc_per_node=2 bench/gpu_parallel.py [--steps 50] [--json out.json]
    torchrun --nproc_per_node=2 bench/gpu_parallel.py --tiny      # the tiny model on CPUs (gloo): checks the script

Every rank builds Wan2.1-T2V-1.3B's architecture with the same random weights (bench/gpu_wan.py), rank 0
first times the video alone (the others wait), then all ranks time it together with the sequence split
across them. Reports seconds per video and per step, peak memory per device, the speed-up and the relative
difference of the two outputs. `bench/gpu_parallel_device.sh` runs it in one device call.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.distributed as dist

from gpu_wan import (describe, relative_difference, shape_arguments, timed, tiny_pipeline, true_size_pipeline,
                     with_shape_defaults)
from vidfactory.engines.parallel import DevicePlan, enable_context_parallel, end_process, join_group, leave_group


def main() -> None:
    args = with_shape_defaults(shape_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
                               .parse_args())
    plan = DevicePlan.from_environment()
    if not plan.parallel:
        raise SystemExit("run under torchrun with --nproc_per_node >= 2")
    join_group(plan)
    device = torch.device("cpu") if args.tiny else plan.device()
    # 1. the same random weights on every rank
    torch.manual_seed(0)
    pipeline = tiny_pipeline() if args.tiny else true_size_pipeline(device)
    # 2. one device alone, the others waiting
    single = single_frames = None
    if plan.is_leader:
        single, single_frames = timed(pipeline, "1 device", {}, args, device)
    dist.barrier()
    # 3. all devices on the same video
    enable_context_parallel(pipeline, plan)
    split, split_frames = timed(pipeline, f"{plan.world_size} devices (Ulysses)", {}, args, device)
    if plan.is_leader:
        report(args, device, plan, single, split, relative_difference(single_frames, split_frames))
    leave_group()
    end_process(0)


def report(args, device, plan: DevicePlan, single, split, difference: float) -> None:
    result = {"machine": describe(device), "date": time.strftime("%Y-%m-%d"), "devices": plan.world_size,
              "shape": f"{args.width}x{args.height}, {args.frames} frames, {args.steps} steps, guidance 5.0",
              "runs": [vars(single), vars(split)], "speedup": round(single.video_s / split.video_s, 3),
              "relative_difference": difference}
    print(f"# gpu_parallel — {result['machine']}, {result['date']}, {result['shape']}")
    print("| setting | s/video | s/step | peak GiB per device |\n|---|---|---|---|")
    for run in (single, split):
        print(f"| {run.setting} | {run.video_s} | {run.step_s} | {run.peak_memory_gib} |")
    print(f"speed-up {result['speedup']}× on {plan.world_size} devices; relative difference {difference:.3g}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=2)


if __name__ == "__main__":
    main()
