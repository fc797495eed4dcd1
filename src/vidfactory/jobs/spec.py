"""Turn a request's size and seconds into a model's generation shape. Pure functions."""

from __future__ import annotations

import re
from dataclasses import dataclass

from vidfactory.settings import ModelConfig

__all__ = ["InvalidRequest", "Shape", "frames_for", "nearest_size", "openai_sizes", "parse_size", "shape_for"]

size_pattern = re.compile(r"^([0-9]{1,5})x([0-9]{1,5})$")  # ASCII: \d also matches "٦"
seconds_pattern = re.compile(r"^[0-9]{1,3}$")
# The sizes OpenAI's video API takes: clients written for it send them whatever the model, so a model that
# cannot make one exactly makes the nearest size it can (see nearest_size).
openai_sizes = frozenset({"720x1280", "1280x720", "1024x1792", "1792x1024"})


class InvalidRequest(ValueError):
    """A request the platform refuses before anything is held: answered as 400 with `param`."""

    def __init__(self, param: str, message: str, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.param = param
        self.code = code


@dataclass(frozen=True)
class Shape:
    width: int
    height: int
    seconds: int
    fps: int
    num_frames: int


def frames_for(seconds: int, fps: int) -> int:
    """Wan's VAE compresses time 4×, so clips have 4k+1 frames: the nearest such count to seconds×fps."""
    assert seconds >= 1 and fps >= 1
    return 4 * max(1, round(seconds * fps / 4)) + 1


def _supported(model: ModelConfig, side: int) -> bool:
    return model.size_min_px <= side <= model.size_max_px and side % model.size_multiple_px == 0


def nearest_size(model: ModelConfig, width: int, height: int) -> tuple[int, int]:
    """The model's size closest to width×height with the same orientation and nearly the same aspect
    ratio: scaled (down or up) until both sides fit its range, each side then rounded to its multiple."""
    assert width >= 1 and height >= 1
    multiple = model.size_multiple_px
    low = -(-model.size_min_px // multiple) * multiple
    high = model.size_max_px // multiple * multiple
    assert low <= high, f"model {model.id} has no supported side"
    scale = min(1.0, high / max(width, height))
    scale = max(scale, low / min(width, height))  # a side below the minimum wins: it cannot be made at all

    def side(length: int) -> int:
        return min(high, max(low, round(length * scale / multiple) * multiple))

    return side(width), side(height)


def parse_size(size: str, model: ModelConfig) -> tuple[int, int]:
    """A size the model supports, or one of OpenAI's sizes, mapped to the model's nearest."""
    match = size_pattern.match(size)
    if match is None:
        raise InvalidRequest("size", f"size must look like WIDTHxHEIGHT (e.g. {model.default_size}), got {size!r}")
    width, height = int(match[1]), int(match[2])
    if _supported(model, width) and _supported(model, height):
        return width, height
    if size in openai_sizes:
        return nearest_size(model, width, height)
    raise InvalidRequest(
        "size", f"model {model.id} supports sides that are multiples of {model.size_multiple_px} "
                f"from {model.size_min_px} to {model.size_max_px} px; got {size}")


def parse_seconds(seconds: str | int, model: ModelConfig) -> int:
    text = str(seconds).strip()
    if not seconds_pattern.match(text) or not 1 <= int(text) <= model.seconds_max:
        raise InvalidRequest("seconds", f"model {model.id} supports 1 to {model.seconds_max} seconds; got {seconds!r}")
    return int(text)


def shape_for(model: ModelConfig, size: str | None, seconds: str | int | None) -> Shape:
    width, height = parse_size(size or model.default_size, model)
    whole_seconds = parse_seconds(model.default_seconds if seconds is None else seconds, model)
    return Shape(width=width, height=height, seconds=whole_seconds, fps=model.fps,
                 num_frames=frames_for(whole_seconds, model.fps))
