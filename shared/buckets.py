"""Token buckets in Redis: the edge's per-IP and per-user request limits and Gifts' per-sender limit.

One Lua script judges a list of requests, one after the other, each against its own buckets (one
or more keys): a request is admitted only if every one of its buckets holds a whole request, and
then each gives one; a refused request takes nothing. Buckets count thousandths of a request so
integer refills stay exact. The time is either passed in (Gifts passes business time, so tests move
it with the clock) or, when 0, Redis's own clock (the edge: replicas on hosts whose clocks differ
still share one notion of "a second"). A bucket's clock never moves backwards.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

# ARGV[1]: now in ms (0: Redis's clock); ARGV[2]: the number of requests R; ARGV[3 .. R+2]: how many
# buckets each request has; then per bucket, in KEYS order: rate per second, burst, key lifetime in
# ms. KEYS: the buckets of every request, request after request. Answers per request, in order: 0
# when admitted, else the milliseconds until its emptiest bucket would hold a whole request.
_LUA = """
local now = tonumber(ARGV[1])
if now == 0 then
  local clock = redis.call('TIME')
  now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
end
local requests = tonumber(ARGV[2])
local answers = {}
local key = 0
local arg = requests + 3
for r = 1, requests do
  local count = tonumber(ARGV[r + 2])
  local wait = 0
  local levels = {}
  local times = {}
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
      at = now
    end
    levels[j] = milli
    times[j] = at
    if milli < 1000 then
      wait = math.max(wait, math.ceil((1000 - milli) / rate))
    end
  end
  if wait == 0 then
    for j = 1, count do
      redis.call('HSET', KEYS[key + j], 'm', levels[j] - 1000, 't', times[j])
      redis.call('PEXPIRE', KEYS[key + j], tonumber(ARGV[arg + 3 * (j - 1) + 2]))
    end
  end
  answers[r] = wait
  key = key + count
  arg = arg + 3 * count
end
return answers
"""


@dataclass(frozen=True, slots=True)
class Bucket:
    """Refills at `rate_per_second` requests a second up to `burst`; forgotten after `ttl_ms`
    untouched (by then it would be full again, so forgetting it loses nothing)."""

    rate_per_second: int
    burst: int
    ttl_ms: int

    @classmethod
    def of(cls, rate_per_second: int, burst: int, min_ttl_ms: int = 1000) -> Bucket:
        assert rate_per_second > 0 and burst >= rate_per_second
        return cls(rate_per_second, burst, max(min_ttl_ms, math.ceil(burst * 1000 / rate_per_second) * 2))


class Buckets:
    def __init__(self, redis: Redis):
        self.script = redis.register_script(_LUA)

    async def take(self, requests: Sequence[Sequence[tuple[str, Bucket]]], now_ms: int = 0) -> list[int]:
        """Judges `requests` (each: its buckets as (key, Bucket)) in one call; answers per request 0
        if admitted, else the milliseconds until it would be. `now_ms` 0 uses Redis's clock."""
        if not requests:
            return []
        keys: list[str] = []
        args: list[int] = [now_ms, len(requests), *(len(buckets) for buckets in requests)]
        for buckets in requests:
            for key, bucket in buckets:
                keys.append(key)
                args += [bucket.rate_per_second, bucket.burst, bucket.ttl_ms]
        return [int(wait) for wait in await self.script(keys=keys, args=args)]
