"""Per-IP and per-user rate limits: token buckets in Redis, shared by every edge replica.

One Lua script takes a request from every bucket that applies (the client IP's, and the user's when
the request carries a valid token) or from none: a request refused by one limit does not use up the
other. Buckets count thousandths of a request so integer refills stay exact, and read Redis's own
clock, so replicas on hosts whose clocks differ still share one notion of "a second".

Redis unreachable → the request goes through and the failure is logged (at most once a minute): the
limits protect capacity, not money, and the services keep their own limits on money (Gifts' per
sender limit fails closed).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.config import ConfigError, Settings

log = logging.getLogger(__name__)

# KEYS: buckets; ARGV: per bucket (rate per second, burst, key lifetime in ms), in KEYS order.
# Answers 0 when every bucket had a whole request (each then gives one), else the milliseconds until
# the emptiest would have one (and nothing is taken).
_BUCKETS_LUA = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local wait = 0
local levels = {}
for i, key in ipairs(KEYS) do
  local rate = tonumber(ARGV[3 * i - 2])
  local full = tonumber(ARGV[3 * i - 1]) * 1000
  local state = redis.call('HMGET', key, 'm', 't')
  local milli = tonumber(state[1])
  local at = tonumber(state[2])
  if milli == nil or at == nil then
    milli = full
    at = now
  end
  if now > at then
    milli = math.min(full, milli + (now - at) * rate)
  end
  levels[i] = milli
  if milli < 1000 then
    wait = math.max(wait, math.ceil((1000 - milli) / rate))
  end
end
if wait > 0 then
  return wait
end
for i, key in ipairs(KEYS) do
  redis.call('HSET', key, 'm', levels[i] - 1000, 't', now)
  redis.call('PEXPIRE', key, tonumber(ARGV[3 * i]))
end
return 0
"""
_FAILURE_LOG_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Limit:
    rate_per_second: int
    burst: int

    @property
    def ttl_ms(self) -> int:
        # Untouched this long a bucket is full again, so forgetting it loses nothing.
        return max(1000, math.ceil(self.burst * 1000 / self.rate_per_second) * 2)


def _limit(name: str, rate: int, burst: int) -> Limit | None:
    if rate == 0:
        return None
    if burst < rate:
        raise ConfigError(f"the edge's {name} burst ({burst}) must be at least its rate per second ({rate})")
    return Limit(rate, burst)


class RateLimiter:
    def __init__(self, redis: Redis, settings: Settings, prefix: str = "fanbank:edge:rate"):
        self.redis = redis
        self.by_ip = _limit("per-IP", settings.edge_ip_rate_per_second, settings.edge_ip_burst)
        self.by_user = _limit("per-user", settings.edge_user_rate_per_second, settings.edge_user_burst)
        self.prefix = prefix
        self.script = redis.register_script(_BUCKETS_LUA)
        self._failure_logged_at = -math.inf

    def describe(self) -> str:
        def one(limit: Limit | None) -> str:
            return f"{limit.rate_per_second}/s burst {limit.burst}" if limit else "off"

        return f"per IP {one(self.by_ip)}, per user {one(self.by_user)}"

    async def admit(self, ip: str | None, user: str | None) -> int:
        """0 when the request may go on, else the milliseconds until it would be admitted."""
        keys, args = [], []
        if self.by_ip is not None and ip:
            keys.append(f"{self.prefix}:ip:{ip}")
            args += [self.by_ip.rate_per_second, self.by_ip.burst, self.by_ip.ttl_ms]
        if self.by_user is not None and user:
            keys.append(f"{self.prefix}:user:{user}")
            args += [self.by_user.rate_per_second, self.by_user.burst, self.by_user.ttl_ms]
        if not keys:
            return 0
        try:
            return int(await self.script(keys=keys, args=args))
        except RedisError as error:
            now = time.monotonic()
            if now - self._failure_logged_at >= _FAILURE_LOG_SECONDS:
                self._failure_logged_at = now
                log.error("rate limits skipped: Redis is not answering", extra={"error": type(error).__name__})
            return 0

    async def close(self) -> None:
        await self.redis.aclose()
