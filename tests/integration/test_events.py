"""Outbox, relay and resumable watch (shared/outbox.py, shared/watch.py) on real PostgreSQL and Redis.

Redis is shared by the whole session, so every test works on channels of its own. The relay handles
every unpublished row of the test schema, so assertions are always about a test's own channels.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import random
import time
import uuid

import grpc
import pytest
from redis.asyncio import Redis
from sqlalchemy import text

from shared.clock import db_now
from shared.db import Migration, make_engine, migrate
from shared.errors import DomainError
from shared.live import LiveEvents
from shared.outbox import (
    Event,
    Relay,
    append,
    entry_id,
    outbox_migration_sql,
    outbox_watermark_upgrade_sql,
    prune,
    rebuild_stream,
    replay_loader,
    seq_of,
)
from shared.watch import Hub, make_token, parse_token
from tests.harness import settings_for

SCHEMA = "events_test"
WAIT = 10.0  # generous bound for anything that should take milliseconds


@pytest.fixture(scope="module")
async def engine(database_url):
    engine = make_engine(database_url, 30)
    await migrate(engine)
    async with engine.begin() as conn:
        await conn.exec_driver_sql(outbox_migration_sql(SCHEMA))
    yield engine
    await engine.dispose()


@pytest.fixture(scope="module")
async def redis(redis_url):
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def relay(engine, redis):
    relay = Relay(engine, redis, SCHEMA, batch_size=50)
    yield relay
    await relay.stop()


def channel(kind: str = "call") -> str:
    return f"{kind}:t-{uuid.uuid4().hex[:16]}"


def payload(ch: str, i: int) -> bytes:
    return f"{ch}#{i}".encode()


async def emit(engine, ch: str, first: int, count: int) -> list[tuple[str, int]]:
    """Commits events payload(ch, first) .. payload(ch, first + count - 1)."""
    async with engine.begin() as conn:
        return await append(conn, SCHEMA, [Event(ch, "TipSent", payload(ch, i)) for i in range(first, first + count)])


async def publish_all(relay: Relay) -> None:
    for _ in range(1000):
        if await relay.run_once() == 0:
            return
    raise AssertionError("relay did not drain")


async def stream(redis, ch: str) -> list[tuple[int, bytes, bytes]]:
    return [(seq_of(i), f[b"t"], f[b"p"]) for i, f in await redis.xrange(ch)]


async def outbox_rows(engine, ch: str):
    async with engine.connect() as conn:
        result = await conn.execute(
            text(f"SELECT seq, payload FROM {SCHEMA}.outbox WHERE channel = :c ORDER BY seq"), {"c": ch}
        )
        return result.all()


async def watermark(engine, ch: str) -> int:
    """The channel's published_seq: its rows up to there are in Redis."""
    async with engine.connect() as conn:
        result = await conn.execute(
            text(f"SELECT published_seq FROM {SCHEMA}.outbox_channels WHERE channel = :c"), {"c": ch}
        )
        return result.scalar_one()


