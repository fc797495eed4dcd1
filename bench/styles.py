"""Style adapter switching on the tiny Wan model (CPU): what a styled job adds to the one before it.

For adapters of several ranks on every attention projection: the cold load of an adapter into a loaded
pipeline (diffusers' `load_lora_weights` from the stored file), the switch between two resident adapters
(`set_adapters`), back to the base model (`disable_lora`), beside loading the base model itself and one
64×64 generation, unstyled and styled. Runs through the worker's own path (`engines/lora.py`).

    python bench/styles.py
"""

from __future__ import annotations

import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from safetensors.torch import save  # noqa: E402

from common import git_revision, machine, sized  # noqa: E402
from vidfactory.engines.base import GenerationRequest, StyleAdapter  # noqa: E402
from vidfactory.engines.lora import ResidentAdapters  # noqa: E402
from vidfactory.engines.presets import TINY  # noqa: E402
from vidfactory.engines.tiny import ensure_tiny_model  # noqa: E402
from vidfactory.engines.wan import WanEngine  # noqa: E402
from vidfactory.styles.adapters import base_modules  # noqa: E402

RANKS = sized([4, 16, 32], [4])
REPEATS = sized(20, 2)
TARGETS = (".attn1.to_q", ".attn1.to_k", ".attn1.to_v", ".attn1.to_out.0",
           ".attn2.to_q", ".attn2.to_k", ".attn2.to_v", ".attn2.to_out.0")


def adapter(rank: int, seed: int) -> StyleAdapter:
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for module, (out_features, in_features) in base_modules(TINY.id).items():
        if module.endswith(TARGETS):
            tensors[f"transformer.{module}.lora_A.weight"] = torch.randn(rank, in_features, generator=generator)
            tensors[f"transformer.{module}.lora_B.weight"] = torch.randn(out_features, rank, generator=generator)
    data = save(tensors)
    return StyleAdapter(sha256=hashlib.sha256(data).hexdigest(), scale=1.0, read=lambda: data)


def median_s(action, repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def request(adapters=()) -> GenerationRequest:
    return GenerationRequest(prompt="a lighthouse at dusk", negative_prompt="", width=64, height=64, num_frames=9,
                             fps=8, num_inference_steps=2, guidance_scale=5.0, seed=1, adapters=tuple(adapters))


def cold_load_s(pipeline, style: StyleAdapter) -> float:
    """A fresh load each time: loaded, measured, then deleted again."""
    times = []
    for _ in range(REPEATS):
        resident = ResidentAdapters(1)
        started = time.perf_counter()
        resident.apply(pipeline, (style,))
        times.append(time.perf_counter() - started)
        pipeline.delete_adapters(style.sha256)
    return statistics.median(times)


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = ensure_tiny_model(Path(directory) / "wan-tiny")
        model_load_s = median_s(lambda: WanEngine("wan-tiny", str(path), "cpu", preset=TINY), sized(5, 1))
        engine = WanEngine("wan-tiny", str(path), "cpu", preset=TINY)
        pipeline = engine.pipeline
        print(f"# Style adapters, wan-tiny — {machine()}, commit {git_revision()}, torch threads "
              f"{torch.get_num_threads()}, median of {REPEATS}\n")
        print(f"Base model load (pipeline from its files): {model_load_s * 1e3:.0f} ms.\n")
        print("| rank | cold adapter load ms | switch between resident ms | back to base ms | switch ÷ cold load | "
              "switch ÷ model load | styled job ÷ unstyled job |")
        print("|---|---|---|---|---|---|---|")
        for rank in RANKS:
            first, second = adapter(rank, 1), adapter(rank, 2)
            cold_s = cold_load_s(pipeline, first)
            resident = ResidentAdapters(2)
            resident.apply(pipeline, (first,))
            resident.apply(pipeline, (second,))
            switch_s = median_s(lambda: (resident.apply(pipeline, (first,)), resident.apply(pipeline, (second,)))) / 2
            base_s = median_s(lambda: resident.apply(pipeline, ()))
            engine.adapters = resident
            plain_s = median_s(lambda: engine.generate(request(), lambda *_: None, lambda: False), sized(5, 1))
            styled_s = median_s(lambda: engine.generate(request([first]), lambda *_: None, lambda: False),
                                sized(5, 1))
            for name in list(resident.names):
                pipeline.delete_adapters(name)
            engine.adapters = ResidentAdapters(4)
            print(f"| {rank} | {cold_s * 1e3:.1f} | {switch_s * 1e3:.2f} | {base_s * 1e3:.2f} | "
                  f"{switch_s / cold_s:.3f} | {switch_s / model_load_s:.4f} | {styled_s / plain_s:.2f}× |")


if __name__ == "__main__":
    main()
