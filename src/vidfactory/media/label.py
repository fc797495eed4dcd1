"""Visible marks burned into frames: the explicit AI-content label and an optional tenant brand mark.

The label follows GB 45438-2025 for video: on the opening frames for at least 2 s, text at least 5% of
the frame's shorter side tall, in a corner. The font is a subset of Noto Sans SC (SIL OFL 1.1) shipped
in media/fonts/ (printable ASCII, Latin-1, CJK punctuation and the 6,763 hanzi of GB 2312), so the
label renders the same on every host with no system fonts installed.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

from vidfactory.media.encode import check_frames
from vidfactory.media.errors import MediaError

__all__ = [
    "FONT_PATH",
    "LABEL_HEIGHT_FRACTION_MIN",
    "LABEL_SECONDS_MIN",
    "BrandMark",
    "Corner",
    "LabelPlacement",
    "LabelSpec",
    "apply_brand",
    "apply_label",
    "check_label_text",
]

FONT_PATH = Path(__file__).resolve().parent / "fonts" / "NotoSansSC-Label.otf"
LABEL_SECONDS_MIN = 2.0  # GB 45438-2025: the label shows for at least 2 s
LABEL_HEIGHT_FRACTION_MIN = 0.05  # ... and is at least 5% of the shorter side tall
TEXT_HEIGHT_MIN_PX = 10  # below this no script is legible, whatever 5% of a tiny frame is
LABEL_TEXT_CHARS_MAX = 32
LOGO_BYTES_MAX = 2_000_000
MISSING_GLYPH_PROBE = "\U0010fffd"  # a private-use code point no font maps: renders as .notdef

Corner = Literal["top-left", "top-right", "bottom-left", "bottom-right"]
CORNERS: frozenset[str] = frozenset({"top-left", "top-right", "bottom-left", "bottom-right"})


@dataclass(frozen=True)
class LabelSpec:
    text: str = "AI生成"
    seconds: float = LABEL_SECONDS_MIN
    height_fraction: float = LABEL_HEIGHT_FRACTION_MIN  # of the shorter side: ink height of the text
    corner: Corner = "top-left"
    margin_fraction: float = 0.03  # gap to the frame edges, of the shorter side
    color: tuple[int, int, int] = (255, 255, 255)
    backing_opacity: float = 0.45  # dark box behind the text, so it reads on bright frames too

    @classmethod
    def from_settings(cls, settings: Any) -> LabelSpec:
        """Read the `label_*` fields of a settings object (duck-typed: media does not import settings)."""
        return cls(
            text=settings.label_text,
            seconds=settings.label_seconds,
            height_fraction=settings.label_height_fraction,
            corner=settings.label_corner,
        )


@dataclass(frozen=True)
class BrandMark:
    """A tenant's mark on every frame: text, or a PNG logo (alpha respected); never both."""

    text: str = ""
    logo_png: bytes | None = field(default=None, repr=False)
    corner: Corner = "bottom-right"
    opacity: float = 0.6
    height_fraction: float = 0.06  # of the shorter side
    margin_fraction: float = 0.03
    color: tuple[int, int, int] = (255, 255, 255)


@dataclass(frozen=True)
class LabelPlacement:
    """Where a mark went: pixel box (left, top, right, bottom), text ink height, frames covered."""

    box: tuple[int, int, int, int]
    text_height_px: int
    frames: int


def check_label_text(text: str) -> None:
    """Raise MediaError when the label font cannot draw `text` (call it when settings load)."""
    if not text.strip() or len(text) > LABEL_TEXT_CHARS_MAX:
        raise MediaError(f"label text must have 1..{LABEL_TEXT_CHARS_MAX} characters, got {len(text)}")
    missing = sorted({ch for ch in text if not ch.isspace() and not _has_glyph(ch)})
    if missing:
        raise MediaError(f"the label font has no glyph for {''.join(missing)!r}")


