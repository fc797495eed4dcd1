"""Quality checks on raw frames: each a named score, a threshold passed in, and a verdict.

Checks and what a breach means:
- `black`: fraction of frames whose mean luma is under `black_luma_min` -> fail (an unusable clip).
- `flicker`: VBench's temporal flickering, the mean absolute difference of consecutive frames (0..255)
  -> fail (the clip strobes).
- `flicker_spike`: the largest consecutive-frame difference over the clip's median one -> flag (a
  single glitch or cut: a person decides).
- `frozen`: the same mean difference under `frozen_motion_min` -> flag (a still picture; some prompts
  ask for one).
- `face_distortion`: see media/faces.py -> flag; "skipped" when OpenCV is not installed.

Overall verdict: fail when any check fails, else flag when any flags, else pass. The worker regenerates
a failed clip once with a new seed and sends a flagged one to the review queue.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from vidfactory.media import faces
from vidfactory.media.encode import check_frames

__all__ = ["QcCheck", "QcReport", "QcThresholds", "Verdict", "run_qc"]

Verdict = Literal["pass", "flag", "fail", "skipped"]
ANALYSIS_SIDE_MAX_PX = 160  # frames are box-downscaled to this before differencing: noise-robust, fast
LUMA_709 = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)


@dataclass(frozen=True)
class QcThresholds:
    """Limits, in the units of each score (luma levels 0..255, fractions, ratios)."""

    black_luma_min: float = 16.0  # a frame whose mean luma is below this is black
    black_fraction_max: float = 0.25  # more black frames than this fails the clip
    flicker_max: float = 40.0  # mean consecutive-frame difference above this fails
    flicker_spike_max: float = 8.0  # largest difference / median difference above this flags
    flicker_spike_floor: float = 12.0  # ... but only when that largest difference exceeds this
    frozen_motion_min: float = 0.3  # mean consecutive-frame difference below this flags
    face_distortion_max: float = 0.6  # distortion score (0..1) above this flags

    @classmethod
    def from_settings(cls, settings: Any) -> QcThresholds:
        """Read the `qc_*` fields of a settings object (duck-typed: media does not import settings)."""
        return cls(**{name: getattr(settings, f"qc_{name}") for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class QcCheck:
    name: str
    score: float | None  # None when skipped
    threshold: float | None
    verdict: Verdict
    detail: str = ""


@dataclass(frozen=True)
class QcReport:
    checks: tuple[QcCheck, ...]
    verdict: Literal["pass", "flag", "fail"]

    def check(self, name: str) -> QcCheck:
        return next(c for c in self.checks if c.name == name)

    @property
    def scores(self) -> dict[str, float | None]:
        return {c.name: c.score for c in self.checks}

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "checks": [asdict(c) for c in self.checks]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True)


def run_qc(
    frames: np.ndarray, thresholds: QcThresholds = QcThresholds(), *, faces_enabled: bool = True
) -> QcReport:
    """All checks on uint8 [F, H, W, 3] frames, and the overall verdict."""
    # 1. Check inputs.
    check_frames(frames, even_sides=False)
    # 2. One small luma copy and its consecutive differences feed the black, flicker and frozen checks.
    luma = _small_luma(frames)
    diffs = np.abs(np.diff(luma, axis=0)).mean(axis=(1, 2)) if len(luma) > 1 else np.zeros(0)
    checks = [
        _black(luma, thresholds),
        _flicker(diffs, thresholds),
        _flicker_spike(diffs, thresholds),
        _frozen(diffs, thresholds),
        _faces(frames, thresholds) if faces_enabled else _skipped("face_distortion", "disabled"),
    ]
    # 3. The worst verdict wins.
    verdicts = {c.verdict for c in checks}
    overall: Literal["pass", "flag", "fail"] = (
        "fail" if "fail" in verdicts else "flag" if "flag" in verdicts else "pass"
    )
    return QcReport(checks=tuple(checks), verdict=overall)


def _black(luma: np.ndarray, t: QcThresholds) -> QcCheck:
    means = luma.mean(axis=(1, 2))
    fraction = float((means < t.black_luma_min).mean())
    verdict: Verdict = "fail" if fraction > t.black_fraction_max else "pass"
    detail = f"{int((means < t.black_luma_min).sum())} of {len(means)} frames under luma {t.black_luma_min}"
    return QcCheck("black", round(fraction, 4), t.black_fraction_max, verdict, detail)


def _flicker(diffs: np.ndarray, t: QcThresholds) -> QcCheck:
    if diffs.size == 0:
        return _skipped("flicker", "a single frame")
    score = float(diffs.mean())
    verdict: Verdict = "fail" if score > t.flicker_max else "pass"
    return QcCheck("flicker", round(score, 3), t.flicker_max, verdict, "mean |frame[t+1] - frame[t]| in luma")


def _flicker_spike(diffs: np.ndarray, t: QcThresholds) -> QcCheck:
    if diffs.size < 3:
        return _skipped("flicker_spike", "fewer than 4 frames")
    peak = float(diffs.max())
    ratio = peak / max(float(np.median(diffs)), 0.5)  # the floor keeps still clips from dividing by ~0
    breach = ratio > t.flicker_spike_max and peak > t.flicker_spike_floor
    verdict: Verdict = "flag" if breach else "pass"
    detail = f"largest step {peak:.1f} at frame {int(diffs.argmax()) + 1}"
    return QcCheck("flicker_spike", round(ratio, 3), t.flicker_spike_max, verdict, detail)


def _frozen(diffs: np.ndarray, t: QcThresholds) -> QcCheck:
    if diffs.size == 0:
        return _skipped("frozen", "a single frame")
    motion = float(diffs.mean())
    verdict: Verdict = "flag" if motion < t.frozen_motion_min else "pass"
    return QcCheck("frozen", round(motion, 3), t.frozen_motion_min, verdict, "mean motion in luma levels")


def _faces(frames: np.ndarray, t: QcThresholds) -> QcCheck:
    result = faces.face_distortion(frames)
    if result is None:
        return _skipped("face_distortion", "OpenCV is not installed (extra: faces)")
    if result.faces == 0:
        detail = "no frontal face found" + (f" ({result.eyeless_boxes} eyeless boxes ignored)"
                                            if result.eyeless_boxes else "")
        if result.structureless_frames:
            detail += f"; {result.structureless_frames} of {result.frames_sampled} sampled frames are noise"
        return QcCheck("face_distortion", 0.0, t.face_distortion_max, "pass", detail)
    verdict: Verdict = "flag" if result.score > t.face_distortion_max else "pass"
    detail = f"{result.faces} faces in {result.frames_with_faces} of {result.frames_sampled} sampled frames"
    return QcCheck("face_distortion", round(result.score, 3), t.face_distortion_max, verdict, detail)


def _skipped(name: str, why: str) -> QcCheck:
    return QcCheck(name, None, None, "skipped", why)


def _small_luma(frames: np.ndarray) -> np.ndarray:
    """[F, h, w] float32 BT.709 luma, box-downscaled by an integer factor to <= ANALYSIS_SIDE_MAX_PX."""
    count, height, width, _ = frames.shape
    factor = max(1, -(-max(height, width) // ANALYSIS_SIDE_MAX_PX))
    h, w = height // factor, width // factor
    small = np.empty((count, h, w), dtype=np.float32)
    for i, frame in enumerate(frames):  # one frame at a time: a float copy of the clip would be ~400 MB
        luma = frame[: h * factor, : w * factor].astype(np.float32) @ LUMA_709
        small[i] = luma.reshape(h, factor, w, factor).mean(axis=(1, 3))
    return small
