"""Run under torchrun: every rank builds the Wan engine on its share of the devices and generates the
same request; rank 0 saves the frames. Used by test_parallel.py."""

import sys

import numpy as np

from vidfactory.engines.base import GenerationRequest
from vidfactory.engines.parallel import DevicePlan, end_process, leave_group
from vidfactory.engines.wan import WanEngine

model_dir, out_path = sys.argv[1], sys.argv[2]
plan = DevicePlan.from_environment()
engine = WanEngine("wan-tiny", model_dir, devices=plan)
request = GenerationRequest(prompt="a red fox running through snow", negative_prompt="", width=64, height=64,
                            num_frames=9, num_inference_steps=2, guidance_scale=5.0, seed=11, fps=8)
video = engine.generate(request, lambda step, total: None, lambda: False)
if plan.is_leader:
    np.save(out_path, video.frames)
    print("settings", video.engine_settings, flush=True)
leave_group()
end_process(0)
