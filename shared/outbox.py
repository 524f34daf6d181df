"""Transactional outbox and its relay to Redis Streams (DESIGN.md "Live events").

A service writes each event with `append()` inside the same database transaction as the state
change it reports, so an event exists if and only if its change committed. A `Relay` task then
publishes committed rows to the Redis Stream named after the event's channel (`call:<id>`,
`creator:<id>`, `node:<id>`, `stream:<id>`) and marks them published.

Per-schema tables (each service owns its own; `outbox_migration_sql(schema)` is the DDL it pastes
into a migration, `python -m shared.outbox <schema>` prints it):

- `<schema>.outbox_channels(channel, last_seq, published_seq)`: a gapless sequence per channel and
  how far the relays have published it. `append()` takes the next numbers with one set-based upsert
  that locks the channel rows in sorted order (no deadlock between appenders, one statement whatever
  the number of events or channels). The row stays locked until the caller commits, so per channel
  seq order == commit order and a rolled back transaction leaves no gap. Append late in the
  transaction: a hot channel's row serializes its writers, which is why hot writers should batch
  (group commit) as Wallet does. A channel is written by exactly one schema: two outboxes feeding one
  Redis key would collide on entry ids.
- `<schema>.outbox`: the events, keyed by (channel, seq), written once and never updated. The
  payload is `bytea`, the serialized protobuf message: it is published and replayed byte for byte
  (serialized once, by its owner), keeps protobuf's schema evolution, and nothing reads it in SQL,
  so jsonb's cost and lossy int64 handling buy nothing.

What is published is a watermark per channel, not a mark per row. A channel's rows reach Redis in
seq order (below), so "published" is always a prefix of the channel: rows with seq ≤ published_seq.
A relay advances the watermark with one row update per channel per round; an event costs one insert
(its row and its primary key entry) and nothing after. (It used to be marked row by row: an update
of every row, which also moved it out of two partial indexes, ten index and heap writes per event.)
The channels with something to publish are found through a partial index on outbox_channels
(`published_seq < last_seq`), which holds only those.

Retention. Rows are kept after publishing: they serve resume tokens older than what the capped Redis
stream still holds and rebuild lost streams. `prune()` deletes published rows older than a cutoff in
bounded chunks (a BRIN index on created_at finds them at almost no cost per insert; `shared.live`
runs it for the configured retention); a resume token pointing before the pruned range then gets
RESUME_TOKEN_TOO_OLD.
`outbox_channels` rows are never deleted: a channel's numbering must never restart.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
import re
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from redis.asyncio import Redis
from redis.exceptions import ResponseError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.clock import NOW_SQL
from shared.db import RawConn, joined

log = logging.getLogger(__name__)

SCHEMA_PATTERN = re.compile(r"^[a-z_][a-z0-9_]*$")
# `<kind>:<id>`; the channel is also the Redis key and part of public resume tokens.
CHANNEL_PATTERN = re.compile(r"^[a-z][a-z_]*:[A-Za-z0-9._:-]{1,160}$")
EVENT_TYPE_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_.]{0,127}$")
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_EVENTS_PER_APPEND = 10_000
DEFAULT_MAXLEN = 10_000

# Stream entry fields: kept to one byte each, since every entry carries them.
FIELD_TYPE = b"t"
FIELD_PAYLOAD = b"p"

# Two-key advisory locks live in their own key space, so they cannot collide with the one-key
# locks used elsewhere (migrations); this constant is the first key of every relay channel claim.
_RELAY_LOCK_CLASS = 0x0B7E_5001
_ALREADY_PUBLISHED = "equal or smaller than the target stream top item"


def entry_id(seq: int) -> str:
    return f"{seq}-1"


def seq_of(raw_id: bytes | str) -> int:
    """The seq of a stream entry id `<seq>-1`; ValueError for ids this module did not write."""
    value = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
    head, sep, tail = value.partition("-")
    if sep != "-" or tail != "1" or not head.isdigit():
        raise ValueError(f"not an outbox entry id: {value!r}")
    return int(head)


def check_schema(schema: str) -> str:
    if not isinstance(schema, str) or len(schema) > 40 or not SCHEMA_PATTERN.fullmatch(schema):
        raise ValueError(f"invalid schema name: {schema!r}")
    return schema


def check_channel(channel: str) -> str:
    if not isinstance(channel, str) or not CHANNEL_PATTERN.fullmatch(channel):
        raise ValueError(f"invalid channel: {channel!r}")
    return channel


@dataclass(frozen=True, slots=True)
class Event:
    channel: str
    event_type: str
    payload: bytes

    def __post_init__(self) -> None:
        check_channel(self.channel)
        if not isinstance(self.event_type, str) or not EVENT_TYPE_PATTERN.fullmatch(self.event_type):
            raise ValueError(f"invalid event type: {self.event_type!r}")
        if not isinstance(self.payload, bytes) or len(self.payload) > MAX_PAYLOAD_BYTES:
            raise ValueError(f"payload must be bytes of at most {MAX_PAYLOAD_BYTES}")


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One outbox row as replay reads it."""

    channel: str
    seq: int
    event_type: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class ChannelPage:
    """Rows of one channel after some seq, and the channel's highest committed seq (0: none yet),
    read in one snapshot, so `last_seq` above the rows' range means rows were pruned."""

    events: list[StoredEvent]
    last_seq: int


