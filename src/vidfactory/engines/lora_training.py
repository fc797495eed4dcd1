"""LoRA training on a Wan transformer: a style learned from a tenant's images and clips. Reads like a
diffusers training script cut down to one function: no database, no storage; the worker feeds it samples
and callbacks.

The objective is Wan's own (rectified flow): a latent x0 from the pipeline's VAE, noise n, a time t in [0, 1],
x_t = (1 − t)·x0 + t·n, and the transformer regresses the velocity n − x0 under MSE. Every sample is encoded
once (VAE latents, text embeddings) before the first step; the base weights stay frozen and only the adapter
(PEFT LoRA on the attention projections) trains. A checkpoint (adapter, optimizer, step, RNG, loss curve)
goes to the caller every `checkpoint_every` steps, and a run given one continues from it with the same
batches and noise as an uninterrupted run. The result is a safetensors adapter in the diffusers/PEFT layout
(keys prefixed `transformer.`), which `pipe.load_lora_weights` and `load_lora_adapter(prefix="transformer")`
read.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import WanPipeline
from PIL import Image
from safetensors.torch import save as save_safetensors

from vidfactory.engines.base import CancelCheck, EngineError, GenerationCancelled, InvalidInput
from vidfactory.engines.lora_settings import (
    CAPTION_CHARS_MAX,
    LEARNING_RATE_MAX,
    RANK_MAX,
    SAMPLES_MAX,
    STEPS_MAX,
    CheckpointCallback,
    TrainingProgress,
    TrainingResult,
    TrainingSample,
    TrainingSettings,
    check_settings,
    settings_for,
)
from vidfactory.engines.presets import FRAME_STRIDE

__all__ = [
    "ADAPTER_NAME",
    "CAPTION_CHARS_MAX",
    "LEARNING_RATE_MAX",
    "RANK_MAX",
    "SAMPLES_MAX",
    "STEPS_MAX",
    "TARGET_MODULES",
    "TrainingProgress",
    "TrainingResult",
    "TrainingSample",
    "TrainingSettings",
    "CheckpointCallback",
    "check_settings",
    "settings_for",
    "train_lora",
]

ADAPTER_NAME = "style_training"  # not "training": that is every nn.Module's mode flag
# The attention projections: what Wan LoRAs in the wild adapt, and what diffusers' Wan loader maps.
TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")
TEXT_TOKENS = 226  # captions are short; Wan trainers read 226-512 tokens
TIMESTEPS = 1000  # the Wan transformers' timestep embedding expects t · 1000


def train_lora(
    pipeline: WanPipeline,
    samples: list[TrainingSample],
    settings: TrainingSettings,
    on_progress: TrainingProgress,
    is_cancelled: CancelCheck,
    on_checkpoint: CheckpointCallback,
    resume_from: bytes | None = None,
) -> TrainingResult:
    """Train a LoRA on `pipeline.transformer` and return it; the pipeline is left as it was (no adapter)."""
    # 1. Refuse what cannot train, before encoding anything.
    _check_inputs(samples, settings)
    transformer = pipeline.transformer
    device = pipeline._execution_device
    # 2. Encode the dataset once: VAE latents and caption embeddings, the only inputs a step reads.
    with torch.no_grad():
        latents = [_encode_latents(pipeline, sample, settings, device) for sample in samples]
        texts = [_encode_caption(pipeline, sample.caption, device) for sample in samples]
    # 3. A fresh adapter on the frozen transformer (fp32 weights: bf16 updates vanish at this learning rate).
    params = _add_adapter(transformer, settings)
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=1e-4)
    generator = torch.Generator("cpu").manual_seed(settings.seed)
    losses: list[float] = []
    # 4. Continue from a checkpoint: same adapter, optimizer moments, RNG and curve as when it was saved.
    if resume_from is not None:
        losses = _restore(resume_from, transformer, optimizer, generator, settings)
    try:
        # 5. The steps: one sample, one time, one noise draw each; the MSE on the flow-matching velocity.
        for step in range(len(losses) + 1, settings.steps + 1):
            if is_cancelled():
                raise GenerationCancelled(f"training cancelled before step {step} of {settings.steps}")
            loss = _step(transformer, optimizer, latents, texts, generator, settings)
            losses.append(loss)
            on_progress(step, settings.steps, loss)
            if step % settings.checkpoint_every == 0 and step < settings.steps:
                on_checkpoint(step, _checkpoint(transformer, optimizer, generator, losses))
        # 6. The adapter in diffusers' layout.
        adapter = _export(transformer)
    finally:
        transformer.delete_adapters(ADAPTER_NAME)
        transformer.requires_grad_(False)
        if settings.gradient_checkpointing:
            transformer.disable_gradient_checkpointing()
    return TrainingResult(adapter=adapter, rank=settings.rank, steps=settings.steps, losses=losses)


def _check_inputs(samples: list[TrainingSample], settings: TrainingSettings) -> None:
    if not 1 <= len(samples) <= SAMPLES_MAX:
        raise InvalidInput(f"a dataset needs between 1 and {SAMPLES_MAX} samples, got {len(samples)}")
    for index, sample in enumerate(samples):
        frames = sample.frames
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3 or min(frames.shape) < 1:
            raise InvalidInput(f"sample {index}: frames must be uint8 [frames, height, width, 3], got "
                               f"{frames.dtype} {list(frames.shape)}")
        if not sample.caption.strip() or len(sample.caption) > CAPTION_CHARS_MAX:
            raise InvalidInput(f"sample {index}: a caption of 1 to {CAPTION_CHARS_MAX} characters is required")
    check_settings(settings)


def _bucket(height: int, width: int, buckets: tuple[tuple[int, int], ...]) -> tuple[int, int]:
    """The bucket whose aspect ratio is nearest the sample's (in log space: 2:1 is as far from 1:1 as 1:2)."""
    aspect = math.log(width / height)
    return min(buckets, key=lambda b: abs(math.log(b[0] / b[1]) - aspect))


