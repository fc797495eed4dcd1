"""Shared fixtures: a fresh migrated database per test on SQLite and on PostgreSQL, settings that
point at it, the tiny Wan model built once per session, and an API client."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from fastapi.testclient import TestClient

from vidfactory.api.app import create_app
from vidfactory.billing import ledger
from vidfactory.billing.verify import verify
from vidfactory.bootstrap import upgrade_and_seed
from vidfactory.db.session import SessionFactory, make_engine, make_session_factory
from vidfactory.settings import Settings
from vidfactory.tenancy import create_key, create_tenant

from postgres_databases import PostgresDatabases

postgres_env = "VIDFACTORY_TEST_POSTGRES_URL"
in_ci = os.environ.get("CI", "").lower() == "true"


def pytest_configure(config) -> None:
    """Under pytest-xdist, split the cores between the test processes instead of oversubscribing them:
    each process and the servers it spawns get cores / processes torch threads."""
    process_count = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not process_count:
        return
    import torch

    threads = max(1, (os.cpu_count() or 1) // int(process_count))
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)


def _postgres_admin_url() -> str | None:
    url = os.environ.get(postgres_env)
    if not url:
        if in_ci:
            pytest.fail(f"CI=true but {postgres_env} is not set: the PostgreSQL tests must run in CI")
        return None
    try:
        probe = create_engine(url, isolation_level="AUTOCOMMIT")
        with probe.connect() as connection:
            connection.execute(text("select 1"))
        probe.dispose()
    except Exception as exc:  # any connection failure means "no server here"
        if in_ci:
            pytest.fail(f"CI=true and PostgreSQL at {postgres_env} is unreachable: {exc}")
        return None
    return url


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade_and_seed(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[PostgresDatabases | None]:
    """This test process's PostgreSQL databases: a template migrated once, per-test databases cloned from it
    and reused (see postgres_databases.py)."""
    admin_url = _postgres_admin_url()
    if admin_url is None:
        yield None
        return
    databases = PostgresDatabases.open(admin_url)
    yield databases
    databases.close()


@contextmanager
def fresh_database(kind: str, directory: Path, sqlite_template: Path,
                   postgres_databases: PostgresDatabases | None) -> Iterator[str]:
    """A migrated database of its own ("sqlite": a file in `directory`; "postgres": the template's schema and
    rows, reset after)."""
    if kind == "sqlite":
        path = directory / "vidfactory.db"
        shutil.copy(sqlite_template, path)
        yield f"sqlite:///{path}"
        return
    if postgres_databases is None:
        pytest.skip(f"PostgreSQL not reachable: set {postgres_env} (postgresql+psycopg://...) to run these")
    url = postgres_databases.take()
    try:
        yield url
    finally:
        postgres_databases.give_back(url)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path, sqlite_template, postgres_databases) -> Iterator[str]:
    with fresh_database(request.param, tmp_path, sqlite_template, postgres_databases) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path, sqlite_template) -> str:
    path = tmp_path / "vidfactory.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def postgres_url(postgres_databases) -> Iterator[str]:
    if postgres_databases is None:
        pytest.skip(f"PostgreSQL not reachable: set {postgres_env} (postgresql+psycopg://...) to run these")
    url = postgres_databases.take()
    yield url
    postgres_databases.give_back(url)


def make_settings(tmp_path: Path, database_url: str, models_dir: Path, **overrides) -> Settings:
    values = dict(data_dir=tmp_path / "var", database_url=database_url, models_path=models_dir,
                  admin_token="test-admin-token", lease_s=30.0, heartbeat_s=0.5, poll_s=0.05,
                  retry_backoff_s=0.1, progress_write_interval_s=0.0)
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(tmp_path, database_url, models_dir) -> Settings:
    return make_settings(tmp_path, database_url, models_dir)


@pytest.fixture
def sessions(settings) -> Iterator[SessionFactory]:
    engine = make_engine(settings.resolved_database_url)
    yield make_session_factory(engine)
    engine.dispose()


@dataclass
class TenantHandle:
    id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def new_tenant(sessions: SessionFactory, tokens: int = 0, plan: str = "enterprise", name: str | None = None
               ) -> TenantHandle:
    with sessions.begin() as session:
        tenant = create_tenant(session, name or f"t-{uuid.uuid4().hex[:8]}", plan)
        if tokens:
            ledger.credit(session, tenant.id, tokens)
        _, key = create_key(session, tenant.id)
    return TenantHandle(id=tenant.id, key=key)


def assert_ledger_clean(sessions: SessionFactory) -> None:
    with sessions() as session:
        assert verify(session) == []


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A real S3 protocol server (moto's) on a free local port, spoken to over HTTP: its endpoint URL.
    Every test makes its own bucket (`new_bucket`)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


s3_credentials = {"storage_access_key_id": "test-key-id", "storage_secret_access_key": "test-secret",
                  "storage_region": "us-east-1"}


def new_bucket(endpoint_url: str, prefix: str = "vidfactory") -> dict[str, str]:
    """A fresh bucket on the S3 server: the storage settings that point at it (prefix inside it)."""
    import boto3

    bucket = f"test-{uuid.uuid4().hex[:16]}"
    boto3.client("s3", endpoint_url=endpoint_url, aws_access_key_id=s3_credentials["storage_access_key_id"],
                 aws_secret_access_key=s3_credentials["storage_secret_access_key"],
                 region_name=s3_credentials["storage_region"]).create_bucket(Bucket=bucket)
    return {"storage_url": f"s3://{bucket}/{prefix}", "storage_endpoint_url": endpoint_url, **s3_credentials}


@pytest.fixture
def client(settings):
    """The app with its default settings and no worker threads (tests drive workers themselves)."""
    with TestClient(create_app(settings, workers=0)) as test_client:
        yield test_client


@pytest.fixture
def ctx(client):
    return client.app.state.ctx
