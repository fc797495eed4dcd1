"""`vidfactory db upgrade`: run the Alembic migrations shipped inside the package."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

__all__ = ["current_revision", "head_revision", "schema_change_lock", "upgrade"]

migrations_dir = Path(__file__).parent / "migrations"
schema_lock_key = 0x7669646661637479  # the PostgreSQL advisory lock held while the schema changes


@contextmanager
def schema_change_lock(engine: Engine) -> Iterator[None]:
    """One process at a time brings the schema up to date. A release starts the migration step and
    workers (which migrate too) together; on PostgreSQL all but one of their concurrent CREATE TABLEs
    would fail, so the others wait here and then find nothing left to do. SQLite serialises writers."""
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": schema_lock_key})
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": schema_lock_key})


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    if revision == "head" and current_revision(engine) == head_revision():
        return  # Alembic would load its environment and every script to find nothing to run (30 ms a start)
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


@functools.cache  # read from the migration scripts once: readiness asks on every probe
def head_revision() -> str:
    """The newest migration this code ships (there is exactly one head)."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The migration the database is at; None for a database never migrated."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
