"""Invisible watermark: a 32-bit job mark + CRC-16 hidden in the luma of every frame.

Scheme (dither-modulated QIM on smooth per-cell patterns):
- Each frame is cut into a fixed CELLS x CELLS grid, whatever its size, so the grid lands on the same
  picture regions after a downscale.
- Each cell holds three carriers, the cell's projections onto smooth patterns sin(a pi y) sin(b pi x)
  in cell coordinates: zero at the cell borders (no seams), zero mean (the cell's brightness is kept).
  Each carrier carries one of the 48 code bits; a keyed permutation spreads each bit over four carriers
  in different cells of every frame.
- The projection is moved to the nearest point of the bit's lattice (step `step`, keyed dither), and
  the change is added equally to R, G and B, so only luma moves.
- Decoding averages a soft vote per cell over all cells and frames of a bit, takes signs, and accepts
  the 32-bit mark only when the CRC-16 matches and the votes are confident; on unmarked video the
  votes are near zero and the CRC rejects what chance leaves. A failed CRC is retried with either of the
  two least certain bits flipped (single-error correction, safe at the CRC's Hamming distance of 4).

Low spatial frequencies survive H.264 quantisation and downscaling; QIM removes the picture's own
content from the vote (a static scene does not bias the bits). Measured robustness: bench/RESULTS.md.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass

import av
import numpy as np

from vidfactory.media.encode import check_frames
from vidfactory.media.errors import MediaError

__all__ = [
    "CODE_BITS",
    "PAYLOAD_BITS",
    "WATERMARK_SIDE_MIN_PX",
    "WatermarkReading",
    "crc16",
    "embed_watermark",
    "extract_watermark",
    "extract_watermark_from_video",
    "watermark_payload",
]

PAYLOAD_BITS = 32
CRC_BITS = 16
CODE_BITS = PAYLOAD_BITS + CRC_BITS
CELLS = 8  # per side: 64 cells per frame; coarse cells keep the carriers low-frequency at any size
# (vertical, horizontal) half-periods of each carrier sin(a pi y) sin(b pi x) in a cell: mutually
# orthogonal, zero-mean, zero on the cell border. 3 carriers x 64 cells = 192, four per code bit.
CARRIERS = ((1, 2), (2, 1), (2, 2))
WATERMARK_SIDE_MIN_PX = 4 * CELLS  # a two-half-period carrier needs at least 4 px per cell
STEP_DEFAULT = 9.0  # QIM lattice step in luma levels: ~1.6 levels of change on average
TEXTURE_FULL_STRENGTH = 12.0  # luma std of a cell at and above which it takes the whole change
MASKING_FLOOR = 0.5  # share of the change a flat cell takes (distortion-compensated QIM)
CONFIDENCE_MIN = 0.1  # mean |vote| below this is noise; moving unmarked video scores ~0.04
# A failed CRC is retried with each of these weakest bits flipped: one bit with a near-zero vote is how a
# small clip re-encoded hard loses its mark; each retry adds 2**-16 to the odds of a false read.
WEAK_BITS_CORRECTED = 2
CHUNK_FRAMES = 8  # frames processed at once: bounds float32 memory to ~8 frames
LUMA_709 = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)
DEFAULT_KEY = b"vidfactory-watermark-v1"


@dataclass(frozen=True)
class WatermarkReading:
    payload: int  # the 32-bit job mark
    confidence: float  # mean |vote| over the 48 code bits: 0 = noise, 1 = untouched
    frames: int  # frames the votes came from


def watermark_payload(job_id: str) -> int:
    """The 32-bit mark for a job id: the first 4 bytes of its SHA-256 (store it to look the job up)."""
    if not job_id:
        raise MediaError("job_id must not be empty")
    return int.from_bytes(hashlib.sha256(job_id.encode()).digest()[:4], "big")


def crc16(value: int, bits: int = PAYLOAD_BITS) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) of `value` taken as `bits` big-endian bits."""
    crc = 0xFFFF
    for i in reversed(range(bits)):
        bit = (value >> i) & 1
        top = (crc >> 15) & 1
        crc = (crc << 1) & 0xFFFF
        if top ^ bit:
            crc ^= 0x1021
    return crc


