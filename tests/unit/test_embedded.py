import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg
import pytest
import redis

from shared.embedded import EmbeddedStack


def _libpq_url(database_url: str) -> str:
    return database_url.replace("postgresql+psycopg://", "postgresql://", 1)


def _other_process(database_url: str, redis_url: str) -> str:
    script = textwrap.dedent(
        """
        import sys, psycopg, redis
        with psycopg.connect(sys.argv[1]) as conn:
            note = conn.execute("SELECT note FROM notes").fetchone()[0]
        print(note, redis.Redis.from_url(sys.argv[2]).get("greeting").decode())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, _libpq_url(database_url), redis_url],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout.strip()


def test_data_survives_restart_and_urls_work_from_other_processes(tmp_path: Path) -> None:
    stack = EmbeddedStack(tmp_path / "data")
    database_url, redis_url = stack.start()
    try:
        assert database_url.startswith("postgresql+psycopg://postgres@/postgres?host=/")
        assert redis_url.startswith("unix:///")
        with psycopg.connect(_libpq_url(database_url), autocommit=True) as conn:
            assert conn.execute("SHOW max_connections").fetchone() == ("300",)
            conn.execute("CREATE TABLE notes (note text)")
            conn.execute("INSERT INTO notes VALUES ('kept')")
        redis.Redis.from_url(redis_url).set("greeting", "hello")

        assert _other_process(database_url, redis_url) == "kept hello"
        # The other process connecting and exiting must not have taken the servers down.
        with psycopg.connect(_libpq_url(database_url)) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert redis.Redis.from_url(redis_url).ping()
    finally:
        stack.stop()
    stack.stop()

    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(_libpq_url(database_url), connect_timeout=2).close()

    with EmbeddedStack(tmp_path / "data") as again:
        with psycopg.connect(_libpq_url(again.database_url)) as conn:
            assert conn.execute("SELECT note FROM notes").fetchall() == [("kept",)]
            assert conn.execute("SHOW max_connections").fetchone() == ("300",)
        assert redis.Redis.from_url(again.redis_url).get("greeting") == b"hello"


def test_folder_with_spaces_and_second_stack_on_it_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "Application Support" / "fanbank"
    with EmbeddedStack(folder, max_connections=100) as stack:
        with psycopg.connect(_libpq_url(stack.database_url)) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        with pytest.raises(RuntimeError, match="in use"):
            EmbeddedStack(folder).start()
        assert redis.Redis.from_url(stack.redis_url).ping()


def test_deep_folder_and_exit_without_stop_while_clients_are_connected(tmp_path: Path) -> None:
    deep = tmp_path.joinpath("d" * 50, "e" * 50, "f" * 50)
    assert len(str(deep / "postgres" / ".s.PGSQL.5432")) > 107
    script = textwrap.dedent(
        """
        import sys
        from shared.embedded import EmbeddedStack
        print(*EmbeddedStack(sys.argv[1], max_connections=100).start(), flush=True)
        sys.stdin.readline()
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", script, str(deep)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    ) as owner:
        assert owner.stdout is not None and owner.stdin is not None
        database_url, redis_url = owner.stdout.readline().split()
        with psycopg.connect(_libpq_url(database_url), autocommit=True) as pg:
            assert pg.execute("SELECT current_setting('max_connections')").fetchone() == ("100",)
            cache = redis.Redis.from_url(redis_url)
            assert cache.ping()

            # The owner exits without calling stop(); its exit hook must still take both servers down.
            owner.stdin.write("\n")
            owner.stdin.flush()
            assert owner.wait(timeout=30) == 0
            with pytest.raises(psycopg.OperationalError):
                pg.execute("SELECT 1")
            with pytest.raises(redis.ConnectionError):
                cache.ping()
            cache.close()
