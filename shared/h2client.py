"""A minimal HTTP/2 client for gRPC calls (RFC 9113, gRPC over HTTP/2), for the benchmarks' load
generators: a few microseconds of CPU per call or message where grpc.aio's client costs about as much
as the server it measures, which on a shared 2-core machine is taken from the servers.

One `H2Connection` carries many calls. It sends each call's HEADERS and request DATA, grants the
server the largest flow-control windows up front (so the server never waits for a WINDOW_UPDATE),
answers SETTINGS and PING, and splits DATA into gRPC messages, each handed to `on_message` with the
time its bytes were read. Response headers and trailers are never decoded (no HPACK state is needed
to skip them): a HEADERS frame that ends a stream ends the call with "ENDED", RST_STREAM, GOAWAY or
a lost connection with the reason. A unary call succeeded when it got its one message before
"ENDED"; a failed call is trailers-only, so its status code is not known here (the benchmarks check
what was committed on their own anyway).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Iterable

import grpc

_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_DATA, _HEADERS, _RST_STREAM, _SETTINGS, _PING, _GOAWAY, _WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
_END_STREAM = _ACK = 0x1
_END_HEADERS, _PADDED = 0x4, 0x8
_SETTINGS_INITIAL_WINDOW_SIZE, _SETTINGS_ENABLE_PUSH = 4, 2
_MAX_WINDOW = 2**31 - 1
_DEFAULT_WINDOW = 65_535

OnMessage = Callable[[object, bytes, float], None]  # (call key, message bytes, time.time() read)
OnEnd = Callable[[object, str, str], None]  # (call key, reason, detail)


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream.to_bytes(4, "big") + payload


def _hpack_int(value: int, prefix_bits: int = 7) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((value,))
    out, value = bytearray((limit,)), value - limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _hpack_literal(name: str, value: str) -> bytes:
    """A header field as a literal without indexing, new name, no Huffman (RFC 7541 6.2.2)."""
    raw_name, raw_value = name.encode(), value.encode()
    return b"\x00" + _hpack_int(len(raw_name)) + raw_name + _hpack_int(len(raw_value)) + raw_value


def header_block(
    method: str, authority: str, metadata: Iterable[tuple[str, str]] = (), timeout_seconds: int | None = None
) -> bytes:
    """The HEADERS block of a gRPC call to `method` (`/package.Service/Method`), encoded once and
    sent as is with every call (literals only: nothing for the server's decoder to remember)."""
    headers = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", method),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        *((("grpc-timeout", f"{timeout_seconds}S"),) if timeout_seconds else ()),
        *metadata,
    ]
    return b"".join(_hpack_literal(name, value) for name, value in headers)