ReplayLoader = Callable[[str, int, int], Awaitable[ChannelPage]]


def outbox_migration_sql(schema: str) -> str:
    s = f'"{check_schema(schema)}"'
    return f"""
CREATE SCHEMA IF NOT EXISTS {s};

-- The per-channel sequence and the relays' watermark. Never delete a row: numbering must not
-- restart after a prune.
CREATE TABLE IF NOT EXISTS {s}.outbox_channels (
    channel text PRIMARY KEY,
    last_seq bigint NOT NULL CHECK (last_seq > 0),
    published_seq bigint NOT NULL DEFAULT 0,
    CONSTRAINT outbox_channels_published_seq_check CHECK (published_seq >= 0 AND published_seq <= last_seq)
);
-- The channels a relay has work in, and only those.
CREATE INDEX IF NOT EXISTS outbox_channels_unpublished ON {s}.outbox_channels (channel)
    WHERE published_seq < last_seq;

-- payload: the serialized protobuf event, published and replayed byte for byte. Written once.
CREATE TABLE IF NOT EXISTS {s}.outbox (
    channel text NOT NULL,
    seq bigint NOT NULL CHECK (seq > 0),
    event_type text NOT NULL,
    payload bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT {NOW_SQL},
    PRIMARY KEY (channel, seq)
);
-- prune(): rows older than a cutoff; rows are appended in time order, so BRIN suffices.
CREATE INDEX IF NOT EXISTS outbox_created_at ON {s}.outbox USING brin (created_at);
"""


def outbox_watermark_upgrade_sql(schema: str) -> str:
    """From the first layout (a `published_at` mark per row) to per-channel watermarks: what a
    schema created by an older outbox_migration_sql pastes into a migration. Rows already published
    stay published; a channel's watermark stops before its first unpublished row."""
    s = f'"{check_schema(schema)}"'
    return f"""
ALTER TABLE {s}.outbox_channels ADD COLUMN published_seq bigint NOT NULL DEFAULT 0;
UPDATE {s}.outbox_channels c SET published_seq = COALESCE(
    (SELECT min(o.seq) - 1 FROM {s}.outbox o WHERE o.channel = c.channel AND o.published_at IS NULL),
    c.last_seq);
ALTER TABLE {s}.outbox_channels ADD CONSTRAINT outbox_channels_published_seq_check
    CHECK (published_seq >= 0 AND published_seq <= last_seq);
CREATE INDEX outbox_channels_unpublished ON {s}.outbox_channels (channel) WHERE published_seq < last_seq;

DROP INDEX {s}.outbox_unpublished_by_id;
DROP INDEX {s}.outbox_unpublished_by_channel;
DROP INDEX {s}.outbox_created_at;
ALTER TABLE {s}.outbox DROP COLUMN published_at, DROP COLUMN id,
    DROP CONSTRAINT outbox_channel_seq_key, ADD PRIMARY KEY (channel, seq);
CREATE INDEX outbox_created_at ON {s}.outbox USING brin (created_at);
"""


