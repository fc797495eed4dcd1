"""Synthetic LoRA adapters for the tiny Wan transformer, in the layouts users upload: PEFT/diffusers keys
made with peft itself, and the community Wan layouts diffusers converts (`diffusion_model.` keys with
lora_A/lora_B, or lora_down/lora_up and an alpha)."""

from __future__ import annotations

import functools
import io

import torch
from safetensors.torch import save

from vidfactory.engines.tiny import build_tiny_pipeline

__all__ = ["community_adapter", "peft_adapter", "pickled", "targets"]

targets = ("to_q", "to_k", "to_v", "to_out.0")
community_names = {"to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "o"}


@functools.lru_cache(maxsize=16)
def _pairs(seed: int, rank: int, magnitude: float) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """module -> (A [rank, in], B [out, rank]) for every attention projection of the tiny transformer,
    drawn with peft from a fresh model (B random too, so the adapter changes the output)."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    transformer = build_tiny_pipeline().transformer
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=list(targets),
                                           init_lora_weights=False), adapter_name="made")
    state = get_peft_model_state_dict(transformer, adapter_name="made")
    modules = sorted({key.rsplit(".lora_", 1)[0] for key in state})
    return {m: (state[f"{m}.lora_A.weight"] * magnitude, state[f"{m}.lora_B.weight"] * magnitude) for m in modules}


def peft_adapter(seed: int = 1, rank: int = 4, magnitude: float = 1.0) -> bytes:
    """The diffusers/PEFT layout: transformer.blocks.0.attn1.to_q.lora_A.weight ..."""
    tensors = {}
    for module, (down, up) in _pairs(seed, rank, magnitude).items():
        tensors[f"transformer.{module}.lora_A.weight"] = down.contiguous()
        tensors[f"transformer.{module}.lora_B.weight"] = up.contiguous()
    return save(tensors)


def community_adapter(seed: int = 1, rank: int = 4, magnitude: float = 1.0, *, down_up: bool = True) -> bytes:
    """A Wan community layout: diffusion_model.blocks.0.self_attn.q.lora_down.weight + alpha (or lora_A/B)."""
    tensors = {}
    for module, (down, up) in _pairs(seed, rank, magnitude).items():
        block, attention, target = module.split(".", 2)[1], module.split(".")[2], module.split(".", 3)[3]
        prefix = f"diffusion_model.blocks.{block}.{'self_attn' if attention == 'attn1' else 'cross_attn'}." \
                 f"{community_names[target]}"
        names = ("lora_down", "lora_up") if down_up else ("lora_A", "lora_B")
        tensors[f"{prefix}.{names[0]}.weight"] = down.contiguous()
        tensors[f"{prefix}.{names[1]}.weight"] = up.contiguous()
        if down_up:
            tensors[f"{prefix}.alpha"] = torch.tensor(float(rank))
    return save(tensors)


def pickled() -> bytes:
    """What torch.save writes: a zip of pickles (never loaded by the platform)."""
    buffer = io.BytesIO()
    torch.save({"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.zeros(4, 32)}, buffer)
    return buffer.getvalue()
