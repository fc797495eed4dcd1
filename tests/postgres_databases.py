"""PostgreSQL databases for the tests of one test process: cloned from the migrated template, then reset and
reused. A clone costs the server about 0.2 s of CPU (it writes the whole template again); emptying the
tables a test wrote and putting the seed rows back costs about 10 ms, on one connection kept for it (a new
connection reads the catalog again: 15 ms more). A database whose schema a test changed (a migration test's
downgrade, a dropped column) is dropped instead of reused."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, MetaData, Table, create_engine, delete, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from vidfactory.bootstrap import upgrade_and_seed
from vidfactory.db.session import make_engine

__all__ = ["PostgresDatabases"]

lock_timeout_ms = 10_000  # a reset waits this long for a lock a test left behind, then drops the database
# What a test could change besides rows: tables, columns, indexes, constraints, sequences, functions, the
# migration stamp. Equal to the template's, the database is the template's again once its rows are.
schema_fingerprint_sql = """
SELECT md5(concat_ws('|',
  (SELECT string_agg(concat_ws(':', table_name, column_name, data_type, is_nullable, column_default), ','
                     ORDER BY table_name, column_name)
     FROM information_schema.columns WHERE table_schema = 'public'),
  (SELECT string_agg(indexdef, ',' ORDER BY indexdef) FROM pg_indexes WHERE schemaname = 'public'),
  (SELECT string_agg(concat_ws(':', conrelid::regclass::text, conname, pg_get_constraintdef(oid)), ','
                     ORDER BY conrelid::regclass::text, conname)
     FROM pg_constraint WHERE connamespace = 'public'::regnamespace),
  (SELECT string_agg(sequencename, ',' ORDER BY sequencename) FROM pg_sequences WHERE schemaname = 'public'),
  (SELECT string_agg(proname || '(' || pg_get_function_identity_arguments(oid) || ')', ',' ORDER BY proname)
     FROM pg_proc WHERE pronamespace = 'public'::regnamespace),
  (SELECT string_agg(version_num, ',') FROM alembic_version)))
"""


@dataclass
class _Seed:
    """The template's contents, read from its first clone (a connection to the template itself would
    refuse every clone while it lasts)."""

    tables: list[Table]  # parents first
    rows: dict[str, list[dict[str, Any]]]
    sequences: list[tuple[str, int | None]]  # (name, last value; None: never called)
    fingerprint: str

    @classmethod
    def read(cls, engine: Engine) -> _Seed:
        metadata = MetaData()
        metadata.reflect(engine)
        tables = [table for table in metadata.sorted_tables if table.name != "alembic_version"]
        with engine.connect() as connection:
            rows = {table.name: [dict(row._mapping) for row in connection.execute(select(table))] for table in tables}
            sequences = [(name, last) for name, last in connection.execute(text(
                "SELECT schemaname || '.' || sequencename, last_value FROM pg_sequences WHERE schemaname = 'public'"))]
            fingerprint = connection.execute(text(schema_fingerprint_sql)).scalar_one()
        return cls(tables=tables, rows=rows, sequences=sequences, fingerprint=fingerprint)


@dataclass
class PostgresDatabases:
    admin_url: str
    template: str
    _admin: Engine = field(init=False)
    _free: list[str] = field(default_factory=list, init=False)
    # Per database cloned: its one pooled connection, which resets it and outlives the others it ends.
    _resetters: dict[str, Engine] = field(default_factory=dict, init=False)
    _seed: _Seed | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)

    @classmethod
    def open(cls, admin_url: str) -> PostgresDatabases:
        """A new template database, migrated and seeded once for this test process."""
        databases = cls(admin_url, f"vf_tpl_{uuid.uuid4().hex[:10]}")
        with databases._admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{databases.template}"'))
        engine = make_engine(databases.url(databases.template))
        try:
            upgrade_and_seed(engine)
        finally:
            engine.dispose()
        return databases

    def url(self, name: str) -> str:
        return make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)

    def take(self) -> str:
        """The URL of a database with the template's schema and rows, for one test."""
        name = self._free.pop() if self._free else self._clone()
        return self.url(name)

    def give_back(self, url: str) -> None:
        """End the database's connections, then reset it for the next test, or drop it when its schema
        changed or a reset fails."""
        name = make_url(url).database
        assert name in self._resetters, f"not a database of this test process: {url}"
        if self._reset(name):
            self._free.append(name)
        else:
            self._drop(name)

    def close(self) -> None:
        """Drop the databases kept for reuse, then the template."""
        while self._free:
            self._drop(self._free.pop())
        self._drop(self.template)
        self._admin.dispose()

    def _clone(self) -> str:
        name = f"vf_test_{uuid.uuid4().hex[:12]}"
        with self._admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"'))
        self._resetters[name] = create_engine(self.url(name), pool_size=1, max_overflow=0)
        if self._seed is None:
            self._seed = _Seed.read(self._resetters[name])
        return name

    def _reset(self, name: str) -> bool:
        """Whether the database holds the template's schema and rows again."""
        assert self._seed is not None
        seed = self._seed
        try:
            with self._resetters[name].begin() as connection:
                connection.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
                connection.execute(text(f"SET LOCAL lock_timeout = {lock_timeout_ms}"))
                if connection.execute(text(schema_fingerprint_sql)).scalar_one() != seed.fingerprint:
                    return False
                for table in reversed(seed.tables):
                    connection.execute(delete(table))
                for table in seed.tables:
                    if seed.rows[table.name]:
                        connection.execute(insert(table), seed.rows[table.name])
                for sequence, last in seed.sequences:
                    connection.execute(text("SELECT setval(:sequence, :value, :called)"),
                                       {"sequence": sequence, "value": last or 1, "called": last is not None})
            return True
        except SQLAlchemyError:  # a lock held past the timeout, rows the seed cannot go back over: drop it
            return False

    def _drop(self, name: str) -> None:
        resetter = self._resetters.pop(name, None)
        if resetter is not None:
            resetter.dispose()
        with self._admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
