"""The `fanbank` command.

fanbank up                 embedded PostgreSQL + Redis (unless URLs are set), migrate, every service, the edge
fanbank migrate            apply every service's migrations to FANBANK_DATABASE_URL
fanbank serve SERVICE      run one service or the edge (what a container runs)
fanbank bench SCENARIO     run a benchmark; the last line printed is one JSON object
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

from shared import logs
from shared.client import health_status
from shared.config import load_settings
from shared.db import make_engine, migrate
from shared.host import SERVICE_CLASSES, host
from shared.server import run_until_signalled

# Benchmark scenarios: name → "module:function"; the function takes the remaining argv.
BENCHMARKS = {
    "wallet-hot": "services.wallet.bench:main",
    "metering": "services.billing.bench:main",
    "metering-floor": "services.billing.floor:main",
    "tips": "services.gifts.bench:main",
    "edge": "services.edge.bench:main",
    "fanout": "services.streams.bench:main",
}


async def _migrate(database_url: str) -> list[str]:
    engine = make_engine(database_url, 1)
    try:
        return await migrate(engine)
    finally:
        await engine.dispose()


def cmd_migrate(_args) -> int:
    settings = load_settings()
    logs.setup(settings.log_level, "migrate")
    if not settings.database_url:
        print("FANBANK_DATABASE_URL is not set", file=sys.stderr)
        return 2
    applied = asyncio.run(_migrate(settings.database_url))
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))
    return 0


def cmd_serve(args) -> int:
    settings = load_settings()
    logs.setup(settings.log_level, args.service)
    if args.service == "edge":
        from services.edge.server import serve

        asyncio.run(serve(settings, args.port))
        return 0

    async def main() -> None:
        runtime, _ = await host(args.service, settings, args.port)
        await run_until_signalled([runtime])

    asyncio.run(main())
    return 0


def _wait_healthy(target: str, process: subprocess.Popen, seconds: int = 60) -> str:
    deadline = time.monotonic() + seconds
    status = "UNKNOWN"
    while time.monotonic() < deadline and process.poll() is None:
        status = asyncio.run(health_status(target))
        if status == "SERVING":
            return status
        time.sleep(0.2)
    return status if process.poll() is None else f"EXITED({process.returncode})"


def _wait_http(url: str, process: subprocess.Popen, seconds: int = 60) -> str:
    deadline = time.monotonic() + seconds
    status = "UNKNOWN"
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=1) as reply:
                if reply.status == 200:
                    return "SERVING"
        except (urllib.error.URLError, OSError) as error:
            status = type(error).__name__
        time.sleep(0.2)
    return status if process.poll() is None else f"EXITED({process.returncode})"


def _example_curl(edge_url: str) -> str:
    python = os.path.relpath(sys.executable)
    python = python if not python.startswith("..") else sys.executable
    token = f"$({shlex.quote(python)} -m services.edge.token fan-1)"
    return f'curl -s -H "Authorization: Bearer {token}" {edge_url}/v1/owners/fan-1/balance'


def cmd_up(_args) -> int:
    # A person or a test reads this as it happens, often through a pipe.
    sys.stdout.reconfigure(line_buffering=True)
    settings = load_settings()
    env = dict(os.environ)
    stack = None
    if not settings.database_url or not settings.redis_url:
        from shared.embedded import EmbeddedStack

        stack = EmbeddedStack(settings.data_dir)
        database_url, redis_url = stack.start()
        env["FANBANK_DATABASE_URL"] = settings.database_url or database_url
        env["FANBANK_REDIS_URL"] = settings.redis_url or redis_url
        print(f"embedded PostgreSQL and Redis under {settings.data_dir}")
    else:
        env["FANBANK_DATABASE_URL"], env["FANBANK_REDIS_URL"] = settings.database_url, settings.redis_url
    children: list[tuple[str, subprocess.Popen]] = []
    try:
        applied = asyncio.run(_migrate(env["FANBANK_DATABASE_URL"]))
        print(f"migrations: {len(applied)} applied now, database up to date")
        for name in SERVICE_CLASSES:
            cmd = [sys.executable, "-m", "shared.cli", "serve", name]
            children.append((name, subprocess.Popen(cmd, env=env)))
        for name, process in children:
            target = f"{settings.host}:{settings.ports[name]}"
            print(f"  {name:<8} grpc://{target}  health: {_wait_healthy(target, process)}")
        edge = subprocess.Popen([sys.executable, "-m", "shared.cli", "serve", "edge"], env=env)
        children.append(("edge", edge))
        edge_url = f"http://{settings.addresses['edge']}"
        edge_health = _wait_http(edge_url + "/healthz", edge)
        # First after the last wait, so a script waiting for this line gets it in a chunk of its own.
        print(f"preset: {settings.preset_name}. Ctrl-C stops everything.")
        print(f"  {'edge':<8} {edge_url}  health: {edge_health}")
        print(f"  try it: {_example_curl(edge_url)}")
        if settings.using_dev_keys:
            print("warning: using built-in development service keys (set FANBANK_SERVICE_KEYS in production)")
        stop = {"now": False}

        def request_stop(*_):
            stop["now"] = True

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        while not stop["now"] and all(p.poll() is None for _, p in children):
            time.sleep(0.2)
        for name, process in children:
            if process.poll() is not None:
                print(f"{name} exited with {process.returncode}", file=sys.stderr)
    finally:
        for _, process in children:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for _, process in children:
            try:
                process.wait(timeout=settings.shutdown_grace_seconds + 5)
            except subprocess.TimeoutExpired:
                process.kill()
        if stack is not None:
            stack.stop()
        print("stopped")
    return 0


def cmd_bench(args) -> int:
    target = BENCHMARKS.get(args.scenario)
    if target is None:
        print(f"unknown scenario {args.scenario!r}; known: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    module_name, _, function = target.partition(":")
    return getattr(importlib.import_module(module_name), function)(args.rest) or 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fanbank", description="Fanbank: the money engine for creator platforms")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start everything (embedded database unless configured)").set_defaults(func=cmd_up)
    sub.add_parser("migrate", help="apply migrations").set_defaults(func=cmd_migrate)
    serve = sub.add_parser("serve", help="run one service")
    serve.add_argument("service", choices=sorted([*SERVICE_CLASSES, "edge"]))
    serve.add_argument("--port", type=int, default=None)
    serve.set_defaults(func=cmd_serve)
    bench = sub.add_parser("bench", help="run a benchmark scenario")
    bench.add_argument("scenario", help=", ".join(BENCHMARKS))
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    bench.set_defaults(func=cmd_bench)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
