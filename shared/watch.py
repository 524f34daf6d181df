"""Resumable watch for server-streaming RPCs (`WatchCall`, `WatchStream`, `WatchCreatorAlerts`),
fed by the Redis Streams that `shared.outbox.Relay` writes.

Resume tokens are public (they become SSE ids): urlsafe base64 of `v1|<channel>|<seq>`, where seq is
the outbox's per-channel sequence, i.e. the stream entry `<seq>-1`. They therefore mean the same
thing after Redis loses or trims a stream. `parse_token` accepts only the canonical encoding of a
token for the channel being watched; anything else is INVALID_RESUME_TOKEN.

One `Hub` per process. A single reader task issues `XREAD BLOCK <block_ms> COUNT <read_count>
STREAMS <every channel with a local subscriber> <last id read per channel>`, builds each entry's
`Delivery` once and puts that same object into every local subscriber's bounded queue. A subscriber
whose queue is full is dropped (its iterator raises RESOURCE_EXHAUSTED SUBSCRIBER_TOO_SLOW; it can
resume from its last token) and nobody else waits for it. A new channel must join the blocked XREAD
at once: the Hub adds an entry to its private wake stream, which the XREAD also watches, so the call
returns and is re-issued with the new set (no lost wake-up even when the wake is written before the
XREAD reaches Redis). Channels that lose their last subscriber simply leave the next XREAD.

Subscribing: live channels start from Redis' current top (or, if the stream is missing, the outbox's
last seq), never from `$`, so re-issuing the XREAD cannot skip entries. With a token, the subscriber
is registered for live entries first and then replays what follows the token: from Redis (`XRANGE`)
while Redis holds it contiguously, otherwise from the outbox through `replay_loader`. Replay reads
after registration, so replay and live overlap rather than leave a gap; the subscriber delivers only
seq > last delivered, so the overlap yields no duplicate. A token whose successor is neither in Redis
nor in the outbox (pruned) is FAILED_PRECONDITION RESUME_TOKEN_TOO_OLD, never a silent restart from
now; a token beyond the channel's last seq is INVALID_RESUME_TOKEN. A caught-up reconnect (the usual
case) costs two Redis reads and no database query. Should a live subscriber see a seq jump (the reader
fell behind the stream's MAXLEN trimming, or the stream has a hole), it fills the gap the same way.

`Delivery.payload` is the event's serialized protobuf as the owning service wrote it: a servicer can
forward those bytes (or build its response once per `Delivery`, which all local watchers share)
rather than serialize per watcher.

Several channels as one feed (`Hub.subscribe_many`, e.g. a stream's own events and the gifts sent
in it, which two services write to two channels: a channel has exactly one owning outbox). It is one
`Subscription` per channel, each with everything above (its own bounded queue, replay, gap filling,
drop when slow), read round-robin by one consumer, which a shared wake-up event parks when all are
empty. There is no order between channels, only within each. Its resume token is the position in
every channel: urlsafe base64 of `m1|<channel>=<seq>|<channel>=<seq>...`, channels in the order
subscribed, seq 0 for "nothing seen from this channel yet"; it is checked like a single-channel token
(canonical spelling, the very same channels) and resuming replays each channel after its position.
A child that is dropped or fails ends the whole feed with its error.

Replay from the outbox needs that channel's owning schema. A Hub serving channels of another
service's outbox (`replay_kinds` names the channel kinds its loader owns) replays those from Redis
only: a position Redis no longer holds is RESUME_TOKEN_TOO_OLD, and a position of 0 on a channel
Redis has never held means there is nothing to replay.

Bounds: subscribers per process (RESOURCE_EXHAUSTED TOO_MANY_SUBSCRIBERS; a multi-channel feed takes
one per channel), queue size per subscriber (at least read_count), replay page size, entries per
channel per XREAD, XREAD block time (below the Redis client's socket timeout: redis-py 8 defaults to
5 s), token length, channels per feed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self

import grpc
from redis.asyncio import Redis

from shared.errors import DomainError, invalid, precondition
from shared.outbox import FIELD_PAYLOAD, FIELD_TYPE, ReplayLoader, check_channel, entry_id, seq_of

log = logging.getLogger(__name__)

_TOKEN_VERSION = "v1"
_MULTI_TOKEN_VERSION = "m1"
MAX_TOKEN_CHARS = 400
MAX_CHANNELS_PER_FEED = 4
MAX_MULTI_TOKEN_CHARS = 1_200
_MAX_SEQ = 2**63 - 1


def make_token(channel: str, seq: int) -> str:
    raw = f"{_TOKEN_VERSION}|{channel}|{seq}".encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def parse_token(token: str, channel: str) -> int:
    """The seq a resume token names; INVALID_RESUME_TOKEN unless it is a canonical token of `channel`."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
        raise invalid("INVALID_RESUME_TOKEN", "resume token is malformed")
    try:
        raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise invalid("INVALID_RESUME_TOKEN", "resume token is malformed") from None
    version, _, rest = raw.partition("|")
    token_channel, sep, seq_text = rest.rpartition("|")
    if version != _TOKEN_VERSION or not sep or not seq_text.isdigit() or len(seq_text) > 19:
        raise invalid("INVALID_RESUME_TOKEN", "resume token is malformed")
    seq = int(seq_text)
    # Round trip: one spelling per token (no leading zeros, no padding variants).
    if seq < 1 or seq > _MAX_SEQ or make_token(token_channel, seq) != token:
        raise invalid("INVALID_RESUME_TOKEN", "resume token is malformed")
    if token_channel != channel:
        raise invalid("INVALID_RESUME_TOKEN", "resume token was issued for another channel")
    return seq


