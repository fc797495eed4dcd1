"""Invisible watermark robustness: bit errors per condition, and false reads on unmarked video.

For each frame size, a synthetic generated-like clip (smooth coloured structure drifting, plus fine
texture) is marked with a 32-bit payload + CRC-16 (48 code bits), then put through each condition:
re-encoded with libx264 at CRF 23 and 28 (preset veryfast, as the platform encodes), downscaled to half
size (box filter), and both. Columns: code bits wrong after voting over all frames (of 48), mean code
bits wrong when each frame is read alone, whether the payload came back, and the vote confidence.
False reads: distinct unmarked clips read with the decoder, payload accepted or not.
Short clips: small, few-frame clips re-encoded at CRF 28 for many payloads, read with the signs as
they are and with the one-bit correction of the weakest votes, side by side; the same for false reads
on single unmarked frames, where the vote-confidence floor rejects least.
Run: .venv/bin/python bench/watermark_robustness.py
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import av  # noqa: E402
import numpy as np  # noqa: E402

from common import git_revision, machine, sized  # noqa: E402
from vidfactory.media import watermark as wm  # noqa: E402
from vidfactory.media.encode import encode_mp4  # noqa: E402

FPS = 16
FRAMES = sized(81, 5)
SIZES = sized([(480, 832), (240, 416), (144, 256)], [(288, 320)])
PAYLOAD = wm.watermark_payload("video_bench")
UNMARKED_CLIPS = sized(2000, 3)
SHORT_CLIP = (9, 128, 128)  # frames, height, width: 1 s at 8 fps, the size the tests generate
SHORT_SCENES, SHORT_PAYLOADS = sized(3, 1), sized(40, 2)
UNMARKED_FRAMES = sized(65_536, 3)


def scene(frames: int, height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    fx, fy, phase = rng.uniform(0.02, 0.12, 3), rng.uniform(0.02, 0.12, 3), rng.uniform(0, 6, 3)
    yy, xx = (
        np.mgrid[0:height, 0:width].astype(np.float32) / max(height, width) * 832
    )  # same look at any size
    texture = rng.normal(0, 6, (height, width, 3)).astype(np.float32)
    clip = np.empty((frames, height, width, 3), np.uint8)
    for t in range(frames):
        base = [
            120 + 80 * np.sin((xx + 3 * t) * fx[c] / 4 + phase[c]) * np.cos((yy - t) * fy[c] / 4)
            for c in range(3)
        ]
        clip[t] = np.clip(np.stack(base, -1) + texture, 0, 255).astype(np.uint8)
    return clip


def half(frames: np.ndarray) -> np.ndarray:
    count, height, width, _ = frames.shape
    return frames.reshape(count, height // 2, 2, width // 2, 2, 3).mean(axis=(2, 4)).round().astype(np.uint8)


def decoded_luma(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as container:
        return np.stack([wm._luma_plane(frame) for frame in container.decode(container.streams.video[0])])


def bit_errors(luma: np.ndarray) -> tuple[int, float, float]:
    """(code bits wrong over all frames, mean code bits wrong per single frame, confidence)."""
    layout = wm._Layout.build(luma.shape[1], luma.shape[2], wm.DEFAULT_KEY)
    code = wm._code_bits(PAYLOAD).astype(int)

    def votes(part: np.ndarray) -> np.ndarray:
        per_bit, cells = np.zeros(wm.CODE_BITS), np.zeros(wm.CODE_BITS)
        np.add.at(per_bit, layout.cell_bit.ravel(), wm._cell_votes(layout, part, wm.STEP_DEFAULT).ravel())
        np.add.at(cells, layout.cell_bit.ravel(), 1.0)
        return per_bit / (cells * len(part))

    total = votes(luma)
    per_frame = [int(((votes(luma[i : i + 1]) < 0).astype(int) != code).sum()) for i in range(len(luma))]
    return (
        int(((total < 0).astype(int) != code).sum()),
        float(np.mean(per_frame)),
        float(np.abs(total).mean()),
    )


def rgb_luma(frames: np.ndarray) -> np.ndarray:
    return frames.astype(np.float32) @ wm.LUMA_709


def main() -> None:
    print(
        f"# watermark robustness — {machine()}, commit {git_revision()}, "
        f"{FRAMES} frames, step {wm.STEP_DEFAULT}"
    )
    print(
        "| frame size | condition | bit errors (of 48, all frames) | mean bit errors per frame "
        "| payload read | confidence |"
    )
    print("|---|---|---|---|---|---|")
    for height, width in SIZES:
        marked = wm.embed_watermark(scene(FRAMES, height, width, seed=1), PAYLOAD)
        conditions = {
            "none": rgb_luma(marked),
            "H.264 CRF 23": decoded_luma(encode_mp4(marked, FPS, crf=23)),
            "H.264 CRF 28": decoded_luma(encode_mp4(marked, FPS, crf=28)),
            "half size": rgb_luma(half(marked)),
            "half size + CRF 23": decoded_luma(encode_mp4(half(marked), FPS, crf=23)),
            "half size + CRF 28": decoded_luma(encode_mp4(half(marked), FPS, crf=28)),
        }
        for name, luma in conditions.items():
            total, per_frame, confidence = bit_errors(luma)
            read = wm._decide(
                wm._Layout.build(luma.shape[1], luma.shape[2], wm.DEFAULT_KEY),
                wm._cell_votes(
                    wm._Layout.build(luma.shape[1], luma.shape[2], wm.DEFAULT_KEY), luma, wm.STEP_DEFAULT
                ),
                len(luma),
            )
            ok = "yes" if read is not None and read.payload == PAYLOAD else "no"
            print(f"| {width}x{height} | {name} | {total} | {per_frame:.1f} | {ok} | {confidence:.2f} |")
    false_reads = sum(
        wm.extract_watermark(scene(8, 64, 96, seed=1000 + i)) is not None for i in range(UNMARKED_CLIPS)
    )
    print(f"\nFalse reads: {false_reads} of {UNMARKED_CLIPS} unmarked 96x64 clips (8 frames each).")
    short_clips()


def read_with_and_without_correction(read) -> tuple[bool, bool]:
    """`read()` with the one-bit correction, then with the signs as they are."""
    corrected = read()
    weak_bits, wm.WEAK_BITS_CORRECTED = wm.WEAK_BITS_CORRECTED, 0
    try:
        return corrected, read()
    finally:
        wm.WEAK_BITS_CORRECTED = weak_bits


def short_clips() -> None:
    frames, height, width = SHORT_CLIP
    reads = np.zeros(2, int)
    for seed in range(SHORT_SCENES):
        clip = scene(frames, height, width, seed=100 + seed)
        for index in range(SHORT_PAYLOADS):
            payload = wm.watermark_payload(f"video_{seed}_{index}")
            mp4 = encode_mp4(wm.embed_watermark(clip, payload), 8, crf=28)
            reads += read_with_and_without_correction(
                lambda: getattr(wm.extract_watermark_from_video(mp4), "payload", None) == payload)
    false_reads = np.zeros(2, int)
    for seed in range(UNMARKED_FRAMES):
        still = scene(1, 64, 96, seed=10_000 + seed)
        false_reads += read_with_and_without_correction(lambda: wm.extract_watermark(still) is not None)
    total = SHORT_SCENES * SHORT_PAYLOADS
    print(f"\nShort clips ({frames} frames, {width}x{height}, CRF 28, {total} payloads over {SHORT_SCENES} scenes):")
    print("| decoder | payloads read | false reads on single unmarked 96x64 frames |")
    print("|---|---|---|")
    print(f"| signs as they are | {reads[1]} of {total} | {false_reads[1]} of {UNMARKED_FRAMES} |")
    print(f"| one-bit correction of the {wm.WEAK_BITS_CORRECTED} weakest | {reads[0]} of {total} "
          f"| {false_reads[0]} of {UNMARKED_FRAMES} |")


if __name__ == "__main__":
    main()
