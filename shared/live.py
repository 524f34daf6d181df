"""A service's live-event plumbing in one process (DESIGN.md "Live events"): the Redis client, the
`Relay` that publishes the service's outbox, and the `Hub` its watchers subscribe through. Billing,
Streams and Gifts each hold one; without FANBANK_REDIS_URL there is none of it (relay and hub are
None: events stay in the outbox and watches answer UNAVAILABLE), unless the service cannot work
without it.

Retention: with the relay runs a pruner that deletes the outbox rows published more than
FANBANK_OUTBOX_RETENTION_HOURS ago (business time), every PRUNE_EVERY_SECONDS, in short chunks
(`shared.outbox.prune`); a resume token from before then answers RESUME_TOKEN_TOO_OLD. Several
processes pruning one schema at once only repeat a little work.
"""

from __future__ import annotations

import asyncio
import datetime as dt

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.clock import db_now
from shared.config import ConfigError, Settings
from shared.host import run_every, stop_background
from shared.outbox import Relay, prune, replay_loader
from shared.watch import Hub

PRUNE_EVERY_SECONDS = 600.0


class LiveEvents:
    def __init__(self, settings: Settings, engine: AsyncEngine, schema: str, required: str = "", **hub_options):
        """`required`: why the service needs Redis (it refuses to start without it); `hub_options`
        go to the Hub (bounds, replay kinds)."""
        if required and not settings.redis_url:
            raise ConfigError(f"the {schema} service needs FANBANK_REDIS_URL ({required})")
        self.engine = engine
        self.schema = schema
        hours = settings.outbox_retention_hours
        self.retention = dt.timedelta(hours=hours) if hours else None
        self._background = settings.background_ms > 0  # 0: tests call prune_once() themselves
        self._pruner: asyncio.Task | None = None
        self.redis = Redis.from_url(settings.redis_url) if settings.redis_url else None
        self.relay = Relay(engine, self.redis, schema) if self.redis is not None else None
        self.hub = (
            Hub(self.redis, replay_loader=replay_loader(engine, schema), **hub_options)
            if self.redis is not None
            else None
        )

    def notify(self) -> None:
        """A transaction appended events: wake the relay."""
        if self.relay is not None:
            self.relay.notify()

    def start(self) -> None:
        if self.relay is not None:
            self.relay.start()
            if self.retention is not None and self._background and self._pruner is None:
                self._pruner = asyncio.create_task(
                    run_every(PRUNE_EVERY_SECONDS, self.prune_once, f"outbox-prune:{self.schema}"),
                    name=f"outbox-prune:{self.schema}",
                )

    async def prune_once(self) -> int:
        """Deletes the published rows older than the retention; answers how many."""
        if self.retention is None:
            return 0
        return await prune(self.engine, self.schema, await db_now(self.engine) - self.retention)

    async def close(self) -> None:
        """The pruner and watchers first, then the relay (it finishes its round), then Redis."""
        pruner, self._pruner = self._pruner, None
        await stop_background(pruner)
        if self.hub is not None:
            await self.hub.close()
        if self.relay is not None:
            await self.relay.stop()
        if self.redis is not None:
            await self.redis.aclose()