def _prepare_frames(frames: np.ndarray, settings: TrainingSettings) -> torch.Tensor:
    """Cut to at most num_frames (4k+1), centre-crop to the bucket's aspect and resize:
    [1, 3, F, H, W] in [-1, 1]."""
    count = min(len(frames), settings.num_frames)
    count -= (count - 1) % FRAME_STRIDE
    width, height = _bucket(frames.shape[1], frames.shape[2], settings.buckets)
    resized = [_crop_resize(frame, width, height) for frame in frames[:count]]
    video = torch.from_numpy(np.stack(resized)).float().div(127.5).sub(1.0)  # [F, H, W, 3]
    return video.permute(3, 0, 1, 2).unsqueeze(0)


def _crop_resize(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    h, w = frame.shape[:2]
    scale = max(width / w, height / h)
    crop_w, crop_h = min(w, round(width / scale)), min(h, round(height / scale))
    left, top = (w - crop_w) // 2, (h - crop_h) // 2
    image = Image.fromarray(frame[top:top + crop_h, left:left + crop_w])
    return np.asarray(image.resize((width, height), Image.Resampling.BICUBIC))


def _encode_latents(pipeline: WanPipeline, sample: TrainingSample, settings: TrainingSettings,
                    device: torch.device) -> torch.Tensor:
    """The VAE's latent mean, normalised the way WanPipeline un-normalises before decoding."""
    vae = pipeline.vae
    video = _prepare_frames(sample.frames, settings).to(device=device, dtype=vae.dtype)
    latents = vae.encode(video).latent_dist.mode()
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1).to(latents)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1).to(latents)
    return ((latents - mean) / std).to(pipeline.transformer.dtype)


