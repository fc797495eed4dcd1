"""The tiny Wan2.1 preset: the real architecture at toy sizes with random weights, built offline.

The same builder makes every Wan preset's layout at toy sizes (two experts, 48 latent channels, ...) so each
preset's loading and generation path runs in tests on a CPU.

It lets the whole platform run on a CPU with no download: the pipeline, the loading path and the tokenizer
are the ones a real Wan checkpoint uses, only the sizes are small (its frames are noise). Billing counts
tokens with this tokenizer, so every build on every machine must produce the same files: the weights come
from a fixed seed and the tokenizer is trained on a corpus embedded in this module.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

from vidfactory.engines.base import EngineError
from vidfactory.engines.presets import TINY, VaeShape, WanPreset
from vidfactory.engines.wan import TEXT_TOKENS_MAX

__all__ = [
    "TINY_SEED",
    "TINY_VOCAB_MAX",
    "build_tiny_pipeline",
    "build_tiny_tokenizer",
    "ensure_tiny_model",
]

TINY_SEED = 20251122
TINY_VOCAB_MAX = 4096
TEXT_DIM = 32  # the text encoder's width is the transformer's text_dim

# Module init draws from torch's process-wide RNG: two threads building at once (the API's token counter and
# a worker loading its engine, inside one `vidfactory serve`) would interleave draws and get other weights.
_torch_rng_lock = threading.Lock()

# T5 conventions, in id order: pad=0, eos=1, unk=2.
PAD, EOS, UNK = "<pad>", "</s>", "<unk>"

# The tokenizer's training text: video prompts in English and Chinese. Changing one character changes the
# vocabulary and therefore every token count billed with the tiny model: treat it as frozen.
CORPUS = """\
A red fox runs through a snowy forest at dawn, cinematic lighting, slow motion, shallow depth of field.
A city street at night with neon signs reflecting on wet asphalt, people walking with umbrellas.
An astronaut floats above the Earth, the sun rising over the horizon, realistic, 4K, highly detailed.
A golden retriever puppy plays with a ball on a green lawn in the afternoon sun.
Waves crash against a rocky coastline under a stormy sky, drone shot, dramatic clouds.
A chef slices fresh vegetables in a busy restaurant kitchen, close-up, steam rising from the pans.
A paper boat drifts down a small stream after the rain, macro lens, soft focus background.
Timelapse of clouds moving over mountain peaks, the light changing from morning to evening.
A little girl in a yellow raincoat jumps into a puddle, splashes of water frozen in the air.
An old man plays the violin on a bridge in Prague at sunset, warm tones, gentle camera pan.
A hummingbird hovers next to a bright pink flower, wings blurred, nature documentary style.
A futuristic train glides through a glass tunnel above a desert city, wide angle, clean design.
Two cats sit on a windowsill watching the snow fall outside, cozy interior, soft lamp light.
A skateboarder performs a kickflip in an empty swimming pool, fisheye lens, summer vibe.
A candle flame flickers in a dark room, smoke curling upward, high contrast, still camera.
Cherry blossoms fall slowly over a quiet temple garden, a monk sweeps the stone path.
A hot air balloon rises over fields of lavender, aerial view, bright blue sky, calm wind.
A robot arm assembles a watch on a factory line, precise movements, studio lighting.
Fireworks explode over a harbor on New Year's Eve, reflections dancing on the water.
A horse gallops across a beach at low tide, sand flying, golden hour, tracking shot.
Rain drops run down a window while a jazz band plays in a cafe, bokeh lights, evening.
A whale breaches the surface of the ocean, water spraying, seabirds circling overhead.
A bowl of ramen with a soft boiled egg, steam rising, chopsticks lifting the noodles.
A lighthouse stands on a cliff during a thunderstorm, lightning flashes in the distance.
Children fly colorful kites on a windy hill, the camera slowly orbits around them.
A glass of water tips over in slow motion, droplets scattering across a wooden table.
Northern lights ripple above a frozen lake, a small cabin glowing with warm light.
A butterfly emerges from its cocoon, time-lapse, macro photography, natural colors.
A vintage car drives along a coastal road, the camera follows from a helicopter.
A barista pours latte art into a white cup, top-down view, smooth and satisfying.
Leaves change from green to red and fall from a maple tree, seasons passing quickly.
A panda eats bamboo in a misty forest, calm and peaceful, documentary footage.
A dancer spins on a stage under a single spotlight, flowing dress, dark background.
Lava flows slowly into the sea, clouds of steam, volcanic island, aerial footage.
The quick brown fox jumps over the lazy dog; 0123456789 frames per second, 16:9, 720p, 1080p.
Negative: blurry, low quality, distorted faces, extra fingers, watermark, text, static frame.
一只红色的狐狸在黎明时分穿过雪林，电影般的灯光，慢动作，浅景深。
夜晚的城市街道，霓虹灯倒映在潮湿的柏油路上，行人撑着雨伞走过。
宇航员漂浮在地球上空，太阳从地平线升起，写实风格，高清，细节丰富。
一只金毛幼犬在午后的阳光下，在绿色的草坪上玩球。
海浪拍打着岩石海岸，天空乌云密布，无人机航拍，云层壮观。
厨师在繁忙的餐厅厨房里切新鲜蔬菜，特写镜头，锅里冒着热气。
雨后一只纸船顺着小溪漂流，微距镜头，背景柔和虚化。
云朵在山峰之间流动的延时摄影，光线从清晨变化到傍晚。
穿黄色雨衣的小女孩跳进水坑，水花在空中定格。
一位老人在日落时分的桥上拉小提琴，暖色调，镜头缓缓平移。
蜂鸟在一朵鲜艳的粉色花朵旁悬停，翅膀模糊，自然纪录片风格。
未来感的列车在沙漠城市上空的玻璃隧道中滑行，广角镜头，简洁的设计。
两只猫坐在窗台上看着窗外飘落的雪花，温馨的室内，柔和的灯光。
樱花缓缓飘落在安静的寺院庭园里，一位僧人正在清扫石板小路。
热气球在薰衣草田上空升起，鸟瞰视角，湛蓝的天空，微风徐徐。
烟花在除夕夜的港口上空绽放，倒影在水面上跳动。
一匹马在退潮的海滩上奔驰，沙子飞扬，黄金时刻，跟拍镜头。
熊猫在雾气弥漫的竹林里吃竹子，宁静祥和，纪录片画面。
舞者在聚光灯下的舞台上旋转，裙摆飘逸，背景漆黑。
熔岩缓缓流入大海，蒸汽升腾，火山岛，航拍画面。
北极光在冰冻的湖面上空舞动，一间小木屋透出温暖的灯光。
一碗拉面，配上溏心蛋，热气腾腾，筷子夹起面条。
孩子们在有风的山坡上放彩色风筝，镜头慢慢环绕他们。
中国古代宫殿，红墙金瓦，细雨中的庭院，水墨画风格，镜头缓慢推进。
长城蜿蜒在秋天的山脉之上，夕阳西下，壮丽的风景。
江南水乡的小船划过石桥，两岸是白墙黑瓦的老房子。
色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量。
"""


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on CORPUS: every string encodes, none becomes <unk>, same ids every run."""
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    # No prefix space: a prefix of a text then tokenizes like the start of that text, which truncation uses.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    # min_frequency 2: a pair seen once is a memorised phrase, not a subword; without it whole Chinese clauses
    # of the corpus (no spaces to split on) become single tokens and would be billed as one.
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_MAX,
        min_frequency=2,
        special_tokens=[PAD, EOS, UNK],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS.splitlines(), trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, tokenizer.token_to_id(EOS))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD,
        eos_token=EOS,
        unk_token=UNK,
        model_max_length=TEXT_TOKENS_MAX,
    )


