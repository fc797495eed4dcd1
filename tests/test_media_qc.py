"""QC flags what a user would not want to receive: black, flickering, frozen clips and distorted faces."""

from __future__ import annotations

import json
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from vidfactory.media.errors import MediaError
from vidfactory.media.faces import STRUCTURE_MIN, FaceBox, face_distortion, face_geometry_score, structure
from vidfactory.media.qc import QcThresholds, run_qc
from vidfactory.settings import Settings

SIZE = 64


def moving_clip(frames: int = 16, size: int = SIZE) -> np.ndarray:
    """A textured pattern drifting a few pixels per frame: ordinary motion."""
    yy, xx = np.mgrid[0:size, 0:size]
    clip = [
        np.stack([128 + 60 * np.sin((xx + 2 * t) / 5), 128 + 60 * np.cos((yy - t) / 7), 100 + 0 * xx], -1)
        for t in range(frames)
    ]
    return np.clip(clip, 0, 255).astype(np.uint8)


def test_normal_clip_passes_every_check() -> None:
    report = run_qc(moving_clip())
    assert report.verdict == "pass"
    assert {c.name: c.verdict for c in report.checks} == {
        "black": "pass",
        "flicker": "pass",
        "flicker_spike": "pass",
        "frozen": "pass",
        "face_distortion": "pass",
    }


def test_black_clip_fails() -> None:
    clip = moving_clip()
    clip[:10] = 3  # 10 of 16 frames near black
    report = run_qc(clip)
    assert report.check("black").verdict == "fail"
    assert report.check("black").score == pytest.approx(10 / 16)
    assert report.verdict == "fail"


def test_a_fade_in_from_black_is_not_a_black_clip() -> None:
    clip = moving_clip()
    clip[:2] = 0
    assert run_qc(clip).check("black").verdict == "pass"


