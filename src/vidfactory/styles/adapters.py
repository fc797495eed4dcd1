"""An uploaded LoRA adapter, checked before anything is stored: a safetensors file (never a pickle), in a
layout diffusers' Wan LoRA loader reads, whose every module exists in the base model with matching shapes.

The checks convert the adapter with diffusers' own Wan conversion (`WanPipeline.lora_state_dict`: the
community `diffusion_model.` layouts with `lora_A/lora_B` or `lora_down/lora_up` + `alpha`, and musubi's
`lora_unet_` one), so what is accepted is exactly what the worker's `load_lora_weights` loads. The base
model's module shapes are built from its preset on the meta device: no weights are read.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError

from vidfactory.engines.presets import WanPreset, preset
from vidfactory.styles.errors import InvalidAdapter

if TYPE_CHECKING:  # torch itself loads only when an adapter arrives: the API's start goes without it
    import torch

__all__ = ["Adapter", "base_modules", "check_adapter", "expert_parts", "read_header", "second_expert_prefix"]

header_length_bytes = 8  # safetensors: a little-endian u64, then that many bytes of JSON
header_bytes_max = 100_000_000  # the safetensors format's own ceiling
float_dtypes = frozenset({"F16", "BF16", "F32"})
# A zip archive (torch.save since 1.6) or a raw pickle stream (protocol 2+ starts with 0x80).
pickle_signatures = (b"PK\x03\x04", b"\x80")
# A two-expert model's adapter may carry the low-noise expert's own weights under this prefix (the rest
# adapts the high-noise one); without any, the same weights adapt both experts.
second_expert_prefix = "transformer_2."
lora_key = re.compile(r"^transformer\.(?P<module>.+)\.(?P<part>lora_A\.weight|lora_B\.weight|lora_B\.bias)$")


@dataclass(frozen=True)
class Adapter:
    sha256: str
    size_bytes: int
    rank: int  # the largest rank of any module it adapts
    modules: int  # how many of the base model's layers it adapts
    layout: str  # diffusers (PEFT keys) | wan (community keys diffusers converts)


def check_adapter(data: bytes, base: WanPreset, *, bytes_max: int, rank_max: int) -> Adapter:
    """The adapter's identity, or InvalidAdapter saying precisely what is wrong with it."""
    # 1. Size first: nothing larger is even parsed.
    if len(data) > bytes_max:
        raise InvalidAdapter(f"the adapter is {len(data)} bytes; at most {bytes_max} are accepted",
                             code="adapter_too_large")
    # 2. A safetensors header whose tensors exactly fill the file (no pickle is ever unpickled).
    read_header(data)
    # 3. Tensors, then the keys diffusers' Wan loader would load.
    from safetensors.torch import load as load_safetensors

    try:
        tensors = load_safetensors(data)
    except SafetensorError as exc:
        raise InvalidAdapter(f"the safetensors file is corrupt: {exc}") from exc
    high, low = expert_parts(tensors)
    if low and base.experts == 1:
        raise InvalidAdapter(f"the adapter has weights for a second expert ({second_expert_prefix}...) but "
                             f"{base.id} has one transformer", code="adapter_base_mismatch")
    layout = "diffusers" if all(key.startswith("transformer.") for key in {**high, **low}) else "wan"
    # 4. Every module of each expert's part exists in the base model, with shapes that fit it (both experts
    # of a two-expert model have the same layers); the rank within the limit.
    rank, modules = 0, 0
    for part in (high, low):
        if part:
            part_rank, part_modules = _check_shapes(_as_diffusers(part), base)
            rank, modules = max(rank, part_rank), modules + part_modules
    if rank > rank_max:
        raise InvalidAdapter(f"the adapter's rank is {rank}; at most {rank_max} is accepted", code="rank_too_large")
    return Adapter(sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data), rank=rank, modules=modules,
                   layout=layout)


