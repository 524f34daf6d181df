"""The edge's rate limiter against real Redis: requests that arrive together share script calls
(one round trip admits many) and are still judged one by one, in arrival order, exactly."""

from __future__ import annotations

import asyncio
import uuid

from redis.asyncio import Redis

from services.edge.ratelimit import RateLimiter
from shared.buckets import Buckets
from tests.harness import settings_for


def limiter_for(redis_url: str, **limits) -> tuple[RateLimiter, list[int]]:
    settings = settings_for("postgresql://unused/", redis_url, **limits)
    limiter = RateLimiter(Redis.from_url(redis_url), settings, prefix=f"fanbank:test:{uuid.uuid4().hex}")
    calls: list[int] = []
    script = limiter.buckets.script

    async def counted(keys, args):
        calls.append(args[1])  # the number of requests judged by this call
        return await script(keys=keys, args=args)

    limiter.buckets.script = counted
    return limiter, calls


async def test_requests_arriving_together_share_calls_and_are_judged_exactly(redis_url):
    limiter, calls = limiter_for(
        redis_url, edge_ip_rate_per_second=1, edge_ip_burst=30, edge_user_rate_per_second=1, edge_user_burst=5
    )
    try:
        # Twelve requests of one user and eight of another from one IP, all at once.
        requests = [("10.0.0.1", "ann")] * 12 + [("10.0.0.1", "bob")] * 8
        waits = await asyncio.gather(*(limiter.admit(ip, user) for ip, user in requests))
        assert [w == 0 for w in waits[:12]] == [True] * 5 + [False] * 7  # ann: her burst, in arrival order
        assert [w == 0 for w in waits[12:]] == [True] * 5 + [False] * 3
        assert all(0 < w <= 1000 for w in waits if w)
        assert sum(calls) == 20 and len(calls) < 20, f"script calls: {calls}"
        # A refused request took nothing: the IP bucket gave exactly the ten admitted.
        waits = await asyncio.gather(*(limiter.admit("10.0.0.1", None) for _ in range(25)))
        assert sum(1 for w in waits if w == 0) == 20
    finally:
        await limiter.close()


async def test_redis_down_lets_requests_through(redis_url):
    limiter, _ = limiter_for(redis_url, edge_user_rate_per_second=1, edge_user_burst=1)
    await limiter.redis.aclose()
    limiter.redis = Redis.from_url("redis://127.0.0.1:1/0")  # nothing listens there
    limiter.buckets = Buckets(limiter.redis)
    try:
        assert await asyncio.gather(*(limiter.admit("10.0.0.2", "cid") for _ in range(3))) == [0, 0, 0]
    finally:
        await limiter.close()
