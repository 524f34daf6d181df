"""Hosting a Fanbank service in a process: engine, the service's own background work, the gRPC
runtime, and the order things stop in. Every service is hosted the same way; a service module
only provides a class with `registration()`, `start()` and `stop()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from shared.clock import refuse_controlled_clock_in_production
from shared.config import Settings
from shared.db import make_engine
from shared.server import Registration, Runtime, start_server

log = logging.getLogger(__name__)

# Which class implements each service. A service appears here once it exists.
SERVICE_CLASSES = {
    "wallet": "services.wallet.server:Wallet",
    "billing": "services.billing.server:Billing",
    "gifts": "services.gifts.server:Gifts",
    "streams": "services.streams.server:Streams",
}


class Service(Protocol):
    def registration(self) -> Registration: ...
    def start(self) -> None: ...
    async def stop(self) -> None: ...


def service_class(name: str) -> type:
    try:
        module_name, _, class_name = SERVICE_CLASSES[name].partition(":")
    except KeyError:
        raise SystemExit(f"unknown service {name!r}; known: {', '.join(SERVICE_CLASSES)}") from None
    return getattr(importlib.import_module(module_name), class_name)


# Python's default GC thresholds (a young collection every 700 net allocations) make a busy
# service walk its long-lived caches (Wallet's account ids, watch hubs) again and again: measured on
# `fanbank bench metering --calls 50000`, these thresholds cut Wallet's CPU per block by ~25%.
# Reference cycles are rare in the request path; they are still collected, just less often.
GC_THRESHOLDS = (100_000, 50, 1000)


def tune_gc() -> None:
    gc.set_threshold(*GC_THRESHOLDS)


async def host(
    name: str, settings: Settings, port: int | None = None, engine: AsyncEngine | None = None
) -> tuple[Runtime, Service]:
    """Starts service `name` on `port` (its configured port if None; 0 picks a free one)."""
    if settings.database_url is None:
        raise SystemExit("FANBANK_DATABASE_URL is not set (`fanbank up` starts an embedded database)")
    tune_gc()
    own_engine = engine is None
    engine = engine or make_engine(settings.database_url, settings.db_pool_size)
    await refuse_controlled_clock_in_production(engine, settings.clock_mode)
    service = service_class(name)(settings, engine, settings.database_url)
    service.start()
    runtime = await start_server(settings, [service.registration()], settings.ports[name] if port is None else port)
    runtime.on_stop.append(service.stop)
    if own_engine:
        runtime.on_stop.append(engine.dispose)
    log.info("serving", extra={"port": runtime.port})
    return runtime, service


def start_background(settings: Settings, action: Callable[[], Awaitable[object]], what: str) -> asyncio.Task | None:
    """Runs `action` every FANBANK_BACKGROUND_MS as a task; None when that is 0 (tests drive it)."""
    if not settings.background_ms:
        return None
    return asyncio.create_task(run_every(settings.background_ms / 1000, action, what), name=what)


async def stop_background(task: asyncio.Task | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def run_every(interval_seconds: float, action: Callable[[], Awaitable[object]], what: str) -> None:
    """A service's background work (sweepers, ticks): runs `action` until cancelled, waiting
    `interval_seconds` between runs; a failure is logged and the next run goes on."""
    while True:
        try:
            await action()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background work failed", extra={"work": what})
        await asyncio.sleep(interval_seconds)
