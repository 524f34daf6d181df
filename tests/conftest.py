"""Test harness: real PostgreSQL and Redis (embedded by default; FANBANK_TEST_DATABASE_URL and
FANBANK_TEST_REDIS_URL point the suite at other servers), in-process gRPC servers on port 0.

Each test module gets a fresh database (created from scratch and migrated), so tests that count
rows or audit the whole ledger see only their own work.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import psycopg
import pytest

from shared.config import REPO

TEST_DATA = Path(os.environ.get("FANBANK_TEST_DATA_DIR", REPO / ".data" / "test"))


@pytest.fixture(scope="session")
def servers():
    """(admin database URL, redis URL) for the whole run."""
    database_url = os.environ.get("FANBANK_TEST_DATABASE_URL")
    redis_url = os.environ.get("FANBANK_TEST_REDIS_URL")
    if database_url and redis_url:
        yield database_url, redis_url
        return
    from shared.embedded import EmbeddedStack

    stack = EmbeddedStack(TEST_DATA, max_connections=400)
    db, redis = stack.start()
    yield database_url or db, redis_url or redis
    stack.stop()


def _plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def _with_database(url: str, name: str) -> str:
    base, sep, query = url.partition("?")
    head = base.rsplit("/", 1)[0]
    return f"{head}/{name}{sep}{query}"


@pytest.fixture(scope="module")
def database_url(servers):
    """A fresh, empty database for one test module; dropped afterwards."""
    admin_url = servers[0]
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_plain(admin_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(admin_url, name)
    yield url
    with psycopg.connect(_plain(admin_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def redis_url(servers):
    return servers[1]