def test_strobing_clip_fails_on_flicker() -> None:
    clip = moving_clip()
    clip[1::2] = (clip[1::2] // 4).astype(np.uint8)  # every other frame much darker
    report = run_qc(clip)
    assert report.check("flicker").verdict == "fail"
    assert report.verdict == "fail"


def test_single_glitch_frame_is_flagged_as_a_spike() -> None:
    clip = moving_clip()
    clip[8] = 255 - clip[8]
    report = run_qc(clip)
    assert report.check("flicker").verdict == "pass"
    assert report.check("flicker_spike").verdict == "flag"
    assert report.verdict == "flag"


def test_frozen_clip_is_flagged() -> None:
    clip = np.repeat(moving_clip()[:1], 16, axis=0)
    report = run_qc(clip)
    assert report.check("frozen").verdict == "flag"
    assert report.check("frozen").score == 0.0
    assert report.verdict == "flag"


def test_thresholds_come_from_settings_and_change_verdicts() -> None:
    settings = Settings(qc_frozen_motion_min=100.0)
    thresholds = QcThresholds.from_settings(settings)
    assert thresholds.frozen_motion_min == 100.0
    assert run_qc(moving_clip(), thresholds).check("frozen").verdict == "flag"
    custom = QcThresholds.from_settings(
        SimpleNamespace(**{f"qc_{k}": 1.0 for k in QcThresholds.__dataclass_fields__})
    )
    assert custom.flicker_max == 1.0


def test_report_serialises_scores_and_verdicts() -> None:
    report = run_qc(moving_clip())
    data = json.loads(report.to_json())
    assert data["verdict"] == "pass"
    assert {c["name"] for c in data["checks"]} == set(report.scores)
    assert all(set(c) == {"name", "score", "threshold", "verdict", "detail"} for c in data["checks"])


def test_single_frame_skips_temporal_checks() -> None:
    report = run_qc(moving_clip(frames=1), faces_enabled=False)
    assert report.check("flicker").verdict == "skipped"
    assert report.check("flicker").score is None
    assert report.check("face_distortion").verdict == "skipped"
    assert report.verdict == "pass"


@pytest.mark.parametrize(
    "bad", [np.zeros((4, 8, 8), np.uint8), np.zeros((0, 8, 8, 3), np.uint8), np.zeros((2, 8, 8, 3))]
)
def test_bad_frames_are_refused(bad: np.ndarray) -> None:
    with pytest.raises(MediaError):
        run_qc(bad)


def drawn_face(eyes: list[tuple[int, int, float]], size: int = 128) -> np.ndarray:
    """A plain drawn face Haar's frontal-face cascade finds; eyes at (x, y, scale) on a 128 px canvas."""
    img = np.full((size, size, 3), 90, np.uint8)
    centre = size // 2
    cv2.ellipse(img, (centre, centre), (40, 52), 0, 0, 360, (200, 170, 150), -1)
    for x, y, k in eyes:
        cv2.ellipse(img, (x, y), (int(15 * k), int(9 * k)), 0, 0, 360, (150, 120, 105), -1)  # socket
        cv2.ellipse(img, (x, y), (int(10 * k), int(5 * k)), 0, 0, 360, (235, 230, 225), -1)
        cv2.circle(img, (x, y), int(4 * k), (40, 25, 20), -1)  # iris
        cv2.circle(img, (x, y), max(1, int(1.6 * k)), (5, 5, 5), -1)  # pupil
    cv2.line(img, (centre, centre - 5), (centre - 4, centre + 12), (150, 110, 100), 2)  # nose
    cv2.ellipse(img, (centre, centre + 26), (14, 5), 0, 0, 180, (120, 40, 40), 3)  # mouth
    return cv2.GaussianBlur(img, (3, 3), 0)


def test_plausible_face_scores_low_and_distorted_face_is_flagged() -> None:
    good = np.stack([drawn_face([(47, 52, 1.0), (81, 52, 1.0)])] * 4)
    bad = np.stack([drawn_face([(44, 42, 1.0), (76, 62, 0.6)])] * 4)  # eyes uneven and of unequal size
    good_score, bad_score = face_distortion(good), face_distortion(bad)
    assert good_score is not None and bad_score is not None
    assert good_score.faces == 4 and bad_score.faces == 4
    assert good_score.score < 0.6 < bad_score.score
    assert run_qc(good).check("face_distortion").verdict == "pass"
    assert run_qc(bad).check("face_distortion").verdict == "flag"


def test_face_geometry_cues() -> None:
    face = FaceBox(0, 0, 100, 100)
    level = [FaceBox(18, 25, 24, 24), FaceBox(58, 25, 24, 24)]
    assert face_geometry_score(face, level) < 0.1
    assert face_geometry_score(face, level[:1]) == 0.5
    tilted = [FaceBox(18, 10, 24, 24), FaceBox(58, 40, 24, 24)]
    assert face_geometry_score(face, tilted) > 0.6


def upsampled_noise(seed: int, height: int, width: int, block: int, frames: int) -> np.ndarray:
    """What an untrained model's decoder gives: latent noise upsampled by the VAE's spatial factor."""
    small = np.random.default_rng(seed).integers(0, 256, (frames, height // block, width // block, 3), np.uint8)
    return small.repeat(block, axis=1).repeat(block, axis=2)


@pytest.mark.parametrize(("height", "width", "block", "seed", "frame"),
                         [(720, 1280, 8, 1, 3), (1280, 720, 8, 3, 0), (480, 832, 16, 4, 0)])
def test_noise_is_not_a_face(height: int, width: int, block: int, seed: int, frame: int) -> None:
    """The face cascade fires on these noise frames (a box), but no eye is in it: no face, nothing held."""
    clip = upsampled_noise(seed, height, width, block, frame + 1)[frame:]
    result = face_distortion(clip)
    assert result is not None and result.eyeless_boxes >= 1  # the cascade did take it for a face
    assert (result.faces, result.score) == (0, 0.0)
    assert run_qc(np.concatenate([clip, clip])).check("face_distortion").verdict == "pass"


@pytest.mark.parametrize(("height", "width"), [(256, 256), (128, 128), (64, 64)])
def test_noise_of_other_sizes_is_not_held(height: int, width: int) -> None:
    for clip in (upsampled_noise(2, height, width, 8, 4),
                 np.random.default_rng(3).integers(0, 256, (4, height, width, 3), np.uint8)):
        assert run_qc(clip).check("face_distortion").verdict == "pass"


def test_face_check_is_skipped_not_guessed_without_opencv(monkeypatch: pytest.MonkeyPatch) -> None:
    from vidfactory.media import faces

    monkeypatch.setattr(faces, "_cascades", lambda: None)  # what an install without the `faces` extra sees
    check = run_qc(moving_clip()).check("face_distortion")
    assert (check.verdict, check.score) == ("skipped", None)
    assert "faces" in check.detail


def test_noise_frames_are_not_searched_but_a_noisy_face_is() -> None:
    """White noise has no structure for the cascade to find a face in (and costs it ten times a natural
    frame): such frames are skipped; a drawn face under strong grain is still searched, and its box found."""
    noise = np.random.default_rng(5).integers(0, 256, (4, 128, 128, 3), np.uint8)
    skipped = face_distortion(noise)
    assert skipped is not None and (skipped.structureless_frames, skipped.faces) == (4, 0)
    assert "4 of 4 sampled frames are noise" in run_qc(noise).check("face_distortion").detail
    face = drawn_face([(47, 52, 1.0), (81, 52, 1.0)]).astype(np.float32)
    grain = np.random.default_rng(6).normal(0, 12, face.shape)
    grainy = np.clip(face + grain, 0, 255).astype(np.uint8)
    assert structure(grainy[..., 0]) > STRUCTURE_MIN
    found = face_distortion(np.stack([grainy] * 4))
    assert found is not None and found.structureless_frames == 0 and found.faces + found.eyeless_boxes == 4
