"""Distorted-face score with OpenCV's Haar cascades (shipped inside opencv-python-headless 4.x wheels).

Generated faces go wrong in recognisable ways: eyes missing, at different heights, of different
sizes, off the face's axis, or too close or far apart. For each frontal face found on a few sampled
frames, the eyes are searched in the upper part of the face box and those geometric cues become one
score in 0..1 (0 = a plausible face). The clip's score is the median over sampled frames of the worst
face per frame, so one bad detection does not flag a clip.

A box in which the eye cascade finds no eye at all is not scored: the frontal-face cascade fires on
textures (the upsampled noise of an untrained model's output at 720x1280 gave eyeless boxes on a few
frames, which scored as distorted faces), and nothing in an eyeless box says it is a face at all.

A sampled frame without spatial structure is not searched: where neighbouring pixels are uncorrelated
(white noise, lag-1 correlation below STRUCTURE_MIN) the cascade finds no face, and it costs ten times what a
natural frame costs, because on noise most windows pass its early stages. A photographed face under added
noise was still found down to a correlation of 0.13 and never below 0.09; upsampled noise (an untrained
model's output) is strongly correlated and is searched as before.

OpenCV is optional (extra `faces`; 5.x ships no cascades): without it `face_distortion` returns None
and QC reports the check as skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["EyeBox", "FaceBox", "FaceDistortion", "face_distortion", "face_geometry_score", "structure"]

SAMPLE_FRAMES = 8  # frames looked at per clip, spread evenly
FACE_SIDE_MIN_PX = 48  # smaller faces have too few pixels for the eye cascade to be meaningful
EYE_REGION_FRACTION = 0.6  # eyes are searched in the upper 60% of the face box
ONE_EYE_SCORE = 0.5  # one eye found: half-way suspicious (could be a wink or a shadow)
STRUCTURE_MIN = 0.05  # lag-1 correlation of a frame's luma below which it is noise, not searched


@dataclass(frozen=True)
class FaceBox:
    x: int
    y: int
    w: int
    h: int


EyeBox = FaceBox


@dataclass(frozen=True)
class FaceDistortion:
    score: float  # 0..1, median over sampled frames with faces of the worst face's score
    faces: int  # faces found (with at least one eye) across the sampled frames
    frames_with_faces: int
    frames_sampled: int
    eyeless_boxes: int = 0  # face-cascade boxes without any eye: not faces, not scored
    structureless_frames: int = 0  # sampled frames of noise, not searched


def face_distortion(frames: np.ndarray) -> FaceDistortion | None:
    """Score the faces of uint8 [F, H, W, 3] RGB frames; None when OpenCV is not installed."""
    cascades = _cascades()
    if cascades is None:
        return None
    cv2, face_cascade, eye_cascade = cascades
    picks = np.unique(np.linspace(0, len(frames) - 1, min(SAMPLE_FRAMES, len(frames))).round().astype(int))
    worst_per_frame: list[float] = []
    found = eyeless = structureless = 0
    for index in picks:
        gray = cv2.cvtColor(np.ascontiguousarray(frames[index]), cv2.COLOR_RGB2GRAY)
        if structure(gray) < STRUCTURE_MIN:
            structureless += 1
            continue
        gray = cv2.equalizeHist(gray)
        boxes = [(face, _eyes(cv2, eye_cascade, gray, face)) for face in _faces(face_cascade, gray)]
        scores = [face_geometry_score(face, eyes) for face, eyes in boxes if eyes]
        eyeless += len(boxes) - len(scores)
        found += len(scores)
        if scores:
            worst_per_frame.append(max(scores))
    score = float(np.median(worst_per_frame)) if worst_per_frame else 0.0
    return FaceDistortion(score, found, len(worst_per_frame), len(picks), eyeless, structureless)


def structure(gray: np.ndarray) -> float:
    """The lag-1 correlation of a uint8 [H, W] image, the lesser of across and down: about 1 for natural
    content, 0 for white noise (1 for a flat image, which has nothing to correlate)."""
    centred = gray.astype(np.float32)
    centred -= centred.mean()
    variance = float((centred * centred).mean())
    if variance == 0.0:
        return 1.0
    across = float((centred[:, 1:] * centred[:, :-1]).mean())
    down = float((centred[1:, :] * centred[:-1, :]).mean())
    return min(across, down) / variance


def face_geometry_score(face: FaceBox, eyes: list[EyeBox]) -> float:
    """0..1: how far the eyes found inside a face box are from where a frontal face has them (at least
    one eye: an eyeless box is not taken for a face)."""
    assert eyes, "an eyeless box is not scored as a face"
    pair = _best_pair(face, eyes)
    if pair is None:
        return ONE_EYE_SCORE
    left, right = pair
    (lx, ly), (rx, ry) = _centre(left), _centre(right)
    tilt = abs(ly - ry) / face.w  # level eyes: ~0
    off_axis = abs((lx + rx) / 2 - (face.x + face.w / 2)) / face.w  # centred between them: ~0
    size_gap = abs(left.w - right.w) / max(left.w, right.w)  # same size: ~0
    spacing = abs((rx - lx) / face.w - 0.4)  # eye centres ~40% of the face width apart
    cues = [
        min(1.0, tilt / 0.15),
        min(1.0, off_axis / 0.15),
        min(1.0, size_gap / 0.5),
        min(1.0, spacing / 0.2),
    ]
    return float(0.5 * max(cues) + 0.5 * sum(cues) / len(cues))


def _best_pair(face: FaceBox, eyes: list[EyeBox]) -> tuple[EyeBox, EyeBox] | None:
    """The largest eye in each half of the face, left first; None unless both halves have one."""
    middle = face.x + face.w / 2
    lefts = [e for e in eyes if _centre(e)[0] < middle]
    rights = [e for e in eyes if _centre(e)[0] >= middle]
    if not lefts or not rights:
        return None
    return max(lefts, key=lambda e: e.w), max(rights, key=lambda e: e.w)


def _centre(box: FaceBox) -> tuple[float, float]:
    return box.x + box.w / 2, box.y + box.h / 2


def _faces(face_cascade: Any, gray: np.ndarray) -> list[FaceBox]:
    found = face_cascade.detectMultiScale(
        gray, scaleFactor=1.1, minNeighbors=5, minSize=(FACE_SIDE_MIN_PX, FACE_SIDE_MIN_PX)
    )
    return [FaceBox(int(x), int(y), int(w), int(h)) for x, y, w, h in found]


def _eyes(cv2: Any, eye_cascade: Any, gray: np.ndarray, face: FaceBox) -> list[EyeBox]:
    top = gray[face.y : face.y + int(face.h * EYE_REGION_FRACTION), face.x : face.x + face.w]
    side = max(8, face.w // 8)
    found = eye_cascade.detectMultiScale(top, scaleFactor=1.1, minNeighbors=4, minSize=(side, side))
    return [EyeBox(face.x + int(x), face.y + int(y), int(w), int(h)) for x, y, w, h in found]


@lru_cache(maxsize=1)
def _cascades() -> tuple[Any, Any, Any] | None:
    try:
        import cv2  # optional extra `faces`
    except ImportError:
        return None
    folder = Path(cv2.data.haarcascades)
    face = cv2.CascadeClassifier(str(folder / "haarcascade_frontalface_default.xml"))
    eye = cv2.CascadeClassifier(str(folder / "haarcascade_eye.xml"))
    if face.empty() or eye.empty():
        return None  # an OpenCV build without cascades (5.x): the check is skipped, never guessed
    return cv2, face, eye
