"""Reference images for image-to-video: check an uploaded file, decode it to RGB, crop it to a clip's shape.
Pure functions (bytes and arrays in and out).

The stored file is the client's own bytes (its SHA-256 is what the job, the cache and the idempotency
fingerprint name); every decode of it goes through `decode_rgb`, so the API's check and the worker's
frame agree.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps

__all__ = [
    "ReferenceImage",
    "ReferenceRefused",
    "center_crop",
    "decode_bytes_per_pixel",
    "decode_rgb",
    "peek_pixels",
    "read_reference",
    "reference_bytes_max",
    "reference_content_types",
    "reference_pixels_max",
    "reference_side_max_px",
    "reference_side_min_px",
]

# 6 MB: as base64 in a JSON body (4/3 larger) it still fits the API's 10 MB request limit.
reference_bytes_max = 6_000_000
reference_side_min_px = 16
reference_side_max_px = 4096
# Checked from the header before any pixel is decoded: a small file must not expand to gigabytes.
reference_pixels_max = 4096 * 4096
reference_content_types = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
# Peak bytes per pixel while `read_reference` decodes: an RGBA decode, its transposed copy, and the
# RGBA/RGB composites flattening transparency (measured ~15 on a 4096² RGBA PNG; rounded up).
decode_bytes_per_pixel = 16


class ReferenceRefused(ValueError):
    """A file that is not a usable reference image; the message says why, for the API's 400."""


@dataclass(frozen=True)
class ReferenceImage:
    data: bytes = field(repr=False)  # the file as uploaded
    sha256: str
    width: int  # after EXIF orientation: as the model sees it
    height: int
    content_type: str  # from the decoded format, not from what the client declared

    @property
    def extension(self) -> str:
        return {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}[self.content_type]


def _open(data: bytes) -> Image.Image:
    if not data:
        raise ReferenceRefused("the image is empty")
    if len(data) > reference_bytes_max:
        # PNG is what outgrows the cap first (a 2048² photo is ~7 MB; as JPEG or WebP it is under 1 MB).
        raise ReferenceRefused(f"the image is {len(data)} bytes; at most {reference_bytes_max} bytes "
                               "(a photo saved as JPEG or WebP is several times smaller than as PNG)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=list(reference_content_types))
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ReferenceRefused(f"the image has too many pixels: {exc}") from exc
    except (OSError, SyntaxError, ValueError) as exc:  # UnidentifiedImageError is an OSError
        raise ReferenceRefused("not a PNG, JPEG or WebP image") from exc
    width, height = image.size
    if width * height > reference_pixels_max or max(width, height) > reference_side_max_px:
        raise ReferenceRefused(f"the image is {width}x{height} px; at most {reference_side_max_px} px a side "
                               f"and {reference_pixels_max} pixels")
    if min(width, height) < reference_side_min_px:
        raise ReferenceRefused(f"the image is {width}x{height} px; at least {reference_side_min_px} px "
                               "a side")
    # One still frame is the first frame of the clip; which frame of an animation was meant is a guess.
    if getattr(image, "n_frames", 1) > 1:
        raise ReferenceRefused("an animated image: send one still frame")
    return image


def peek_pixels(data: bytes) -> int:
    """The pixel count from the header alone, after the same checks `read_reference` makes first: what a
    decode of it will cost (decode_bytes_per_pixel each), known before any pixel is decoded."""
    width, height = _open(data).size
    return width * height


def read_reference(data: bytes) -> ReferenceImage:
    """Check and fully decode the file (a truncated or corrupt one is refused here, not in the worker)."""
    image = _open(data)
    content_type = reference_content_types[image.format]
    try:
        rgb = _to_rgb(image)
    except (OSError, ValueError, SyntaxError) as exc:  # Pillow's errors for truncated and corrupt files
        raise ReferenceRefused(f"the image cannot be decoded: {exc}") from exc
    return ReferenceImage(data=data, sha256=hashlib.sha256(data).hexdigest(), width=rgb.width,
                          height=rgb.height, content_type=content_type)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Upright (EXIF orientation, as phones store photos), transparency flattened onto white."""
    image.load()
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def decode_rgb(data: bytes) -> np.ndarray:
    """uint8 [H, W, 3] of a file `read_reference` accepted."""
    try:
        return np.asarray(_to_rgb(_open(data)), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as exc:
        raise ReferenceRefused(f"the image cannot be decoded: {exc}") from exc


def center_crop(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """The largest centred region of `image` with the aspect ratio width:height, so that resizing it
    to the clip's size (the engine does) stretches nothing."""
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, (image.dtype, image.shape)
    assert width >= 1 and height >= 1
    rows, cols = image.shape[:2]
    # Integer cross-multiplication: no rounding decides which side is cut.
    if cols * height > rows * width:  # too wide: cut the sides
        keep = max(1, round(rows * width / height))
        left = (cols - keep) // 2
        return image[:, left:left + keep]
    keep = max(1, round(cols * height / width))
    top = (rows - keep) // 2
    return image[top:top + keep, :]
