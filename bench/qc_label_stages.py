"""Seconds per output stage for 81 frames at 832x480: QC, labels, watermark, encode.

The clip is synthetic (smooth coloured structure drifting plus fine texture). Median of 3 runs each,
one process, numpy with its default threads. Run: .venv/bin/python bench/qc_label_stages.py
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import git_revision, machine  # noqa: E402
from vidfactory.media.encode import encode_mp4  # noqa: E402
from vidfactory.media.faces import face_distortion  # noqa: E402
from vidfactory.media.label import BrandMark, apply_brand, apply_label  # noqa: E402
from vidfactory.media.qc import run_qc  # noqa: E402
from vidfactory.media.watermark import embed_watermark, extract_watermark_from_video, watermark_payload  # noqa: E402
from watermark_robustness import scene  # noqa: E402

RUNS = 3
FPS = 16


def timed(fn: Callable[[], object]) -> float:
    samples = []
    for _ in range(RUNS):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    frames = scene(81, 480, 832, seed=3)
    labelled, _ = apply_label(frames, FPS)
    marked = embed_watermark(labelled, watermark_payload("video_bench"))
    mp4 = encode_mp4(marked, FPS)
    stages = {
        "QC without faces (black, flicker, spikes, frozen)": lambda: run_qc(frames, faces_enabled=False),
        "QC face distortion (8 sampled frames, Haar)": lambda: face_distortion(frames),
        "AI label (opening 2 s)": lambda: apply_label(frames, FPS),
        "brand text mark (every frame)": lambda: apply_brand(frames, BrandMark(text="ACME 工作室")),
        "watermark embed": lambda: embed_watermark(labelled, watermark_payload("video_bench")),
        "H.264 encode (CRF 23, veryfast)": lambda: encode_mp4(marked, FPS),
        "watermark read back from the MP4 (verify)": lambda: extract_watermark_from_video(mp4),
    }
    print(f"# output stages — {machine()}, commit {git_revision()}, 81 frames 832x480, median of {RUNS}")
    print("| stage | seconds |")
    print("|---|---|")
    chain = 0.0
    for name, fn in stages.items():
        seconds = timed(fn)
        if not name.startswith(("brand", "watermark read")):
            chain += seconds
        print(f"| {name} | {seconds:.3f} |")
    print(f"| chain: QC + faces + label + watermark + encode | {chain:.3f} |")


if __name__ == "__main__":
    main()
