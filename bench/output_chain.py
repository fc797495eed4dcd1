"""The output chain, per stage and in total, for 81 frames at 832x480 on one core; and the engine's idle
time between two consecutive jobs with the worker's post-processing overlap on and off.

Part 1 runs `run_qc` and `jobs.output.render` (label, watermark, encode with the AIGC tag, C2PA,
previews, hashes) on two kinds of frames: smooth moving content (what a video model makes) and uniform
noise (x264's worst case). The process is pinned to one CPU (sched_setaffinity), so libx264's threads
share that core too. Median of `runs`.

Part 2 runs a real Worker (SQLite, local storage, the real chain) whose engine is a stand-in that holds
the "GPU" for `generate_s` and returns prepared 81x832x480 frames, so the figure is the worker's own
gap: from the end of one generation to the start of the next. Prints Markdown.
Run: .venv/bin/python bench/output_chain.py [--idle-only | --chain-only]
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402

from common import git_revision, machine, sized  # noqa: E402
from vidfactory.bootstrap import upgrade_and_seed  # noqa: E402
from vidfactory.db.session import make_engine, make_session_factory  # noqa: E402
from vidfactory.engines.base import GeneratedVideo  # noqa: E402
from vidfactory.jobs import output  # noqa: E402
from vidfactory.jobs.screening import PromptScreens  # noqa: E402
from vidfactory.jobs.submit import VideoRequest, submit  # noqa: E402
from vidfactory.jobs.worker import Worker  # noqa: E402
from vidfactory.api.context import TokenCounters  # noqa: E402
from vidfactory.api.render import video_object  # noqa: E402
from vidfactory.billing import ledger  # noqa: E402
from vidfactory.settings import Settings  # noqa: E402
from vidfactory.storage.local import LocalStorage  # noqa: E402
from vidfactory.tenancy import authenticate, create_key, create_tenant  # noqa: E402

runs = sized(3, 1)
frames_n, height, width, fps = sized((81, 480, 832, 16), (9, 288, 320, 16))
generate_s = sized(25.0, 0.5)  # the stand-in engine's busy time per clip: longer than post-processing, as on a GPU
jobs_n = sized(3, 2)


def smooth_frames() -> np.ndarray:
    """A drifting colour gradient with soft blobs: the kind of content x264 and QC see from a model."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = np.empty((frames_n, height, width, 3), np.uint8)
    for index in range(frames_n):
        phase = index / frames_n * 2 * np.pi
        blob = 60 * np.exp(-(((x - width / 2 - 200 * np.cos(phase)) ** 2 + (y - height / 2) ** 2) / 8000))
        frames[index, ..., 0] = np.clip(80 + 0.1 * x + blob, 0, 255)
        frames[index, ..., 1] = np.clip(60 + 0.2 * y + 30 * np.sin(phase + x / 90), 0, 255)
        frames[index, ..., 2] = np.clip(120 + blob / 2, 0, 255)
    return frames


def noise_frames() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (frames_n, height, width, 3), dtype=np.uint8)


def chain_once(frames: np.ndarray, settings: Settings, provenance: output.Provenance) -> dict[str, float]:
    start = time.perf_counter()
    output.check_quality(frames, settings)
    qc_s = time.perf_counter() - start
    clip = output.ClipIdentity("video_bench", "tenant_bench", "0badf00d")
    rendition = output.render(frames, fps, clip, provenance, steps=output.frame_steps(settings))
    stages = {"qc": qc_s, **rendition.stage_s}
    stages["total"] = sum(stages.values())
    return stages


def part_one(settings: Settings) -> None:
    provenance = output.load_provenance(settings)
    print(f"\n### Per stage, {frames_n} frames at {width}x{height}, one core (median of {runs}, seconds)\n")
    results = {}
    for name, frames in (("smooth", smooth_frames()), ("noise", noise_frames())):
        samples = [chain_once(frames, settings, provenance) for _ in range(runs)]
        results[name] = {stage: statistics.median(s[stage] for s in samples) for stage in samples[0]}
    stages = list(results["smooth"])
    print("| stage | smooth content s | noise (x264 worst case) s |")
    print("|---|---|---|")
    for stage in stages:
        print(f"| {stage} | {results['smooth'][stage]:.3f} | {results['noise'][stage]:.3f} |")


class StandInEngine:
    """Holds the 'GPU' for generate_s, then returns the prepared frames; records each generation's span."""

    def __init__(self, frames: np.ndarray) -> None:
        self.model_id = "bench"
        self.frames = frames
        self.spans: list[tuple[float, float]] = []

    def generate(self, request, on_progress, is_cancelled) -> GeneratedVideo:
        start = time.monotonic()
        time.sleep(generate_s)
        on_progress(1, 1)
        self.spans.append((start, time.monotonic()))
        return GeneratedVideo(self.frames, fps)


def idle_between_jobs(root: Path, overlap: bool) -> list[float]:
    """Jobs are submitted as tiny wan-tiny jobs (billing needs its tokenizer); the stand-in engine
    answers each with the prepared full-size clip, so post-processing sees full-size frames."""
    settings = Settings(data_dir=root / ("on" if overlap else "off"), models_path=root / "models",
                        admin_token="bench", poll_s=0.01, overlap_post_processing=overlap,
                        progress_write_interval_s=0.5)
    engine = make_engine(settings.resolved_database_url)
    upgrade_and_seed(engine)
    sessions = make_session_factory(engine)
    with sessions.begin() as session:
        tenant = create_tenant(session, "bench", plan="enterprise")
        ledger.credit(session, tenant.id, 10**9)
        _, key = create_key(session, tenant.id)
    with sessions() as session:
        caller = authenticate(session, key)
    counters = TokenCounters(settings.models_dir)
    screens = PromptScreens.from_settings(settings)
    for index in range(jobs_n):
        request = VideoRequest(prompt=f"clip {index}", model="wan-tiny", size="64x64", seconds="1")
        submit(sessions, settings, counters, caller, request, video_object, screens=screens)
    stand_in = StandInEngine(smooth_frames())
    worker = Worker(settings, sessions, LocalStorage(settings.resolved_storage_dir), worker_id="bench",
                    engine_loader=lambda *_: stand_in)
    stop = threading.Event()
    loop = threading.Thread(target=worker.run, args=(stop,))
    loop.start()
    while len(stand_in.spans) < jobs_n:
        time.sleep(0.05)
    stop.set()
    loop.join()
    engine.dispose()
    return [start - previous_end for (_, previous_end), (start, _) in zip(stand_in.spans, stand_in.spans[1:])]


def part_two(root: Path) -> None:
    print(f"\n### Engine idle time between consecutive jobs ({jobs_n} jobs, stand-in engine busy "
          f"{generate_s:.0f} s each, {frames_n}x{width}x{height} clips, all cores)\n")
    print("| overlap | idle s between jobs (median) | max |")
    print("|---|---|---|")
    for overlap in (False, True):
        gaps = idle_between_jobs(root, overlap)
        print(f"| {'on' if overlap else 'off'} | {statistics.median(gaps):.3f} | {max(gaps):.3f} |")


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="vf-bench-output-"))
    settings = Settings(data_dir=root, admin_token="bench")
    print(f"# output chain — {machine()}, commit {git_revision()}")
    if "--idle-only" not in sys.argv:
        cores = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {min(cores)})
        part_one(settings)
        os.sched_setaffinity(0, cores)
    if "--chain-only" not in sys.argv:
        part_two(root)


if __name__ == "__main__":
    main()