@dataclass(frozen=True)
class _Sql:
    append: object
    append_raw: str  # the same statement as text, for a raw_transaction
    claim: object
    fetch: object
    mark: object
    channel_page: object
    prune: object


@lru_cache(maxsize=64)
def _sql(schema: str) -> _Sql:
    s = f'"{check_schema(schema)}"'
    append = f"""
            WITH input AS (
                SELECT t.channel, t.event_type, substring(CAST(:payloads AS bytea) FROM t.start FOR t.size) AS payload,
                       t.ord
                FROM unnest(string_to_array(:channels, ' '), string_to_array(:types, ' '),
                            CAST(string_to_array(:starts, ' ') AS integer[]),
                            CAST(string_to_array(:sizes, ' ') AS integer[]))
                    WITH ORDINALITY AS t(channel, event_type, start, size, ord)
            ), bumped AS (
                INSERT INTO {s}.outbox_channels AS c (channel, last_seq)
                SELECT channel, count(*) FROM input GROUP BY channel ORDER BY channel
                ON CONFLICT (channel) DO UPDATE SET last_seq = c.last_seq + excluded.last_seq
                RETURNING c.channel, c.last_seq
            ), numbered AS (
                SELECT i.ord, i.channel, i.event_type, i.payload,
                       b.last_seq - count(*) OVER w + row_number() OVER (w ORDER BY i.ord) AS seq
                FROM input i JOIN bumped b USING (channel)
                WINDOW w AS (PARTITION BY i.channel)
            ), inserted AS (
                INSERT INTO {s}.outbox (channel, seq, event_type, payload)
                SELECT channel, seq, event_type, payload FROM numbered ORDER BY channel, seq
            )
            SELECT channel, seq FROM numbered ORDER BY ord
            """
    return _Sql(
        append=text(append),
        append_raw=append,
        # Channels with a backlog, round-robin from the one after :after; the CTE is materialized,
        # so the LIMIT stops trying locks once enough channels are claimed; a channel another relay
        # holds is skipped, not waited for.
        claim=text(
            f"""
            WITH candidates AS MATERIALIZED (
                (SELECT channel FROM {s}.outbox_channels WHERE published_seq < last_seq AND channel > :after
                 ORDER BY channel LIMIT :scan)
                UNION ALL
                (SELECT channel FROM {s}.outbox_channels WHERE published_seq < last_seq AND channel <= :after
                 ORDER BY channel LIMIT :scan)
            )
            SELECT channel FROM candidates
            WHERE pg_try_advisory_xact_lock(CAST(:lock_class AS integer), hashtext(:schema || '|' || channel))
            LIMIT :claim
            """
        ),
        # The rows above each claimed channel's watermark, read after the claim; ordered by seq
        # across channels, so each channel's share of the batch is a prefix of its backlog whatever
        # the limit cuts off.
        fetch=text(
            f"""
            SELECT o.channel, o.seq, o.event_type, o.payload
            FROM {s}.outbox_channels c
            CROSS JOIN LATERAL (
                SELECT channel, seq, event_type, payload FROM {s}.outbox
                WHERE channel = c.channel AND seq > c.published_seq
                ORDER BY seq LIMIT :limit
            ) o
            WHERE c.channel = ANY(CAST(:channels AS text[]))
            ORDER BY o.seq, o.channel LIMIT :limit
            """
        ),
        # Watermarks only move forward; channel rows are locked in sorted order, as append() locks them.
        mark=text(
            f"""
            WITH marks AS (
                SELECT * FROM unnest(CAST(:channels AS text[]), CAST(:seqs AS bigint[])) AS m(channel, seq)
            ), locked AS (
                SELECT c.channel FROM {s}.outbox_channels c JOIN marks m USING (channel)
                ORDER BY c.channel FOR UPDATE OF c
            )
            UPDATE {s}.outbox_channels c SET published_seq = m.seq
            FROM marks m JOIN locked l USING (channel)
            WHERE c.channel = m.channel AND c.published_seq < m.seq
            """
        ),
        channel_page=text(
            f"""
            SELECT c.last_seq, o.seq, o.event_type, o.payload
            FROM {s}.outbox_channels c
            LEFT JOIN LATERAL (
                SELECT seq, event_type, payload FROM {s}.outbox
                WHERE channel = c.channel AND seq > :after ORDER BY seq LIMIT :limit
            ) o ON true
            WHERE c.channel = :channel
            ORDER BY o.seq
            """
        ),
        prune=text(
            f"""
            WITH doomed AS (
                SELECT o.channel, o.seq FROM {s}.outbox o JOIN {s}.outbox_channels c USING (channel)
                WHERE o.created_at < :cutoff AND o.seq <= c.published_seq
                LIMIT :chunk
            )
            DELETE FROM {s}.outbox o USING doomed d WHERE o.channel = d.channel AND o.seq = d.seq
            """
        ),
    )