class H2Connection(asyncio.Protocol):
    """One HTTP/2 connection carrying many gRPC calls (see the module docstring)."""

    def __init__(self, on_message: OnMessage, on_end: OnEnd):
        self.on_message = on_message
        self.on_end = on_end
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.calls: dict[int, object] = {}  # stream id → call key
        self.partial: dict[int, bytes] = {}
        self.next_id = 1
        self.send_window = _DEFAULT_WINDOW
        self.pending: collections.deque[tuple[int, bytes]] = collections.deque()
        self.closing = False  # set before closing on purpose: calls then end without a report

    def connection_made(self, transport) -> None:
        self.transport = transport
        settings = _SETTINGS_ENABLE_PUSH.to_bytes(2, "big") + (0).to_bytes(4, "big")
        settings += _SETTINGS_INITIAL_WINDOW_SIZE.to_bytes(2, "big") + _MAX_WINDOW.to_bytes(4, "big")
        transport.write(
            _H2_PREFACE
            + _frame(_SETTINGS, 0, 0, settings)
            + _frame(_WINDOW_UPDATE, 0, 0, (_MAX_WINDOW - _DEFAULT_WINDOW).to_bytes(4, "big"))
        )

    def call(self, key: object, headers: bytes, body: bytes) -> None:
        """Starts a call with one request message; its replies go to on_message / on_end as `key`."""
        stream, self.next_id = self.next_id, self.next_id + 2
        self.calls[stream] = key
        self.transport.write(_frame(_HEADERS, _END_HEADERS, stream, headers))
        self.pending.append((stream, b"\x00" + len(body).to_bytes(4, "big") + body))
        self._flush()

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def _flush(self) -> None:
        out = []
        while self.pending and len(self.pending[0][1]) <= self.send_window:
            stream, data = self.pending.popleft()
            self.send_window -= len(data)
            out.append(_frame(_DATA, _END_STREAM, stream, data))
        if out:
            self.transport.write(b"".join(out))

    def _end(self, stream: int, reason: str, detail: str) -> None:
        key = self.calls.pop(stream, None)
        self.partial.pop(stream, None)
        if key is not None and not self.closing:
            self.on_end(key, reason, detail)

    def _messages(self, stream: int, payload: bytes, at: float) -> None:
        key = self.calls.get(stream)
        if key is None:
            return
        rest = self.partial.pop(stream, b"")
        data = rest + payload if rest else payload
        at_byte, size = 0, len(data)
        while size - at_byte >= 5:
            length = int.from_bytes(data[at_byte + 1 : at_byte + 5], "big")
            if size - at_byte - 5 < length:
                break
            self.on_message(key, data[at_byte + 5 : at_byte + 5 + length], at)
            at_byte += 5 + length
        if at_byte < size:
            self.partial[stream] = data[at_byte:]

    def data_received(self, data: bytes) -> None:
        at = time.time()
        buffer = self.buffer
        buffer += data
        position, size = 0, len(buffer)
        replies = []
        while size - position >= 9:
            length = int.from_bytes(buffer[position : position + 3], "big")
            if size - position < 9 + length:
                break
            kind, flags = buffer[position + 3], buffer[position + 4]
            stream = int.from_bytes(buffer[position + 5 : position + 9], "big") & 0x7FFFFFFF
            payload = bytes(buffer[position + 9 : position + 9 + length])
            position += 9 + length
            if kind == _DATA:
                if flags & _PADDED:
                    payload = payload[1 : len(payload) - payload[0]]
                self._messages(stream, payload, at)
                if flags & _END_STREAM:
                    self._end(stream, "ENDED", "the server ended the stream with DATA")
            elif kind == _HEADERS and flags & _END_STREAM:
                self._end(stream, "ENDED", "the server ended the call (trailers not decoded)")
            elif kind == _RST_STREAM:
                self._end(stream, f"RST_STREAM {int.from_bytes(payload[:4], 'big')}", "the server reset the stream")
            elif kind == _SETTINGS and not flags & _ACK:
                replies.append(_frame(_SETTINGS, _ACK, 0))
            elif kind == _PING and not flags & _ACK:
                replies.append(_frame(_PING, _ACK, 0, payload))
            elif kind == _WINDOW_UPDATE and stream == 0:
                self.send_window += int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
                self._flush()
            elif kind == _GOAWAY:
                last = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
                for refused in [s for s in self.calls if s > last]:
                    self._end(refused, "GOAWAY", "the server is going away")
        del buffer[:position]
        if replies:
            self.transport.write(b"".join(replies))

    def connection_lost(self, exc) -> None:
        for stream in list(self.calls):
            self._end(stream, "CONNECTION_LOST", str(exc or "the server closed the connection"))


async def connect(target: str, on_message: OnMessage, on_end: OnEnd, timeout_seconds: float) -> H2Connection:
    """A new connection to `target` (host:port)."""
    host, _, port = target.rpartition(":")
    loop = asyncio.get_running_loop()
    _, protocol = await asyncio.wait_for(
        loop.create_connection(lambda: H2Connection(on_message, on_end), host, int(port)), timeout_seconds
    )
    return protocol


class UnaryCaller:
    """Unary calls over a few connections, each awaited as a future: it resolves to the response
    message's bytes, or fails with grpc.aio.AioRpcError (code UNKNOWN: a trailers-only answer's code
    is not decoded) when the call ended without one."""

    def __init__(self) -> None:
        self.connections: list[H2Connection] = []
        self._waiting: dict[int, asyncio.Future] = {}
        self._replies: dict[int, bytes] = {}
        self._next = 0

    async def open(self, target: str, connections: int, timeout_seconds: float) -> None:
        for _ in range(connections):
            self.connections.append(await connect(target, self._message, self._end, timeout_seconds))

    def close(self) -> None:
        for connection in self.connections:
            connection.close()

    def call(self, connection: int, headers: bytes, body: bytes) -> asyncio.Future:
        key, self._next = self._next, self._next + 1
        future = asyncio.get_running_loop().create_future()
        self._waiting[key] = future
        self.connections[connection % len(self.connections)].call(key, headers, body)
        return future

    def _message(self, key, payload: bytes, at: float) -> None:
        self._replies[key] = payload

    def _end(self, key, reason: str, detail: str) -> None:
        future = self._waiting.pop(key, None)
        reply = self._replies.pop(key, None)
        if future is None or future.done():
            return
        if reason == "ENDED" and reply is not None:
            future.set_result(reply)
            return
        details = f"{reason}: {detail}" + ("" if reply is None else " (after a reply)")
        future.set_exception(
            grpc.aio.AioRpcError(grpc.StatusCode.UNKNOWN, grpc.aio.Metadata(), grpc.aio.Metadata(), details)
        )
