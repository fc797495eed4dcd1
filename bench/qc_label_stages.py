"""Seconds per output stage for 81 frames at 832x480: QC, labels, watermark, encode.

The clip is synthetic (smooth coloured structure drifting plus fine texture). Median of 3 runs each,
one process, numpy, OpenCV and x264 with their default threads. CPU seconds (process time, all threads)
are what the stage costs a core; wall seconds depend on what else the machine runs. Run: .venv/bin/python bench/qc_label_stages.py
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import git_revision, machine, sized  # noqa: E402
from vidfactory.media.encode import encode_mp4  # noqa: E402
from vidfactory.media.faces import face_distortion  # noqa: E402
from vidfactory.media.label import BrandMark, apply_brand, apply_label  # noqa: E402
from vidfactory.media.qc import run_qc  # noqa: E402
from vidfactory.media.watermark import embed_watermark, extract_watermark_from_video, watermark_payload  # noqa: E402
from watermark_robustness import scene  # noqa: E402

RUNS = sized(3, 1)
FRAMES, HEIGHT, WIDTH = sized((81, 480, 832), (9, 288, 320))
FPS = 16


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """Median wall seconds and median CPU seconds of this process (all its threads: one-core time)."""
    wall, cpu = [], []
    for _ in range(RUNS):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    frames = scene(FRAMES, HEIGHT, WIDTH, seed=3)
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
    print(f"# output stages — {machine()}, commit {git_revision()}, {FRAMES} frames {WIDTH}x{HEIGHT}, median of {RUNS}")
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    print("| stage | wall s | CPU s (all threads) |")
    print("|---|---|---|")
    chain_wall = chain_cpu = 0.0
    for name, fn in stages.items():
        wall, cpu = timed(fn)
        if not name.startswith(("brand", "watermark read")):
            chain_wall, chain_cpu = chain_wall + wall, chain_cpu + cpu
        print(f"| {name} | {wall:.3f} | {cpu:.3f} |")
    print(f"| chain: QC + faces + label + watermark + encode | {chain_wall:.3f} | {chain_cpu:.3f} |")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
