"""A server-streaming call relayed as Server-Sent Events.

The relay watches three things at once: the next message, the client going away, and the edge
draining for shutdown. Whichever comes first decides; the backend call is cancelled on every way
out, so a closed browser tab frees its server-side watcher at once rather than at the next write.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import grpc
from google.protobuf import json_format

from services.edge.errors import from_rpc_error

# These streams carry no resume token yet, so events are numbered per connection and Last-Event-ID
# cannot resume; the preamble says so to whoever reads the raw stream.
PREAMBLE = b": events are numbered per connection; Last-Event-ID does not resume this stream\nretry: 3000\n\n"
KEEPALIVE = b": keep-alive\n\n"
DRAINING = b": the edge is shutting down; reconnect\n\n"
EXPIRED = b": this stream reached its longest duration; reconnect\n\n"


def event(event_id: int, data, name: str | None = None) -> bytes:
    head = f"id: {event_id}\n" + (f"event: {name}\n" if name else "")
    return (head + "data: " + json.dumps(data, separators=(",", ":")) + "\n\n").encode()


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

    async def __call__(self, scope, receive, send) -> None:
        headers = {
            "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-cache",
            "x-accel-buffering": "no",
            **self.headers,
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
            await self._send(send, PREAMBLE)
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
                            await self._send(send, event(sequence, status, "error"))
                        break
                    if message is grpc.aio.EOF:
                        break
                    await self._send(send, event(sequence, self.render(message)))
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
