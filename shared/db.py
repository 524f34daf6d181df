"""Database access: one async SQLAlchemy engine per process (psycopg 3), one schema per service,
and versioned SQL migrations.

Hot paths (the Wallet's ledger batch, Gifts' payment pipeline) drive a pooled connection through
psycopg directly with `raw_transaction()`: their few fixed statements skip SQLAlchemy's execution
layer (about 8% of the Wallet's CPU per tip), and in psycopg's pipeline mode BEGIN travels with the
first statement instead of costing a round trip of its own. Everything else stays on SQLAlchemy.

Migrations are plain SQL files `services/<service>/migrations/NNNN_name.sql` (and shared ones in
`shared/migrations/`), applied in order under an advisory lock so several processes starting at
once apply each exactly once. Each schema records what it applied in `<schema>.schema_migrations`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import psycopg
from psycopg.rows import namedtuple_row
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from shared.config import REPO

log = logging.getLogger(__name__)

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# Arbitrary constant: every process that migrates takes this advisory lock first.
_MIGRATION_LOCK = 7_301_993_001


def async_url(url: str) -> str:
    """Accepts postgres://, postgresql:// or postgresql+psycopg:// and answers the async driver URL."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise ValueError(f"not a PostgreSQL URL: {url!r}")


def make_engine(url: str, pool_size: int) -> AsyncEngine:
    return create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=0,
        pool_pre_ping=False,
        pool_timeout=30,
        # Our statements are fixed texts with bound parameters; psycopg prepares them server-side
        # after a few uses, which saves parse/plan on the hot path.
        connect_args={"prepare_threshold": 2},
    )


_PARAMETER = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


def json_param(rows) -> str:
    """Many rows as one JSON text parameter, read in SQL by `jsonb_array_elements(CAST(:p AS jsonb))`
    or `jsonb_to_recordset`: psycopg dumps a list element by element in Python, and orjson encodes
    in a tenth of json.dumps's time (datetimes as RFC 3339, which PostgreSQL reads)."""
    return orjson.dumps(rows).decode()


def joined(values) -> str:
    """Many scalars (ids, numbers; never holding a space) as one text parameter, split in SQL by
    `string_to_array(:p, ' ')` (cast to bigint[] where they are numbers). psycopg dumps a list
    element by element in Python; a string goes at once."""
    return " ".join(map(str, values))


@functools.cache
def psycopg_sql(statement: str) -> str:
    """`:name` parameters (as SQLAlchemy writes them) in psycopg's `%(name)s` style, converted once
    per distinct statement text (hot paths use a small fixed set). `::type` casts stay."""
    assert "%" not in statement, "a literal % would need escaping"
    return _PARAMETER.sub(r"%(\1)s", statement)


class RawConn:
    """A psycopg connection inside a `raw_transaction`; each statement answers its rows (named
    tuples, read by attribute like SQLAlchemy's rows). `pipeline()` is psycopg's pipeline mode."""

    __slots__ = ("raw",)

    def __init__(self, raw: psycopg.AsyncConnection):
        self.raw = raw

    async def execute(self, statement: str, params: dict) -> list:
        async with self.raw.cursor(row_factory=namedtuple_row) as cursor:
            await cursor.execute(psycopg_sql(statement), params)
            return await cursor.fetchall() if cursor.description is not None else []

    async def tuples(self, statement: str, params: dict) -> list[tuple]:
        """execute() for a statement that answers many rows, as plain tuples: making a named tuple
        is a Python call per row, a tuple is not."""
        async with self.raw.cursor() as cursor:
            await cursor.execute(psycopg_sql(statement), params)
            return await cursor.fetchall()

    async def fetch(self, statement: str, params: dict) -> list:
        """For a statement that answers rows; unlike execute() it also works in pipeline mode,
        where a statement's result (and so whether it has rows) is only known once fetched."""
        async with self.raw.cursor(row_factory=namedtuple_row) as cursor:
            await cursor.execute(psycopg_sql(statement), params)
            return await cursor.fetchall()

    def pipeline(self):
        return self.raw.pipeline()


@contextlib.asynccontextmanager
async def raw_transaction(engine: AsyncEngine) -> AsyncIterator[RawConn]:
    """One pooled connection driven through psycopg: BEGIN is implicit at the first statement,
    COMMIT at the end, ROLLBACK on any failure, and a connection that cannot even roll back is
    dropped from the pool."""
    async with engine.connect() as pooled:
        raw = (await pooled.get_raw_connection()).driver_connection
        try:
            yield RawConn(raw)
            await raw.commit()
        except BaseException:
            try:
                await raw.rollback()
            except psycopg.Error:
                await pooled.invalidate()
            raise


@dataclass(frozen=True, slots=True)
class Migration:
    schema: str
    version: int
    name: str
    sql: str


def migrations_for(schema: str, folder: Path) -> list[Migration]:
    found = []
    for path in sorted(folder.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            raise ValueError(f"migration file name must be NNNN_name.sql: {path}")
        found.append(Migration(schema, int(match.group(1)), path.stem, path.read_text()))
    versions = [m.version for m in found]
    assert versions == sorted(set(versions)), f"duplicate migration versions in {folder}"
    return found


def all_migrations() -> list[Migration]:
    """Shared infrastructure first (the clock), then each service that has migrations."""
    result = migrations_for("fanbank_shared", REPO / "shared" / "migrations")
    for folder in sorted((REPO / "services").glob("*/migrations")):
        result += migrations_for(folder.parent.name, folder)
    return result


async def migrate(engine: AsyncEngine, migrations: list[Migration] | None = None) -> list[str]:
    """Applies what is missing; answers the names applied now."""
    applied_now: list[str] = []
    async with engine.begin() as conn:
        await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
        for migration in migrations if migrations is not None else all_migrations():
            schema = migration.schema
            await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            await conn.execute(
                text(
                    f'CREATE TABLE IF NOT EXISTS "{schema}".schema_migrations ('
                    "version integer PRIMARY KEY, name text NOT NULL, "
                    "applied_at timestamptz NOT NULL DEFAULT now())"
                )
            )
            done = await conn.scalar(
                text(f'SELECT count(*) FROM "{schema}".schema_migrations WHERE version = :v'),
                {"v": migration.version},
            )
            if done:
                continue
            # On the driver itself, without parameters: SQLAlchemy's exec_driver_sql would make psycopg
            # read every % in the migration (LIKE patterns, format()) as a placeholder.
            raw = await conn.get_raw_connection()
            await raw.driver_connection.execute(migration.sql)
            await conn.execute(
                text(f'INSERT INTO "{schema}".schema_migrations (version, name) VALUES (:v, :n)'),
                {"v": migration.version, "n": migration.name},
            )
            applied_now.append(f"{schema}/{migration.name}")
            log.info("migration applied", extra={"migration": f"{schema}/{migration.name}"})
    return applied_now
