"""What a hosted job costs the platform beyond the remote service's own time: decoding the downloaded MP4
to frames (so the clip takes the same output pipeline as a local one) and encoding it again, vs the
encode a local job pays anyway. Smooth synthetic clips at 64x64x9 and 832x480x81 (Wan's 480p, 5 s at
16 fps); median of 5 after one warm-up.
Run: .venv/bin/python bench/hosted_overhead.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402

from common import git_revision, machine, sized  # noqa: E402
from vidfactory.media.encode import decode_mp4, encode_mp4  # noqa: E402

repeats = sized(5, 1)


def smooth_clip(frames: int, height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    clip = np.empty((frames, height, width, 3), dtype=np.uint8)
    for index in range(frames):
        clip[index, ..., 0] = (x + 4 * index) % 256
        clip[index, ..., 1] = (y + 2 * index) % 256
        clip[index, ..., 2] = (x + y) // 8 % 256
    return clip


def median_s(action) -> float:
    action()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    print(f"Machine: hosted overhead — {machine()}, commit {git_revision()}")
    print()
    print("| clip | remote MP4 KiB | decode s | encode s (a local job pays this too) | decode + encode s | ratio |")
    print("|---|---|---|---|---|---|")
    for frames, height, width in sized(((9, 64, 64), (81, 480, 832)), ((9, 64, 64),)):
        clip = smooth_clip(frames, height, width)
        remote = encode_mp4(clip, 16)
        decode = median_s(lambda: decode_mp4(remote, frames_max=2000))
        decoded = decode_mp4(remote, frames_max=2000).frames
        encode = median_s(lambda: encode_mp4(decoded, 16))
        print(f"| {width}x{height}x{frames} | {len(remote) / 1024:.0f} | {decode:.3f} | {encode:.3f} | "
              f"{decode + encode:.3f} | {(decode + encode) / encode:.2f}× |")


if __name__ == "__main__":
    main()
