"""Frames to an H.264 MP4 (with container metadata tags), and a probe to check MP4s.

Pure functions on plain values (uint8 [F, H, W, 3] RGB frames, bytes): no database, no storage.
"""

from __future__ import annotations

import hashlib
import io
import math
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from vidfactory.media.errors import MediaError

__all__ = [
    "FPS_MAX",
    "SIDE_MAX_PX",
    "DecodedVideo",
    "VideoProbe",
    "bit_rate_ceiling_kbps",
    "check_frames",
    "decode_mp4",
    "encode_mp4",
    "probe_mp4",
    "sha256_hex",
]

FPS_MAX = 120
SIDE_MAX_PX = 4096
X264_PRESETS = frozenset(
    {
        "ultrafast",
        "superfast",
        "veryfast",
        "faster",
        "fast",
        "medium",
        "slow",
        "slower",
        "veryslow",
        "placebo",
    }
)
CRF_MAX = 51  # x264's scale: 0 lossless .. 51 worst
# The bit rate's ceiling (x264's VBV), per pixel per frame. A model's clips sit far below it at CRF 23 (about
# 0.02-0.1); texture-like clips (noise, rain, confetti) would take 2-3 bits a pixel, and the encoder spends its
# time writing those bits: capped, an 832x480 noise clip encodes in about two thirds of the time and is 8x
# smaller. Never below BIT_RATE_FLOOR_KBPS: a small clip carries the invisible watermark in few pixels, and a
# ceiling scaled down to its size blurred the mark away; at the floor no clip below about 480p meets the cap.
BITS_PER_PIXEL_MAX = 0.4
BIT_RATE_FLOOR_KBPS = 2500
VBV_BUFFER_S = 2  # the ceiling holds over any two seconds, so a cut to a busy shot is not starved
BT709 = 1  # AVCOL_PRI_BT709 = AVCOL_TRC_BT709 = AVCOL_SPC_BT709
RANGE_LIMITED = 1  # AVCOL_RANGE_MPEG: what swscale writes for yuv420p and players expect


@dataclass(frozen=True)
class VideoProbe:
    codec: str  # e.g. "h264"
    width: int
    height: int
    frames: int
    fps: float
    pix_fmt: str  # e.g. "yuv420p"
    faststart: bool  # the moov atom precedes mdat: playback starts before the download ends


@dataclass(frozen=True)
class DecodedVideo:
    frames: np.ndarray  # uint8 [F, H, W, 3] RGB
    fps: float


