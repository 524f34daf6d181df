"""A service's live-event plumbing in one process (DESIGN.md "Live events"): the Redis client, the
`Relay` that publishes the service's outbox, and the `Hub` its watchers subscribe through. Billing,
Streams and Gifts each hold one; without FANBANK_REDIS_URL there is none of it (relay and hub are
None: events stay in the outbox and watches answer UNAVAILABLE), unless the service cannot work
without it.
"""

from __future__ import annotations

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.config import ConfigError, Settings
from shared.outbox import Relay, replay_loader
from shared.watch import Hub


class LiveEvents:
    def __init__(self, settings: Settings, engine: AsyncEngine, schema: str, required: str = "", **hub_options):
        """`required`: why the service needs Redis (it refuses to start without it); `hub_options`
        go to the Hub (bounds, replay kinds)."""
        if required and not settings.redis_url:
            raise ConfigError(f"the {schema} service needs FANBANK_REDIS_URL ({required})")
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

    async def close(self) -> None:
        """Watchers first, then the relay (it finishes its round), then Redis."""
        if self.hub is not None:
            await self.hub.close()
        if self.relay is not None:
            await self.relay.stop()
        if self.redis is not None:
            await self.redis.aclose()