def embed_watermark(
    frames: np.ndarray, payload: int, *, step: float = STEP_DEFAULT, key: bytes = DEFAULT_KEY
) -> np.ndarray:
    """A copy of `frames` (uint8 [F, H, W, 3]) carrying `payload` in every frame."""
    # 1. Check inputs.
    _check_frames(frames)
    if not 0 <= payload < 2**PAYLOAD_BITS:
        raise MediaError(f"payload must be a {PAYLOAD_BITS}-bit unsigned integer, got {payload}")
    if not 1.0 <= step <= 64.0:
        raise MediaError(f"step must be between 1 and 64 luma levels, got {step}")
    # 2. The code word, and per cell: which bit it carries and its lattice dither.
    layout = _Layout.build(frames.shape[1], frames.shape[2], key)
    code = _code_bits(payload)
    cell_bits = code[layout.cell_bit]  # [K, CELLS, CELLS] of 0/1
    # 3. Frame chunks: project, quantise onto the bit's lattice, add the difference as luma.
    out = np.empty_like(frames)
    offset = layout.dither + cell_bits / 2.0
    for start, chunk in _chunks(frames):
        luma = _rgb_luma(chunk)
        coeffs = layout.project(luma)  # [n, K, CELLS, CELLS]
        target = step * (np.round(coeffs / step - offset) + offset)
        strength = layout.masking(luma)[:, None]  # [n, 1, CELLS, CELLS]
        delta = np.rint(layout.expand(strength * (target - coeffs))).astype(np.int16)  # [n, H, W]
        # The frames are integers, so rounding the change alone rounds the result the same way.
        marked = chunk.astype(np.int16)
        marked += delta[..., None]
        out[start : start + len(chunk)] = np.clip(marked, 0, 255, out=marked)
    return out


def extract_watermark(
    frames: np.ndarray, *, step: float = STEP_DEFAULT, key: bytes = DEFAULT_KEY
) -> WatermarkReading | None:
    """The mark in RGB frames (any size with the original aspect ratio), or None when there is none."""
    _check_frames(frames)
    layout = _Layout.build(frames.shape[1], frames.shape[2], key)
    votes = np.zeros(layout.cell_bit.shape, dtype=np.float64)
    for _, chunk in _chunks(frames):
        votes += _cell_votes(layout, _rgb_luma(chunk), step)
    return _decide(layout, votes, len(frames))


def extract_watermark_from_video(
    data: bytes, *, frames_max: int = 240, step: float = STEP_DEFAULT, key: bytes = DEFAULT_KEY
) -> WatermarkReading | None:
    """The mark in a video file's bytes (any container PyAV reads), read from the decoded luma plane."""
    if frames_max < 1:
        raise MediaError(f"frames_max must be >= 1, got {frames_max}")
    votes: np.ndarray | None = None
    layout: _Layout | None = None
    count = 0
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                raise MediaError("the file has no video stream")
            for frame in container.decode(container.streams.video[0]):
                luma = _luma_plane(frame)
                if layout is None:
                    _check_side(luma.shape[0], luma.shape[1])
                    layout = _Layout.build(luma.shape[0], luma.shape[1], key)
                    votes = np.zeros(layout.cell_bit.shape, dtype=np.float64)
                votes += _cell_votes(layout, luma[None], step)
                count += 1
                if count >= frames_max:
                    break
    except av.FFmpegError as exc:
        raise MediaError(f"not a readable video: {exc}") from exc
    if layout is None or votes is None:
        raise MediaError("the video has no frames")
    return _decide(layout, votes, count)


