"""MagCache calibration: the per-step magnitude ratios of a checkpoint's transformer residual, measured on
one generation, which MagCache needs before it can skip steps (they depend on the checkpoint)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch

from vidfactory.engines.base import GenerationRequest
from vidfactory.engines.speed import transformers_of
from vidfactory.engines.wan import WanEngine

__all__ = ["RATIO_EPSILON", "mag_ratios"]

RATIO_EPSILON = 1e-8  # as diffusers' MagCache calibration divides, so the two agree


class _Residuals:
    """Norms of (last block output − first block input) per token, per transformer call, in call order."""

    def __init__(self) -> None:
        self.block_input: torch.Tensor | None = None
        self.norms: list[torch.Tensor] = []

    def before_first_block(self, module: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        self.block_input = args[0] if args else kwargs["hidden_states"]

    def after_last_block(self, module: torch.nn.Module, args: tuple, output: Any) -> None:
        assert self.block_input is not None, "the last block ran before the first"
        hidden = output[0] if isinstance(output, tuple) else output
        self.norms.append(torch.linalg.norm((hidden - self.block_input).float(), dim=-1).cpu())


@contextmanager
def _recording(engine: WanEngine) -> Iterator[_Residuals]:
    residuals = _Residuals()
    with ExitStack() as stack:
        for model in transformers_of(engine.pipeline):
            first, last = model.blocks[0], model.blocks[-1]
            before = first.register_forward_pre_hook(residuals.before_first_block, with_kwargs=True)
            stack.callback(before.remove)
            stack.callback(last.register_forward_hook(residuals.after_last_block).remove)
        yield residuals


def mag_ratios(engine: WanEngine, request: GenerationRequest) -> tuple[float, ...]:
    """One generation of `request` with no step cache; returns one ratio per denoising step, the first 1.0:
    mean over tokens of ‖residual_t‖ / ‖residual_t−1‖ on the conditional branch (the Wan pipelines call
    the transformer for the prompt first, then for the negative prompt when guidance is on)."""
    # 1. Calibration must see every step computed.
    assert request.step_cache == "none", "calibrate with step caching off"
    # 2. Run once, recording the residual of each transformer call.
    with _recording(engine) as residuals:
        engine.generate(request, lambda done, total: None, lambda: False)
    steps = request.num_inference_steps
    calls_per_step, leftover = divmod(len(residuals.norms), steps)
    assert calls_per_step in (1, 2) and leftover == 0, f"{len(residuals.norms)} calls for {steps} steps"
    # 3. The conditional branch's ratios, step to step.
    conditional = residuals.norms[::calls_per_step]
    ratios = [1.0] + [float((current / (previous + RATIO_EPSILON)).mean())
                      for previous, current in zip(conditional, conditional[1:])]
    assert len(ratios) == steps
    return tuple(ratios)
