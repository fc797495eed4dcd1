"""The invisible watermark names the job after real H.264 re-encoding and downscaling, and never
names a job in a video that was not marked."""

from __future__ import annotations

import numpy as np
import pytest

from vidfactory.media.encode import encode_mp4
from vidfactory.media.errors import MediaError
from vidfactory.media.watermark import (
    crc16,
    embed_watermark,
    extract_watermark,
    extract_watermark_from_video,
    watermark_payload,
)

FPS = 8


def scene(frames: int = 24, height: int = 192, width: int = 320, seed: int = 0) -> np.ndarray:
    """Smooth coloured structure drifting across the frame, like a generated clip."""
    rng = np.random.default_rng(seed)
    fx, fy, phase = rng.uniform(8, 30, 3), rng.uniform(8, 30, 3), rng.uniform(0, 6, 3)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    clip = [
        np.stack(
            [128 + 90 * np.sin((xx + 2 * t) / fx[c] + phase[c]) * np.cos(yy / fy[c]) for c in range(3)], -1
        )
        for t in range(frames)
    ]
    return np.clip(clip, 0, 255).astype(np.uint8)


def half(frames: np.ndarray) -> np.ndarray:
    count, height, width, _ = frames.shape
    return frames.reshape(count, height // 2, 2, width // 2, 2, 3).mean(axis=(2, 4)).round().astype(np.uint8)


PAYLOAD = watermark_payload("video_0123456789abcdef")


@pytest.fixture(scope="module")
def marked() -> np.ndarray:
    return embed_watermark(scene(), PAYLOAD)


def test_marking_is_invisible_in_numbers(marked: np.ndarray) -> None:
    change = np.abs(marked.astype(int) - scene())
    assert change.mean() < 2.0 and np.percentile(change, 99) <= 8
    assert extract_watermark(marked).payload == PAYLOAD  # type: ignore[union-attr]


@pytest.mark.parametrize("crf", [23, 28])
def test_mark_survives_h264(marked: np.ndarray, crf: int) -> None:
    reading = extract_watermark_from_video(encode_mp4(marked, FPS, crf=crf))
    assert reading is not None and reading.payload == PAYLOAD
    assert reading.frames == len(marked)


def test_mark_survives_half_size_downscale(marked: np.ndarray) -> None:
    reading = extract_watermark(half(marked))
    assert reading is not None and reading.payload == PAYLOAD
    reading = extract_watermark_from_video(encode_mp4(half(marked), FPS, crf=23))
    assert reading is not None and reading.payload == PAYLOAD


@pytest.mark.parametrize("seed", range(4))
def test_unmarked_video_reads_as_unmarked(seed: int) -> None:
    clip = scene(seed=seed + 10)
    assert extract_watermark(clip) is None
    assert extract_watermark(np.repeat(clip[:1], 8, axis=0)) is None  # a still scene gives no free votes
    assert extract_watermark_from_video(encode_mp4(clip, FPS, crf=23)) is None


def test_another_key_does_not_read_the_mark(marked: np.ndarray) -> None:
    assert extract_watermark(marked, key=b"another-deployment") is None


def test_payload_is_32_bits_per_job_and_crc_detects_flips() -> None:
    assert 0 <= PAYLOAD < 2**32
    assert watermark_payload("video_a") != watermark_payload("video_b")
    assert crc16(PAYLOAD) != crc16(PAYLOAD ^ 1)
    assert crc16(int.from_bytes(b"123456789", "big"), 72) == 0x29B1  # the catalogue check value


@pytest.mark.parametrize(
    "frames,payload",
    [
        (np.zeros((2, 16, 16, 3), np.uint8), 1),  # too small to carry the carriers
        (np.zeros((2, 64, 64, 3), np.float32), 1),
        (np.zeros((2, 64, 64, 3), np.uint8), 2**32),
        (np.zeros((2, 64, 64, 3), np.uint8), -1),
    ],
)
def test_bad_inputs_are_refused(frames: np.ndarray, payload: int) -> None:
    with pytest.raises(MediaError):
        embed_watermark(frames, payload)


def test_unreadable_bytes_are_refused() -> None:
    with pytest.raises(MediaError):
        extract_watermark_from_video(b"not a video")


def test_label_then_mark_then_encode_reads_back_and_passes_qc() -> None:
    """The worker's order: QC on raw frames, label, watermark, encode; verify then reads the MP4."""
    from vidfactory.media.label import apply_label
    from vidfactory.media.qc import run_qc

    clip = scene(seed=3)
    labelled, _ = apply_label(clip, fps=FPS)
    marked = embed_watermark(labelled, PAYLOAD)
    assert run_qc(marked, faces_enabled=False).verdict == run_qc(clip, faces_enabled=False).verdict == "pass"
    reading = extract_watermark_from_video(encode_mp4(marked, FPS, crf=23))
    assert reading is not None and reading.payload == PAYLOAD


def test_a_small_clip_re_encoded_hard_reads_back_through_its_one_weak_bit() -> None:
    """128 px, 9 frames, CRF 28: one code bit's vote lands on the wrong side of zero, one of the two
    least certain of the 48, and flipping it is what makes the CRC match."""
    payload = watermark_payload("video_6")
    marked = embed_watermark(scene(frames=9, height=128, width=128, seed=0), payload)
    reading = extract_watermark_from_video(encode_mp4(marked, FPS, crf=28))
    assert reading is not None and reading.payload == payload