@dataclass(frozen=True)
class _Layout:
    """Where the cells are in a frame of one size, their carriers, and which code bit each carries.

    Every carrier is separable, wave_y(y) * wave_x(x) inside each cell, so projecting a frame onto all
    cells at once is two small matrix products (Y[k]^T @ luma @ X[k]), and so is drawing them back.
    """

    rows: np.ndarray  # [H, CELLS] float32: 1 where row y lies in cell row i (cell sums)
    cols: np.ndarray  # [W, CELLS] float32: the same for columns
    wave_y: np.ndarray  # [K, H, CELLS] float32: carrier k's vertical wave, in row y's cell column
    wave_x: np.ndarray  # [K, W, CELLS] float32
    wave_x_flat: np.ndarray  # [W, K * CELLS] float32: wave_x side by side, for one GEMM
    energy: np.ndarray  # [K, CELLS, CELLS]: sum of carrier^2 over each cell
    cell_bit: np.ndarray  # [K, CELLS, CELLS] int: code bit index per carrier
    dither: np.ndarray  # [K, CELLS, CELLS] in [0, 1): lattice offset per carrier

    @classmethod
    def build(cls, height: int, width: int, key: bytes) -> _Layout:
        rows, cols = _cell_indicator(height), _cell_indicator(width)
        wave_y = np.stack([_cell_wave(rows, fy * np.pi) for fy, _ in CARRIERS])
        wave_x = np.stack([_cell_wave(cols, fx * np.pi) for _, fx in CARRIERS])
        energy = (wave_y**2).sum(axis=1)[:, :, None] * (wave_x**2).sum(axis=1)[:, None, :]
        rng = np.random.default_rng(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))
        shape = (len(CARRIERS), CELLS, CELLS)
        cell_bit = (rng.permutation(int(np.prod(shape))) % CODE_BITS).reshape(shape)
        dither = rng.random(shape)
        wave_x_flat = np.ascontiguousarray(wave_x.transpose(1, 0, 2).reshape(width, -1))
        return cls(rows, cols, wave_y, wave_x, wave_x_flat, np.maximum(energy, 1e-6), cell_bit, dither)

    def project(self, luma: np.ndarray) -> np.ndarray:
        """[n, H, W] luma to [n, K, CELLS, CELLS]: per cell, the amplitude of each carrier in it."""
        n, height, width = luma.shape
        # One GEMM over all rows of all frames: [n*H, W] @ [W, K*CELLS].
        across = (luma.reshape(n * height, width) @ self.wave_x_flat).reshape(n, height, len(CARRIERS), CELLS)
        sums = np.einsum("khc,nhkd->nkcd", self.wave_y, across, optimize=True)
        return sums / self.energy

    def masking(self, luma: np.ndarray) -> np.ndarray:
        """[n, CELLS, CELLS] share of the way to the lattice point each cell moves: all of it where
        texture hides the change, MASKING_FLOOR in flat cells, where a smooth pattern would show.
        Moving part of the way still leaves the projection nearer its own lattice, so the vote holds."""
        # Every other row and column is plenty to tell texture from flat, at a quarter of the cost.
        sample, rows, cols = luma[:, ::2, ::2], self.rows[::2], self.cols[::2]
        n, height, width = sample.shape
        both = np.concatenate([sample, sample * sample]).reshape(2 * n * height, width) @ cols
        sums = np.einsum("hc,mhd->mcd", rows, both.reshape(2 * n, height, CELLS), optimize=True)
        area = np.maximum(np.outer(rows.sum(axis=0), cols.sum(axis=0)), 1.0)
        mean, mean_square = sums[:n] / area, sums[n:] / area
        variance = np.maximum(mean_square - mean**2, 0.0)
        return np.clip(np.sqrt(variance) / TEXTURE_FULL_STRENGTH, MASKING_FLOOR, 1.0)

    def expand(self, amplitudes: np.ndarray) -> np.ndarray:
        """[n, K, CELLS, CELLS] amplitudes to the [n, H, W] luma change they stand for."""
        n, height, width = amplitudes.shape[0], self.rows.shape[0], self.cols.shape[0]
        down = np.einsum("khc,nkcd->nhkd", self.wave_y, amplitudes, optimize=True).astype(np.float32)
        # One GEMM back: [n*H, K*CELLS] @ [K*CELLS, W].
        return (down.reshape(n * height, -1) @ self.wave_x_flat.T).reshape(n, height, width)


def _cell_indicator(length: int) -> np.ndarray:
    """[length, CELLS] float32 with a 1 at (p, the cell pixel p falls in); cells split length evenly."""
    bounds = np.linspace(0, length, CELLS + 1).round().astype(int)
    cell_of = np.searchsorted(bounds, np.arange(length), side="right") - 1
    indicator = np.zeros((length, CELLS), dtype=np.float32)
    indicator[np.arange(length), cell_of] = 1.0
    return indicator


