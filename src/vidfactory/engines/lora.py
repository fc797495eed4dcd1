"""Styles on a loaded pipeline: LoRA adapters loaded through diffusers' LoRA API (`load_lora_weights`,
`set_adapters`, `disable_lora`, `delete_adapters`), a bounded number kept resident per pipeline (the least
recently used unloaded first), switched between generations without touching the base weights.

A two-expert pipeline holds each adapter in both experts under the same name, so every call below
(`set_adapters`, `delete_adapters`, `disable_lora`) acts on both.

An unstyled generation disables every LoRA layer, so its output is the base model's exactly, whatever
ran before it.
"""

from __future__ import annotations

import tempfile
from collections import OrderedDict
from pathlib import Path

from diffusers import DiffusionPipeline
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from vidfactory.engines.base import EngineError, StyleAdapter
from vidfactory.styles.adapters import expert_parts, read_header

__all__ = ["ResidentAdapters"]

adapter_file = "adapter.safetensors"


class ResidentAdapters:
    """The adapters loaded into one pipeline, named by their SHA-256, least recently used first."""

    def __init__(self, resident_max: int) -> None:
        assert resident_max >= 1
        self.resident_max = resident_max
        self.names: OrderedDict[str, None] = OrderedDict()

    def apply(self, pipeline: DiffusionPipeline, adapters: tuple[StyleAdapter, ...]) -> None:
        """Make `adapters` (at their scales) the only active ones; none: every LoRA layer off."""
        # 1. Unstyled: the LoRA layers stay in place, bypassed.
        if not adapters:
            if self.names:
                pipeline.disable_lora()
            return
        # 2. Load what is not resident; mark what is as just used.
        for adapter in adapters:
            if adapter.sha256 in self.names:
                self.names.move_to_end(adapter.sha256)
            else:
                _load(pipeline, adapter)
                self.names[adapter.sha256] = None
        # 3. Unload the least recently used beyond the limit (never one this generation uses).
        wanted = {adapter.sha256 for adapter in adapters}
        for name in [name for name in self.names if name not in wanted]:
            if len(self.names) <= self.resident_max:
                break
            pipeline.delete_adapters(name)
            del self.names[name]
        # 4. Exactly these, at these scales.
        pipeline.enable_lora()
        pipeline.set_adapters([a.sha256 for a in adapters], adapter_weights=[a.scale for a in adapters])

    def forget(self) -> None:
        """The pipeline was loaded again from its files: nothing is resident any more."""
        self.names.clear()


def _load(pipeline: DiffusionPipeline, adapter: StyleAdapter) -> None:
    """From a file, as diffusers reads one: its safetensors metadata (a PEFT adapter's alpha) applies. A
    two-expert pipeline (Wan2.2 A14B) gets it in both experts under one name: the adapter's second-expert
    weights into `transformer_2` where it has them, else the same weights into both."""
    data = adapter.read()
    if getattr(pipeline, "transformer_2", None) is None:
        _load_file(pipeline, data, adapter.sha256, second_expert=False)
        return
    tensors = load_safetensors(data)
    high, low = expert_parts(tensors)
    if not low:
        _load_file(pipeline, data, adapter.sha256, second_expert=False)
        _load_file(pipeline, data, adapter.sha256, second_expert=True)
        return
    metadata = _metadata(data)
    for part, second_expert in ((high, False), (low, True)):
        if part:
            _load_file(pipeline, save_safetensors(part, metadata=metadata), adapter.sha256, second_expert)


def _metadata(data: bytes) -> dict[str, str] | None:
    metadata = read_header(data).get("__metadata__")
    return metadata if isinstance(metadata, dict) else None


def _load_file(pipeline: DiffusionPipeline, data: bytes, name: str, second_expert: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="vidfactory-adapter-") as directory:
        (Path(directory) / adapter_file).write_bytes(data)
        extra = {"load_into_transformer_2": True} if second_expert else {}
        try:
            pipeline.load_lora_weights(directory, weight_name=adapter_file, adapter_name=name,
                                       use_safetensors=True, local_files_only=True, **extra)
        except (ValueError, KeyError, RuntimeError) as exc:  # checked at upload: this is not the caller's fault
            raise EngineError(f"the style adapter {name[:12]} could not be loaded: {exc}") from exc
