"""Per-IP and per-user rate limits: token buckets in Redis, shared by every edge replica.

Each request is judged against every bucket that applies (the client IP's, and the user's when the
request carries a valid token) by shared/buckets.py's script: it takes from all of them or from
none, so a request refused by one limit does not use up the other. The edge's buckets read Redis's
own clock, so replicas on hosts whose clocks differ still share one notion of "a second".

Requests arriving while a script call is in flight wait for it and then go together in the next
one (group commit, as in Wallet's ledger): under load one Redis round trip admits many requests,
each judged in arrival order exactly as if it had been alone.

Redis unreachable → the request goes through and the failure is logged (at most once a minute): the
limits protect capacity, not money, and the services keep their own limits on money (Gifts' per
sender limit fails closed).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.buckets import Bucket, Buckets
from shared.config import ConfigError, Settings

log = logging.getLogger(__name__)

# Requests judged by one script call at most (the rest wait for the next call).
MAX_REQUESTS_PER_CALL = 256
_FAILURE_LOG_SECONDS = 60.0


def _limit(name: str, rate: int, burst: int) -> Bucket | None:
    if rate == 0:
        return None
    if burst < rate:
        raise ConfigError(f"the edge's {name} burst ({burst}) must be at least its rate per second ({rate})")
    return Bucket.of(rate, burst)


class RateLimiter:
    def __init__(self, redis: Redis, settings: Settings, prefix: str = "fanbank:edge:rate"):
        self.redis = redis
        self.by_ip = _limit("per-IP", settings.edge_ip_rate_per_second, settings.edge_ip_burst)
        self.by_user = _limit("per-user", settings.edge_user_rate_per_second, settings.edge_user_burst)
        self.prefix = prefix
        self.buckets = Buckets(redis)
        self._failure_logged_at = -math.inf
        self._waiting: list[tuple[list[tuple[str, Bucket]], asyncio.Future]] = []
        self._calling = False
        self._caller: asyncio.Future | None = None

    def describe(self) -> str:
        def one(limit: Bucket | None) -> str:
            return f"{limit.rate_per_second}/s burst {limit.burst}" if limit else "off"

        return f"per IP {one(self.by_ip)}, per user {one(self.by_user)}"

    async def admit(self, ip: str | None, user: str | None) -> int:
        """0 when the request may go on, else the milliseconds until it would be admitted."""
        buckets: list[tuple[str, Bucket]] = []
        if self.by_ip is not None and ip:
            buckets.append((f"{self.prefix}:ip:{ip}", self.by_ip))
        if self.by_user is not None and user:
            buckets.append((f"{self.prefix}:user:{user}", self.by_user))
        if not buckets:
            return 0
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((buckets, future))
        if not self._calling:
            self._calling = True
            self._caller = asyncio.ensure_future(self._call())  # held: a task nobody holds may vanish
        return await future

    async def _call(self) -> None:
        """Sends what is waiting, one script call at a time, until nothing is."""
        batch: list[tuple[list[tuple[str, Bucket]], asyncio.Future]] = []
        try:
            while self._waiting:
                batch = self._waiting[:MAX_REQUESTS_PER_CALL]
                del self._waiting[:MAX_REQUESTS_PER_CALL]
                try:
                    answers = await self.buckets.take([buckets for buckets, _ in batch])
                except RedisError as error:
                    now = time.monotonic()
                    if now - self._failure_logged_at >= _FAILURE_LOG_SECONDS:
                        self._failure_logged_at = now
                        log.error("rate limits skipped: Redis is not answering", extra={"error": type(error).__name__})
                    answers = [0] * len(batch)
                for (_, future), wait in zip(batch, answers, strict=True):
                    if not future.done():
                        future.set_result(wait)
                batch = []
        except Exception as error:  # a bug here must not leave requests hanging: they fail with it
            log.exception("rate limiter failed")
            self._fail(batch, error)
        except BaseException:
            self._fail(batch, RuntimeError("the rate limiter stopped"))
            raise
        finally:
            self._calling = False

    def _fail(self, batch: list, error: Exception) -> None:
        for _, future in [*batch, *self._waiting]:
            if not future.done():
                future.set_exception(error)
        self._waiting.clear()

    async def close(self) -> None:
        await self.redis.aclose()
