"""What every `fanbank bench <scenario>` shares: the database a run works in, services started as
their own OS processes (`fanbank serve <name>`), CPU accounting per process, argument bounds and
percentiles. A scenario lives beside its service (`services/<name>/bench.py`) and is registered in
`shared.cli.BENCHMARKS`; its last printed line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
import psutil
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import text

from shared.config import REPO

STARTUP_SECONDS = 60.0


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes used so far (gone processes count 0)."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


async def postgres_root(engine) -> int | None:
    """The postmaster's pid when PostgreSQL runs on this machine (its CPU is part of the picture)."""
    async with engine.connect() as conn:
        return postmaster_of(await conn.scalar(text("SELECT pg_backend_pid()")))


def postmaster_of(backend_pid: int) -> int | None:
    """The postmaster of a backend, when that PostgreSQL runs on this machine (None otherwise)."""
    with contextlib.suppress(psutil.Error):
        process = psutil.Process(backend_pid)
        if "postgres" in process.name().lower():
            parent = process.parent()
            return parent.pid if parent is not None else None
    return None


# What PostgreSQL wrote to its WAL so far (records, bytes, full page images): a tick's WAL is most of
# what its commits wait for, and a full page image (8 kB) is the first change to a page after a
# checkpoint.
WAL_SQL = "SELECT wal_records, wal_bytes, wal_fpi FROM pg_stat_wal"


def wal_figures(before, after, units: int) -> dict[str, float]:
    """The WAL written between two WAL_SQL rows, per unit of work (a block, a tip) and in all."""
    records, size, images = (int(a) - int(b) for a, b in zip(after, before, strict=True))
    per = max(units, 1)
    return {
        "wal_records_per_unit": round(records / per, 1),
        "wal_bytes_per_unit": round(size / per),
        "wal_full_page_images": images,
    }


def postgres_pids(root: int | None) -> list[int]:
    if root is None:
        return []
    with contextlib.suppress(psutil.Error):
        process = psutil.Process(root)
        return [process.pid, *(c.pid for c in process.children(recursive=True))]
    return []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _listens(pid: int, port: int) -> bool:
    with contextlib.suppress(psutil.Error):
        return any(
            c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in psutil.Process(pid).net_connections("tcp")
        )
    return False


async def wait_serving(target: str, process: subprocess.Popen, seconds: float = STARTUP_SECONDS) -> None:
    """Waits until our process listens on the port and answers SERVING. The port was free when chosen, but
    another program may take it before the service binds it; the health answer alone could then be theirs."""
    port = int(target.rpartition(":")[2])
    deadline = time.monotonic() + seconds
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the service process exited with {process.returncode}")
            if not _listens(process.pid, port):
                await asyncio.sleep(0.1)
                continue
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"the service at {target} was not serving after {seconds:.0f} s")


class ServiceProcess:
    """`fanbank serve <name>` as its own OS process, output kept in a file shown on failure."""

    def __init__(self, name: str, database_url: str, pool: int, log_dir: Path, **env_overrides: str):
        self.name = name
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.log_path = log_dir / f"{name}-{self.port}.log"
        env = dict(os.environ)
        env.update(
            FANBANK_DATABASE_URL=database_url,
            FANBANK_LOG_LEVEL="WARNING",
            FANBANK_DB_POOL_SIZE=str(pool),
            FANBANK_CLOCK="system",
            FANBANK_SHUTDOWN_GRACE_SECONDS="2",
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        )
        env.update(env_overrides)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "shared.cli", "serve", name, "--port", str(self.port)],
                env=env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    async def serving(self, seconds: float = STARTUP_SECONDS) -> None:
        try:
            await wait_serving(self.target, self.process, seconds)
        except BaseException:
            print(f"{self.name} process output (last lines):\n{self.log_tail()}", file=sys.stderr)
            raise

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def percentile(sorted_values: list[float], share: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(share * len(sorted_values)))]


def bounded(lo: float, hi: float, kind=int):
    """An argparse type: `kind(raw)` within [lo, hi]."""

    def parse(raw: str):
        value = kind(raw)
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be between {lo} and {hi}, got {raw}")
        return value

    return parse


def plain_url(url: str) -> str:
    """A SQLAlchemy URL as libpq takes it."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def with_database(url: str, name: str) -> str:
    base, sep, query = url.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}{sep}{query}"


@contextlib.contextmanager
def database(settings):
    """The database the run works in: FANBANK_DATABASE_URL as given, else a fresh one on the embedded
    stack under <data_dir>/bench, dropped at the end."""
    if settings.database_url is not None:
        yield settings.database_url
        return
    from shared.embedded import EmbeddedStack

    with EmbeddedStack(settings.data_dir / "bench") as stack:
        admin = plain_url(stack.database_url)
        name = f"bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            yield with_database(stack.database_url, name)
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
