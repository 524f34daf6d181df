"""Server-streaming calls relayed as Server-Sent Events, one backend stream per feed.

A `Feed` is one backend call and the SSE clients it serves. It reads each message once, renders it
once as the bytes of one SSE event, and hands those bytes to every subscriber's bounded queue; each
`Subscriber` is the ASGI response of one client and writes its queue out at its own pace. A client
too slow to keep up is dropped (told to reconnect with Last-Event-ID) rather than slowing the rest.

Clients share a feed only when sharing cannot change what they see: the same RPC, the same request
and the same user (so the service's authorization decision is the same), on a resumable feed whose
position is where the client asks to start — "from now" for a feed opened from now, or exactly the
resume token of the last event the feed handed out. Anything else gets a feed of its own. The
backend call is cancelled when its last client goes away, when it ends, or when the edge drains.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import Callable

import grpc
from google.protobuf import json_format

from services.edge.errors import from_rpc_error
from services.edge.rules import RESUME_TOKEN_FIELD

# A feed whose messages carry a resume token uses it as each event's id, so a reconnecting
# EventSource's Last-Event-ID resumes it. Other streams number events per connection, and their
# preamble says that Last-Event-ID cannot resume them to whoever reads the raw stream.
PREAMBLE = b": events are numbered per connection; Last-Event-ID does not resume this stream\nretry: 3000\n\n"
RESUMABLE_PREAMBLE = b": each id is a resume token; reconnect with Last-Event-ID to resume\nretry: 3000\n\n"
KEEPALIVE = b": keep-alive\n\n"
DRAINING = b": the edge is shutting down; reconnect\n\n"
EXPIRED = b": this stream reached its longest duration; reconnect\n\n"
TOO_SLOW = b": this client fell too far behind; reconnect with Last-Event-ID\n\n"
# Events queued for one client before it counts as too slow and is dropped.
SUBSCRIBER_QUEUE = 1024


def event(event_id: int | str | None, data, name: str | None = None) -> bytes:
    """One SSE event; without an id the client keeps the last one it saw (an error event must not
    replace a resume token)."""
    return event_text(event_id, json.dumps(data, separators=(",", ":")), name)


def event_text(event_id: int | str | None, data_json: str, name: str | None = None) -> bytes:
    head = (f"id: {event_id}\n" if event_id is not None else "") + (f"event: {name}\n" if name else "")
    return (head + "data: " + data_json + "\n\n").encode()


# A live event reaches every SSE client watching it as the same bytes from its backend stream, so
# its JSON is built once: keyed by the renderer and the message's bytes, bounded, oldest dropped.
RENDERED_CACHE_ENTRIES = 4096
_rendered: collections.OrderedDict[tuple, str] = collections.OrderedDict()


def rendered_json(render: Callable, message) -> str:
    key = (render, message.SerializeToString())
    text = _rendered.get(key)
    if text is None:
        text = _rendered[key] = json.dumps(render(message), separators=(",", ":"))
        if len(_rendered) > RENDERED_CACHE_ENTRIES:
            _rendered.popitem(last=False)
    return text


async def _disconnected(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _settle(task: asyncio.Future) -> None:
    """Cancel, and consume an exception nobody will read, so asyncio does not log it."""
    if not task.done():
        task.cancel()
    elif not task.cancelled():
        task.exception()


class Feed:
    """One backend server stream and the SSE clients it serves.

    `first` is the pending (or finished) first read, started by whoever opened the call. `index` is
    the gateway's registry of joinable feeds (`None`: this feed is never shared); `key` and
    `request` say who asked what, so the feed can be found again by an identical request — or by the
    same request resuming from this feed's current position.
    """

    def __init__(
        self,
        call,
        first: asyncio.Future,
        render: Callable,
        service: str,
        keepalive_seconds: float,
        deadline: float,
        token_of: Callable | None,
        index: FeedIndex | None,
        key: tuple,
        request,
    ):
        self.call = call
        self.opened_at = time.monotonic()
        self.first = first
        self.render = render
        self.service = service
        self.keepalive_seconds = keepalive_seconds
        self.deadline = deadline
        self.token_of = token_of
        self.index = index
        self.key = key
        self.request = request
        self.subscribers: set[Subscriber] = set()
        self.ended = False
        self._joinable: list[tuple] = []
        self._live: tuple | None = None  # set when opened "from now": anyone asking that may join
        self._sequence = 0
        if index is not None and token_of is not None:
            self._share(key)
            if not getattr(request, RESUME_TOKEN_FIELD):
                self._live = key
        self._task = asyncio.ensure_future(self._pump(first))

    # ---- who may join -----------------------------------------------------------------------

    def _share(self, key: tuple) -> None:
        self.index.feeds[key] = self
        self._joinable.append(key)

    def _unshare(self, keep: tuple | None = None) -> None:
        """Takes this feed out of the index under every key but `keep`."""
        if self.index is not None:
            for key in self._joinable:
                if key != keep and self.index.feeds.get(key) is self:
                    del self.index.feeds[key]
        self._joinable = [keep] if keep is not None else []

    def retire(self) -> None:
        """Takes no newcomers any more (too close to the end of its call's life)."""
        self._live = None
        self._unshare()

    def _moved_to(self, token: str) -> None:
        """After handing out the event with resume token `token`: a client resuming from exactly
        there may join; one asking for this feed's previous position no longer may."""
        self._unshare(keep=self._live)
        request = type(self.request)()
        request.CopyFrom(self.request)
        setattr(request, RESUME_TOKEN_FIELD, token)
        self._share(feed_key(self.key[0], self.key[1], request))

    # ---- subscribers -------------------------------------------------------------------------

    def join(self, headers: dict[str, str], on_close: Callable[[], None], draining: asyncio.Event) -> Subscriber:
        subscriber = Subscriber(self, headers, on_close, draining)
        self.subscribers.add(subscriber)
        return subscriber

    def leave(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)
        if not self.subscribers and not self.ended:
            self.close()

    def close(self) -> None:
        """Ends the backend call now (no subscriber left, or the edge is going away)."""
        self._unshare()
        _settle(self._task)
        self.call.cancel()

    def _broadcast(self, chunk: bytes) -> None:
        for subscriber in tuple(self.subscribers):
            subscriber.offer(chunk)

    # ---- the backend call ----------------------------------------------------------------------

    async def _pump(self, first: asyncio.Future) -> None:
        read: asyncio.Future = first
        final = b""
        try:
            while True:
                done, _ = await asyncio.wait({read}, timeout=self.keepalive_seconds)
                if not done:
                    self._broadcast(KEEPALIVE)
                    continue
                try:
                    message = read.result()
                except grpc.aio.AioRpcError as error:
                    if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED and time.monotonic() >= self.deadline:
                        final = EXPIRED
                    else:
                        status = json_format.MessageToDict(from_rpc_error(error, self.service))
                        self._sequence += 1
                        final = event(self._sequence if self.token_of is None else None, status, "error")
                    break
                if message is grpc.aio.EOF:
                    break
                self._sequence += 1
                event_id = self._sequence if self.token_of is None else self.token_of(message)
                self._broadcast(event_text(event_id, rendered_json(self.render, message)))
                if self._joinable or self._live is not None:
                    self._moved_to(event_id)
                read = asyncio.ensure_future(self.call.read())
        finally:
            self.ended = True
            self._unshare()
            _settle(read)
            self.call.cancel()
            for subscriber in tuple(self.subscribers):
                subscriber.finish(final)


def feed_key(method: str, user: tuple | None, request) -> tuple:
    """Who asked (the RPC and the user it was made for) and exactly what (the request's bytes)."""
    return (method, user, request.SerializeToString(deterministic=True))


class FeedIndex:
    """The gateway's joinable feeds by `feed_key`. A feed takes newcomers only while at least
    `min_life_seconds` of its backend call's life remain, so a joiner is not cut off at once."""

    def __init__(self, min_life_seconds: float):
        self.feeds: dict[tuple, Feed] = {}
        self.min_life_seconds = min_life_seconds

    def find(self, key: tuple) -> Feed | None:
        feed = self.feeds.get(key)
        if feed is None or feed.ended:
            return None
        if time.monotonic() > feed.deadline - self.min_life_seconds:
            feed.retire()
            return None
        return feed


class Subscriber:
    """The ASGI response of one SSE client: its feed's events, from a bounded queue, at its pace."""

    def __init__(self, feed: Feed, headers: dict[str, str], on_close: Callable[[], None], draining: asyncio.Event):
        self.feed = feed
        self.headers = headers
        self.on_close = on_close
        self.draining = draining
        self._pending: collections.deque[bytes] = collections.deque()
        self._ready = asyncio.Event()
        self._done = False

    def offer(self, chunk: bytes) -> None:
        if self._done:
            return
        if len(self._pending) >= SUBSCRIBER_QUEUE:
            self._pending.clear()
            self.finish(TOO_SLOW)
            self.feed.leave(self)
            return
        self._pending.append(chunk)
        self._ready.set()

    def abandon(self) -> None:
        """Its client is answered otherwise (the call failed at once): it never starts."""
        self._done = True
        self.feed.leave(self)
        self.on_close()

    def finish(self, final: bytes = b"") -> None:
        """Nothing more will come: write what is queued, then `final`, then end the response."""
        if self._done:
            return
        if final:
            self._pending.append(final)
        self._done = True
        self._ready.set()

    def _stop(self, final: bytes) -> None:
        self._pending.clear()
        self.finish(final)

    async def __call__(self, scope, receive, send) -> None:
        headers = {
            "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-cache",
            "x-accel-buffering": "no",
            **{k.lower(): v for k, v in self.headers.items()},
        }
        gone = asyncio.ensure_future(_disconnected(receive))
        draining = asyncio.ensure_future(self.draining.wait())
        gone.add_done_callback(lambda _: self._stop(b""))
        draining.add_done_callback(lambda _: self._stop(DRAINING))
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
                }
            )
            await self._send(send, PREAMBLE if self.feed.token_of is None else RESUMABLE_PREAMBLE)
            while True:
                while self._pending:
                    await self._send(send, self._pending.popleft())
                if self._done:
                    break
                self._ready.clear()
                await self._ready.wait()
            if not gone.done():
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self._done = True
            for task in (gone, draining):
                _settle(task)
            self.feed.leave(self)
            self.on_close()

    @staticmethod
    async def _send(send, chunk: bytes) -> None:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
