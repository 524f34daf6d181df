"""Per-IP and per-user rate limits: token buckets in Redis, shared by every edge replica.

One Lua script takes a request from every bucket that applies (the client IP's, and the user's when
the request carries a valid token) or from none: a request refused by one limit does not use up the
other. Buckets count thousandths of a request so integer refills stay exact, and read Redis's own
clock, so replicas on hosts whose clocks differ still share one notion of "a second".

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
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.config import ConfigError, Settings

log = logging.getLogger(__name__)

# KEYS: the buckets of every request in the call, request after request. ARGV[1]: the number of
# requests R; ARGV[2 .. R+1]: how many buckets each request has; then, per bucket in KEYS order,
# (rate per second, burst, key lifetime in ms). Answers one number per request, in order: 0 when
# every bucket of that request had a whole request (each then gives one), else the milliseconds
# until the emptiest would have one (and nothing is taken for that request). Requests are judged one
# after the other, so two in one call that share a bucket see each other's take.
_BUCKETS_LUA = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local requests = tonumber(ARGV[1])
local answers = {}
local key = 0
local arg = requests + 2
for r = 1, requests do
  local count = tonumber(ARGV[r + 1])
  local wait = 0
  local levels = {}
  for j = 1, count do
    local at_arg = arg + 3 * (j - 1)
    local rate = tonumber(ARGV[at_arg])
    local full = tonumber(ARGV[at_arg + 1]) * 1000
    local state = redis.call('HMGET', KEYS[key + j], 'm', 't')
    local milli = tonumber(state[1])
    local at = tonumber(state[2])
    if milli == nil or at == nil then
      milli = full
      at = now
    end
    if now > at then
      milli = math.min(full, milli + (now - at) * rate)
    end
    levels[j] = milli
    if milli < 1000 then
      wait = math.max(wait, math.ceil((1000 - milli) / rate))
    end
  end
  if wait == 0 then
    for j = 1, count do
      redis.call('HSET', KEYS[key + j], 'm', levels[j] - 1000, 't', now)
      redis.call('PEXPIRE', KEYS[key + j], tonumber(ARGV[arg + 3 * (j - 1) + 2]))
    end
  end
  answers[r] = wait
  key = key + count
  arg = arg + 3 * count
end
return answers
"""
# Requests judged by one script call at most (the rest wait for the next call).
MAX_REQUESTS_PER_CALL = 256
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
        self._waiting: list[tuple[list[str], list[int], asyncio.Future]] = []
        self._calling = False

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
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((keys, args, future))
        if not self._calling:
            self._calling = True
            asyncio.ensure_future(self._call())
        return await future

    async def _call(self) -> None:
        """Sends what is waiting, one script call at a time, until nothing is."""
        batch: list[tuple[list[str], list[int], asyncio.Future]] = []
        try:
            while self._waiting:
                batch = self._waiting[:MAX_REQUESTS_PER_CALL]
                del self._waiting[:MAX_REQUESTS_PER_CALL]
                keys = [key for request_keys, _, _ in batch for key in request_keys]
                args = [len(batch), *(len(request_keys) for request_keys, _, _ in batch)]
                for _, request_args, _ in batch:
                    args += request_args
                try:
                    answers = [int(wait) for wait in await self.script(keys=keys, args=args)]
                except RedisError as error:
                    now = time.monotonic()
                    if now - self._failure_logged_at >= _FAILURE_LOG_SECONDS:
                        self._failure_logged_at = now
                        log.error("rate limits skipped: Redis is not answering", extra={"error": type(error).__name__})
                    answers = [0] * len(batch)
                for (_, _, future), wait in zip(batch, answers, strict=True):
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
        for _, _, future in [*batch, *self._waiting]:
            if not future.done():
                future.set_exception(error)
        self._waiting.clear()

    async def close(self) -> None:
        await self.redis.aclose()
