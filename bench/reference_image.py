"""What a reference image (image-to-video) costs outside the model: the check at submission
(`read_reference`: header, full decode, hash) and the worker's decode + centre crop to the clip's aspect
(`decode_rgb` + `center_crop`), per format and size, side by side with a 1280² JPEG as the unit.

    PYTHONPATH=src python bench/reference_image.py [--repeats 5]

Images are photo-like (smooth gradients, shapes and sensor noise), so the compressed sizes are those of
real uploads rather than of flat test cards. Each cell is the median of `repeats` runs after one warm-up.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import git_revision, machine, sized  # noqa: E402

from vidfactory.media.reference import (  # noqa: E402
    ReferenceRefused,
    center_crop,
    decode_rgb,
    read_reference,
    reference_bytes_max,
)

SIDES_PX = sized((1280, 2048, 4096), (1280,))
FORMATS = ("JPEG", "PNG", "WEBP")
CLIP_WIDTH, CLIP_HEIGHT = 1280, 704  # the TI2V-5B's default shape
SEED = 7


def photo_like(side: int) -> np.ndarray:
    rng = np.random.default_rng(SEED)
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
    image = np.stack([200 * x + 30, 160 * y + 40, 120 * (1 - x * y) + 60], axis=-1)
    for _ in range(12):  # soft discs of colour, like objects out of focus
        cx, cy, r = rng.random(3) * (1, 1, 0.25)
        disc = np.exp(-(((x - cx) ** 2 + (y - cy) ** 2) / max(r, 0.02) ** 2))
        image += disc[..., None] * (rng.random(3) * 120 - 60)
    image += rng.normal(0, 4, image.shape)  # sensor noise
    return np.clip(image, 0, 255).astype(np.uint8)


def encoded(pixels: np.ndarray, fmt: str) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=fmt, **({"quality": 90} if fmt in ("JPEG", "WEBP") else {}))
    return out.getvalue()


def median_s(call, repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=sized(5, 1))
    args = parser.parse_args()
    rows = []
    for side in SIDES_PX:
        pixels = photo_like(side)
        for fmt in FORMATS:
            data = encoded(pixels, fmt)
            try:
                read_reference(data)
            except ReferenceRefused as exc:
                rows.append((side, fmt, len(data), None, None, str(exc)))
                continue
            check_s = median_s(lambda: read_reference(data), args.repeats)
            worker_s = median_s(lambda: center_crop(decode_rgb(data), CLIP_WIDTH, CLIP_HEIGHT), args.repeats)
            rows.append((side, fmt, len(data), check_s, worker_s, ""))
    unit = next(r for r in rows if r[0] == SIDES_PX[0] and r[1] == "JPEG")
    print(f"Machine: reference image — {machine()}, commit {git_revision()}, load average "
          f"{os.getloadavg()[0]:.1f}, median of {args.repeats}, byte limit {reference_bytes_max}")
    print("| image | bytes | check at submission ms | ×1280² JPEG | worker decode + crop ms | ×1280² JPEG |")
    print("|---|---|---|---|---|---|")
    for side, fmt, size, check_s, worker_s, refused in rows:
        if check_s is None:
            print(f"| {side}² {fmt} | {size:,} | refused: {refused} | | | |")
            continue
        print(f"| {side}² {fmt} | {size:,} | {check_s * 1e3:.0f} | {check_s / unit[3]:.1f} | "
              f"{worker_s * 1e3:.0f} | {worker_s / unit[4]:.1f} |")


if __name__ == "__main__":
    main()
