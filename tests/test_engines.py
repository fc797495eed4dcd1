"""The tiny Wan preset and the Wan engine: deterministic offline build, generation, progress, cancellation,
input checks and error mapping."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import WanPipeline
from fixtures_models import tiny_model_dir  # noqa: F401 - a fixture
from safetensors.torch import load_file

from vidfactory.engines import tiny
from vidfactory.engines.base import (
    EngineError,
    GenerationCancelled,
    GenerationRequest,
    InvalidInput,
    OutOfMemory,
)
from vidfactory.engines.checkpoints import model_path
from vidfactory.engines.registry import load_engine
from vidfactory.engines.tiny import ensure_tiny_model
from vidfactory.engines.wan import FRAMES_MAX, WanEngine
from vidfactory.settings import ModelConfig

STEPS = 3
REQUEST = GenerationRequest(
    prompt="a red fox runs through a snowy forest, 一只红色的狐狸",
    negative_prompt="blurry",
    width=96,  # not square, so a width/height swap shows
    height=64,
    num_frames=9,
    fps=8,
    num_inference_steps=STEPS,
    guidance_scale=5.0,
    seed=7,
)


def never() -> bool:
    return False


class Recorder:
    def __init__(self) -> None:
        self.steps: list[tuple[int, int]] = []

    def __call__(self, done: int, total: int) -> None:
        self.steps.append((done, total))


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> WanEngine:  # noqa: F811 - the imported fixture
    return WanEngine("wan-tiny", str(tiny_model_dir), device="cpu")


@pytest.fixture
def decode_calls(engine: WanEngine, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts VAE decodes: the pipeline calls `self.vae.decode`, so an instance attribute intercepts it."""
    calls: list[int] = []
    decode = engine.pipeline.vae.decode

    def spy(*args, **kwargs):
        calls.append(1)
        return decode(*args, **kwargs)

    monkeypatch.setattr(engine.pipeline.vae, "decode", spy)
    return calls


# --- the tiny model -------------------------------------------------------------------------------------


def test_tiny_build_is_deterministic(tmp_path: Path) -> None:
    first = ensure_tiny_model(tmp_path / "a" / "wan-tiny")
    second = ensure_tiny_model(tmp_path / "b" / "wan-tiny")

    weights_a = load_file(first / "transformer" / "diffusion_pytorch_model.safetensors")
    weights_b = load_file(second / "transformer" / "diffusion_pytorch_model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[name], weights_b[name]) for name in weights_a)

    tokenizers = [WanPipeline.from_pretrained(d, local_files_only=True).tokenizer for d in (first, second)]
    text = "A red fox runs at dawn, 一只红色的狐狸在黎明时分穿过雪林 🦊"
    assert tokenizers[0](text).input_ids == tokenizers[1](text).input_ids

    files_a = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert files_a == files_b
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files_a)


