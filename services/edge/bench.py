"""`fanbank bench edge`: what the REST edge costs on top of gRPC, and how its SSE fan-out keeps up.

Wallet, Gifts (preset digis: 1-token tips, no fee leg) and the edge run as their own OS processes
(`fanbank serve …`), against one database and one Redis, the edge with its rate limits on (set high
enough not to refuse the load: their Redis round trip is part of the cost measured).

1. The same tip, two ways, one after the other with the same clients, concurrency and duration:
   `POST /v1/tips` with each fan's bearer JWT through the edge (HTTP/1.1 keep-alive connections),
   and `SendTip` straight to Gifts over gRPC as the platform's backend. Cost = server CPU-seconds
   per acknowledged tip: the edge's, Gifts' and Wallet's own CPU times over the measured window
   (psutil), never the load generator's. `rest_over_grpc_cost` = REST cost / gRPC cost.
2. N SSE clients (default 2,000) on one creator's `GET /v1/creators/{id}/alerts:watch`, then a
   paced series of tips to that creator; each client notes when each alert arrived. Latency = arrival
   − the moment the tip's sender had its answer (just after the tip's commit; one clock, this
   process); `sse_missing` = alerts some client never received.

The load generator is a small asyncio HTTP/1.1 client in this process (httpx would spend more CPU
than the edge). Last line: one JSON object
`{"scenario":"edge","rest_tips_per_s":…,"grpc_tips_per_s":…,"rest_over_grpc_cost":…,"sse_clients":…,
"sse_p99_ms":…,"sse_missing":…}`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import tempfile
import time
import uuid
from pathlib import Path

import grpc

from services.edge.token import mint
from services.gifts.bench import PRESET, _servers
from shared import client, tipbench
from shared.bench import STARTUP_SECONDS, ServiceProcess, bounded, cpu_seconds, percentile
from shared.config import load_settings
from shared.db import make_engine, migrate
from shared.gen.fanbank.gifts.v1 import gifts_service_pb2 as gpb
from shared.gen.fanbank.wallet.v1 import wallet_service_pb2_grpc as wallet_grpc
from shared.tipbench import TIP_TOKENS, creator_id, fan_id, fan_of

SEND_TIP_METHOD = "/fanbank.gifts.v1.GiftsService/SendTip"
IDENTITY = tipbench.IDENTITY  # the platform's backend
DEADLINE_SECONDS = 10.0
MAX_CLIENTS = 1024
MAX_SSE_CLIENTS = 10_000
MAX_SSE_TIPS = 1000
MAX_SECONDS = 600
MAX_RESPONSE_BYTES = 1 << 20
# High enough never to refuse the benchmark's own load: the buckets are still taken per request.
ROOMY_LIMITS = {
    "FANBANK_EDGE_IP_RATE_PER_SECOND": "1000000",
    "FANBANK_EDGE_IP_BURST": "10000000",
    "FANBANK_EDGE_USER_RATE_PER_SECOND": "1000000",
    "FANBANK_EDGE_USER_BURST": "10000000",
}


class HttpConnection:
    """One HTTP/1.1 keep-alive connection: a request, then its whole response, in turn."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def post_json(self, path: str, body: bytes, headers: str) -> tuple[int, bytes]:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{headers}\r\n"
        )
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        status = int(status_line.split(b" ", 2)[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length > MAX_RESPONSE_BYTES:
            raise RuntimeError(f"a {length}-byte response")
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()


class Tally:
    def __init__(self):
        self.acknowledged = 0
        self.in_window = 0
        self.errors: dict[str, int] = {}
        self.first_error = ""

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1
        self.first_error = self.first_error or f"{kind}: {detail[:300]}"


def _tip_fields(run_id: str, phase: str, client_index: int, seq: int, clients: int, fans: int) -> dict:
    return {
        "request_id": f"bench-{run_id}-{phase}-{client_index}-{seq}",
        "sender_id": fan_id(run_id, fan_of(client_index, seq, clients, fans)),
        "creator_id": creator_id(run_id),
        "amount_tokens": TIP_TOKENS,
        "sender_display_name": "Bench fan",
        "context_type": gpb.CONTEXT_TYPE_PROFILE,
        "context_id": creator_id(run_id),
    }


def _rest_body(fields: dict) -> bytes:
    return json.dumps(
        {
            "requestId": fields["request_id"],
            "senderId": fields["sender_id"],
            "creatorId": fields["creator_id"],
            "amountTokens": str(fields["amount_tokens"]),
            "senderDisplayName": fields["sender_display_name"],
            "contextType": "CONTEXT_TYPE_PROFILE",
            "contextId": fields["context_id"],
        },
        separators=(",", ":"),
    ).encode()


class Run:
    def __init__(self, opts, database_url: str, redis_url: str):
        self.opts = opts
        self.database_url = database_url
        self.redis_url = redis_url
        self.settings = load_settings()
        self.run_id = uuid.uuid4().hex[:10]
        self.started = time.monotonic()
        self.processes: list[ServiceProcess] = []

    def say(self, line: str) -> None:
        print(f"[{time.monotonic() - self.started:5.1f} s] {line}", flush=True)

    async def _start(self, log_dir: Path) -> tuple[ServiceProcess, ServiceProcess, ServiceProcess]:
        pool = str(self.opts.pool)
        wallet = ServiceProcess("wallet", self.database_url, self.opts.pool, log_dir)
        self.processes.append(wallet)
        await wallet.serving()
        gifts = ServiceProcess(
            "gifts",
            self.database_url,
            self.opts.pool,
            log_dir,
            FANBANK_WALLET_ADDR=wallet.target,
            FANBANK_REDIS_URL=self.redis_url,
            FANBANK_PRESET=PRESET,
            FANBANK_DB_POOL_SIZE=pool,
        )
        self.processes.append(gifts)
        await gifts.serving()
        edge = ServiceProcess(
            "edge",
            self.database_url,
            self.opts.pool,
            log_dir,
            FANBANK_WALLET_ADDR=wallet.target,
            FANBANK_GIFTS_ADDR=gifts.target,
            FANBANK_REDIS_URL=self.redis_url,
            FANBANK_PRESET=PRESET,
            **ROOMY_LIMITS,
        )
        self.processes.append(edge)
        await _wait_http(edge)
        self.say(f"wallet {wallet.pid}, gifts {gifts.pid}, edge {edge.pid} (http://{edge.target})")
        return wallet, gifts, edge

    async def _phase(self, name: str, one_client, servers: dict[str, int]) -> dict:
        """Runs `one_client(index, window, tally)` for every client; CPU of `servers` (name → pid)
        over the window, in total and per process."""
        opts = self.opts
        tally = Tally()
        start = time.monotonic() + 0.5
        window = (start + opts.warmup, start + opts.warmup + opts.seconds)
        cpu = {}

        async def watch_cpu() -> None:
            await asyncio.sleep(max(0.0, window[0] - time.monotonic()))
            before = {server: cpu_seconds([pid]) for server, pid in servers.items()}
            await asyncio.sleep(max(0.0, window[1] - time.monotonic()))
            cpu.update({server: cpu_seconds([pid]) - before[server] for server, pid in servers.items()})
            cpu["seconds"] = sum(cpu[server] for server in servers)

        await asyncio.sleep(max(0.0, start - time.monotonic()))
        await asyncio.gather(watch_cpu(), *(one_client(i, window, tally) for i in range(opts.clients)))
        tips = tally.in_window
        result = {
            "tips_per_s": round(tips / opts.seconds, 1),
            "cpu_seconds_per_tip": round(cpu["seconds"] / tips, 6) if tips else None,
            "cpu_ms_per_tip_by_process": {s: round(cpu[s] / tips * 1000, 3) for s in servers} if tips else None,
            "server_cores": round(cpu["seconds"] / opts.seconds, 2),
            "acknowledged": tally.acknowledged,
            "errors": tally.errors,
            "first_error": tally.first_error,
        }
        self.say(
            f"{name}: {result['tips_per_s']} tips/s, {result['server_cores']} server cores, "
            f"{(result['cpu_seconds_per_tip'] or 0) * 1000:.3f} CPU-ms per tip"
            f" ({', '.join(f'{s} {v}' for s, v in (result['cpu_ms_per_tip_by_process'] or {}).items())}),"
            f" errors {tally.errors or 'none'}"
        )
        return result

    async def rest(self, edge: ServiceProcess, servers: dict[str, int]) -> dict:
        opts = self.opts
        host, _, port = edge.target.rpartition(":")
        tokens = {
            fan_id(self.run_id, i): mint(self.settings, fan_id(self.run_id, i), (), 3600) for i in range(opts.fans)
        }

        async def one_client(index: int, window: tuple[float, float], tally: Tally) -> None:
            connection = HttpConnection(host, int(port))
            await connection.open()
            try:
                seq = 0
                while (started := time.monotonic()) < window[1]:
                    fields = _tip_fields(self.run_id, "rest", index, seq, opts.clients, opts.fans)
                    seq += 1
                    headers = f"Authorization: Bearer {tokens[fields['sender_id']]}\r\n"
                    status, body = await connection.post_json("/v1/tips", _rest_body(fields), headers)
                    if status != 200:
                        tally.error(f"HTTP_{status}", body.decode(errors="replace"))
                        continue
                    tally.acknowledged += 1
                    tally.in_window += window[0] <= started and time.monotonic() <= window[1]
            finally:
                await connection.close()

        return await self._phase("REST through the edge", one_client, servers)

    async def grpc_direct(self, gifts: ServiceProcess, servers: dict[str, int]) -> dict:
        opts = self.opts
        channel = grpc.aio.insecure_channel(gifts.target)
        stub = channel.unary_unary(
            SEND_TIP_METHOD,
            request_serializer=gpb.SendTipRequest.SerializeToString,
            response_deserializer=gpb.SendTipResponse.FromString,
        )
        signature = tipbench.Signature(
            self.settings.key_for(IDENTITY), SEND_TIP_METHOD, self.settings.signature_ttl_seconds
        )

        async def one_client(index: int, window: tuple[float, float], tally: Tally) -> None:
            seq = 0
            while (started := time.monotonic()) < window[1]:
                request = gpb.SendTipRequest(**_tip_fields(self.run_id, "grpc", index, seq, opts.clients, opts.fans))
                seq += 1
                try:
                    await stub(request, metadata=signature.current(), timeout=DEADLINE_SECONDS)
                except grpc.aio.AioRpcError as error:
                    tally.error(error.code().name, error.details() or "")
                    continue
                tally.acknowledged += 1
                tally.in_window += window[0] <= started and time.monotonic() <= window[1]

        try:
            return await self._phase("gRPC straight to Gifts", one_client, servers)
        finally:
            await channel.close()

    async def sse(self, edge: ServiceProcess, gifts: ServiceProcess) -> dict:
        opts = self.opts
        host, _, port = edge.target.rpartition(":")
        creator = f"bench-{self.run_id}-sse-creator"
        token = mint(self.settings, creator, ("creator",), 3600)
        request = (
            f"GET /v1/creators/{creator}/alerts:watch HTTP/1.1\r\nHost: {edge.target}\r\n"
            f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
        ).encode()
        received: list[dict[str, float]] = [{} for _ in range(opts.sse_clients)]
        committed: dict[str, float] = {}  # tip id → when its sender had the answer (just after commit)
        connected = 0
        all_connected = asyncio.Event()
        failures: list[str] = []

        async def listen(index: int) -> None:
            nonlocal connected
            reader, writer = await asyncio.open_connection(host, int(port), limit=MAX_RESPONSE_BYTES)
            try:
                writer.write(request)
                status_line = await reader.readline()
                if b" 200 " not in status_line:
                    failures.append(status_line.decode(errors="replace").strip())
                    return
                while await reader.readline() not in (b"\r\n", b""):
                    pass
                connected += 1
                if connected == opts.sse_clients:
                    all_connected.set()
                mine = received[index]
                while len(mine) < opts.sse_tips:
                    line = await reader.readline()
                    if not line:
                        return
                    # Chunked transfer: an event's data line is one line of its own inside a chunk.
                    if line.startswith(b"data: "):
                        mine.setdefault(json.loads(line[6:])["event"]["supportId"], time.monotonic())
            finally:
                writer.close()

        self.say(f"SSE: opening {opts.sse_clients} clients on one creator's alerts")
        listeners = [asyncio.ensure_future(listen(i)) for i in range(opts.sse_clients)]
        try:
            await asyncio.wait_for(all_connected.wait(), STARTUP_SECONDS)
        except TimeoutError:
            raise RuntimeError(f"only {connected} SSE clients connected; refused: {failures[:3]}") from None
        self.say(f"SSE: {connected} connected; sending {opts.sse_tips} tips, one every {opts.sse_interval:g} s")
        async with client.channel(self.settings, gifts.target, identity=IDENTITY) as channel:
            stub = channel.unary_unary(
                SEND_TIP_METHOD,
                request_serializer=gpb.SendTipRequest.SerializeToString,
                response_deserializer=gpb.SendTipResponse.FromString,
            )
            for seq in range(opts.sse_tips):
                fields = _tip_fields(self.run_id, "sse", 0, seq, 1, opts.fans)
                fields["creator_id"] = creator
                reply = await stub(gpb.SendTipRequest(**fields))
                committed[reply.tip.tip_id] = time.monotonic()
                if reply.tip.status != gpb.TIP_STATUS_COMPLETED:
                    raise RuntimeError(f"an SSE tip did not complete: {reply.tip}")
                await asyncio.sleep(opts.sse_interval)
        done, pending = await asyncio.wait(listeners, timeout=DEADLINE_SECONDS)
        for task in pending:
            task.cancel()
        for task in done:
            if task.exception() is not None:
                failures.append(repr(task.exception()))
        # An alert may overtake the answer to its own tip (both leave after the commit): that is 0 ms.
        latencies = sorted(
            max(0.0, (arrived - committed[tip]) * 1000)
            for mine in received
            for tip, arrived in mine.items()
            if tip in committed
        )
        missing = opts.sse_clients * opts.sse_tips - len(latencies)
        result = {
            "sse_clients": connected,
            "sse_p50_ms": round(percentile(latencies, 0.50), 1),
            "sse_p99_ms": round(percentile(latencies, 0.99), 1),
            "sse_max_ms": round(latencies[-1], 1) if latencies else None,
            "sse_missing": missing,
            "sse_failures": failures[:3],
        }
        self.say(
            f"SSE: p50 {result['sse_p50_ms']} ms, p99 {result['sse_p99_ms']} ms, missing {missing}"
            + (f", failures {failures[:3]}" if failures else "")
        )
        return result

    async def run(self) -> dict:
        opts = self.opts
        engine = make_engine(self.database_url, 2)
        try:
            await migrate(engine)
        finally:
            await engine.dispose()
        self.say(
            f"edge: {opts.clients} clients, warm-up {opts.warmup:g} s + {opts.seconds:g} s per phase, "
            f"{opts.fans} fans, {opts.sse_clients} SSE clients; {os.cpu_count()} CPUs"
        )
        with tempfile.TemporaryDirectory(prefix="fanbank-bench-") as log_dir:
            try:
                wallet, gifts, edge = await self._start(Path(log_dir))
                async with client.channel(self.settings, wallet.target, identity=IDENTITY) as channel:
                    await tipbench.fund(wallet_grpc.WalletServiceStub(channel), self.run_id, opts.fans)
                rest = await self.rest(edge, {"edge": edge.pid, "gifts": gifts.pid, "wallet": wallet.pid})
                direct = await self.grpc_direct(gifts, {"gifts": gifts.pid, "wallet": wallet.pid})
                sse = await self.sse(edge, gifts)
            except BaseException:
                for process in self.processes:
                    print(f"{process.name} output (last lines):\n{process.log_tail()}", flush=True)
                raise
            finally:
                for process in reversed(self.processes):
                    process.stop()
        rest_cost, grpc_cost = rest["cpu_seconds_per_tip"], direct["cpu_seconds_per_tip"]
        return {
            "scenario": "edge",
            "rest_tips_per_s": rest["tips_per_s"],
            "grpc_tips_per_s": direct["tips_per_s"],
            "rest_over_grpc_cost": round(rest_cost / grpc_cost, 2) if rest_cost and grpc_cost else None,
            "sse_clients": sse["sse_clients"],
            "sse_p99_ms": sse["sse_p99_ms"],
            "sse_missing": sse["sse_missing"],
            "rest_cpu_ms_per_tip": round(rest_cost * 1000, 3) if rest_cost else None,
            "grpc_cpu_ms_per_tip": round(grpc_cost * 1000, 3) if grpc_cost else None,
            "rest_cpu_ms_per_tip_by_process": rest["cpu_ms_per_tip_by_process"],
            "grpc_cpu_ms_per_tip_by_process": direct["cpu_ms_per_tip_by_process"],
            "rest_server_cores": rest["server_cores"],
            "grpc_server_cores": direct["server_cores"],
            "rest_errors": rest["errors"],
            "grpc_errors": direct["errors"],
            "sse_p50_ms": sse["sse_p50_ms"],
            "sse_max_ms": sse["sse_max_ms"],
            "sse_failures": sse["sse_failures"],
            "clients": opts.clients,
            "seconds": opts.seconds,
            "warmup_seconds": opts.warmup,
            "sse_tips": opts.sse_tips,
            "cpus": os.cpu_count(),
        }


async def _wait_http(process: ServiceProcess) -> None:
    """The edge answers /healthz (it is HTTP, so the gRPC health probe does not apply)."""
    host, _, port = process.target.rpartition(":")
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.process.poll() is not None:
            raise RuntimeError(f"the edge exited with {process.process.returncode}:\n{process.log_tail()}")
        with contextlib.suppress(OSError, ValueError, IndexError):
            connection = HttpConnection(host, int(port))
            await connection.open()
            try:
                connection.writer.write(f"GET /healthz HTTP/1.1\r\nHost: {process.target}\r\n\r\n".encode())
                if b" 200 " in await asyncio.wait_for(connection.reader.readline(), 1):
                    return
            finally:
                await connection.close()
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the edge was not serving after {STARTUP_SECONDS:.0f} s:\n{process.log_tail()}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fanbank bench edge", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short phases and 500 SSE clients (under a minute)")
    parser.add_argument("--clients", type=bounded(1, MAX_CLIENTS), default=32, help="concurrent tip clients (32)")
    parser.add_argument("--pool", type=bounded(1, 200), default=8, help="database pool per service (8)")
    parser.add_argument("--fans", type=bounded(1, 100_000), default=2000, help="distinct tipping fans (2000)")
    parser.add_argument("--seconds", type=bounded(0.5, MAX_SECONDS, float), help="measured seconds per tip phase")
    parser.add_argument("--warmup", type=bounded(0, MAX_SECONDS, float), help="warm-up seconds before each")
    parser.add_argument("--sse-clients", type=bounded(1, MAX_SSE_CLIENTS), help="SSE clients (2000; quick 500)")
    parser.add_argument("--sse-tips", type=bounded(1, MAX_SSE_TIPS), default=20, help="alerts each client awaits (20)")
    parser.add_argument("--sse-interval", type=bounded(0.0, 10.0, float), default=0.2, help="seconds between them")
    opts = parser.parse_args(argv)
    if opts.seconds is None:
        opts.seconds = 5.0 if opts.quick else 20.0
    if opts.warmup is None:
        opts.warmup = 1.0 if opts.quick else 3.0
    if opts.sse_clients is None:
        opts.sse_clients = 500 if opts.quick else 2000
    return opts


def main(argv: list[str]) -> int:
    opts = parse_args(argv)
    with _servers(load_settings()) as (database_url, redis_url):
        result = asyncio.run(Run(opts, database_url, redis_url).run())
    print(json.dumps(result), flush=True)
    ok = result["sse_missing"] == 0 and not result["rest_errors"] and not result["grpc_errors"]
    return 0 if ok else 1