def apply_label(
    frames: np.ndarray, fps: float, spec: LabelSpec = LabelSpec()
) -> tuple[np.ndarray, LabelPlacement]:
    """A copy of `frames` with the label on the first ceil(spec.seconds * fps) frames (all, if fewer)."""
    # 1. Check inputs: the regulation's minimums are floors no configuration may go under.
    check_frames(frames, even_sides=False)
    check_label_text(spec.text)
    if fps <= 0:
        raise MediaError(f"fps must be > 0, got {fps}")
    if spec.seconds < LABEL_SECONDS_MIN:
        raise MediaError(f"the label must show for at least {LABEL_SECONDS_MIN} s, got {spec.seconds}")
    if not LABEL_HEIGHT_FRACTION_MIN <= spec.height_fraction <= 0.5:
        raise MediaError(f"height_fraction must be between {LABEL_HEIGHT_FRACTION_MIN} and 0.5")
    _check_corner(spec.corner)
    _check_fraction("backing_opacity", spec.backing_opacity)
    # 2. Render the label once, as an RGBA tile sized for this frame.
    height, width = frames.shape[1:3]
    short = min(height, width)
    text_px = max(math.ceil(spec.height_fraction * short), TEXT_HEIGHT_MIN_PX)
    tile, ink_height = _text_tile(spec.text, text_px, spec.color, spec.backing_opacity)
    # 3. Composite it onto the opening frames.
    count = min(len(frames), math.ceil(spec.seconds * fps))
    box = _corner_box(tile.shape, (height, width), spec.corner, round(spec.margin_fraction * short))
    out = frames.copy()
    _composite(out[:count], tile, box, opacity=1.0)
    return out, LabelPlacement(box=box, text_height_px=ink_height, frames=count)


def apply_brand(frames: np.ndarray, brand: BrandMark) -> tuple[np.ndarray, LabelPlacement]:
    """A copy of `frames` with the tenant's brand mark on every frame."""
    # 1. Check inputs.
    check_frames(frames, even_sides=False)
    if bool(brand.text) == (brand.logo_png is not None):
        raise MediaError("a brand mark needs exactly one of text and logo_png")
    _check_corner(brand.corner)
    _check_fraction("opacity", brand.opacity)
    if not 0.01 <= brand.height_fraction <= 0.5:
        raise MediaError("brand height_fraction must be between 0.01 and 0.5")
    # 2. Render the mark as an RGBA tile.
    height, width = frames.shape[1:3]
    short = min(height, width)
    mark_px = max(math.ceil(brand.height_fraction * short), TEXT_HEIGHT_MIN_PX)
    if brand.text:
        check_label_text(brand.text)
        tile, ink_height = _text_tile(brand.text, mark_px, brand.color, backing_opacity=0.0)
    else:
        tile = _logo_tile(brand.logo_png or b"", mark_px, width)
        ink_height = tile.shape[0]
    # 3. Shrink it to fit a small frame: unlike the AI label, a brand has no legal minimum size, and a
    #    clip must never fail delivery because a tenant's mark is long.
    margin = round(brand.margin_fraction * short)
    tile, ink_height = _fit_tile(tile, ink_height, (height - 2 * margin, width - 2 * margin))
    # 4. Composite it onto every frame.
    box = _corner_box(tile.shape, (height, width), brand.corner, margin)
    out = frames.copy()
    _composite(out, tile, box, opacity=brand.opacity)
    return out, LabelPlacement(box=box, text_height_px=ink_height, frames=len(frames))


def _fit_tile(tile: np.ndarray, ink_height: int, room_hw: tuple[int, int]) -> tuple[np.ndarray, int]:
    """The RGBA tile scaled down (never up) to fit `room_hw`, with its ink height scaled alike."""
    tile_h, tile_w = tile.shape[:2]
    scale = min(1.0, room_hw[0] / tile_h, room_hw[1] / tile_w)
    if scale >= 1.0:
        return tile, ink_height
    size = (max(1, int(tile_w * scale)), max(1, int(tile_h * scale)))
    scaled = np.asarray(Image.fromarray(tile, mode="RGBA").resize(size, Image.Resampling.LANCZOS))
    return scaled, max(1, int(ink_height * scale))


@lru_cache(maxsize=32)
def _font(size_px: int) -> ImageFont.FreeTypeFont:
    if not FONT_PATH.is_file():
        raise MediaError(f"the label font is missing: {FONT_PATH}")
    return ImageFont.truetype(str(FONT_PATH), size_px)


