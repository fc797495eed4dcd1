"""Reference images (media/reference.py): what is accepted, what is refused and why, and the crop that
makes an image the clip's first frame without stretching it. Pure functions, no database."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from vidfactory.media.reference import (
    ReferenceRefused,
    center_crop,
    decode_rgb,
    read_reference,
    reference_bytes_max,
)


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def gradient(width: int, height: int) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.uint8)[:, None].repeat(width, 1)
    return Image.fromarray(np.stack([x, y, 255 - x], axis=-1))


@pytest.mark.parametrize(("fmt", "content_type"), [("PNG", "image/png"), ("JPEG", "image/jpeg"),
                                                   ("WEBP", "image/webp")])
def test_png_jpeg_and_webp_are_read_with_their_size_format_and_hash(fmt, content_type) -> None:
    data = encoded(gradient(96, 64), fmt)
    reference = read_reference(data)
    assert (reference.width, reference.height, reference.content_type) == (96, 64, content_type)
    assert reference.sha256 == hashlib.sha256(data).hexdigest() and reference.data == data
    assert decode_rgb(data).shape == (64, 96, 3)


def test_the_format_comes_from_the_bytes_not_the_name() -> None:
    assert read_reference(encoded(gradient(32, 32), "JPEG")).extension == "jpg"


def test_a_phone_photo_is_turned_upright() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    data = encoded(gradient(96, 64), "JPEG", exif=exif)
    reference = read_reference(data)
    assert (reference.width, reference.height) == (64, 96)
    assert decode_rgb(data).shape == (96, 64, 3)


def test_transparency_is_flattened_onto_white() -> None:
    rgba = np.zeros((32, 32, 4), np.uint8)  # fully transparent black
    rgba[:16, :, :] = (255, 0, 0, 255)  # the top half opaque red
    pixels = decode_rgb(encoded(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert pixels.dtype == np.uint8 and pixels.shape == (32, 32, 3)
    assert tuple(pixels[0, 0]) == (255, 0, 0) and tuple(pixels[31, 31]) == (255, 255, 255)


def test_grayscale_and_palette_images_become_rgb() -> None:
    gray = Image.fromarray(np.full((20, 20), 77, np.uint8), "L")
    assert tuple(decode_rgb(encoded(gray, "PNG"))[5, 5]) == (77, 77, 77)
    palette = gradient(20, 20).convert("P")
    assert decode_rgb(encoded(palette, "PNG")).shape == (20, 20, 3)


def noise_png() -> bytes:
    rng = np.random.default_rng(0)
    return encoded(Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)), "PNG")


def animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (32, 32), colour) for colour in ("red", "blue")]
    out = io.BytesIO()
    frames[0].save(out, format=fmt, save_all=True, append_images=frames[1:], duration=100)
    return out.getvalue()


def bomb() -> bytes:
    """A 5,000 × 5,000 image in a few kilobytes: 25 million pixels to decode."""
    return encoded(Image.new("L", (5000, 5000)), "PNG", optimize=True)


@pytest.mark.parametrize(("make", "message"), [
    (lambda: b"", "empty"),
    (lambda: b"GIF89a" + b"\0" * 100, "not a PNG, JPEG or WebP"),
    (lambda: encoded(gradient(32, 32), "GIF"), "not a PNG, JPEG or WebP"),
    (lambda: encoded(gradient(32, 32), "BMP"), "not a PNG, JPEG or WebP"),
    (lambda: b"%PDF-1.7 not an image", "not a PNG, JPEG or WebP"),
    (lambda: noise_png()[:2000], "cannot be decoded"),
    (lambda: b"\x89PNG\r\n\x1a\n" + b"\0" * reference_bytes_max, "at most 6000000 bytes"),
    (bomb, "at most 4096 px a side"),
    (lambda: encoded(gradient(8, 64), "PNG"), "at least 16 px a side"),
    (lambda: animated("PNG"), "animated"),
    (lambda: animated("WEBP"), "animated"),
])
def test_what_is_refused_says_why(make, message) -> None:
    data = make()
    with pytest.raises(ReferenceRefused, match=message):
        read_reference(data)


def test_a_bomb_is_refused_before_its_pixels_are_decoded() -> None:
    data = bomb()
    assert len(data) < 100_000  # small on the wire, 25 MB once decoded: the header alone decides
    with pytest.raises(ReferenceRefused):
        decode_rgb(data)


@pytest.mark.parametrize(("shape", "size", "kept"), [
    ((64, 96), (128, 128), (slice(0, 64), slice(16, 80))),  # wider than the clip: the sides go
    ((96, 64), (128, 128), (slice(16, 80), slice(0, 64))),  # taller: top and bottom go
    ((64, 64), (256, 128), (slice(16, 48), slice(0, 64))),  # square to 2:1
    ((90, 160), (1280, 720), (slice(0, 90), slice(0, 160))),  # already 16:9: untouched
    ((101, 100), (128, 128), (slice(0, 100), slice(0, 100))),  # an odd pixel goes from the end
])
def test_center_crop_keeps_the_middle_at_the_clips_aspect_ratio(shape, size, kept) -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    cropped = center_crop(image, *size)
    assert np.array_equal(cropped, image[kept])
    width, height = size
    assert abs(cropped.shape[1] / cropped.shape[0] - width / height) < 0.02