async def append(conn: AsyncConnection | RawConn, schema: str, events: Sequence[Event]) -> list[tuple[str, int]]:
    """Writes `events` in the caller's open transaction (SQLAlchemy's, or a `raw_transaction`);
    answers (channel, seq) per event, in order.

    One statement whatever the count. Call it once per transaction (or always in the same channel
    order): a second call locks more channel rows after the first call's, which two transactions
    could do in opposite orders.
    """
    if not events:
        return []
    if len(events) > MAX_EVENTS_PER_APPEND:
        raise ValueError(f"at most {MAX_EVENTS_PER_APPEND} events per append")
    # Lists travel as one string (or one bytea) each, split by the statement: psycopg dumps a list
    # element by element in Python, which was most of a metering tick's outbox cost. An Event's
    # channel and type never hold a space (CHANNEL_PATTERN, EVENT_TYPE_PATTERN).
    channels = " ".join(e.channel for e in events)
    types = " ".join(e.event_type for e in events)
    sizes = [len(e.payload) for e in events]
    starts = list(itertools.accumulate(sizes[:-1], initial=1))
    params = {
        "channels": channels,
        "types": types,
        "payloads": b"".join(e.payload for e in events),
        "starts": joined(starts),
        "sizes": joined(sizes),
    }
    if isinstance(conn, RawConn):
        rows = await conn.fetch(_sql(schema).append_raw, params)
    else:
        rows = (await conn.execute(_sql(schema).append, params)).all()
    return [(row.channel, row.seq) for row in rows]


