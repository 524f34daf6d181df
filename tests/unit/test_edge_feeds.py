"""The edge's shared SSE feeds without a network: one backend read per event for every client, a
client too slow to keep up dropped without holding back the rest, the backend call cancelled when
the last client goes, and the index offering a feed only at the position it has reached."""

from __future__ import annotations

import asyncio

import grpc

from services.edge import sse
from services.edge.sse import Feed, FeedIndex, feed_key
from shared.gen.fanbank.gifts.v1 import gifts_service_pb2 as gpb

METHOD = "/fanbank.gifts.v1.GiftsService/WatchCreatorAlerts"
USER = ("creator-1", ("creator",))


class FakeCall:
    """A server-streaming call whose messages the test hands out one by one."""

    def __init__(self):
        self.messages: asyncio.Queue = asyncio.Queue()
        self.reads = 0
        self.cancelled = False

    async def read(self):
        self.reads += 1
        return await self.messages.get()

    def cancel(self) -> None:
        self.cancelled = True


class Client:
    """An ASGI client of one subscriber: records the body chunks; `leave()` disconnects it."""

    def __init__(self, subscriber, stalled: bool = False):
        self.chunks: list[bytes] = []
        self.stalled = asyncio.Event() if stalled else None
        self._gone = asyncio.Event()
        self.task = asyncio.ensure_future(subscriber({"type": "http"}, self._receive, self._send))

    async def _receive(self):
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message) -> None:
        if self.stalled is not None:
            await self.stalled.wait()  # a client whose socket never drains
        if message["type"] == "http.response.body":
            self.chunks.append(message["body"])

    def data(self) -> list[str]:
        return [c.decode() for c in self.chunks if c.startswith(b"id: ")]

    async def leave(self) -> None:
        self._gone.set()
        await self.task


def alert(token: str) -> gpb.WatchCreatorAlertsResponse:
    return gpb.WatchCreatorAlertsResponse(resume_token=token)


def open_feed(index: FeedIndex, request: gpb.WatchCreatorAlertsRequest) -> tuple[Feed, FakeCall]:
    call = FakeCall()
    first = asyncio.ensure_future(call.read())
    feed = Feed(
        call, first, lambda m: {"t": m.resume_token}, "gifts", 30.0, float("inf"),
        lambda m: m.resume_token, index, feed_key(METHOD, USER, request), request,
    )  # fmt: skip
    return feed, call


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_one_read_per_event_for_every_client_and_a_slow_one_is_dropped(monkeypatch):
    monkeypatch.setattr(sse, "SUBSCRIBER_QUEUE", 5)
    index = FeedIndex(min_life_seconds=0)
    feed, call = open_feed(index, gpb.WatchCreatorAlertsRequest(creator_id="creator-1"))
    closed: list[str] = []
    draining = asyncio.Event()
    fast = [Client(feed.join({}, lambda: closed.append("fast"), draining)) for _ in range(3)]
    slow = Client(feed.join({}, lambda: closed.append("slow"), draining), stalled=True)
    for n in range(8):
        await call.messages.put(alert(f"t{n}"))
        await settle()
    assert call.reads == 9  # one read per event (and the next pending), whatever the number of clients
    for client in fast:
        assert client.data() == [f'id: t{n}\ndata: {{"t":"t{n}"}}\n\n' for n in range(8)]
    assert slow.task.done() is False and len(feed.subscribers) == 3, "the stalled client was dropped"
    slow.stalled.set()
    await slow.task
    assert slow.chunks[-2] == sse.TOO_SLOW and closed == ["slow"]
    # One client leaving does not end the feed; the last one leaving cancels the backend call.
    await fast[0].leave()
    await call.messages.put(alert("t8"))
    await settle()
    assert all(c.data()[-1].startswith("id: t8") for c in fast[1:]) and not call.cancelled
    for client in fast[1:]:
        await client.leave()
    assert call.cancelled and not index.feeds


async def test_the_index_offers_a_feed_from_now_and_at_its_position_only():
    index = FeedIndex(min_life_seconds=0)
    live = gpb.WatchCreatorAlertsRequest(creator_id="creator-1")
    feed, call = open_feed(index, live)
    client = Client(feed.join({}, lambda: None, asyncio.Event()))
    assert index.find(feed_key(METHOD, USER, live)) is feed
    assert index.find(feed_key(METHOD, ("someone-else", ("creator",)), live)) is None
    await call.messages.put(alert("t1"))
    await settle()
    at = gpb.WatchCreatorAlertsRequest(creator_id="creator-1", resume_token="t1")
    assert index.find(feed_key(METHOD, USER, at)) is feed
    await call.messages.put(alert("t2"))
    await settle()
    assert index.find(feed_key(METHOD, USER, at)) is None, "a client at t1 would miss t2"
    at.resume_token = "t2"
    assert index.find(feed_key(METHOD, USER, at)) is feed
    assert index.find(feed_key(METHOD, USER, live)) is feed  # from now is still from now
    # The backend ends the call: every response ends, and nobody can join any more.
    await call.messages.put(grpc.aio.EOF)
    await client.task
    assert not index.feeds and call.cancelled
