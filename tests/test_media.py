"""Encoding frames to deliverables: H.264 MP4 (checked by probing it back), WebP or JPEG thumbnails, hashes."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from vidfactory.media.encode import (BIT_RATE_FLOOR_KBPS, VBV_BUFFER_S, bit_rate_ceiling_kbps, encode_mp4,
                                     probe_mp4, sha256_hex)
from vidfactory.media.preview import thumbnail_image
from vidfactory.media.errors import MediaError


def gradient_frames(count: int, height: int, width: int) -> np.ndarray:
    """A moving colour gradient: smooth like real video, different in every frame."""
    ys, xs = np.mgrid[0:height, 0:width]
    frames = [
        np.stack([(xs * 2 + t * 8) % 256, (ys * 2) % 256, np.full_like(xs, t * 16 % 256)], axis=-1)
        for t in range(count)
    ]
    return np.asarray(frames, dtype=np.uint8)


FRAMES = gradient_frames(9, 64, 96)


def test_encode_gives_h264_yuv420p_faststart_with_every_frame() -> None:
    probe = probe_mp4(encode_mp4(FRAMES, 8))
    assert probe.codec == "h264"
    assert probe.pix_fmt == "yuv420p"
    assert (probe.width, probe.height) == (96, 64)
    assert probe.frames == 9
    assert probe.fps == 8.0
    assert probe.faststart is True


def test_encode_is_faithful_to_the_colours() -> None:
    frames = np.zeros((3, 32, 32, 3), dtype=np.uint8)
    frames[...] = (200, 50, 100)
    with av.open(io.BytesIO(encode_mp4(frames, 8, crf=10)), mode="r") as container:
        decoded = next(container.decode(video=0)).to_ndarray(format="rgb24")
    assert np.abs(decoded.astype(int) - (200, 50, 100)).max() <= 3


def test_a_single_frame_encodes() -> None:
    assert probe_mp4(encode_mp4(FRAMES[:1], 24)).frames == 1


def test_a_lower_crf_gives_a_larger_file() -> None:
    assert len(encode_mp4(FRAMES, 8, crf=10)) > len(encode_mp4(FRAMES, 8, crf=40))


def test_a_texture_clip_stays_under_the_bit_rate_ceiling() -> None:
    """Noise at CRF 23 takes about 8 bits a pixel (some 5 MB here); the ceiling bounds the file, and the encode."""
    frames_n, height, width, fps = 16, 480, 640, 16
    noise = np.random.default_rng(7).integers(0, 256, (frames_n, height, width, 3), np.uint8)
    ceiling_bits = bit_rate_ceiling_kbps(width, height, fps) * 1000 * (frames_n / fps + VBV_BUFFER_S)
    container_bytes_max = 4096
    assert len(encode_mp4(noise, fps)) <= ceiling_bits / 8 + container_bytes_max


def test_small_clips_are_never_capped_below_the_floor() -> None:
    assert bit_rate_ceiling_kbps(64, 64, 16) == BIT_RATE_FLOOR_KBPS
    assert bit_rate_ceiling_kbps(832, 480, 16) == 2556  # 0.4 bits a pixel
    assert bit_rate_ceiling_kbps(1280, 720, 16) > bit_rate_ceiling_kbps(832, 480, 16)


@pytest.mark.parametrize(
    ("frames", "kwargs", "message"),
    [
        (FRAMES.astype(np.float32), {}, "uint8"),
        (FRAMES[0], {}, r"\[F, H, W, 3\]"),
        (np.zeros((2, 64, 64, 4), np.uint8), {}, r"\[F, H, W, 3\]"),
        (FRAMES[:0], {}, "at least one frame"),
        (FRAMES[:, :63], {}, "even width and height"),
        (FRAMES[:, :, :95], {}, "even width and height"),
        ([[[[0, 0, 0]]]], {}, "numpy array"),
        (FRAMES, {"fps": 0}, "fps"),
        (FRAMES, {"crf": 52}, "crf"),
        (FRAMES, {"preset": "ludicrous"}, "preset"),
    ],
)
def test_bad_input_raises_media_error(frames, kwargs: dict, message: str) -> None:
    with pytest.raises(MediaError, match=message):
        encode_mp4(frames, kwargs.pop("fps", 8), **kwargs)


def test_the_thumbnail_is_the_middle_frame_within_side_max() -> None:
    frames = np.zeros((3, 300, 800, 3), dtype=np.uint8)
    frames[1] = 255  # the middle one is white
    image = Image.open(io.BytesIO(thumbnail_image(frames, side_max=200)))
    assert image.format == "WEBP"  # as OpenAI serves it
    assert max(image.size) == 200 and image.size == (200, 75)
    assert np.asarray(image).mean() > 250


def test_a_small_thumbnail_is_not_upscaled() -> None:
    image = Image.open(io.BytesIO(thumbnail_image(FRAMES)))
    assert image.size == (96, 64)


def test_thumbnail_rejects_bad_input() -> None:
    with pytest.raises(MediaError, match="uint8"):
        thumbnail_image(FRAMES.astype(np.int16))
    with pytest.raises(MediaError, match="side_max"):
        thumbnail_image(FRAMES, side_max=0)
    with pytest.raises(MediaError, match="quality"):
        thumbnail_image(FRAMES, quality=100)


def test_probe_reports_a_file_without_faststart(tmp_path: Path) -> None:
    # What ffmpeg writes by default: the index (moov) after the media data (mdat).
    path = tmp_path / "plain.mp4"
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for rgb in FRAMES:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode(None))
    probe = probe_mp4(path.read_bytes())
    assert probe.faststart is False
    assert probe.frames == 9


@pytest.mark.parametrize("data", [b"", b"not a video at all", b"\x00\x00\x00\x08ftyp" * 4])
def test_probe_rejects_what_is_not_an_mp4(data: bytes) -> None:
    with pytest.raises(MediaError):
        probe_mp4(data)


def test_sha256_hex() -> None:
    assert sha256_hex(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