def expert_parts(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(the first expert's tensors, the second expert's renamed as the first's: `transformer.` keys; empty
    when the adapter has none of its own)."""
    low = {f"transformer.{key[len(second_expert_prefix):]}": tensor for key, tensor in tensors.items()
           if key.startswith(second_expert_prefix)}
    high = {key: tensor for key, tensor in tensors.items() if not key.startswith(second_expert_prefix)}
    return high, low


def read_header(data: bytes) -> dict[str, Any]:
    """The safetensors header (tensor name -> dtype, shape, offsets), checked to describe the whole file."""
    if data.startswith(pickle_signatures):
        raise InvalidAdapter("the file is a pickled checkpoint (torch.save, .pt/.bin/.ckpt): loading one runs "
                             "code, so only safetensors is accepted; convert it with safetensors.torch.save_file",
                             code="not_safetensors")
    if len(data) < header_length_bytes:
        raise InvalidAdapter("the file is not safetensors: too short for a header", code="not_safetensors")
    length = int.from_bytes(data[:header_length_bytes], "little")
    if not 2 <= length <= min(len(data) - header_length_bytes, header_bytes_max):
        raise InvalidAdapter(f"the file is not safetensors: its header length ({length}) does not fit the file "
                             f"({len(data)} bytes)", code="not_safetensors")
    try:
        header = json.loads(data[header_length_bytes:header_length_bytes + length])
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidAdapter(f"the file is not safetensors: its header is not JSON ({exc})",
                             code="not_safetensors") from exc
    if not isinstance(header, dict):
        raise InvalidAdapter("the file is not safetensors: its header is not a JSON object", code="not_safetensors")
    _check_entries(header, len(data) - header_length_bytes - length)
    return header


def _check_entries(header: dict[str, Any], buffer_bytes: int) -> None:
    tensors = {name: entry for name, entry in header.items() if name != "__metadata__"}
    if not tensors:
        raise InvalidAdapter("the adapter holds no tensors")
    end = 0
    for name, entry in sorted(tensors.items(), key=lambda item: _offsets(item[0], item[1])):
        dtype = entry.get("dtype")
        if dtype not in float_dtypes:
            raise InvalidAdapter(f"tensor {name!r} is {dtype}; LoRA weights are {', '.join(sorted(float_dtypes))}")
        start, stop = _offsets(name, entry)
        if start != end:
            raise InvalidAdapter(f"tensor {name!r} does not follow the previous one in the file (offset {start}, "
                                 f"expected {end})")
        end = stop
    if end != buffer_bytes:
        raise InvalidAdapter(f"the tensors take {end} bytes but the file holds {buffer_bytes} after its header")


def _offsets(name: str, entry: Any) -> tuple[int, int]:
    offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(x, int) for x in offsets)
            or not 0 <= offsets[0] <= offsets[1]):
        raise InvalidAdapter(f"tensor {name!r} has no valid data_offsets in the header")
    return offsets[0], offsets[1]


def _as_diffusers(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The adapter as diffusers' Wan loader sees it after its own key conversions."""
    from diffusers import WanPipeline  # the API process needs it only when an adapter arrives

    try:
        state = WanPipeline.lora_state_dict(dict(tensors))
    except (ValueError, KeyError, IndexError, RuntimeError, AttributeError) as exc:
        raise InvalidAdapter(f"diffusers' Wan LoRA loader cannot read this layout ({type(exc).__name__}: {exc}); "
                             f"send keys like transformer.blocks.0.attn1.to_q.lora_A.weight or "
                             f"diffusion_model.blocks.0.self_attn.q.lora_down.weight") from exc
    if not state:
        raise InvalidAdapter("the adapter holds no LoRA weights diffusers' Wan loader would load")
    return state


def _check_shapes(state: dict[str, torch.Tensor], base: WanPreset) -> tuple[int, int]:
    """(rank, modules adapted): every key a LoRA part of a linear layer of `base` with fitting shapes."""
    linear = base_modules(base.id)
    parts: dict[str, dict[str, torch.Size]] = {}
    for key, tensor in state.items():
        match = lora_key.match(key)
        if match is None:
            raise InvalidAdapter(f"key {key!r} is not a LoRA weight of the transformer (expected "
                                 f"transformer.<module>.lora_A.weight / lora_B.weight / lora_B.bias)")
        parts.setdefault(match["module"], {})[match["part"]] = tensor.shape
    rank = 0
    for module, shapes in sorted(parts.items()):
        if module not in linear:
            raise InvalidAdapter(f"{module!r} is not a linear layer of {base.id} ({_layers_hint(linear)})",
                                 code="adapter_base_mismatch")
        rank = max(rank, _check_module(module, shapes, linear[module], base))
    return rank, len(parts)


def _check_module(module: str, shapes: dict[str, torch.Size], weight: tuple[int, int], base: WanPreset) -> int:
    out_features, in_features = weight
    down, up = shapes.get("lora_A.weight"), shapes.get("lora_B.weight")
    if down is None or up is None:
        raise InvalidAdapter(f"{module!r} has {'lora_B' if down is None else 'lora_A'} without its "
                             f"{'lora_A' if down is None else 'lora_B'}")
    if len(down) != 2 or len(up) != 2 or down[0] != up[1] or down[0] < 1:
        raise InvalidAdapter(f"{module!r}: lora_A {list(down)} and lora_B {list(up)} are not a low-rank pair")
    bias = shapes.get("lora_B.bias")
    if down[1] != in_features or up[0] != out_features or (bias is not None and list(bias) != [out_features]):
        raise InvalidAdapter(f"{module!r}: lora_A {list(down)} / lora_B {list(up)} do not fit {base.id}'s layer "
                             f"({in_features} in, {out_features} out): the adapter was made for another base "
                             f"model", code="adapter_base_mismatch")
    return int(down[0])


def _layers_hint(linear: dict[str, tuple[int, int]]) -> str:
    blocks = sum(1 for name in linear if name.endswith(".attn1.to_q"))
    return f"it has {blocks} blocks, e.g. blocks.0.attn1.to_q"


@functools.lru_cache(maxsize=8)
def base_modules(preset_id: str) -> dict[str, tuple[int, int]]:
    """The base transformer's linear layers (name -> weight shape [out, in]), built on the meta device."""
    import torch
    from diffusers import WanTransformer3DModel

    p = preset(preset_id)
    t = p.transformer
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        model = WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=t.num_attention_heads, attention_head_dim=t.attention_head_dim,
            in_channels=p.vae.z_dim, out_channels=p.vae.z_dim, text_dim=t.text_dim, freq_dim=t.freq_dim,
            ffn_dim=t.ffn_dim, num_layers=t.num_layers)
    return {name: (module.out_features, module.in_features) for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear)}