async def read_channel(engine: AsyncEngine, schema: str, channel: str, after_seq: int, limit: int) -> ChannelPage:
    """Up to `limit` rows of `channel` with seq > after_seq, in seq order (limit 0: just last_seq)."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(_sql(schema).channel_page, {"channel": channel, "after": after_seq, "limit": limit})
        ).all()
    if not rows:
        return ChannelPage([], 0)
    events = [StoredEvent(channel, r.seq, r.event_type, bytes(r.payload)) for r in rows if r.seq is not None]
    return ChannelPage(events, rows[0].last_seq)


def replay_loader(engine: AsyncEngine, schema: str) -> ReplayLoader:
    """The loader a `shared.watch.Hub` uses to serve what Redis no longer holds."""
    check_schema(schema)

    async def load(channel: str, after_seq: int, limit: int) -> ChannelPage:
        return await read_channel(engine, schema, channel, after_seq, limit)

    return load


@dataclass(frozen=True, slots=True)
class _Row:
    channel: str
    seq: int
    event_type: str
    payload: bytes


class RelayError(Exception):
    """Some rows of a batch could not be published; they stay unpublished for the next round."""


class Relay:
    """Publishes one schema's committed outbox rows to Redis; one per process, any number of
    processes. `start()` runs it as a task; `notify()` after a commit wakes it at once, otherwise it
    polls every `poll_interval` seconds. Errors are logged and retried with a bounded backoff."""

    def __init__(
        self,
        engine: AsyncEngine,
        redis: Redis,
        schema: str,
        *,
        batch_size: int = 500,
        max_channels: int = 100,
        scan_channels: int = 1_000,
        poll_interval: float = 0.05,
        maxlen: int = DEFAULT_MAXLEN,
        publish_timeout: float = 5.0,
        max_backoff: float = 2.0,
    ):
        assert batch_size > 0 and max_channels > 0 and poll_interval > 0 and maxlen > 0
        self.engine = engine
        self.redis = redis
        self.schema = check_schema(schema)
        self.batch_size = batch_size
        self.max_channels = max_channels
        # Channels to claim are looked for among scan_channels channels with a backlog: more than it
        # claims, so channels held by another relay do not hide the rest of the backlog from this one.
        self.scan_channels = max(scan_channels, max_channels)
        self.poll_interval = poll_interval
        self.maxlen = maxlen
        self.publish_timeout = publish_timeout
        self.max_backoff = max_backoff
        # Counters for tests and metrics: failed rounds, entries Redis accepted from this relay,
        # entries Redis already held (a predecessor published them but did not mark), rows marked.
        # _after: the last channel this relay claimed (the round-robin's position).
        self.errors = 0
        self.added = 0
        self.duplicates = 0
        self.published = 0
        self._sql = _sql(self.schema)
        self._after = ""
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"outbox-relay:{self.schema}")

    def notify(self) -> None:
        """Call after committing events, for low latency; safe from any coroutine, cheap."""
        self._wake.set()

    async def stop(self, grace: float = 10.0) -> None:
        """Lets the current round finish (it is bounded by publish_timeout), then ends the task."""
        self._stopping.set()
        self._wake.set()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), grace)
        except TimeoutError:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            # Cleared before reading, so a notify() during the round triggers the next one.
            self._wake.clear()
            try:
                handled = await self.run_once()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception:
                failures += 1
                self.errors += 1
                log.exception("outbox relay round failed", extra={"schema": self.schema, "failures": failures})
                delay = min(self.poll_interval * 2**failures, self.max_backoff)
                await _wait(self._stopping, delay)
                continue
            if handled >= self.batch_size:
                continue  # a full batch: there is probably more
            await _wait(self._wake, self.poll_interval)

    async def run_once(self) -> int:
        """One round: claim channels, publish up to batch_size rows, advance the channels'
        watermarks. Answers rows handled."""
        failed: dict[str, Exception] = {}
        async with self.engine.begin() as conn:
            claimed = (
                await conn.execute(
                    self._sql.claim,
                    {
                        "after": self._after,
                        "scan": self.scan_channels,
                        "claim": self.max_channels,
                        "lock_class": _RELAY_LOCK_CLASS,
                        "schema": self.schema,
                    },
                )
            ).scalars()
            channels = list(claimed)
            if not channels:
                self._after = ""
                return 0
            # Past the last channel claimed: the next round starts after it (round-robin). Candidates
            # come in channel order, wrapping around once, so the last one claimed is where to go on.
            self._after = channels[-1]
            result = await conn.execute(self._sql.fetch, {"channels": channels, "limit": self.batch_size})
            rows = [_Row(r.channel, r.seq, r.event_type, bytes(r.payload)) for r in result]
            if not rows:
                return 0
            done = await asyncio.wait_for(self._publish(rows, failed), self.publish_timeout)
            if done:
                await self._mark(conn, done)
        self.published += len(done)
        if failed:
            raise RelayError(f"could not publish to {sorted(failed)}: {list(failed.values())[0]}")
        return len(rows)

    async def _publish(self, rows: list[_Row], failed: dict[str, Exception]) -> list[_Row]:
        """XADDs rows in one pipeline; answers the rows now in Redis (added, or found already there):
        per channel a prefix of its rows, in seq order."""
        rows = sorted(rows, key=lambda r: (r.channel, r.seq))
        pipe = self.redis.pipeline(transaction=False)
        for row in rows:
            pipe.xadd(
                row.channel,
                {FIELD_TYPE: row.event_type, FIELD_PAYLOAD: row.payload},
                id=entry_id(row.seq),
                maxlen=self.maxlen,
                approximate=True,
            )
        results = await pipe.execute(raise_on_error=False)
        done: list[_Row] = []
        for row, result in zip(rows, results, strict=True):
            if row.channel in failed:
                continue
            if isinstance(result, Exception) and not _already_published(result):
                # The channel's watermark stays below this row; if a later row did land (Redis
                # refused this one but took a later one), the stream has a hole that rebuild_stream
                # repairs.
                failed[row.channel] = result
                log.error(
                    "outbox publish refused",
                    extra={"schema": self.schema, "channel": row.channel, "seq": row.seq, "error": str(result)},
                )
                continue
            if isinstance(result, Exception):
                self.duplicates += 1
            else:
                self.added += 1
            done.append(row)
        return done

    async def _mark(self, conn: AsyncConnection, done: list[_Row]) -> None:
        """Advances each channel's watermark to the highest seq published (rows come per channel as
        a prefix in seq order, so the highest is the last)."""
        top: dict[str, int] = {}
        for row in done:
            top[row.channel] = row.seq
        channels = sorted(top)
        await conn.execute(self._sql.mark, {"channels": channels, "seqs": [top[c] for c in channels]})


def _already_published(error: Exception) -> bool:
    # redis-py 8 keeps the server's message in str(error) but not in repr(error).
    return isinstance(error, ResponseError) and _ALREADY_PUBLISHED in str(error)


async def _wait(event: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except TimeoutError:
        pass


# Atomically appends to the rebuilt copy what the live stream gained meanwhile (entries above the
# copy's top, e.g. published by a relay since the loss), then puts the copy in place.
_MERGE_LUA = """
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
local top = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1][1]
local newer = redis.call('XRANGE', KEYS[1], '(' .. top, '+')
for _, entry in ipairs(newer) do
  redis.call('XADD', KEYS[2], entry[1], unpack(entry[2]))