def decode_mp4(data: bytes, *, frames_max: int) -> DecodedVideo:
    """Every frame of the first video stream as RGB, e.g. a clip a hosted API made, so that it goes
    through the same output pipeline as one generated here. Refuses more than `frames_max` frames."""
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                raise MediaError("the file has no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or Fraction(0)
            frames = []
            for frame in container.decode(stream):
                if len(frames) == frames_max:
                    raise MediaError(f"the video has more than {frames_max} frames")
                frames.append(frame.to_ndarray(format="rgb24"))
    except av.FFmpegError as exc:
        raise MediaError(f"not a decodable video: {exc}") from exc
    if not frames:
        raise MediaError("the video has no frames")
    return DecodedVideo(frames=np.stack(frames), fps=float(rate))


def encode_mp4(frames: np.ndarray, fps: int, *, crf: int = 23, preset: str = "veryfast",
               metadata: dict[str, str] | None = None) -> bytes:
    """H.264 (libx264) yuv420p BT.709 MP4 with the index up front (`movflags=+faststart`), CRF under a bit
    rate ceiling (`bit_rate_ceiling_kbps`).

    `metadata`: container tags (e.g. the GB 45438 `AIGC` JSON), written as named keys in the moov box."""
    # 1. Check everything before starting the encoder.
    check_frames(frames, even_sides=True)
    if not 1 <= fps <= FPS_MAX:
        raise MediaError(f"fps must be between 1 and {FPS_MAX}, got {fps}")
    if not 0 <= crf <= CRF_MAX:
        raise MediaError(f"crf must be between 0 and {CRF_MAX}, got {crf}")
    if preset not in X264_PRESETS:
        raise MediaError(f"preset must be one of {sorted(X264_PRESETS)}, got {preset!r}")
    # 2. Encode into a real file: faststart rewrites the file after the last frame by reopening it by name,
    #    which an in-memory buffer cannot do.
    with tempfile.TemporaryDirectory(prefix="vidfactory-encode-") as workdir:
        path = Path(workdir) / "video.mp4"
        try:
            _write_mp4(path, frames, fps, crf, preset, metadata or {})
        except av.FFmpegError as exc:
            raise MediaError(f"H.264 encoding failed: {exc}") from exc
        return path.read_bytes()


def _write_mp4(path: Path, frames: np.ndarray, fps: int, crf: int, preset: str, metadata: dict[str, str]) -> None:
    _, height, width, _ = frames.shape
    # use_metadata_tags: arbitrary keys (like AIGC) are kept; without it the muxer drops unknown tags.
    options = {"movflags": "+faststart+use_metadata_tags"}
    with av.open(str(path), mode="w", format="mp4", options=options) as container:
        container.metadata.update(metadata)
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        maxrate_kbps = bit_rate_ceiling_kbps(width, height, fps)
        stream.options = {"crf": str(crf), "preset": preset,
                          "x264-params": f"vbv-maxrate={maxrate_kbps}:vbv-bufsize={maxrate_kbps * VBV_BUFFER_S}"}
        # Tag what the conversion below does, so players do not guess the matrix (and shift colours).
        codec = stream.codec_context
        codec.color_primaries, codec.color_trc, codec.colorspace = BT709, BT709, BT709
        codec.color_range = RANGE_LIMITED
        for rgb in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            container.mux(stream.encode(frame.reformat(format="yuv420p", dst_colorspace="ITU709")))
        container.mux(stream.encode(None))  # flush the encoder's delayed frames


def bit_rate_ceiling_kbps(width: int, height: int, fps: int) -> int:
    return max(BIT_RATE_FLOOR_KBPS, math.ceil(width * height * fps * BITS_PER_PIXEL_MAX / 1000))


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def probe_mp4(data: bytes) -> VideoProbe:
    """What an MP4 really holds (first video stream), read from its bytes; frames are counted by packet."""
    try:
        with av.open(io.BytesIO(data), mode="r", format="mp4") as container:
            if not container.streams.video:
                raise MediaError("the file has no video stream")
            stream = container.streams.video[0]
            frames = sum(1 for packet in container.demux(stream) if packet.size)
            codec = stream.codec_context
            rate = stream.average_rate or stream.guessed_rate or Fraction(0)
            probe = VideoProbe(
                codec=codec.name,
                width=codec.width,
                height=codec.height,
                frames=frames,
                fps=float(rate),
                pix_fmt=codec.pix_fmt or "",
                faststart=_moov_before_mdat(data),
            )
    except av.FFmpegError as exc:
        raise MediaError(f"not a readable MP4: {exc}") from exc
    return probe


def _moov_before_mdat(data: bytes) -> bool:
    names = [name for name, _ in _top_level_boxes(data)]
    if "moov" not in names or "mdat" not in names:
        raise MediaError(f"not a complete MP4: top-level boxes are {names}")
    return names.index("moov") < names.index("mdat")


def _top_level_boxes(data: bytes) -> Iterator[tuple[str, int]]:
    """(type, offset) of each top-level ISO BMFF box: 32-bit size + type, size 1 = 64-bit size follows."""
    offset = 0
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset : offset + 4], "big")
        name = data[offset + 4 : offset + 8].decode("latin-1")
        if size == 1:
            size = int.from_bytes(data[offset + 8 : offset + 16], "big")
        elif size == 0:  # the box runs to the end of the file
            size = len(data) - offset
        if size < 8:
            raise MediaError(f"corrupt MP4: box {name!r} at offset {offset} has size {size}")
        yield name, offset
        offset += size


def check_frames(frames: np.ndarray, *, even_sides: bool) -> None:
    if not isinstance(frames, np.ndarray):
        raise MediaError(f"frames must be a numpy array, got {type(frames).__name__}")
    if frames.dtype != np.uint8:
        raise MediaError(f"frames must be uint8, got {frames.dtype}")
    if frames.ndim != 4 or frames.shape[3] != 3:
        raise MediaError(f"frames must have shape [F, H, W, 3], got {list(frames.shape)}")
    count, height, width, _ = frames.shape
    if count < 1:
        raise MediaError("frames must hold at least one frame")
    if not (1 <= height <= SIDE_MAX_PX and 1 <= width <= SIDE_MAX_PX):
        raise MediaError(f"frame size must be between 1 and {SIDE_MAX_PX} px per side, got {width}x{height}")
    if even_sides and (height % 2 or width % 2):
        raise MediaError(f"yuv420p needs even width and height, got {width}x{height}")