def _encode_caption(pipeline: WanPipeline, caption: str, device: torch.device) -> torch.Tensor:
    embeds, _ = pipeline.encode_prompt(prompt=caption, do_classifier_free_guidance=False,
                                       max_sequence_length=TEXT_TOKENS, device=device)
    return embeds.to(pipeline.transformer.dtype)


def _add_adapter(transformer: torch.nn.Module, settings: TrainingSettings) -> list[torch.nn.Parameter]:
    # Imported here: peft is only needed by processes that train or load styles.
    from peft import LoraConfig

    transformer.requires_grad_(False)
    # alpha = rank: a scale of 1, which diffusers assumes when it loads an adapter without metadata.
    config = LoraConfig(r=settings.rank, lora_alpha=settings.rank, init_lora_weights=True,
                        target_modules=list(TARGET_MODULES))
    transformer.add_adapter(config, adapter_name=ADAPTER_NAME)
    # Only this adapter, and on: styles resident for serving stay loaded but out of the way, and LoRA
    # layers an unstyled generation bypassed (disable_lora) would bypass the new adapter too.
    transformer.set_adapter(ADAPTER_NAME)
    transformer.enable_lora()
    params = [p for name, p in transformer.named_parameters() if f".{ADAPTER_NAME}." in name]
    for param in params:
        param.data = param.data.float()
        param.requires_grad_(True)
    if settings.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    return params


def _step(transformer: torch.nn.Module, optimizer: torch.optim.Optimizer, latents: list[torch.Tensor],
          texts: list[torch.Tensor], generator: torch.Generator, settings: TrainingSettings) -> float:
    index = int(torch.randint(len(latents), (1,), generator=generator))
    x0, text = latents[index], texts[index]
    noise = torch.randn(x0.shape, generator=generator).to(x0)
    u = torch.rand((1,), generator=generator).item()
    t = settings.flow_shift * u / (1 + (settings.flow_shift - 1) * u)
    x_t = (1 - t) * x0 + t * noise
    timestep = torch.tensor([t * TIMESTEPS], device=x0.device, dtype=x0.dtype)
    prediction = transformer(hidden_states=x_t, timestep=timestep, encoder_hidden_states=text,
                             return_dict=False)[0]
    loss = F.mse_loss(prediction.float(), (noise - x0).float())
    if not torch.isfinite(loss):
        raise EngineError(f"training diverged (loss {loss.item()}); lower the learning rate")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.item())


def _adapter_state(transformer: torch.nn.Module) -> dict[str, torch.Tensor]:
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(transformer, adapter_name=ADAPTER_NAME)
    return {key: value.detach().float().cpu().contiguous() for key, value in state.items()}


def _checkpoint(transformer: torch.nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator,
                losses: list[float]) -> bytes:
    buffer = io.BytesIO()
    torch.save({"adapter": _adapter_state(transformer), "optimizer": optimizer.state_dict(),
                "rng": generator.get_state(), "losses": list(losses)}, buffer)
    return buffer.getvalue()


def _restore(checkpoint: bytes, transformer: torch.nn.Module, optimizer: torch.optim.Optimizer,
             generator: torch.Generator, settings: TrainingSettings) -> list[float]:
    from peft.utils import set_peft_model_state_dict

    try:
        # weights_only: tensors, numbers and containers, never arbitrary objects.
        state = torch.load(io.BytesIO(checkpoint), map_location="cpu", weights_only=True)
        result = set_peft_model_state_dict(transformer, state["adapter"], adapter_name=ADAPTER_NAME)
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["rng"])
        losses = [float(loss) for loss in state["losses"]]
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise InvalidInput(f"the training checkpoint does not fit this run: {exc}") from exc
    if result.unexpected_keys or not 1 <= len(losses) <= settings.steps:
        raise InvalidInput("the training checkpoint does not fit this run (other rank, model or steps)")
    return losses


def _export(transformer: torch.nn.Module) -> bytes:
    tensors = {f"transformer.{key}": value for key, value in _adapter_state(transformer).items()}
    return save_safetensors(tensors, metadata={"format": "pt"})