def make_multi_token(channels: Sequence[str], seqs: Sequence[int]) -> str:
    """The resume token of a multi-channel feed: the position (last seq delivered, 0 for none) in
    each of its channels, in subscription order."""
    assert len(channels) == len(seqs)
    raw = "|".join([_MULTI_TOKEN_VERSION, *(f"{c}={s}" for c, s in zip(channels, seqs, strict=True))])
    return base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode("ascii")


def parse_multi_token(token: str, channels: Sequence[str]) -> list[int]:
    """The positions a multi-channel token names; INVALID_RESUME_TOKEN unless it is a canonical
    token of exactly these channels in this order."""
    if not isinstance(token, str) or not token or len(token) > MAX_MULTI_TOKEN_CHARS:
        raise invalid("INVALID_RESUME_TOKEN", "resume token is malformed")
    try:
        raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise invalid("INVALID_RESUME_TOKEN", "resume token is malformed") from None
    version, *parts = raw.split("|")
    if version != _MULTI_TOKEN_VERSION or not parts:
        raise invalid("INVALID_RESUME_TOKEN", "resume token is malformed")
    named, seqs = [], []
    for part in parts:
        channel, sep, seq_text = part.rpartition("=")
        if not sep or not seq_text.isdigit() or len(seq_text) > 19 or int(seq_text) > _MAX_SEQ:
            raise invalid("INVALID_RESUME_TOKEN", "resume token is malformed")
        named.append(channel)
        seqs.append(int(seq_text))
    if make_multi_token(named, seqs) != token:
        raise invalid("INVALID_RESUME_TOKEN", "resume token is malformed")
    if named != list(channels):
        raise invalid("INVALID_RESUME_TOKEN", "resume token was issued for other channels")
    return seqs


@dataclass(frozen=True, slots=True)
class Delivery:
    seq: int
    token: str
    event_type: str
    payload: bytes
    channel: str = ""


def _delivery(channel: str, seq: int, event_type: str | bytes, payload: bytes) -> Delivery:
    if isinstance(event_type, bytes):
        event_type = event_type.decode()
    return Delivery(seq, make_token(channel, seq), event_type, payload, channel)


def _too_old(channel: str, after: int) -> DomainError:
    return precondition(
        "RESUME_TOKEN_TOO_OLD",
        "the events after this resume token are no longer kept; start a new watch without a token",
        channel=channel,
        seq=str(after),
    )