def build_tiny_pipeline(p: WanPreset = TINY) -> WanPipeline:
    """A preset's component layout at toy sizes (the Wan2.1 layout for `wan-tiny`): its latent channels,
    its VAE's compression (8x, or the 5B's 16x residual VAE), one or two experts, and its pipeline flags."""
    tokenizer = build_tiny_tokenizer()
    channels = p.vae.z_dim
    # Modules initialise on the CPU: seed only its generator, inside a fork that restores the caller's state.
    with _torch_rng_lock, torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(TINY_SEED)
        transformer = _tiny_transformer(channels)
        vae = _tiny_vae(p.vae)
        text_encoder = UMT5EncoderModel(
            UMT5Config(
                vocab_size=len(tokenizer),
                d_model=TEXT_DIM,
                d_kv=16,
                d_ff=64,
                num_layers=2,
                num_heads=2,
                dropout_rate=0.0,
            )
        )
        transformer_2 = _tiny_transformer(channels) if p.experts == 2 else None
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=p.flow_shift
    )
    return WanPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler, transformer=transformer,
        transformer_2=transformer_2, boundary_ratio=p.boundary_ratio, expand_timesteps=p.expand_timesteps,
    )


def _tiny_transformer(channels: int) -> WanTransformer3DModel:
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=channels,
        out_channels=channels,
        text_dim=TEXT_DIM,
        freq_dim=32,
        ffn_dim=64,
        num_layers=2,
    )


def _tiny_vae(shape: VaeShape) -> AutoencoderKLWan:
    """Three downsamples (8x), two of them temporal (4x); the Wan2.2 VAE adds 2x2 pixel patches (16x)."""
    common = dict(base_dim=8, z_dim=shape.z_dim, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                  temperal_downsample=[False, True, True])
    if not shape.residual:
        return AutoencoderKLWan(**common)
    # The real 2.2 VAE's latents_mean/std have 48 entries; identity statistics suit random weights.
    return AutoencoderKLWan(**common, is_residual=True, in_channels=12, out_channels=12, patch_size=2,
                            scale_factor_spatial=shape.spatial, latents_mean=[0.0] * shape.z_dim,
                            latents_std=[1.0] * shape.z_dim)


def ensure_tiny_model(model_dir: Path, p: WanPreset = TINY) -> Path:
    """Build the tiny model (or preset `p` at tiny size) into `model_dir` unless it is there; return it.

    Safe when processes race (API and worker): each builds in its own sibling directory and renames it into
    place, so `model_dir` is either absent or complete; the loser discards its copy.
    """
    model_dir = Path(model_dir)
    if (model_dir / "model_index.json").is_file():
        return model_dir

    # 1. Build in a private sibling directory: same filesystem, so the rename below is atomic.
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{model_dir.name}.building-", dir=model_dir.parent))
    try:
        build_tiny_pipeline(p).save_pretrained(staging, safe_serialization=True)
        staging.chmod(0o755)  # mkdtemp makes it private; a worker running as another user must read it
        # 2. Publish: rename replaces an absent or empty directory, fails on a populated one.
        _publish(staging, model_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return model_dir


def _publish(staging: Path, model_dir: Path) -> None:
    try:
        staging.rename(model_dir)
    except OSError as exc:
        if (model_dir / "model_index.json").is_file():
            return  # another process published first; its files are identical to ours
        raise EngineError(
            f"cannot create the tiny model at {model_dir}: the directory exists and is not a diffusers model "
            f"(no model_index.json); remove it or choose another data_dir"
        ) from exc
