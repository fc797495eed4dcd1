"""The suite's PostgreSQL databases are reused between tests: a reused one must be indistinguishable from a
fresh clone of the template, or one test's rows would reach the next."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from vidfactory.billing import ledger
from vidfactory.db.models import Job, Tenant, Transfer
from vidfactory.db.session import make_engine, make_session_factory

from conftest import new_tenant


@pytest.fixture
def databases(postgres_databases):
    if postgres_databases is None:
        pytest.skip("PostgreSQL not reachable")
    return postgres_databases


def contents(url: str) -> tuple:
    """Row counts of a few tables, the next transfer sequence number, and the seed rows' ids."""
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            counts = tuple(session.scalar(select(func.count()).select_from(model)) for model in (Tenant, Transfer, Job))
            next_seq = session.execute(text("SELECT nextval('transfers_seq_seq')")).scalar_one()
            plans = tuple(session.scalars(text("SELECT id FROM plans ORDER BY id")))
            session.rollback()
        return counts, next_seq, plans
    finally:
        engine.dispose()


def exists(databases, url: str) -> bool:
    admin = create_engine(databases.admin_url)
    try:
        with admin.connect() as connection:
            return connection.execute(text("SELECT count(*) FROM pg_database WHERE datname = :name"),
                                      {"name": make_url(url).database}).scalar_one() == 1
    finally:
        admin.dispose()


def test_a_reused_database_is_the_template_again(databases):
    fresh_url = databases.take()
    fresh = contents(fresh_url)
    databases.give_back(fresh_url)
    url = databases.take()
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    tenant = new_tenant(sessions, tokens=500)
    with sessions.begin() as session:
        ledger.credit(session, tenant.id, 7)
    # A connection the test never closed, inside a transaction holding a row lock: the reset ends it.
    left_open = engine.connect()
    left_open.execute(text("SELECT id FROM tenants FOR UPDATE"))
    assert contents(url) != fresh
    databases.give_back(url)
    assert _is_dead(left_open)
    engine.dispose()
    again = databases.take()
    try:
        assert again == url  # reused, not cloned
        assert contents(again) == fresh
    finally:
        databases.give_back(again)


def _is_dead(connection) -> bool:
    try:
        connection.execute(text("SELECT 1"))
    except OperationalError:
        return True
    return False


def test_a_database_whose_schema_a_test_changed_is_dropped(databases):
    url = databases.take()
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("ALTER TABLE tenants DROP COLUMN suspended_reason"))
    engine.dispose()
    databases.give_back(url)
    assert not exists(databases, url)
    other = databases.take()
    try:
        assert other != url
        engine = create_engine(other)
        with engine.connect() as connection:
            assert "suspended_reason" in connection.execute(text(
                "SELECT string_agg(column_name, ',') FROM information_schema.columns WHERE table_name = 'tenants'"
            )).scalar_one()
        engine.dispose()
    finally:
        databases.give_back(other)