class _Closed:
    """Queue sentinel: the subscription ended; its error (if any) is on the subscription."""


_END = _Closed()


class _Channel:
    __slots__ = ("name", "cursor_seq", "subscribers")

    def __init__(self, name: str, cursor_seq: int):
        self.name = name
        # Seq of the last entry the reader took from Redis for this channel.
        self.cursor_seq = cursor_seq
        self.subscribers: set[Subscription] = set()


class _Replay:
    """Pages of what follows a resume token: Redis while it holds the next seq, else the outbox."""

    def __init__(self, hub: Hub, channel: str, after: int):
        self.hub = hub
        self.channel = channel
        self.after = after
        # Lowest seq Redis is known to hold above a gap; below it, pages come from the outbox.
        self.redis_from: int | None = None
        self.first = True
        self.done = False

    async def next_page(self) -> list[Delivery]:
        """The next contiguous run after `self.after`; [] once caught up (then `done`)."""
        if self.done:
            return []
        if self.redis_from is None or self.after + 1 >= self.redis_from:
            page = await self._from_redis()
            if page is not None:
                return page
        return await self._from_outbox()

    async def _from_redis(self) -> list[Delivery] | None:
        """A run from Redis, [] when caught up, or None when Redis lacks `after + 1`."""
        hub = self.hub
        pipe = hub.redis.pipeline(transaction=False)
        pipe.xrange(self.channel, min=f"{self.after + 1}-0", max="+", count=hub.replay_page)
        pipe.xrevrange(self.channel, "+", "-", count=1)
        entries, top = await pipe.execute()
        page = []
        for raw_id, fields in entries:
            try:
                seq = seq_of(raw_id)
            except ValueError:
                continue
            page.append(_delivery(self.channel, seq, fields.get(FIELD_TYPE, b""), fields.get(FIELD_PAYLOAD, b"")))
        if page and page[0].seq == self.after + 1:
            run = _contiguous(page)
            self.after = run[-1].seq
            self.first = False
            if len(run) == len(page) and len(entries) < hub.replay_page:
                self.done = True  # caught up with Redis; the live queue holds the rest
            return run
        if page:
            self.redis_from = page[0].seq  # trimmed, lost, or a hole
            return None
        top_seq = _top_seq(top)
        if top_seq is not None and top_seq >= self.after:
            self.done = True  # Redis ends exactly at the token: nothing missed
            return []
        # The stream is missing, or ends before the token (lost and partly refilled, or a forged
        # token): only the outbox can tell.
        self.redis_from = _MAX_SEQ
        return None

    async def _from_outbox(self) -> list[Delivery]:
        loader = self.hub.loader_for(self.channel)
        if loader is None:
            if self.after == 0:
                # Redis has never held this channel (a position of 0 comes only from a
                # multi-channel token): nothing was missed.
                self.done = True
                return []
            raise _too_old(self.channel, self.after)
        page = await loader(self.channel, self.after, self.hub.replay_page)
        if not page.events:
            if page.last_seq > self.after:
                raise _too_old(self.channel, self.after)
            if page.last_seq < self.after and self.first:
                raise invalid("INVALID_RESUME_TOKEN", "resume token names an event this channel never had")
            self.done = True
            return []
        if page.events[0].seq != self.after + 1:
            raise _too_old(self.channel, self.after)
        run = _contiguous([_delivery(self.channel, e.seq, e.event_type, e.payload) for e in page.events])
        self.after = run[-1].seq
        self.first = False
        if len(run) == len(page.events) and len(page.events) < self.hub.replay_page:
            self.done = True
        return run


def _contiguous(page: list[Delivery]) -> list[Delivery]:
    end = 1
    while end < len(page) and page[end].seq == page[end - 1].seq + 1:
        end += 1
    return page[:end]


def _top_seq(top: list) -> int | None:
    if not top:
        return None
    try:
        return seq_of(top[0][0])
    except ValueError:
        return None


