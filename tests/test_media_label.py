"""The visible AI label meets GB 45438-2025's floors; a tenant's brand mark lands where configured."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image

from vidfactory.media.errors import MediaError
from vidfactory.media.label import FONT_PATH, BrandMark, LabelSpec, apply_brand, apply_label, check_label_text
from vidfactory.settings import Settings


def grey_clip(frames: int, height: int = 72, width: int = 128, level: int = 128) -> np.ndarray:
    return np.full((frames, height, width, 3), level, np.uint8)


def ink_rows(frame: np.ndarray, original: np.ndarray) -> int:
    """Rows where the label's white text covers at least half a pixel (over grey 128 and the dark backing)."""
    bright = (frame.min(axis=2) > 163) & (original.min(axis=2) < 160)
    rows = np.flatnonzero(bright.any(axis=1))
    return int(rows.max() - rows.min() + 1) if rows.size else 0


@pytest.mark.parametrize("height,width", [(480, 832), (832, 480), (240, 416)])
def test_label_is_tall_enough_and_in_the_top_left_corner(height: int, width: int) -> None:
    clip = grey_clip(4, height, width)
    out, placement = apply_label(clip, fps=8)
    short = min(height, width)
    assert placement.text_height_px >= 0.05 * short
    assert ink_rows(out[0], clip[0]) >= 0.05 * short  # measured on the pixels, not trusted from the font
    left, top, right, bottom = placement.box
    assert left < width / 4 and top < height / 4  # a corner, not the middle
    changed = np.argwhere((out[0] != clip[0]).any(axis=2))
    assert changed[:, 0].max() < bottom and changed[:, 1].max() < right  # nothing drawn outside the box


def test_label_covers_the_opening_two_seconds_and_only_them() -> None:
    fps = 16
    clip = grey_clip(81)
    out, placement = apply_label(clip, fps=fps)
    assert placement.frames == 2 * fps
    labelled = [bool((out[i] != clip[i]).any()) for i in range(len(clip))]
    assert labelled == [True] * (2 * fps) + [False] * (81 - 2 * fps)
    assert placement.frames / fps >= 2.0


def test_a_clip_shorter_than_two_seconds_is_labelled_throughout() -> None:
    clip = grey_clip(10)
    out, placement = apply_label(clip, fps=8)
    assert placement.frames == 10
    assert all((out[i] != clip[i]).any() for i in range(10))


def test_label_reads_on_white_frames_too() -> None:
    clip = grey_clip(2, level=255)
    out, placement = apply_label(clip, fps=8)
    left, top, right, bottom = placement.box
    assert out[0, top:bottom, left:right].min() < 200  # the dark backing shows behind white text


@pytest.mark.parametrize("corner", ["top-right", "bottom-left", "bottom-right"])
def test_label_corner_is_configurable(corner: str) -> None:
    _, placement = apply_label(grey_clip(1, 200, 200), fps=8, spec=LabelSpec(corner=corner))  # type: ignore[arg-type]
    left, top, _, _ = placement.box
    assert (left > 100) == corner.endswith("right")
    assert (top > 100) == corner.startswith("bottom")


@pytest.mark.parametrize(
    "spec",
    [
        LabelSpec(seconds=1.5),
        LabelSpec(height_fraction=0.04),
        LabelSpec(text=""),
        LabelSpec(text="😀"),
        LabelSpec(corner="middle"),
    ],  # type: ignore[arg-type]
)
def test_specs_below_the_regulation_or_unrenderable_are_refused(spec: LabelSpec) -> None:
    with pytest.raises(MediaError):
        apply_label(grey_clip(1), fps=8, spec=spec)


def test_label_settings_drive_the_spec() -> None:
    settings = Settings(label_text="人工智能生成", label_seconds=3.0, label_corner="bottom-right")
    clip = grey_clip(40, 200, 320)
    _, placement = apply_label(clip, fps=10, spec=LabelSpec.from_settings(settings))
    assert placement.frames == 30
    assert placement.box[0] > 160 and placement.box[1] > 100


def test_configured_chinese_and_english_labels_render() -> None:
    for text in ("AI生成", "人工智能生成", "AI-generated", "由AI生成，仅供参考"):
        check_label_text(text)
    assert FONT_PATH.is_file() and (FONT_PATH.parent / "OFL.txt").is_file()


def test_brand_text_mark_on_every_frame_with_opacity() -> None:
    clip = grey_clip(5, 200, 320, level=0)
    faint, _ = apply_brand(clip, BrandMark(text="ACME", opacity=0.3))
    strong, placement = apply_brand(clip, BrandMark(text="ACME", opacity=1.0))
    left, top, right, bottom = placement.box
    assert left > 160 and top > 100  # bottom-right by default
    assert all(strong[i, top:bottom, left:right].max() == 255 for i in range(5))
    assert 60 < faint[0, top:bottom, left:right].max() < 100  # 30% of white over black


def test_a_long_brand_shrinks_to_fit_a_small_frame() -> None:
    clip = grey_clip(3, 64, 64, level=0)
    branded, placement = apply_brand(clip, BrandMark(text="ACME WORLDWIDE 2026", opacity=1.0))
    left, top, right, bottom = placement.box
    assert 0 <= left < right <= 64 and 0 <= top < bottom <= 64
    assert branded[:, top:bottom, left:right].max() > 128 and branded[:, :top].max() == 0


def test_brand_png_logo_keeps_its_transparency() -> None:
    logo = Image.new("RGBA", (40, 20), (255, 0, 0, 0))
    logo.paste((255, 0, 0, 255), (0, 0, 20, 20))  # left half opaque red, right half transparent
    buffer = io.BytesIO()
    logo.save(buffer, format="PNG")
    clip = grey_clip(2, 200, 200, level=0)
    out, placement = apply_brand(clip, BrandMark(logo_png=buffer.getvalue(), corner="top-left", opacity=1.0))
    left, top, right, bottom = placement.box
    assert bottom - top == math.ceil(0.06 * 200)
    region = out[0, top:bottom, left:right]
    assert region[:, : region.shape[1] // 2 - 1, 0].min() > 200  # red where opaque
    assert region[:, region.shape[1] // 2 + 3 :].max() == 0  # untouched where transparent


@pytest.mark.parametrize(
    "brand",
    [
        BrandMark(),
        BrandMark(text="x", logo_png=b"x"),
        BrandMark(logo_png=b"not a png"),
        BrandMark(text="x", opacity=1.5),
    ],
)
def test_bad_brand_marks_are_refused(brand: BrandMark) -> None:
    with pytest.raises(MediaError):
        apply_brand(grey_clip(1), brand)