def _cell_wave(indicator: np.ndarray, omega: float) -> np.ndarray:
    """[length, CELLS]: sin(omega * t) in each pixel's cell column, t running 0..1 across the cell."""
    cell_of = indicator.argmax(axis=1)
    sizes = indicator.sum(axis=0)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    t = (np.arange(len(cell_of)) - starts[cell_of] + 0.5) / sizes[cell_of]
    return (indicator * np.sin(omega * t)[:, None]).astype(np.float32)


def _cell_votes(layout: _Layout, luma: np.ndarray, step: float) -> np.ndarray:
    """Sum over frames of each cell's soft vote: +1 on the bit-0 lattice, -1 on the bit-1 lattice."""
    phase = layout.project(luma) / step - layout.dither
    return np.cos(2 * np.pi * phase).sum(axis=0)


def _decide(layout: _Layout, votes: np.ndarray, frames: int) -> WatermarkReading | None:
    per_bit = np.zeros(CODE_BITS)
    cells = np.zeros(CODE_BITS)
    np.add.at(per_bit, layout.cell_bit.ravel(), votes.ravel())
    np.add.at(cells, layout.cell_bit.ravel(), 1.0)
    mean_vote = per_bit / (cells * frames)
    confidence = float(np.abs(mean_vote).mean())
    if confidence < CONFIDENCE_MIN:
        return None
    payload = _checked_payload(mean_vote)
    if payload is None:
        return None
    return WatermarkReading(payload=payload, confidence=confidence, frames=frames)


def _checked_payload(mean_vote: np.ndarray) -> int | None:
    """The payload whose CRC matches: the votes' signs as they are, else with one of the
    WEAK_BITS_CORRECTED least certain bits flipped. CRC-16/CCITT is at Hamming distance 4 on 48 bits,
    so a single flip never turns a word with up to two wrong bits into another valid one."""
    value = int("".join(map(str, (mean_vote < 0).astype(int))), 2)
    weakest = np.argsort(np.abs(mean_vote))[:WEAK_BITS_CORRECTED]
    for flip in [0, *(1 << (CODE_BITS - 1 - int(bit)) for bit in weakest)]:
        payload, check = (value ^ flip) >> CRC_BITS, (value ^ flip) & (2**CRC_BITS - 1)
        if check == crc16(payload):
            return payload
    return None


def _code_bits(payload: int) -> np.ndarray:
    value = (payload << CRC_BITS) | crc16(payload)
    return np.array([(value >> (CODE_BITS - 1 - i)) & 1 for i in range(CODE_BITS)], dtype=np.float64)


def _luma_plane(frame: av.VideoFrame) -> np.ndarray:
    """Full-range luma (0..255) of a decoded frame, straight from its Y plane where it has one."""
    if frame.format.name in {"yuv420p", "yuvj420p", "yuv422p", "yuv444p", "yuvj422p", "yuvj444p"}:
        plane = frame.to_ndarray()[: frame.height].astype(np.float32)
        if frame.format.name.startswith("yuvj"):  # already full range
            return plane
        return (plane - 16.0) * (255.0 / 219.0)  # limited (16..235) to full range
    return frame.to_ndarray(format="rgb24").astype(np.float32) @ LUMA_709


def _rgb_luma(frames: np.ndarray) -> np.ndarray:
    """[n, H, W] float32 BT.709 luma of uint8 RGB frames (the encoder's matrix)."""
    return frames.astype(np.float32) @ LUMA_709


def _chunks(frames: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    for start in range(0, len(frames), CHUNK_FRAMES):
        yield start, frames[start : start + CHUNK_FRAMES]


def _check_frames(frames: np.ndarray) -> None:
    check_frames(frames, even_sides=False)
    _check_side(frames.shape[1], frames.shape[2])


def _check_side(height: int, width: int) -> None:
    if min(height, width) < WATERMARK_SIDE_MIN_PX:
        raise MediaError(
            f"the watermark needs frames of at least {WATERMARK_SIDE_MIN_PX} px a side, got {width}x{height}"
        )