class Subscription:
    """An async iterator of `Delivery` for one channel; also an async context manager. Close it
    (or leave the `async with`) when done; a forgotten one is dropped once its queue fills."""

    def __init__(self, hub: Hub, channel: _Channel, last_seq: int, queue_size: int):
        self.hub = hub
        self.channel = channel.name
        self.last_seq = last_seq
        self._state = channel
        self._queue: asyncio.Queue[Delivery | _Closed] = asyncio.Queue(maxsize=queue_size)
        self._pending: collections.deque[Delivery] = collections.deque()
        self._replay: _Replay | None = None
        self._error: DomainError | None = None
        self._closed = False
        # Set when something arrives (or the subscription ends): a multi-channel feed's consumer
        # waits on one event for all its channels.
        self._wake: asyncio.Event | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.hub._forget(self)
            # Wakes a consumer waiting in another task (a full queue means nobody waits).
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(_END)
            if self._wake is not None:
                self._wake.set()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Delivery:
        delivery = await self._step(block=True)
        assert delivery is not None
        return delivery

    def _ready(self) -> bool:
        """Whether `_step(block=False)` would answer something or raise, rather than None."""
        return (
            self._error is not None
            or self._closed
            or bool(self._pending)
            or self._replay is not None
            or not self._queue.empty()
        )

    async def _step(self, block: bool) -> Delivery | None:
        """The next delivery; with block=False, None instead of waiting for a live entry."""
        while True:
            if self._error is not None:
                error, self._error = self._error, None
                self.close()
                raise error
            if self._closed:
                raise StopAsyncIteration
            if self._pending:
                delivery = self._pending.popleft()
            elif self._replay is not None:
                await self._replay_more()
                continue
            else:
                if not block and self._queue.empty():
                    return None
                item = await self._queue.get()
                if isinstance(item, _Closed):
                    continue  # the error check above or the closed check handles it
                delivery = item
                if self.last_seq and delivery.seq > self.last_seq + 1:
                    # Live skipped seqs: the reader fell behind the stream's trimming, or the stream
                    # has a hole. Fill them like a resume; that replay reads past this entry too.
                    log.warning(
                        "watch gap filled by replay",
                        extra={"channel": self.channel, "after": self.last_seq, "seq": delivery.seq},
                    )
                    self._replay = _Replay(self.hub, self.channel, self.last_seq)
                    continue
            if delivery.seq <= self.last_seq:
                continue  # replay and live overlap; each seq is delivered once
            self.last_seq = delivery.seq
            return delivery

    async def _replay_more(self) -> None:
        assert self._replay is not None
        try:
            page = await self._replay.next_page()
        except BaseException:
            self.close()
            raise
        self._pending.extend(page)
        if self._replay.done:
            self._replay = None

    def _offer(self, delivery: Delivery) -> bool:
        try:
            self._queue.put_nowait(delivery)
        except asyncio.QueueFull:
            return False
        if self._wake is not None:
            self._wake.set()
        return True

    def _fail(self, error: DomainError | None) -> None:
        """Ends the subscription from the Hub's side: the consumer's next step raises `error`."""
        self._error = error
        self._closed = True
        self._pending.clear()
        self._replay = None
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(_END)
        if self._wake is not None:
            self._wake.set()


@dataclass(frozen=True, slots=True)
class MultiDelivery:
    """One entry of a multi-channel feed: the channel's own `Delivery` (shared by every local
    watcher) and this feed's position in each channel right after it."""

    delivery: Delivery
    channels: tuple[str, ...]
    positions: tuple[int, ...]

    @property
    def channel(self) -> str:
        return self.delivery.channel

    @property
    def token(self) -> str:
        return make_multi_token(self.channels, self.positions)


