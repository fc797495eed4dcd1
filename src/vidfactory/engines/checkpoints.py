"""Where a model's weights live and whether they are all there, without loading them: what a worker checks
before it claims a job, and what `vidfactory doctor` reports. Nothing here imports torch or diffusers, so a
misconfigured model is refused in a fraction of a second instead of after the engines' seconds of imports."""

from __future__ import annotations

import json
from pathlib import Path

from vidfactory.engines.base import EngineError
from vidfactory.settings import ModelConfig

__all__ = ["check_model", "model_path"]

model_index_file = "model_index.json"
# Components that hold weights: each needs its config and at least one weights file.
weighted_components = ("transformer", "transformer_2", "vae", "text_encoder")
weights_suffixes = (".safetensors", ".bin", ".pt")


def model_path(config: ModelConfig, models_dir: Path) -> str:
    """The directory or cached hub id holding the model's diffusers files (the tiny preset is built here);
    for a hosted model, the one whose tokenizer/ billing counts with."""
    if config.is_hosted:
        if not config.path:
            raise EngineError(
                f"model {config.id!r} (engine {config.engine!r}) has no path: set it to a directory or cached "
                f"hub id whose tokenizer/ matches the hosted model (Wan: the UMT5 tokenizer of a Wan checkpoint)"
            )
        return config.path
    if config.engine == "wan-tiny":
        preset = config.wan_preset
        assert preset is not None, "a wan-tiny model always has a tiny preset"
        built = _tiny_dir(config, models_dir)
        if _is_built(built):  # nothing to import
            return str(built)
        from vidfactory.engines.tiny import ensure_tiny_model  # torch and diffusers: only to build it

        return str(ensure_tiny_model(built, preset))
    if config.engine == "wan":
        if not config.path:
            raise EngineError(
                f"model {config.id!r} (engine 'wan') has no path: set it to a diffusers-layout directory "
                f"or a hub id already in the local Hugging Face cache, e.g. Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
            )
        return config.path
    raise EngineError(f"model {config.id!r}: unknown engine {config.engine!r} "
                      f"(known: 'wan', 'wan-tiny', 'dashscope', 'openai-video')")


def _tiny_dir(config: ModelConfig, models_dir: Path) -> Path:
    return Path(models_dir) / config.id


def _is_built(directory: Path) -> bool:
    """ensure_tiny_model publishes a tiny model whole, by one rename: its index means every file is there."""
    return (directory / model_index_file).is_file()


def _checkpoint_dir(config: ModelConfig, path: str) -> Path:
    """The local directory behind `path`: itself, or a hub id's snapshot in the Hugging Face cache."""
    if Path(path).is_dir():
        return Path(path)
    if not Path(path).is_absolute() and path.count("/") == 1:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(path, model_index_file)
        if isinstance(cached, str):
            return Path(cached).parent
        raise EngineError(f"model {config.id!r}: {path} is not in the local Hugging Face cache (weights are never "
                          f"downloaded at request time: download it first, or set path to a directory)")
    raise EngineError(f"model {config.id!r}: path {path} is not a directory")


def _check_components(config: ModelConfig, directory: Path) -> None:
    try:
        index = json.loads((directory / model_index_file).read_text())
    except (OSError, ValueError) as exc:
        raise EngineError(f"model {config.id!r}: {directory} is not a diffusers model (no readable "
                          f"{model_index_file}: {exc.__class__.__name__})") from exc
    declared = [name for name, value in index.items()
                if not name.startswith("_") and isinstance(value, list) and None not in value]
    for name in declared:
        component = directory / name
        if not component.is_dir():
            raise EngineError(f"model {config.id!r}: {directory} lacks its {name}/ (listed in {model_index_file})")
        if name in weighted_components and not any(f.name.endswith(weights_suffixes) for f in component.iterdir()):
            raise EngineError(f"model {config.id!r}: {component} holds no weights file")


def check_model(config: ModelConfig, models_dir: Path) -> str:
    """What a worker would load for `config`, checked without loading it: one line saying what was found,
    or EngineError saying what is missing. A hosted model needs its API key and the tokenizer billing reads."""
    if config.engine == "wan-tiny":
        built = _tiny_dir(config, models_dir)
        if _is_built(built):
            return f"tiny preset at {built}"
        return f"tiny preset, built on first use at {built}"
    path = model_path(config, models_dir)
    directory = _checkpoint_dir(config, path)
    if config.is_hosted:
        assert config.hosted is not None
        if not config.hosted.resolved_api_key():
            where = (f"the variable {config.hosted.api_key_env} is unset or empty" if config.hosted.api_key_env
                     else "hosted.api_key is empty")
            raise EngineError(f"model {config.id!r}: no API key for {config.hosted.base_url} ({where})")
        if not (directory / "tokenizer").is_dir():
            raise EngineError(f"model {config.id!r}: {directory} has no tokenizer/ (billing counts prompts with it)")
        return f"{config.engine} at {config.hosted.base_url}, tokenizer from {directory}"
    _check_components(config, directory)
    return f"{config.engine} checkpoint at {directory}"