end
redis.call('PERSIST', KEYS[2])
redis.call('RENAME', KEYS[2], KEYS[1])
return #newer
"""


async def rebuild_stream(
    engine: AsyncEngine,
    redis: Redis,
    schema: str,
    channel: str,
    *,
    maxlen: int = DEFAULT_MAXLEN,
    page: int = 1000,
) -> int:
    """Restores `channel`'s Redis stream from the outbox (its newest `maxlen` rows, published or
    not) with the original entry ids; answers the number of rows written. Idempotent, and safe
    while relays keep publishing: the copy is built aside and swapped in atomically together with
    anything the live stream gained meanwhile. Entries only Redis still held (rows already pruned
    from the outbox) are not kept."""
    check_channel(channel)
    head = await read_channel(engine, schema, channel, 0, 0)
    after = max(0, head.last_seq - maxlen)
    copy = f"{channel}:rebuild:{uuid.uuid4().hex}"
    written = 0
    try:
        while True:
            batch = await read_channel(engine, schema, channel, after, page)
            if not batch.events:
                break
            pipe = redis.pipeline(transaction=False)
            for event in batch.events:
                pipe.xadd(copy, {FIELD_TYPE: event.event_type, FIELD_PAYLOAD: event.payload}, id=entry_id(event.seq))
            # A crashed rebuild must not leave its copy behind forever.
            pipe.pexpire(copy, 600_000)
            await pipe.execute()
            written += len(batch.events)
            after = batch.events[-1].seq
            if len(batch.events) < page:
                break
        if written and await redis.eval(_MERGE_LUA, 2, channel, copy) == -1:
            raise RuntimeError(f"rebuild copy of {channel} expired before it was swapped in")
    finally:
        if not written:
            await redis.delete(copy)
    log.info("stream rebuilt", extra={"schema": schema, "channel": channel, "entries": written})
    return written


async def prune(engine: AsyncEngine, schema: str, older_than: dt.datetime, *, chunk: int = 1000) -> int:
    """Deletes published rows created before `older_than`, one short transaction per chunk; answers
    the number deleted. Unpublished rows are never deleted."""
    assert older_than.tzinfo is not None, "cutoff must be timezone-aware"
    statement = _sql(schema).prune
    total = 0
    while True:
        async with engine.begin() as conn:
            deleted = (await conn.execute(statement, {"chunk": chunk, "cutoff": older_than})).rowcount
        total += deleted
        if deleted < chunk:
            return total


if __name__ == "__main__":
    # python -m shared.outbox <schema> [--upgrade]: the DDL to paste into a migration.
    upgrade = "--upgrade" in sys.argv[2:]
    print((outbox_watermark_upgrade_sql if upgrade else outbox_migration_sql)(sys.argv[1]))