class MultiSubscription:
    """Several channels as one feed (see the module doc); an async iterator of `MultiDelivery` and
    an async context manager. Channels are served round-robin, so a busy one cannot starve another."""

    def __init__(self, channels: tuple[str, ...], children: list[Subscription]):
        self.channels = channels
        self._children = children
        self._wake = asyncio.Event()
        self._next = 0
        for child in children:
            child._wake = self._wake

    @property
    def positions(self) -> tuple[int, ...]:
        return tuple(child.last_seq for child in self._children)

    @property
    def token(self) -> str:
        """Where this feed is now: resuming from it misses nothing delivered after."""
        return make_multi_token(self.channels, self.positions)

    @property
    def closed(self) -> bool:
        return any(child.closed for child in self._children)

    def close(self) -> None:
        for child in self._children:
            child.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> MultiDelivery:
        children = self._children
        count = len(children)
        while True:
            for offset in range(count):
                index = (self._next + offset) % count
                try:
                    delivery = await children[index]._step(block=False)
                except BaseException:
                    # One channel dropped, failed or closed: the feed ends with it.
                    self.close()
                    raise
                if delivery is not None:
                    self._next = (index + 1) % count
                    return MultiDelivery(delivery, self.channels, self.positions)
            self._wake.clear()
            # Nothing can arrive between this check and the wait: no await in between.
            if any(child._ready() for child in children):
                continue
            await self._wake.wait()