def test_tiny_build_has_the_diffusers_layout_and_leaves_no_staging(tiny_model_dir: Path) -> None:  # noqa: F811
    for part in ("model_index.json", "transformer", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (tiny_model_dir / part).exists(), part
    assert [p.name for p in tiny_model_dir.parent.iterdir()] == ["wan-tiny"]


def test_ensure_returns_an_existing_model_untouched(tiny_model_dir: Path) -> None:  # noqa: F811
    index = tiny_model_dir / "model_index.json"
    before = index.stat().st_mtime_ns
    assert ensure_tiny_model(tiny_model_dir) == tiny_model_dir
    assert index.stat().st_mtime_ns == before


def test_racing_builds_publish_one_complete_model(tmp_path: Path, tiny_model_dir: Path) -> None:  # noqa: F811
    target = tmp_path / "models" / "wan-tiny"
    errors: list[BaseException] = []

    def build() -> None:
        try:
            ensure_tiny_model(target)
        except BaseException as exc:  # collected and asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert [p.name for p in target.parent.iterdir()] == ["wan-tiny"]  # losers removed their staging copies
    weights = "transformer/diffusion_pytorch_model.safetensors"
    assert (target / weights).read_bytes() == (tiny_model_dir / weights).read_bytes()


def test_the_loser_of_a_race_keeps_the_published_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "wan-tiny"
    build = tiny.build_tiny_pipeline

    def build_while_another_process_publishes(preset=tiny.TINY) -> WanPipeline:
        monkeypatch.setattr(tiny, "build_tiny_pipeline", build)
        ensure_tiny_model(target)  # the other process wins while this one is still building
        return build(preset)

    monkeypatch.setattr(tiny, "build_tiny_pipeline", build_while_another_process_publishes)
    assert ensure_tiny_model(target) == target
    assert [p.name for p in tmp_path.iterdir()] == ["wan-tiny"]
    assert (target / "model_index.json").is_file()


def test_a_non_model_directory_in_the_way_is_reported(tmp_path: Path) -> None:
    target = tmp_path / "wan-tiny"
    target.mkdir()
    (target / "notes.txt").write_text("not a model")
    with pytest.raises(EngineError, match=r"no model_index\.json"):
        ensure_tiny_model(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wan-tiny"]


def test_the_tiny_model_reloads_offline(tiny_model_dir: Path) -> None:  # noqa: F811
    pipeline = WanPipeline.from_pretrained(tiny_model_dir, dtype=torch.float32, local_files_only=True)
    assert pipeline.vae.config.scale_factor_temporal == 4
    assert pipeline.vae.config.scale_factor_spatial == 8
    assert pipeline.transformer.config.in_channels == pipeline.vae.config.z_dim
    assert pipeline.tokenizer.pad_token_id == 0 and pipeline.tokenizer.eos_token_id == 1
    assert pipeline.tokenizer.unk_token_id == 2


# --- generation ------------------------------------------------------------------------------------------


def test_generate_returns_uint8_frames_and_reports_each_step(
    engine: WanEngine, decode_calls: list[int]
) -> None:
    progress = Recorder()
    video = engine.generate(REQUEST, progress, never)

    assert video.frames.dtype == np.uint8
    assert video.frames.shape == (REQUEST.num_frames, REQUEST.height, REQUEST.width, 3)
    assert video.fps == REQUEST.fps
    assert progress.steps == [(step, STEPS) for step in range(1, STEPS + 1)]
    assert decode_calls == [1]


def test_the_same_seed_gives_the_same_frames(engine: WanEngine) -> None:
    request = replace(REQUEST, num_inference_steps=1)
    first = engine.generate(request, Recorder(), never).frames
    second = engine.generate(request, Recorder(), never).frames
    other = engine.generate(replace(request, seed=8), Recorder(), never).frames
    assert np.array_equal(first, second)
    assert not np.array_equal(first, other)


def test_cancelling_stops_at_the_next_step_without_decoding(
    engine: WanEngine, decode_calls: list[int]
) -> None:
    progress = Recorder()

    def cancelled_after_first_step() -> bool:
        return len(progress.steps) >= 1

    with pytest.raises(GenerationCancelled, match="step 1 of 3"):
        engine.generate(REQUEST, progress, cancelled_after_first_step)
    assert progress.steps == [(1, STEPS)]
    assert decode_calls == []


def test_a_job_cancelled_before_it_starts_runs_no_step(engine: WanEngine, decode_calls: list[int]) -> None:
    progress = Recorder()
    with pytest.raises(GenerationCancelled):
        engine.generate(REQUEST, progress, lambda: True)
    assert progress.steps == []
    assert decode_calls == []


def test_the_callers_own_errors_pass_through_unchanged(engine: WanEngine) -> None:
    class LeaseLost(Exception):
        pass

    def on_progress(done: int, total: int) -> None:
        raise LeaseLost("lease lost")

    with pytest.raises(LeaseLost, match="lease lost"):
        engine.generate(REQUEST, on_progress, never)


@pytest.mark.parametrize(
    ("failure", "mapped"),
    [
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), OutOfMemory),
        (RuntimeError("CUDA error: out of memory"), OutOfMemory),
        (RuntimeError("CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate(handle)"), OutOfMemory),
        (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), EngineError),
        (ValueError("bad scheduler state"), EngineError),
    ],
)
def test_torch_failures_are_mapped(
    engine: WanEngine, monkeypatch: pytest.MonkeyPatch, failure: Exception, mapped: type[EngineError]
) -> None:
    def fail(*args, **kwargs):
        raise failure

    monkeypatch.setattr(engine.pipeline.transformer, "forward", fail)
    with pytest.raises(mapped) as raised:
        engine.generate(REQUEST, Recorder(), never)
    assert type(raised.value) is mapped
    assert raised.value.__cause__ is failure
    assert raised.value.transient is (mapped is OutOfMemory)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"width": 100}, "width must be a multiple of 16"),
        ({"height": 8}, "height must be a multiple of 16"),
        ({"width": 2064}, "width must be a multiple of 16 between 16 and 2048"),
        ({"num_frames": 10}, "num_frames must be 4k\\+1"),
        ({"num_frames": 0}, "num_frames must be 4k\\+1"),
        ({"num_frames": FRAMES_MAX + 4}, f"between 1 and {FRAMES_MAX}"),
        ({"num_inference_steps": 0}, "num_inference_steps must be between 1"),
        ({"prompt": "  \n"}, "prompt must not be empty"),
        ({"guidance_scale": float("nan")}, "guidance_scale"),
        ({"seed": -1}, "seed must be between 0"),
        ({"fps": 0}, "fps must be >= 1"),
    ],
)
def test_invalid_requests_are_refused_before_any_work(
    engine: WanEngine, decode_calls: list[int], change: dict, message: str
) -> None:
    progress = Recorder()
    with pytest.raises(InvalidInput, match=message):
        engine.generate(replace(REQUEST, **change), progress, never)
    assert progress.steps == [] and decode_calls == []


# --- loading ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/nonexistent/wan-model", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", ""])
def test_a_model_that_is_not_there_raises_engine_error(path: str) -> None:
    with pytest.raises(EngineError, match="diffusers"):
        WanEngine("wan", path, device="cpu")


def test_a_directory_without_a_model_raises_engine_error(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match=r"model_index\.json"):
        WanEngine("wan", str(tmp_path), device="cpu")


def test_the_registry_builds_and_loads_the_tiny_preset(tiny_model_dir: Path) -> None:  # noqa: F811
    config = ModelConfig(id="wan-tiny", engine="wan-tiny")
    assert model_path(config, tiny_model_dir.parent) == str(tiny_model_dir)
    engine = load_engine(config, tiny_model_dir.parent)
    assert engine.model_id == "wan-tiny"
    assert engine.device.type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_the_registry_uses_the_configured_path_for_real_models(tmp_path: Path) -> None:
    assert model_path(ModelConfig(id="wan-1.3b", engine="wan", path="/models/wan"), tmp_path) == "/models/wan"
    with pytest.raises(EngineError, match="has no path"):
        model_path(ModelConfig(id="wan-1.3b", engine="wan"), tmp_path)
    assert list(tmp_path.iterdir()) == []
