"""Size GPU workers: the memory planner's peak per device for each Wan preset, in every memory mode.

    .venv/bin/python scripts/memory_table.py               # each preset's default clip on one GPU
    .venv/bin/python scripts/memory_table.py --devices 2   # per GPU, for a worker spanning two (torchrun)

Prints a Markdown table in GiB (docs/deployment.md shows it; tests keep the two equal). A worker class
serves a model when some mode's peak fits its cards; the fastest mode that fits is the one a worker uses.
"""

from __future__ import annotations

import argparse

from vidfactory.engines.memory import GIB, MEMORY_MODES, estimate
from vidfactory.engines.presets import PRESETS

shared_size = (832, 480)  # every preset can make 480p: the size to compare them at


def rows(devices: int = 1) -> list[str]:
    """One table row per preset and shape: its default clip, then 832x480 at the same frame count."""
    lines = [f"| preset | size | frames | {' | '.join(MEMORY_MODES)} |",
             "| --- | --- | --- |" + " --- |" * len(MEMORY_MODES)]
    for preset in PRESETS.values():
        shapes = [(preset.width, preset.height)]
        if (preset.width, preset.height) != shared_size:
            shapes.append(shared_size)
        for width, height in shapes:
            peaks = [estimate(preset, width, height, preset.num_frames, mode, devices).peak_bytes / GIB
                     for mode in MEMORY_MODES]
            lines.append(f"| `{preset.id}` | {width}x{height} | {preset.num_frames} | "
                         + " | ".join(f"{peak:.1f}" for peak in peaks) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1, help="GPUs one worker spans (context parallelism)")
    options = parser.parse_args()
    if options.devices < 1:
        parser.error("--devices must be at least 1")
    print("\n".join(rows(options.devices)))


if __name__ == "__main__":
    main()
