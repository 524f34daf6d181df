"""A server-streaming call relayed as Server-Sent Events.

The relay watches three things at once: the next message, the client going away, and the edge
draining for shutdown. Whichever comes first decides; the backend call is cancelled on every way
out, so a closed browser tab frees its server-side watcher at once rather than at the next write.
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

# A feed whose messages carry a resume token uses it as each event's id, so a reconnecting
# EventSource's Last-Event-ID resumes it. Other streams number events per connection, and their
# preamble says that Last-Event-ID cannot resume them to whoever reads the raw stream.
PREAMBLE = b": events are numbered per connection; Last-Event-ID does not resume this stream\nretry: 3000\n\n"
RESUMABLE_PREAMBLE = b": each id is a resume token; reconnect with Last-Event-ID to resume\nretry: 3000\n\n"
KEEPALIVE = b": keep-alive\n\n"
DRAINING = b": the edge is shutting down; reconnect\n\n"
EXPIRED = b": this stream reached its longest duration; reconnect\n\n"


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


class EventStream:
    """ASGI response for one open call; `first` is the pending or finished first read."""

    def __init__(
        self,
        call,
        first: asyncio.Future,
        render: Callable,
        service: str,
        keepalive_seconds: float,
        draining: asyncio.Event,
        on_close: Callable[[], None],
        headers: dict[str, str],
        deadline: float,
        token_of: Callable | None = None,
    ):
        self.call = call
        self.first = first
        self.render = render
        self.service = service
        self.keepalive_seconds = keepalive_seconds
        self.draining = draining
        self.on_close = on_close
        self.headers = headers
        self.deadline = deadline
        self.token_of = token_of

    async def __call__(self, scope, receive, send) -> None:
        headers = {
            "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-cache",
            "x-accel-buffering": "no",
            **{k.lower(): v for k, v in self.headers.items()},
        }
        read = self.first
        gone = asyncio.ensure_future(_disconnected(receive))
        draining = asyncio.ensure_future(self.draining.wait())
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
                }
            )
            await self._send(send, PREAMBLE if self.token_of is None else RESUMABLE_PREAMBLE)
            sequence = 0
            while True:
                done, _ = await asyncio.wait(
                    {read, gone, draining}, timeout=self.keepalive_seconds, return_when=asyncio.FIRST_COMPLETED
                )
                if gone in done:
                    return
                if read in done:
                    sequence += 1
                    try:
                        message = read.result()
                    except grpc.aio.AioRpcError as error:
                        if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED and self._past_deadline():
                            await self._send(send, EXPIRED)
                        else:
                            status = json_format.MessageToDict(from_rpc_error(error, self.service))
                            error_id = sequence if self.token_of is None else None
                            await self._send(send, event(error_id, status, "error"))
                        break
                    if message is grpc.aio.EOF:
                        break
                    event_id = sequence if self.token_of is None else self.token_of(message)
                    await self._send(send, event_text(event_id, rendered_json(self.render, message)))
                    read = asyncio.ensure_future(self.call.read())
                elif draining in done:
                    await self._send(send, DRAINING)
                    break
                else:
                    await self._send(send, KEEPALIVE)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            for task in (read, gone, draining):
                _settle(task)
            self.call.cancel()
            self.on_close()

    def _past_deadline(self) -> bool:
        """The edge's own stream deadline ended it: a normal end, not a backend failure."""
        return time.monotonic() >= self.deadline

    @staticmethod
    async def _send(send, chunk: bytes) -> None:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
