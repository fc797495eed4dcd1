"""Operations: liveness, readiness (the database, its migrations), Prometheus metrics and request ids."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from conftest import make_settings
from faultproxy import FaultProxy
from vidfactory.api.app import create_app


def test_readyz_answers_503_naming_the_database_while_migrations_are_behind(sqlite_url, tmp_path, models_dir):
    settings = make_settings(tmp_path, sqlite_url, models_dir)
    with TestClient(create_app(settings, workers=0)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["database"] == "ok"
        engine = create_engine(sqlite_url)
        with engine.begin() as connection:  # a database an older release migrated
            connection.execute(text("UPDATE alembic_version SET version_num = '0001'"))
        engine.dispose()
        behind = client.get("/readyz")
        assert behind.status_code == 503
        error = behind.json()["error"]
        assert (error["code"], error["param"]) == ("not_ready", "database")
        assert behind.json()["checks"] == {"database": "fail", "redis": "ok", "storage": "ok"}
        assert str(tmp_path) not in behind.text  # where things live is for the log, not for the caller
        assert client.get("/healthz").status_code == 200


def test_readyz_fails_and_healthz_stays_up_while_the_database_is_unreachable(postgres_url, tmp_path, models_dir):
    target = make_url(postgres_url)
    with FaultProxy(("127.0.0.1", target.port or 5432)) as proxy:
        proxied = target.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        settings = make_settings(tmp_path, proxied, models_dir)
        with TestClient(create_app(settings, workers=0)) as client:
            assert client.get("/readyz").status_code == 200
            proxy.blip()
            gone = client.get("/readyz")
            assert gone.status_code == 503
            assert gone.json()["error"]["param"] == "database"
            alive = client.get("/healthz")
            assert (alive.status_code, alive.json()) == (200, {"status": "ok"})
            proxy.restore()
            assert client.get("/readyz").status_code == 200