async def eventually(predicate, what: str, within: float = WAIT) -> None:
    deadline = time.monotonic() + within
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def b64(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode()


async def take(sub, n: int) -> list:
    return [await asyncio.wait_for(anext(sub), WAIT) for _ in range(n)]


# --- outbox and relay ----------------------------------------------------------------------------


async def test_rollback_publishes_nothing_and_commit_publishes_in_order(engine, redis, relay):
    ch = channel()
    async with engine.connect() as conn:
        async with conn.begin() as tx:
            assert await append(conn, SCHEMA, [Event(ch, "TipSent", b"x")] * 3) == [(ch, 1), (ch, 2), (ch, 3)]
            await tx.rollback()
    await publish_all(relay)
    assert await redis.exists(ch) == 0
    assert await outbox_rows(engine, ch) == []

    # The rolled back numbers were not consumed: no gap.
    assert await emit(engine, ch, 1, 3) == [(ch, 1), (ch, 2), (ch, 3)]
    await publish_all(relay)
    entries = await redis.xrange(ch)
    assert [i for i, _ in entries] == [b"1-1", b"2-1", b"3-1"]
    assert await stream(redis, ch) == [(s, b"TipSent", payload(ch, s)) for s in (1, 2, 3)]
    assert await watermark(engine, ch) == 3


async def test_payloads_of_any_size_keep_their_bytes(engine, redis, relay):
    """append() sends each list as one string or one bytea that the statement splits again."""
    a, b = channel(), channel()
    sent = [Event(a, "TipSent", b""), Event(b, "GiftSent", bytes(range(256)) * 3), Event(a, "TipSent", b" \x00 ")]
    async with engine.begin() as conn:
        assert await append(conn, SCHEMA, sent) == [(a, 1), (b, 1), (a, 2)]
    await publish_all(relay)
    assert await stream(redis, a) == [(1, b"TipSent", b""), (2, b"TipSent", b" \x00 ")]
    assert await stream(redis, b) == [(1, b"GiftSent", bytes(range(256)) * 3)]
    with pytest.raises(ValueError):
        Event(f"{a} x", "TipSent", b"1")  # what the statement splits on can never be in a name
    with pytest.raises(ValueError):
        Event(a, "Tip Sent", b"1")


async def test_seqs_gapless_and_ordered_under_concurrency(engine, redis, relay):
    channels = [channel("creator") for _ in range(3)]
    rng = random.Random(7)
    plans = []
    for t in range(20):
        events = [Event(rng.choice(channels), "TipSent", f"{t}/{k}".encode()) for k in range(rng.randint(1, 6))]
        plans.append(events)
    start = asyncio.Barrier(len(plans))

    async def transaction(events):
        async with engine.begin() as conn:
            await start.wait()
            return await append(conn, SCHEMA, events)

    results = await asyncio.wait_for(asyncio.gather(*(transaction(p) for p in plans)), WAIT)
    by_channel: dict[str, list[int]] = {c: [] for c in channels}
    for events, assigned in zip(plans, results, strict=True):
        assert [c for c, _ in assigned] == [e.channel for e in events]
        for c in channels:
            mine = [s for ch, s in assigned if ch == c]
            # The channel row is held to commit: one transaction's seqs are consecutive, in event order.
            assert mine == list(range(mine[0], mine[0] + len(mine))) if mine else True
            by_channel[c] += mine
    for c in channels:
        assert sorted(by_channel[c]) == list(range(1, len(by_channel[c]) + 1))

    await publish_all(relay)
    for c in channels:
        expected = {}
        for events, assigned in zip(plans, results, strict=True):
            for event, (ch, seq) in zip(events, assigned, strict=True):
                if ch == c:
                    expected[seq] = event.payload
        assert await stream(redis, c) == [(s, b"TipSent", expected[s]) for s in sorted(expected)]


async def test_relay_killed_after_publish_before_mark_duplicates_nothing(engine, redis, relay):
    class KilledBeforeMark(Relay):
        async def _mark(self, conn, ids):
            raise RuntimeError("process killed")

    ch = channel()
    await emit(engine, ch, 1, 5)
    killed = KilledBeforeMark(engine, redis, SCHEMA)
    with pytest.raises(RuntimeError, match="killed"):
        await killed.run_once()
    assert len(await stream(redis, ch)) == 5
    assert await watermark(engine, ch) == 0

    await publish_all(relay)
    assert await stream(redis, ch) == [(s, b"TipSent", payload(ch, s)) for s in range(1, 6)]
    assert (relay.duplicates, relay.added) == (5, 0)
    assert await watermark(engine, ch) == 5


async def test_two_relays_claim_whole_channels(engine, redis, database_url):
    """A relay busy with a channel makes the other skip that channel (not just its locked rows), so a
    channel's entries can never reach Redis out of order."""
    other_engine = make_engine(database_url, 4)  # a second process
    entered, release = asyncio.Event(), asyncio.Event()

    class Held(Relay):
        async def _publish(self, rows, failed):
            self.held = sorted({r.channel for r in rows})
            entered.set()
            await release.wait()
            return await super()._publish(rows, failed)

    hot = channel()
    await emit(engine, hot, 1, 4)
    a = Held(engine, redis, SCHEMA, batch_size=2, max_channels=1)
    b = Relay(other_engine, redis, SCHEMA, batch_size=2)
    try:
        first = asyncio.create_task(a.run_once())
        await asyncio.wait_for(entered.wait(), WAIT)
        assert a.held == [hot]
        # b finds hot's rows 3 and 4 unlocked, yet must leave them: publishing 3 before a publishes
        # 1 and 2 would make Redis refuse 1 and 2 forever.
        others = channel()
        await emit(engine, others, 1, 3)
        await publish_all(b)
        assert await redis.exists(hot) == 0
        assert len(await stream(redis, others)) == 3
        release.set()
        assert await asyncio.wait_for(first, WAIT) == 2
        await publish_all(b)
        assert await stream(redis, hot) == [(s, b"TipSent", payload(hot, s)) for s in range(1, 5)]
        assert a.duplicates == b.duplicates == 0
    finally:
        release.set()
        await other_engine.dispose()


async def test_two_relays_running_concurrently_publish_each_row_once(engine, redis, database_url):
    other_engine = make_engine(database_url, 4)
    relays = [
        Relay(engine, redis, SCHEMA, batch_size=7, max_channels=2),
        Relay(other_engine, redis, SCHEMA, batch_size=7, max_channels=2),
    ]
    channels = [channel("stream") for _ in range(6)]
    counts = dict.fromkeys(channels, 0)
    for r in relays:
        r.start()
    try:

        async def writer(w: int):
            rng = random.Random(w)
            for _ in range(15):
                ch = rng.choice(channels)
                async with engine.begin() as conn:
                    n = rng.randint(1, 3)
                    await append(conn, SCHEMA, [Event(ch, "GiftSent", b"g") for _ in range(n)])
                counts[ch] += n
                relays[w % 2].notify()

        await asyncio.wait_for(asyncio.gather(*(writer(w) for w in range(8))), WAIT)
        total = sum(counts.values())

        async def drained():
            return sum(r.published for r in relays) == total

        await eventually(drained, "both relays to publish everything")
        for ch in channels:
            assert [s for s, _, _ in await stream(redis, ch)] == list(range(1, counts[ch] + 1))
        assert sum(r.added for r in relays) == total
        assert sum(r.duplicates for r in relays) == 0
    finally:
        for r in relays:
            await r.stop()
        await other_engine.dispose()


async def test_notify_wakes_the_relay_and_errors_do_not_stop_it(engine, redis, tmp_path):
    ch = channel()
    broken = Redis.from_url(f"unix://{tmp_path}/no-redis.sock")
    failing = Relay(engine, broken, SCHEMA, poll_interval=0.01, max_backoff=0.02)
    # Poll interval far above the test's bound: only notify() can make it publish in time.
    relay = Relay(engine, redis, SCHEMA, poll_interval=60.0)
    await emit(engine, ch, 1, 1)
    failing.start()
    try:

        async def failed_twice():
            return failing.errors >= 2

        await eventually(failed_twice, "the broken relay to fail and retry")
        assert failing._task is not None and not failing._task.done()
        # Stopped first: its failing rounds briefly claim channels, which the other relay would skip.
        await failing.stop()
        relay.start()
        await eventually(lambda: _exists(redis, ch), "the first round to publish")

        await emit(engine, ch, 2, 1)
        relay.notify()

        async def second_published():
            return len(await stream(redis, ch)) == 2

        await eventually(second_published, "notify to trigger a round", within=5.0)
    finally:
        await failing.stop()
        await relay.stop()
        await broken.aclose()


async def _exists(redis, ch):
    return await redis.exists(ch) == 1


async def test_rebuild_lost_stream_restores_identical_entries(engine, redis, relay):
    ch = channel()
    await emit(engine, ch, 1, 30)
    await publish_all(relay)
    before = await redis.xrange(ch)
    assert len(before) == 30

    await redis.delete(ch)
    assert await rebuild_stream(engine, redis, SCHEMA, ch) == 30
    assert await redis.xrange(ch) == before
    # Idempotent.
    await rebuild_stream(engine, redis, SCHEMA, ch)
    assert await redis.xrange(ch) == before

    # Lost again, and the relay publishes new events before the rebuild runs: the rebuild keeps them.
    await redis.delete(ch)
    await emit(engine, ch, 31, 2)
    await publish_all(relay)
    assert [s for s, _, _ in await stream(redis, ch)] == [31, 32]
    await rebuild_stream(engine, redis, SCHEMA, ch)
    assert await stream(redis, ch) == [(s, b"TipSent", payload(ch, s)) for s in range(1, 33)]

    # Only the newest maxlen rows: older ones would be trimmed by the relay anyway.
    await redis.delete(ch)
    await rebuild_stream(engine, redis, SCHEMA, ch, maxlen=5, page=2)
    assert [s for s, _, _ in await stream(redis, ch)] == list(range(28, 33))


async def test_prune_keeps_unpublished_rows_and_numbering(engine, redis, relay):
    ch = channel()
    await emit(engine, ch, 1, 10)
    await publish_all(relay)
    await emit(engine, ch, 11, 2)  # not published yet
    async with engine.begin() as conn:
        await conn.execute(
            text(f"UPDATE {SCHEMA}.outbox SET created_at = created_at - interval '2 days' WHERE channel = :c"),
            {"c": ch},
        )
    cutoff = await db_now(engine) - dt.timedelta(days=1)
    assert await prune(engine, SCHEMA, cutoff, chunk=3) >= 10
    assert [row.seq for row in await outbox_rows(engine, ch)] == [11, 12]
    assert await emit(engine, ch, 13, 1) == [(ch, 13)]
    await publish_all(relay)


async def test_a_relay_walks_channels_round_robin(engine, redis):
    """One channel per round: every channel with a backlog gets its turn, however long the others'."""
    chs = sorted(channel("stream") for _ in range(3))
    for ch in chs:
        await emit(engine, ch, 1, 6)
    relay = Relay(engine, redis, SCHEMA, batch_size=2, max_channels=1)
    turns = []
    for _ in range(100):
        if not await relay.run_once():
            break
        turns.append(relay._after)
    mine = [t for t in turns if t in chs]
    # Other tests' leftovers may take turns too; ours come in order, each thrice, two rows a turn.
    assert mine == chs * 3
    for ch in chs:
        assert [s for s, _, _ in await stream(redis, ch)] == list(range(1, 7))
        assert await watermark(engine, ch) == 6


async def test_live_events_prune_what_was_published_before_the_retention(engine, redis_url, database_url):
    settings = settings_for(database_url, redis_url, outbox_retention_hours=1, background_ms=0)
    live = LiveEvents(settings, engine, SCHEMA)
    try:
        ch = channel()
        await emit(engine, ch, 1, 3)
        await publish_all(live.relay)
        await emit(engine, ch, 4, 1)  # not published: kept whatever its age
        await emit(engine, channel(), 1, 1)
        async with engine.begin() as conn:
            await conn.execute(
                text(f"UPDATE {SCHEMA}.outbox SET created_at = created_at - interval '2 hours' WHERE channel = :c"),
                {"c": ch},
            )
        assert await live.prune_once() >= 3
        assert [row.seq for row in await outbox_rows(engine, ch)] == [4]
        kept = LiveEvents(settings_for(database_url, redis_url, outbox_retention_hours=0), engine, SCHEMA)
        assert await kept.prune_once() == 0
        await kept.close()
    finally:
        await live.close()


# The first layout (before watermarks): a published_at mark per row, as the services' first
# migrations pasted it.
_PER_ROW_MARKS_DDL = """
CREATE SCHEMA {s};
CREATE TABLE {s}.outbox_channels (channel text PRIMARY KEY, last_seq bigint NOT NULL CHECK (last_seq > 0));
CREATE TABLE {s}.outbox (
    id bigserial PRIMARY KEY,
    channel text NOT NULL,
    seq bigint NOT NULL CHECK (seq > 0),
    event_type text NOT NULL,
    payload bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz,
    UNIQUE (channel, seq)
);
CREATE INDEX outbox_unpublished_by_id ON {s}.outbox (id) WHERE published_at IS NULL;
CREATE INDEX outbox_unpublished_by_channel ON {s}.outbox (channel, seq) WHERE published_at IS NULL;
CREATE INDEX outbox_created_at ON {s}.outbox (created_at);
"""


async def test_upgrade_from_per_row_marks_keeps_what_was_published(engine, redis):
    schema = f"upgrade_{uuid.uuid4().hex[:8]}"
    done, half, fresh = channel(), channel(), channel()
    async with engine.begin() as conn:
        await conn.exec_driver_sql(_PER_ROW_MARKS_DDL.format(s=schema))
        for ch, n, published in ((done, 3, 3), (half, 4, 2), (fresh, 2, 0)):
            await conn.execute(text(f"INSERT INTO {schema}.outbox_channels VALUES (:c, :n)"), {"c": ch, "n": n})
            for seq in range(1, n + 1):
                await conn.execute(
                    text(
                        f"INSERT INTO {schema}.outbox (channel, seq, event_type, payload, published_at) "
                        "VALUES (:c, :s, 'TipSent', :p, CASE WHEN :s <= :published THEN now() END)"
                    ),
                    {"c": ch, "s": seq, "p": payload(ch, seq), "published": published},
                )
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql(outbox_watermark_upgrade_sql(schema))
            marks = dict(
                (await conn.execute(text(f"SELECT channel, published_seq FROM {schema}.outbox_channels"))).all()
            )
        assert marks == {done: 3, half: 2, fresh: 0}
        relay = Relay(engine, redis, schema)
        while await relay.run_once():
            pass
        assert (relay.added, relay.published) == (4, 4)
        assert await redis.exists(done) == 0
        assert [s for s, _, _ in await stream(redis, half)] == [3, 4]
        assert await stream(redis, fresh) == [(s, b"TipSent", payload(fresh, s)) for s in (1, 2)]
        # And the upgraded schema takes new events like a new one.
        async with engine.begin() as conn:
            assert await append(conn, schema, [Event(done, "TipSent", b"4")]) == [(done, 4)]
    finally:
        async with engine.begin() as conn:
            await conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")


# --- watch ---------------------------------------------------------------------------------------


def counting_loader(engine):
    load = replay_loader(engine, SCHEMA)
    calls = []

    async def loader(ch, after, limit):
        calls.append((ch, after, limit))
        return await load(ch, after, limit)

    loader.calls = calls
    return loader


@pytest.fixture
async def hub(engine, redis):
    loader = counting_loader(engine)
    hub = Hub(redis, replay_loader=loader, replay_page=4, read_count=8, queue_size=64)
    hub.loader_calls = loader.calls
    yield hub
    await hub.close()


async def test_two_subscribers_get_every_event_in_order_from_one_object(engine, hub, relay):
    ch = channel()
    first = await hub.subscribe(ch)
    second = await hub.subscribe(ch)
    await emit(engine, ch, 1, 10)
    await publish_all(relay)
    got1, got2 = await take(first, 10), await take(second, 10)
    assert [d.seq for d in got1] == list(range(1, 11))
    assert [d.payload for d in got1] == [payload(ch, i) for i in range(1, 11)]
    assert all(a is b for a, b in zip(got1, got2, strict=True))  # built once, shared
    assert parse_token(got1[-1].token, ch) == 10 and got1[0].event_type == "TipSent"
    first.close()
    second.close()
    assert hub.subscriber_count == 0 and hub.channel_count == 0


async def test_resume_after_disconnect_has_no_gap_and_no_duplicate(engine, hub, relay):
    ch = channel()
    sub = await hub.subscribe(ch)
    await emit(engine, ch, 1, 10)
    await publish_all(relay)
    seen = await take(sub, 4)
    sub.close()
    await emit(engine, ch, 11, 5)  # while disconnected
    await publish_all(relay)

    relay.start()  # events keep arriving while the resumed watch switches from replay to live

    async def keep_writing():
        for i in range(16, 41):
            await emit(engine, ch, i, 1)
            relay.notify()

    writer = asyncio.create_task(keep_writing())
    async with await hub.subscribe(ch, seen[-1].token) as resumed:
        got = await take(resumed, 36)
    await writer
    assert [d.seq for d in got] == list(range(5, 41))
    assert [d.payload for d in got] == [payload(ch, i) for i in range(5, 41)]
    # Redis held everything: the outbox was asked only where "now" is for the first, stream-less watch.
    assert hub.loader_calls == [(ch, 0, 0)]


async def test_caught_up_resume_reads_no_database(engine, hub, relay):
    ch = channel()
    await emit(engine, ch, 1, 3)
    await publish_all(relay)
    async with await hub.subscribe(ch, make_token(ch, 3)) as sub:
        await emit(engine, ch, 4, 1)
        await publish_all(relay)
        assert [d.seq for d in await take(sub, 1)] == [4]
    assert hub.loader_calls == []


async def test_resume_older_than_the_redis_stream_is_served_from_the_outbox(engine, redis, hub, relay):
    ch = channel()
    await emit(engine, ch, 1, 20)
    await publish_all(relay)
    await redis.xtrim(ch, maxlen=5, approximate=False)
    assert [s for s, _, _ in await stream(redis, ch)] == list(range(16, 21))
    async with await hub.subscribe(ch, make_token(ch, 3)) as sub:
        got = await take(sub, 17)
        assert [d.seq for d in got] == list(range(4, 21))
        assert [d.payload for d in got] == [payload(ch, i) for i in range(4, 21)]
        assert hub.loader_calls[0] == (ch, 3, 4)
        await emit(engine, ch, 21, 1)
        await publish_all(relay)
        assert [d.seq for d in await take(sub, 1)] == [21]

    # Lost stream: the outbox serves everything, and a live watch starts after the outbox's last seq.
    await redis.delete(ch)
    async with await hub.subscribe(ch) as live, await hub.subscribe(ch, make_token(ch, 19)) as resumed:
        assert [d.seq for d in await take(resumed, 2)] == [20, 21]
        await emit(engine, ch, 22, 1)
        await publish_all(relay)
        assert [d.seq for d in await take(live, 1)] == [22]
        assert [d.seq for d in await take(resumed, 1)] == [22]


async def test_live_gap_is_filled_from_the_outbox(engine, redis, hub, relay):
    ch = channel()
    async with await hub.subscribe(ch) as sub:
        await emit(engine, ch, 1, 3)
        await publish_all(relay)
        assert [d.seq for d in await take(sub, 3)] == [1, 2, 3]
        # 4 and 5 committed; only 5 reaches Redis (a hole, or entries trimmed before the reader got them).
        await emit(engine, ch, 4, 2)
        await redis.xadd(ch, {b"t": b"TipSent", b"p": payload(ch, 5)}, id=entry_id(5))
        got = await take(sub, 2)
        assert [(d.seq, d.payload) for d in got] == [(4, payload(ch, 4)), (5, payload(ch, 5))]
        await publish_all(relay)  # 4 can no longer enter Redis, 5 is there: both marked, nothing added
        assert [s for s, _, _ in await stream(redis, ch)] == [1, 2, 3, 5]
        assert (relay.added, relay.duplicates) == (3, 2)
        await rebuild_stream(engine, redis, SCHEMA, ch)  # the repair for a stream with a hole
        assert await stream(redis, ch) == [(s, b"TipSent", payload(ch, s)) for s in range(1, 6)]


async def test_malformed_tokens_are_refused(engine, hub, relay):
    ch = channel()
    await emit(engine, ch, 1, 2)
    await publish_all(relay)
    good = make_token(ch, 1)
    bad = [
        "",
        "not a token!",
        good + "=",  # padding variant of a valid token
        make_token(channel(), 1),  # another channel
        make_token(ch, 0),
        make_token(ch, 99),  # never issued
        b64(f"v1|{ch}|01"),  # non-canonical spelling of seq 1
        b64(f"v2|{ch}|1"),
        b64(f"v1|{ch}|-1"),
        b64(f"v1{ch}1"),
        "x" * 1000,
    ]
    for token in bad:
        with pytest.raises(DomainError) as refused:
            await hub.subscribe(ch, token)
        assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT, token
        assert refused.value.reason == "INVALID_RESUME_TOKEN", token
    assert hub.subscriber_count == 0
    async with await hub.subscribe(ch, good) as sub:
        assert [d.seq for d in await take(sub, 1)] == [2]


async def test_pruned_token_is_too_old_not_a_silent_restart(engine, redis, hub, relay):
    ch = channel()
    await emit(engine, ch, 1, 10)
    await publish_all(relay)
    await redis.xtrim(ch, maxlen=2, approximate=False)
    async with engine.begin() as conn:
        await conn.execute(
            text(f"UPDATE {SCHEMA}.outbox SET created_at = created_at - interval '2 days' WHERE channel = :c"),
            {"c": ch},
        )
    await prune(engine, SCHEMA, await db_now(engine) - dt.timedelta(days=1))
    with pytest.raises(DomainError) as refused:
        await hub.subscribe(ch, make_token(ch, 3))
    assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert refused.value.reason == "RESUME_TOKEN_TOO_OLD"
    # Redis still holds 9 and 10, so a token at 8 is served.
    async with await hub.subscribe(ch, make_token(ch, 8)) as sub:
        assert [d.seq for d in await take(sub, 2)] == [9, 10]
    # Everything gone from both places, yet the channel had events after the token.
    await redis.delete(ch)
    with pytest.raises(DomainError) as refused:
        await hub.subscribe(ch, make_token(ch, 8))
    assert refused.value.reason == "RESUME_TOKEN_TOO_OLD"
    assert hub.subscriber_count == 0


async def test_slow_subscriber_is_dropped_and_others_are_not(engine, redis, relay):
    hub = Hub(redis, queue_size=8, read_count=2)
    ch = channel()
    try:
        slow = await hub.subscribe(ch)
        fast = await hub.subscribe(ch)

        async def consume():
            got = []
            async for delivery in fast:
                got.append(delivery)
                if len(got) == 30:
                    return got

        reader = asyncio.create_task(consume())
        await emit(engine, ch, 1, 30)
        await publish_all(relay)
        got = await asyncio.wait_for(reader, WAIT)
        assert [d.seq for d in got] == list(range(1, 31))
        with pytest.raises(DomainError) as dropped:
            await asyncio.wait_for(anext(slow), WAIT)
        assert dropped.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert dropped.value.reason == "SUBSCRIBER_TOO_SLOW"
        with pytest.raises(StopAsyncIteration):
            await anext(slow)
        assert hub.subscriber_count == 1
    finally:
        await hub.close()


async def test_two_hubs_each_deliver_every_event(engine, redis, relay):
    hubs = [Hub(redis), Hub(redis)]
    ch = channel("node")
    try:
        subs = [await hubs[0].subscribe(ch), await hubs[0].subscribe(ch), await hubs[1].subscribe(ch)]
        await emit(engine, ch, 1, 12)
        await publish_all(relay)
        for sub in subs:
            assert [d.seq for d in await take(sub, 12)] == list(range(1, 13))
    finally:
        for hub in hubs:
            await hub.close()


async def test_new_channel_joins_a_blocked_read_at_once(engine, redis_url, relay):
    # A block far longer than the test's bound: only the wake-up can make the new channel live in time.
    redis = Redis.from_url(redis_url, socket_timeout=None)
    hub = Hub(redis, block_ms=60_000)
    try:
        first = await hub.subscribe(channel())
        await eventually(lambda: _reads(hub, 1), "the reader to block")
        ch = channel()
        sub = await hub.subscribe(ch)
        await emit(engine, ch, 1, 1)
        await publish_all(relay)
        assert [d.seq for d in await take(sub, 1)] == [1]
        first.close()
    finally:
        await hub.close()
        await redis.aclose()
    with pytest.raises(ValueError, match="socket_timeout"):
        Hub(Redis.from_url(redis_url), block_ms=60_000)  # redis-py 8 default: 5 s socket timeout


async def _reads(hub, n):
    return hub.reads >= n


async def test_subscriber_bound_and_shutdown(engine, redis):
    hub = Hub(redis, max_subscribers=2)
    ch = channel()
    a = await hub.subscribe(ch)
    b = await hub.subscribe(ch)
    with pytest.raises(DomainError) as refused:
        await hub.subscribe(channel())
    assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused.value.reason == "TOO_MANY_SUBSCRIBERS"
    a.close()
    c = await hub.subscribe(channel())
    waiting = asyncio.create_task(anext(b))
    await hub.close()
    with pytest.raises(DomainError) as closed:
        await asyncio.wait_for(waiting, WAIT)
    assert closed.value.code == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(DomainError):
        await anext(c)


def test_token_round_trip_and_entry_ids():
    ch = "creator:c-42"
    token = make_token(ch, 123)
    assert parse_token(token, ch) == 123
    assert "=" not in token and "/" not in token and "+" not in token
    assert entry_id(7) == "7-1" and seq_of(b"7-1") == 7
    with pytest.raises(ValueError):
        seq_of(b"7-0")
    with pytest.raises(ValueError):
        outbox_migration_sql("Bad-Schema")
    with pytest.raises(ValueError):
        Event("no channel", "TipSent", b"")


async def test_migration_sql_may_contain_percent(engine):
    await migrate(engine, [Migration("events_pct", 1, "0001_percent", "SELECT 'a%b' LIKE 'a%', mod(7, 2), 7 % 2;")])
