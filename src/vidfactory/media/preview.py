"""Preview variants of a clip: a thumbnail (the middle frame) and a spritesheet (a grid of frames sampled
evenly over the clip), as served by `GET /v1/videos/{id}/content?variant=...`. WebP by default, as
OpenAI's video API serves them; JPEG for clients that ask for it (`transcode`)."""

from __future__ import annotations

import io
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from vidfactory.media.encode import check_frames
from vidfactory.media.errors import MediaError

__all__ = ["ImageFormat", "content_types", "spritesheet_image", "thumbnail_image", "transcode"]

ImageFormat = Literal["webp", "jpeg"]
content_types: dict[ImageFormat, str] = {"webp": "image/webp", "jpeg": "image/jpeg"}
quality_max = 95  # Pillow: above 95 only grows a JPEG
columns_max = 16
tiles_max = 256
transcode_quality = 85


def thumbnail_image(frames: np.ndarray, *, side_max: int = 512, quality: int = 85,
                    image_format: ImageFormat = "webp") -> bytes:
    """The middle frame, downscaled (never upscaled) to fit a side_max square."""
    check_frames(frames, even_sides=False)
    if side_max < 1:
        raise MediaError(f"side_max must be >= 1, got {side_max}")
    _check_quality(quality)
    image = Image.fromarray(np.ascontiguousarray(frames[len(frames) // 2]))
    image.thumbnail((side_max, side_max), Image.Resampling.LANCZOS)
    return _encoded(image, image_format, quality)


def spritesheet_image(frames: np.ndarray, *, columns: int = 5, tiles: int = 25, tile_width_px: int = 160,
                      quality: int = 80, image_format: ImageFormat = "webp") -> bytes:
    """`tiles` frames taken evenly from first to last (fewer when the clip is shorter), each scaled to
    `tile_width_px` wide (aspect kept, never upscaled), laid out row by row, `columns` per row."""
    # 1. Check the inputs.
    check_frames(frames, even_sides=False)
    if not 1 <= columns <= columns_max:
        raise MediaError(f"columns must be between 1 and {columns_max}, got {columns}")
    if not 1 <= tiles <= tiles_max:
        raise MediaError(f"tiles must be between 1 and {tiles_max}, got {tiles}")
    if tile_width_px < 1:
        raise MediaError(f"tile_width_px must be >= 1, got {tile_width_px}")
    _check_quality(quality)
    # 2. Pick the frames and the tile size.
    count, height, width, _ = frames.shape
    picks = np.unique(np.linspace(0, count - 1, num=min(tiles, count)).round().astype(int))
    tile_w = min(tile_width_px, width)
    tile_h = max(1, round(height * tile_w / width))
    # 3. Paste each scaled frame into its cell.
    rows = -(-len(picks) // columns)
    sheet = Image.new("RGB", (tile_w * min(columns, len(picks)), tile_h * rows))
    for cell, index in enumerate(picks):
        tile = Image.fromarray(np.ascontiguousarray(frames[index])).resize((tile_w, tile_h),
                                                                           Image.Resampling.BILINEAR)
        sheet.paste(tile, ((cell % columns) * tile_w, (cell // columns) * tile_h))
    return _encoded(sheet, image_format, quality)


def transcode(data: bytes, image_format: ImageFormat) -> bytes:
    """A stored preview in the other format (previews stored before WebP are JPEG)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return _encoded(image.convert("RGB"), image_format, transcode_quality)
    except (UnidentifiedImageError, OSError) as exc:
        raise MediaError(f"the stored preview is not a readable image: {exc}") from exc


def _check_quality(quality: int) -> None:
    if not 1 <= quality <= quality_max:
        raise MediaError(f"quality must be between 1 and {quality_max}, got {quality}")


def _encoded(image: Image.Image, image_format: ImageFormat, quality: int) -> bytes:
    if image_format not in content_types:
        raise MediaError(f"image_format must be one of {', '.join(content_types)}, got {image_format!r}")
    buffer = io.BytesIO()
    if image_format == "jpeg":
        image.save(buffer, format="JPEG", quality=quality, optimize=True)
    else:
        image.save(buffer, format="WEBP", quality=quality, method=4)
    return buffer.getvalue()