@lru_cache(maxsize=4096)
def _has_glyph(ch: str) -> bool:
    font = _font(48)
    return bytes(font.getmask(ch)) != bytes(font.getmask(MISSING_GLYPH_PROBE))


def _text_tile(
    text: str, ink_px: int, color: tuple[int, int, int], backing_opacity: float
) -> tuple[np.ndarray, int]:
    """RGBA uint8 tile with `text` whose ink is at least `ink_px` tall, on an optional dark backing."""
    # The em size whose ink, counted in well-covered rows, is ink_px tall: estimate from
    # the font's box (ink/em is ~0.9 for CJK), then grow a pixel at a time on the real rendering.
    size = max(1, math.ceil(ink_px * ink_px / max(_ink_rows(text, ink_px), 1)))
    while _ink_rows(text, size) < ink_px:
        size += 1
    left, top, right, bottom = _font(size).getbbox(text)
    pad = max(2, round(0.25 * (bottom - top)))
    image = Image.new("RGBA", (right - left + 2 * pad, bottom - top + 2 * pad), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    if backing_opacity > 0:
        draw.rounded_rectangle(
            (0, 0, image.width - 1, image.height - 1),
            radius=pad,
            fill=(0, 0, 0, round(255 * backing_opacity)),
        )
    draw.text((pad - left, pad - top), text, font=_font(size), fill=(*color, 255))
    return np.asarray(image), _ink_rows(text, size)


def _ink_rows(text: str, size: int) -> int:
    """Rows of the rendered text with a pixel at least 5/8 covered (conservative: a reader counts half)."""
    mask = _font(size).getmask(text)
    coverage = np.asarray(mask, dtype=np.uint8).reshape(mask.size[1], mask.size[0])
    rows = np.flatnonzero((coverage >= 160).any(axis=1))
    return int(rows[-1] - rows[0] + 1) if rows.size else 0


def _logo_tile(png: bytes, height_px: int, frame_width: int) -> np.ndarray:
    if len(png) > LOGO_BYTES_MAX:
        raise MediaError(f"logo_png must be at most {LOGO_BYTES_MAX} bytes")
    try:
        with Image.open(io.BytesIO(png)) as logo:
            if logo.format != "PNG":
                raise MediaError(f"logo_png must be a PNG, got {logo.format}")
            rgba = logo.convert("RGBA")
    except (UnidentifiedImageError, OSError) as exc:
        raise MediaError(f"logo_png is not a readable image: {exc}") from exc
    width = min(max(1, round(rgba.width * height_px / rgba.height)), frame_width // 2)
    return np.asarray(rgba.resize((width, height_px), Image.Resampling.LANCZOS))


def _corner_box(
    tile_shape: tuple[int, ...], frame_hw: tuple[int, int], corner: str, margin: int
) -> tuple[int, int, int, int]:
    tile_h, tile_w = tile_shape[:2]
    height, width = frame_hw
    if tile_h + 2 * margin > height or tile_w + 2 * margin > width:
        raise MediaError(f"a {tile_w}x{tile_h} mark does not fit a {width}x{height} frame")
    left = margin if corner.endswith("left") else width - margin - tile_w
    top = margin if corner.startswith("top") else height - margin - tile_h
    return left, top, left + tile_w, top + tile_h


def _composite(frames: np.ndarray, tile: np.ndarray, box: tuple[int, int, int, int], opacity: float) -> None:
    """Alpha-blend the RGBA tile into frames[:, top:bottom, left:right] in place."""
    left, top, right, bottom = box
    alpha = tile[..., 3:4].astype(np.float32) * (opacity / 255.0)
    region = frames[:, top:bottom, left:right].astype(np.float32)
    blended = region * (1.0 - alpha) + tile[..., :3].astype(np.float32) * alpha
    frames[:, top:bottom, left:right] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def _check_corner(corner: str) -> None:
    if corner not in CORNERS:
        raise MediaError(f"corner must be one of {sorted(CORNERS)}, got {corner!r}")


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise MediaError(f"{name} must be between 0 and 1, got {value}")
