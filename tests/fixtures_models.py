"""Fixtures for the engine and token tests: the tiny Wan model, built once per session.

Test modules import the fixtures they use (`from fixtures_models import tiny_model_dir`); the build is
idempotent on disk, so every importing module shares one build per session.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vidfactory.engines.tiny import ensure_tiny_model

__all__ = ["tiny_model_dir"]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_tiny_model(tmp_path_factory.getbasetemp() / "fixture-models" / "wan-tiny")
