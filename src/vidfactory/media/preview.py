"""Preview variants of a clip: a JPEG thumbnail (the middle frame) and a JPEG spritesheet (a grid of
frames sampled evenly over the clip), as served by `GET /v1/videos/{id}/content?variant=...`."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from vidfactory.media.encode import check_frames
from vidfactory.media.errors import MediaError

__all__ = ["spritesheet_jpeg", "thumbnail_jpeg"]

jpeg_quality_max = 95  # Pillow: above 95 only grows the file
columns_max = 16
tiles_max = 256


def thumbnail_jpeg(frames: np.ndarray, *, side_max: int = 512, quality: int = 85) -> bytes:
    """The middle frame as a JPEG, downscaled (never upscaled) to fit a side_max square."""
    check_frames(frames, even_sides=False)
    if side_max < 1:
        raise MediaError(f"side_max must be >= 1, got {side_max}")
    _check_quality(quality)
    image = Image.fromarray(np.ascontiguousarray(frames[len(frames) // 2]))
    image.thumbnail((side_max, side_max), Image.Resampling.LANCZOS)
    return _jpeg(image, quality)


def spritesheet_jpeg(frames: np.ndarray, *, columns: int = 5, tiles: int = 25, tile_width_px: int = 160,
                     quality: int = 80) -> bytes:
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
    return _jpeg(sheet, quality)


def _check_quality(quality: int) -> None:
    if not 1 <= quality <= jpeg_quality_max:
        raise MediaError(f"quality must be between 1 and {jpeg_quality_max}, got {quality}")


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()
