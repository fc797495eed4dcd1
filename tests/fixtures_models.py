"""Fixtures for the engine and token tests: the tiny Wan model, built once per session.

Test modules import the fixtures they use (`from fixtures_models import tiny_model_dir`); the build is
idempotent on disk, so every importing module shares one build per session.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vidfactory.engines.presets import PRESETS
from vidfactory.engines.tiny import ensure_tiny_model

__all__ = ["tiny_model_dir", "tiny_ti2v_dir"]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_tiny_model(tmp_path_factory.getbasetemp() / "fixture-models" / "wan-tiny")


@pytest.fixture(scope="session")
def tiny_ti2v_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Wan2.2 TI2V-5B's layout at toy size: image-to-video (sides multiples of 32, from 128 px)."""
    # Its own directory: the tiny model's tests check that fixture-models/ holds that model alone.
    return ensure_tiny_model(tmp_path_factory.getbasetemp() / "fixture-models-ti2v" / "ti2v",
                             PRESETS["wan2.2-ti2v-5b"])