class Hub:
    """One per process: the multiplexed reader and its local subscribers (see the module doc)."""

    def __init__(
        self,
        redis: Redis,
        *,
        replay_loader: ReplayLoader | None = None,
        replay_kinds: frozenset[str] | None = None,
        max_subscribers: int = 10_000,
        queue_size: int = 256,
        replay_page: int = 500,
        read_count: int = 100,
        block_ms: int = 1_000,
        retry_max_s: float = 2.0,
    ):
        assert max_subscribers > 0 and replay_page > 0 and read_count > 0
        # One XREAD may hand a subscriber read_count entries before it can run: a smaller queue
        # would drop even a perfectly fast watcher during a burst.
        assert queue_size >= read_count, "queue_size must be at least read_count"
        assert 0 < block_ms <= 60_000
        # redis-py 8 gives every connection a 5 s socket timeout by default: a longer BLOCK would end
        # in TimeoutError (and retries) instead of an empty reply.
        socket_timeout = redis.connection_pool.connection_kwargs.get("socket_timeout", 5.0)
        if socket_timeout is not None and block_ms > socket_timeout * 1000 - 1_000:
            raise ValueError(f"block_ms={block_ms} needs a Redis socket_timeout above {block_ms / 1000 + 1} s")
        self.redis = redis
        self.replay_loader = replay_loader
        # Channel kinds (`<kind>:<id>`) the loader's outbox owns; None: every channel.
        self.replay_kinds = replay_kinds
        self.max_subscribers = max_subscribers
        self.queue_size = queue_size
        self.replay_page = replay_page
        self.read_count = read_count
        self.block_ms = block_ms
        self.retry_max_s = retry_max_s
        self.reads = 0  # XREAD calls issued; observable by tests and metrics
        self.read_errors = 0
        self._channels: dict[str, _Channel] = {}
        self._count = 0
        self._wake_key = f"fanbank:hub-wake:{uuid.uuid4().hex}"
        self._wake_cursor = "0-0"
        self._wake_sent = False
        self._reading: frozenset[str] = frozenset()
        self._changed = asyncio.Event()
        self._closed = False
        self._task: asyncio.Task | None = None

    @property
    def subscriber_count(self) -> int:
        return self._count

    @property
    def channel_count(self) -> int:
        return len(self._channels)

    def subscribers_of(self, channel: str) -> int:
        """Local subscribers of `channel`; once one is counted, its "from now" is fixed."""
        state = self._channels.get(channel)
        return len(state.subscribers) if state is not None else 0

    def start(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._read_loop(), name="watch-hub-reader")

    async def close(self) -> None:
        """Ends every subscription with UNAVAILABLE (clients resume elsewhere with their token)."""
        self._closed = True
        shutting_down = DomainError(
            grpc.StatusCode.UNAVAILABLE, "SHUTTING_DOWN", "this server is shutting down; resume with the last token"
        )
        for state in list(self._channels.values()):
            for sub in list(state.subscribers):
                sub._fail(shutting_down)
        self._channels.clear()
        self._count = 0
        task, self._task = self._task, None
        # Python 3.11's asyncio.wait_for, which redis-py uses to send a command, can swallow a
        # cancellation that lands as the send completes; the XREAD would then run its full block.
        for _ in range(100):
            if task is None or task.done():
                break
            task.cancel()
            await asyncio.wait([task], timeout=0.05)
        try:
            await self.redis.delete(self._wake_key)
        except Exception:
            log.warning("could not delete the hub wake key", exc_info=True)

    def loader_for(self, channel: str) -> ReplayLoader | None:
        """The outbox loader that can replay `channel`, if this Hub has one for its kind."""
        if self.replay_loader is None:
            return None
        if self.replay_kinds is not None and channel.partition(":")[0] not in self.replay_kinds:
            return None
        return self.replay_loader

    def _check_open(self) -> None:
        if self._closed:
            raise DomainError(grpc.StatusCode.UNAVAILABLE, "SHUTTING_DOWN", "this server is shutting down")

    @staticmethod
    def _check_channel(channel: str) -> None:
        try:
            check_channel(channel)
        except ValueError:
            raise invalid("INVALID_CHANNEL", "channel name is malformed") from None

    def _reserve(self, slots: int) -> None:
        """Takes subscriber slots before any await, so concurrent subscribes respect the bound."""
        if self._count + slots > self.max_subscribers:
            raise DomainError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "TOO_MANY_SUBSCRIBERS",
                "this server has too many watchers; retry shortly",
                retry_delay_ms=1_000,
            )
        self.start()
        self._count += slots

    async def subscribe(self, channel: str, resume_token: str | None = None) -> Subscription:
        """Live entries of `channel` from now, or everything after `resume_token`. Raises at once
        for a bad or too old token and when the process has too many subscribers."""
        self._check_open()
        self._check_channel(channel)
        after = parse_token(resume_token, channel) if resume_token is not None else None
        self._reserve(1)
        return await self._subscribe_reserved(channel, after)

    async def subscribe_many(self, channels: Sequence[str], resume_token: str | None = None) -> MultiSubscription:
        """Live entries of every channel in `channels` from now, or everything after a multi-channel
        `resume_token`, as one feed. Raises at once like `subscribe`; takes one slot per channel."""
        self._check_open()
        channels = tuple(channels)
        if not 1 <= len(channels) <= MAX_CHANNELS_PER_FEED or len(set(channels)) != len(channels):
            raise invalid("INVALID_CHANNEL", f"a feed names 1..{MAX_CHANNELS_PER_FEED} distinct channels")
        for channel in channels:
            self._check_channel(channel)
        afters: list[int | None] = (
            list(parse_multi_token(resume_token, channels)) if resume_token is not None else [None] * len(channels)
        )
        self._reserve(len(channels))
        children: list[Subscription] = []
        try:
            for channel, after in zip(channels, afters, strict=True):
                # Each call owns one reserved slot from here on, and frees it if it fails.
                children.append(await self._subscribe_reserved(channel, after))
        except BaseException:
            for child in children:
                child.close()
            self._count -= len(channels) - len(children) - 1
            raise
        return MultiSubscription(channels, children)

    async def _subscribe_reserved(self, channel: str, after: int | None) -> Subscription:
        """Subscribes with a slot already reserved; on failure the slot is given back."""
        sub: Subscription | None = None
        try:
            state = self._channels.get(channel)
            if state is None:
                start = await self._current_seq(channel)
                state = self._channels.get(channel)
                if state is None:
                    state = self._channels[channel] = _Channel(channel, start)
            sub = Subscription(self, state, after if after is not None else state.cursor_seq, self.queue_size)
            state.subscribers.add(sub)
            await self._wake_reader(channel)
            if after is not None:
                sub._replay = _Replay(self, channel, after)
                # The first page now, so a token that cannot be served fails the call itself.
                await sub._replay_more()
            return sub
        except BaseException:
            if sub is not None:
                sub.close()
            else:
                self._count -= 1
            raise

    def _forget(self, sub: Subscription) -> None:
        state = self._channels.get(sub.channel)
        if state is not sub._state or sub not in state.subscribers:
            return  # already dropped by the reader, or by close()
        state.subscribers.discard(sub)
        self._count -= 1
        if not state.subscribers:
            del self._channels[sub.channel]

    async def _current_seq(self, channel: str) -> int:
        """Where "now" is for a channel without local subscribers."""
        top = _top_seq(await self.redis.xrevrange(channel, "+", "-", count=1))
        if top is not None:
            return top
        loader = self.loader_for(channel)
        if loader is not None:
            # Stream missing (never published, expired or lost): the outbox knows the last seq.
            return (await loader(channel, 0, 0)).last_seq
        return 0

    async def _wake_reader(self, channel: str) -> None:
        self._changed.set()
        if channel in self._reading or self._wake_sent:
            return
        self._wake_sent = True
        pipe = self.redis.pipeline(transaction=False)
        pipe.xadd(self._wake_key, {b"w": b"1"}, maxlen=1, approximate=False)
        # A crashed process leaves its wake stream behind for an hour at most.
        pipe.pexpire(self._wake_key, 3_600_000)
        try:
            await pipe.execute()
        except Exception:
            # The reader re-issues its XREAD after block_ms anyway.
            log.warning("hub wake-up failed", exc_info=True)

    async def _read_loop(self) -> None:
        failures = 0
        while not self._closed:
            if not self._channels:
                self._changed.clear()
                await self._changed.wait()
                continue
            streams = {name: entry_id(state.cursor_seq) for name, state in self._channels.items()}
            streams[self._wake_key] = self._wake_cursor
            self._reading = frozenset(streams)
            self._wake_sent = False
            try:
                self.reads += 1
                reply = await self.redis.xread(streams, count=self.read_count, block=self.block_ms)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception:
                failures += 1
                self.read_errors += 1
                log.warning("hub XREAD failed; retrying", exc_info=True)
                await asyncio.sleep(min(0.05 * 2**failures, self.retry_max_s))
                continue
            self._dispatch(reply)
            # Lets the watchers just woken drain their queues before the next batch lands.
            await asyncio.sleep(0)

    def _dispatch(self, reply) -> None:
        # RESP2 answers [[key, entries], ...]; RESP3 answers {key: [entries]}.
        items = reply.items() if isinstance(reply, dict) else (reply or [])
        for raw_key, entries in items:
            if isinstance(raw_key, bytes):
                raw_key = raw_key.decode()
            if raw_key == self._wake_key:
                if entries:
                    last = entries[-1][0]
                    self._wake_cursor = last.decode() if isinstance(last, bytes) else last
                continue
            state = self._channels.get(raw_key)
            if state is None:
                continue  # its last subscriber left while the XREAD was in flight
            for raw_id, fields in entries:
                try:
                    seq = seq_of(raw_id)
                except ValueError:
                    log.warning("foreign entry id on a watched stream", extra={"channel": raw_key})
                    continue
                if seq <= state.cursor_seq:
                    continue  # read for an earlier incarnation of this channel's state
                state.cursor_seq = seq
                delivery = _delivery(raw_key, seq, fields.get(FIELD_TYPE, b""), fields.get(FIELD_PAYLOAD, b""))
                for sub in list(state.subscribers):
                    if not sub._offer(delivery):
                        self._drop(state, sub)

    def _drop(self, state: _Channel, sub: Subscription) -> None:
        state.subscribers.discard(sub)
        self._count -= 1
        if not state.subscribers:
            del self._channels[state.name]
        log.info("slow watcher dropped", extra={"channel": state.name, "seq": sub.last_seq})
        sub._fail(
            DomainError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "SUBSCRIBER_TOO_SLOW",
                f"the watcher fell {self.queue_size} events behind and was dropped; resume with the last token",
                {"channel": state.name},
            )
        )
