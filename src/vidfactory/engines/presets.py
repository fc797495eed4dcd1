"""The Wan model presets: architecture, defaults and input rules of each checkpoint family. Plain data.

A preset says what a checkpoint *is* (transformer shape, one or two experts, latent channels, the VAE's
compression) and what it runs best at (resolution, frames, fps, steps, guidance, flow shift). The engine
reads the rules (`check_shape`), the memory planner reads the sizes, settings read the defaults, and the
tiny builder (`engines/tiny.py`) builds every preset's layout at toy sizes. Importing this module loads no
torch: settings and the API read it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from vidfactory.engines.base import InvalidInput

__all__ = [
    "FRAME_STRIDE",
    "PRESETS",
    "TINY",
    "TINY_A14B",
    "TINY_I2V",
    "TINY_PRESETS",
    "TrainingDefaults",
    "TransformerShape",
    "VaeShape",
    "WanPreset",
    "check_shape",
    "latent_tokens",
    "preset",
]

FRAME_STRIDE = 4  # the Wan VAEs compress time 4x: valid clips have 4k + 1 frames
PATCH_PX = 2  # the transformer's spatial patch (1, 2, 2) over the latent grid


@dataclass(frozen=True)
class TransformerShape:
    num_layers: int
    num_attention_heads: int
    attention_head_dim: int
    ffn_dim: int
    params: int  # exact count for this shape (tests rebuild it on the meta device)
    text_dim: int = 4096
    freq_dim: int = 256

    @property
    def dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim


@dataclass(frozen=True)
class VaeShape:
    z_dim: int  # latent channels
    spatial: int  # pixels per latent cell on each side
    params: int
    # Channels of the decoder's full-resolution stage per output pixel: what a frame's decode activations
    # scale with (2.1: 96 channels at full size; 2.2: 256 channels at half size → 64 per pixel).
    decode_channels_per_px: int
    residual: bool  # the Wan2.2 VAE: residual blocks, 2x2 pixel patches, 12 in/out channels


@dataclass(frozen=True)
class TrainingDefaults:
    """What a LoRA style trains at on this checkpoint unless the tenant overrides it (within the limits in
    engines/lora_training.py and the plan's step cap)."""

    rank: int
    learning_rate: float
    steps: int
    buckets: tuple[tuple[int, int], ...]  # (width, height): each sample is cropped to the nearest aspect
    num_frames: int  # frames a clip is cut to (4k+1); images train as one frame
    checkpoint_every: int  # steps between resumable checkpoints
    gradient_checkpointing: bool  # recompute activations in backward: what fits a 14B transformer's training


# Wan LoRA trainers in common use (diffusers' examples, musubi-tuner, the hosted trainers) train the 1.3B at
# rank 16-32, learning rate 1e-4, a few hundred to a few thousand steps, 480p buckets and 33-81 frames.
def _train_at(buckets: tuple[tuple[int, int], ...]) -> TrainingDefaults:
    return TrainingDefaults(rank=32, learning_rate=1e-4, steps=1000, buckets=buckets, num_frames=33,
                            checkpoint_every=100, gradient_checkpointing=True)


TRAIN_480P = _train_at(((832, 480), (480, 832), (624, 624)))
TRAIN_720P = _train_at(((1280, 720), (720, 1280), (960, 960)))
TRAIN_704P = _train_at(((1280, 704), (704, 1280), (960, 960)))
# The tiny model learns a colour in a few dozen steps at 32 px.
TRAIN_TINY = TrainingDefaults(rank=8, learning_rate=1e-2, steps=40, buckets=((32, 32),), num_frames=5,
                              checkpoint_every=10, gradient_checkpointing=False)


@dataclass(frozen=True)
class WanPreset:
    id: str
    hub_id: str  # the diffusers checkpoint on the Hugging Face hub (only read from the local cache)
    transformer: TransformerShape
    vae: VaeShape
    experts: int  # 2: `transformer` for high noise, `transformer_2` for low noise (Wan2.2 A14B)
    width: int
    height: int
    num_frames: int
    fps: int
    steps: int
    guidance_scale: float
    flow_shift: float
    sizes: tuple[tuple[int, int], ...]  # (width, height) the checkpoint was trained at
    guidance_scale_2: float | None = None  # the low-noise expert's guidance
    boundary_ratio: float | None = None  # share of the 1000 train timesteps run by the high-noise expert
    expand_timesteps: bool = False  # Wan2.2 TI2V: a timestep per latent token (first frame kept clean)
    image_to_video: bool = False  # takes a reference image as the first frame
    text_encoder_params: int = 5_680_910_336  # UMT5-XXL encoder
    training: TrainingDefaults = TRAIN_480P

    def __post_init__(self) -> None:
        assert self.experts in (1, 2) and (self.experts == 2) == (self.boundary_ratio is not None), self.id
        assert self.num_frames % FRAME_STRIDE == 1, f"{self.id}: default frames must be 4k+1"
        assert (self.width, self.height) in self.sizes, f"{self.id}: default size must be a trained size"

    @property
    def side_multiple_px(self) -> int:
        """Sides must fill whole transformer patches: 16 px for the 8x VAE, 32 px for the 16x one."""
        return self.vae.spatial * PATCH_PX

    @property
    def default_size(self) -> str:
        return f"{self.width}x{self.height}"

    @property
    def default_seconds(self) -> int:
        return max(1, round((self.num_frames - 1) / self.fps))


VAE_2_1 = VaeShape(z_dim=16, spatial=8, params=126_892_531, decode_channels_per_px=96, residual=False)
VAE_2_2 = VaeShape(z_dim=48, spatial=16, params=704_688_668, decode_channels_per_px=64, residual=True)
T_1_3B = TransformerShape(num_layers=30, num_attention_heads=12, attention_head_dim=128, ffn_dim=8960,
                          params=1_418_996_800)
T_14B = TransformerShape(num_layers=40, num_attention_heads=40, attention_head_dim=128, ffn_dim=13824,
                         params=14_288_491_584)
T_5B = TransformerShape(num_layers=30, num_attention_heads=24, attention_head_dim=128, ffn_dim=14336,
                        params=4_999_787_712)

# Sizes in both orientations; the Wan reference code trains 480p at 832x480 and 720p at 1280x720.
P480 = ((832, 480), (480, 832))
P720 = ((1280, 720), (720, 1280))
P704 = ((1280, 704), (704, 1280))

PRESETS: dict[str, WanPreset] = {
    p.id: p
    for p in (
        # Defaults from the Wan reference repository and the diffusers model cards.
        WanPreset(id="wan2.1-t2v-1.3b", hub_id="Wan-AI/Wan2.1-T2V-1.3B-Diffusers", transformer=T_1_3B,
                  vae=VAE_2_1, experts=1, width=832, height=480, num_frames=81, fps=16, steps=50,
                  guidance_scale=5.0, flow_shift=3.0, sizes=P480),
        WanPreset(id="wan2.1-t2v-14b", hub_id="Wan-AI/Wan2.1-T2V-14B-Diffusers", transformer=T_14B,
                  vae=VAE_2_1, experts=1, width=1280, height=720, num_frames=81, fps=16, steps=50,
                  guidance_scale=5.0, flow_shift=5.0, sizes=P720 + P480, training=TRAIN_720P),
        WanPreset(id="wan2.2-t2v-a14b", hub_id="Wan-AI/Wan2.2-T2V-A14B-Diffusers", transformer=T_14B,
                  vae=VAE_2_1, experts=2, width=1280, height=720, num_frames=81, fps=16, steps=40,
                  guidance_scale=4.0, guidance_scale_2=3.0, boundary_ratio=0.875, flow_shift=12.0,
                  sizes=P720 + P480, training=TRAIN_720P),
        WanPreset(id="wan2.2-ti2v-5b", hub_id="Wan-AI/Wan2.2-TI2V-5B-Diffusers", transformer=T_5B,
                  vae=VAE_2_2, experts=1, width=1280, height=704, num_frames=121, fps=24, steps=50,
                  guidance_scale=5.0, flow_shift=5.0, sizes=P704, expand_timesteps=True, image_to_video=True,
                  training=TRAIN_704P),
    )
}

# The built-in CPU models (engines/tiny.py): Wan layouts at toy sizes, random weights.
TINY_TRANSFORMER_PARAMS = {16: 40_864, 48: 49_184}  # by latent channels (the patch embedding and head grow)
TINY = WanPreset(
    id="wan-tiny", hub_id="", experts=1, width=128, height=128, num_frames=17, fps=8, steps=4,
    guidance_scale=5.0, flow_shift=3.0, sizes=((128, 128),), text_encoder_params=48_352, training=TRAIN_TINY,
    transformer=TransformerShape(num_layers=2, num_attention_heads=2, attention_head_dim=16, ffn_dim=64,
                                 text_dim=32, freq_dim=32, params=TINY_TRANSFORMER_PARAMS[16]),
    vae=VaeShape(z_dim=16, spatial=8, params=70_803, decode_channels_per_px=8, residual=False),
)
# The Wan2.2 TI2V-5B's layout (48 latent channels, the 16x residual VAE, a timestep per latent token, a
# first frame kept clean): image-to-video on a CPU. Sides are multiples of 32 px.
TINY_I2V = WanPreset(
    id="wan-tiny-i2v", hub_id="", experts=1, width=128, height=128, num_frames=9, fps=8, steps=4,
    guidance_scale=5.0, flow_shift=5.0, sizes=((128, 128),), text_encoder_params=48_352, expand_timesteps=True,
    image_to_video=True, training=replace(TRAIN_TINY, buckets=((64, 64),)),  # sides: multiples of 32 px
    transformer=TransformerShape(num_layers=2, num_attention_heads=2, attention_head_dim=16, ffn_dim=64,
                                 text_dim=32, freq_dim=32, params=TINY_TRANSFORMER_PARAMS[48]),
    vae=VaeShape(z_dim=48, spatial=16, params=109_196, decode_channels_per_px=8, residual=True),
)
# The Wan2.2 A14B's layout (a high-noise `transformer` and a low-noise `transformer_2`, each the tiny
# transformer): two-expert generation and styles on a CPU.
TINY_A14B = replace(TINY, id="wan-tiny-a14b", experts=2, boundary_ratio=0.875, guidance_scale_2=3.0, flow_shift=12.0)
TINY_PRESETS: dict[str, WanPreset] = {p.id: p for p in (TINY, TINY_I2V, TINY_A14B)}


def preset(preset_id: str) -> WanPreset:
    if preset_id in TINY_PRESETS:
        return TINY_PRESETS[preset_id]
    try:
        return PRESETS[preset_id]
    except KeyError:
        raise InvalidInput(f"unknown Wan preset {preset_id!r}; known: {', '.join(PRESETS)}") from None


def latent_tokens(p: WanPreset, width: int, height: int, num_frames: int) -> int:
    """Transformer sequence length: ((F−1)/4+1) latent frames × the latent grid in 2x2 patches
    ((H/16)·(W/16) for the 8x VAE, (H/32)·(W/32) for the 5B's 16x VAE)."""
    side = p.side_multiple_px
    return ((num_frames - 1) // FRAME_STRIDE + 1) * (height // side) * (width // side)


def check_shape(p: WanPreset, width: int, height: int, num_frames: int, frames_max: int) -> None:
    """Raise InvalidInput naming the rule a shape breaks; pass silently otherwise."""
    side = p.side_multiple_px
    for name, value in (("width", width), ("height", height)):
        if value < side or value % side:
            raise InvalidInput(f"{p.id}: {name} must be a positive multiple of {side} px, got {value}")
    if not 1 <= num_frames <= frames_max or num_frames % FRAME_STRIDE != 1:
        below = max(1, num_frames - (num_frames - 1) % FRAME_STRIDE)
        raise InvalidInput(
            f"{p.id}: num_frames must be {FRAME_STRIDE}k+1 between 1 and {frames_max} "
            f"(e.g. {below} or {below + FRAME_STRIDE}; default {p.num_frames}), got {num_frames}")
