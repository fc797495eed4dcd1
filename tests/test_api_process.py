"""What an API process sets up for its own speed: the database connections it keeps, and a start-up heap
the garbage collector's full passes leave alone (their pauses were most of the admission tail)."""

from __future__ import annotations

import gc

from conftest import make_settings
from fastapi.testclient import TestClient

from vidfactory.api.app import create_app


def test_the_configured_pool_size_reaches_the_api(tmp_path, postgres_url, models_dir):
    settings = make_settings(tmp_path, postgres_url, models_dir, database_pool_size=3)
    with TestClient(create_app(settings, workers=0)) as client:
        assert client.app.state.ctx.engine.pool.size() == 3


def test_the_start_up_heap_is_frozen_while_the_api_serves(settings):
    with TestClient(create_app(settings, workers=0)) as client:
        assert client.get("/healthz").status_code == 200
        frozen = gc.get_freeze_count()
    assert frozen > 10_000  # the modules, the tokenizers and torch: hundreds of thousands of objects
    assert gc.get_freeze_count() == 0  # handed back to the collector when the app stops
