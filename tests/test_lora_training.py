"""Training a LoRA style on the tiny Wan model: the loss falls, the style pulls generations toward its dataset
(measured in latent space: the random-weight VAE reproduces no image), a run resumed from a checkpoint ends
exactly where an uninterrupted one does, the adapter loads through diffusers' LoRA API, and bad inputs are
refused before any work."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load

from vidfactory.engines.base import GenerationCancelled, InvalidInput
from vidfactory.engines.lora_training import (
    TrainingResult,
    TrainingSample,
    TrainingSettings,
    settings_for,
    train_lora,
)
from vidfactory.engines.presets import TINY
from vidfactory.engines.tiny import build_tiny_pipeline

CAPTION = "a scene in the house colours"
SEED = 7


def red_samples() -> list[TrainingSample]:
    """Three clips and one image dominated by one red, with a little noise so no two are equal."""
    rng = np.random.default_rng(0)
    samples = []
    for count in (5, 5, 9, 1):
        base = np.full((count, 40, 48, 3), (230, 25, 30), dtype=np.int16)
        frames = np.clip(base + rng.integers(-12, 12, base.shape), 0, 255).astype(np.uint8)
        samples.append(TrainingSample(frames=frames, caption=CAPTION))
    return samples


@pytest.fixture(scope="module")
def pipeline():
    pipe = build_tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def settings() -> TrainingSettings:
    return settings_for(TINY.training, TINY.flow_shift, steps=40)


@pytest.fixture(scope="module")
def trained(pipeline, settings) -> tuple[TrainingResult, dict[int, bytes], list[tuple[int, int, float]]]:
    checkpoints: dict[int, bytes] = {}
    progress: list[tuple[int, int, float]] = []
    result = train_lora(pipeline, red_samples(), settings, lambda *p: progress.append(p), lambda: False,
                        lambda step, data: checkpoints.setdefault(step, data))
    return result, checkpoints, progress


def generate_latents(pipeline) -> torch.Tensor:
    return pipeline(prompt=CAPTION, height=32, width=32, num_frames=5, num_inference_steps=4,
                    guidance_scale=1.0, generator=torch.Generator("cpu").manual_seed(SEED),
                    output_type="latent").frames


def dataset_latents(pipeline) -> torch.Tensor:
    """The dataset's clips through the same VAE and normalisation the trainer uses."""
    video = torch.full((1, 3, 5, 32, 32), 0.0)
    video[:, 0], video[:, 1], video[:, 2] = 230 / 127.5 - 1, 25 / 127.5 - 1, 30 / 127.5 - 1
    vae = pipeline.vae
    with torch.no_grad():
        latents = vae.encode(video).latent_dist.mode()
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    return (latents - mean) / std


def test_the_loss_falls_and_progress_counts_every_step(trained, settings):
    result, _, progress = trained
    assert [(step, steps) for step, steps, _ in progress] == [(s, settings.steps) for s in range(1, 41)]
    assert [loss for *_, loss in progress] == result.losses
    assert np.mean(result.losses[-8:]) < 0.85 * np.mean(result.losses[:8])


def test_the_style_moves_the_output_toward_the_dataset(pipeline, trained, tmp_path: Path):
    result, _, _ = trained
    target = dataset_latents(pipeline)
    unstyled = generate_latents(pipeline)
    path = tmp_path / "style.safetensors"
    path.write_bytes(result.adapter)
    pipeline.load_lora_weights(str(path), adapter_name="red")
    try:
        styled = generate_latents(pipeline)
    finally:
        pipeline.unload_lora_weights()
    assert torch.equal(generate_latents(pipeline), unstyled), "training left the base model changed"
    distance = lambda latents: float((latents - target).pow(2).mean())  # noqa: E731
    assert distance(styled) < 0.9 * distance(unstyled)


def test_the_adapter_is_in_the_diffusers_layout(pipeline, trained, settings, tmp_path: Path):
    result, _, _ = trained
    tensors = load(result.adapter)
    assert tensors and all(key.startswith("transformer.blocks.") for key in tensors)
    assert {key.rsplit(".", 2)[-2] for key in tensors} == {"lora_A", "lora_B"}
    assert tensors["transformer.blocks.0.attn1.to_q.lora_A.weight"].shape[0] == settings.rank
    path = tmp_path / "style.safetensors"
    path.write_bytes(result.adapter)
    pipeline.transformer.load_lora_adapter(str(path), prefix="transformer", adapter_name="check")
    try:
        assert "check" in pipeline.transformer.peft_config
    finally:
        pipeline.transformer.delete_adapters("check")


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(pipeline, trained, settings):
    result, checkpoints, _ = trained
    assert sorted(checkpoints) == [10, 20, 30]
    steps_run: list[int] = []
    resumed = train_lora(pipeline, red_samples(), settings, lambda step, *_: steps_run.append(step),
                         lambda: False, lambda *_: None, resume_from=checkpoints[20])
    assert steps_run == list(range(21, 41))
    assert resumed.losses == result.losses
    assert resumed.adapter == result.adapter


def test_cancelling_stops_before_the_next_step(pipeline, settings):
    done: list[int] = []
    with pytest.raises(GenerationCancelled):
        train_lora(pipeline, red_samples(), settings, lambda step, *_: done.append(step),
                   lambda: len(done) >= 3, lambda *_: None)
    assert done == [1, 2, 3]
    assert not getattr(pipeline.transformer, "peft_config", {}), "a cancelled run left its adapter behind"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rank": 0}, "rank"),
        ({"learning_rate": 1.0}, "learning_rate"),
        ({"steps": 0}, "steps"),
        ({"num_frames": 4}, "num_frames"),
    ],
)
def test_settings_out_of_range_are_refused(pipeline, settings, change, message):
    with pytest.raises(InvalidInput, match=message):
        train_lora(pipeline, red_samples(), replace(settings, **change), lambda *_: None, lambda: False,
                   lambda *_: None)


def test_samples_without_caption_or_of_the_wrong_type_are_refused(pipeline, settings):
    with pytest.raises(InvalidInput, match="caption"):
        train_lora(pipeline, [TrainingSample(np.zeros((1, 8, 8, 3), np.uint8), " ")], settings,
                   lambda *_: None, lambda: False, lambda *_: None)
    with pytest.raises(InvalidInput, match="uint8"):
        train_lora(pipeline, [TrainingSample(np.zeros((8, 8, 3), np.float32), CAPTION)], settings,
                   lambda *_: None, lambda: False, lambda *_: None)
    with pytest.raises(InvalidInput, match="between 1 and"):
        train_lora(pipeline, [], settings, lambda *_: None, lambda: False, lambda *_: None)
