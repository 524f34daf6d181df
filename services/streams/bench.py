"""`fanbank bench fanout`: S watchers of one live stream, tips sent into it, and how fast each reaches each.

Wallet, Gifts (preset digis: 1-token tips, no fee leg) and two Streams processes run as their own OS
processes (`fanbank serve …`) on one database and one Redis. S subscribers (default 10,000; quick
2,000) hold `WatchStream` on one PUBLIC stream, split evenly over the two Streams processes; they
run in spawned load processes (several connections each, so clients never share a server's event
loop), through a minimal HTTP/2 client (a few µs of CPU per message; `--client grpc`: grpc.aio, which
costs the shared machine about as much per message as the server), opened at `--open-rate` a second.

Once every subscriber has had a first message (the stream's STARTED event, or a warm-up tip for
those that registered after it), T tips (default 20) go through Gifts' `SendTip` with the stream as
context, one every 100 ms, each from its own fan (Gifts limits tips per sender). Latency of (tip,
subscriber) = when the subscriber's load process read the tip's GiftEvent (matched by support_id)
− when `SendTip` returned to the sender (just after the tip's commit), both `time.time()`, one clock
on one machine; an event that overtakes its own answer counts 0 ms. `missing` = S × T − deliveries
of those tips: a subscriber dropped (SUBSCRIBER_TOO_SLOW or any error) counts everything it missed.

Checks after the run: Wallet's Audit clean, the creator's earnings equal the tips sent, and Gifts
holds one COMPLETED tip and one alert per tip. The last line is one JSON object:
`{"scenario":"fanout","subscribers":…,"events":…,"delivered":…,"missing":…,"p50_ms":…,"p99_ms":…,
"audit":"ok",…}` (plus CPU-seconds per process over the tip phase).

With FANBANK_DATABASE_URL and FANBANK_REDIS_URL unset the run starts the embedded stack under
<data_dir>/bench and works in a fresh database that is dropped at the end.
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import resource
import tempfile
import time
import uuid
from multiprocessing.connection import Connection
from pathlib import Path

import grpc

from services.gifts.bench import PRESET, _gifts_checks, _servers
from shared import auth, client, h2client, tipbench
from shared.bench import STARTUP_SECONDS, ServiceProcess, bounded, cpu_seconds, percentile
from shared.config import load_settings
from shared.db import make_engine, migrate
from shared.errors import reason_of
from shared.gen.fanbank.gifts.v1 import gifts_service_pb2 as gpb
from shared.gen.fanbank.streams.v1 import streams_service_pb2 as spb
from shared.gen.fanbank.streams.v1 import streams_service_pb2_grpc as streams_grpc
from shared.gen.fanbank.wallet.v1 import wallet_service_pb2_grpc as wallet_grpc
from shared.tipbench import TIP_TOKENS, creator_id, fan_id, recv

SEND_TIP_METHOD = "/fanbank.gifts.v1.GiftsService/SendTip"
WATCH_METHOD = "/fanbank.streams.v1.StreamsService/WatchStream"
IDENTITY = tipbench.IDENTITY  # the platform's backend, an internal caller
STREAMS_PROCESSES = 2
MAX_SUBSCRIBERS = 40_000
MAX_TIPS = 1_000
MAX_WARMUP_TIPS = 100
MAX_LOAD_PROCESSES = 8
MAX_CHANNELS = 64
DEADLINE_SECONDS = 10.0
# Headroom over the watchers a Streams process is given, for its own and the bench's other calls.
RPC_HEADROOM = 1_000


@dataclasses.dataclass(frozen=True, slots=True)
class WatchJob:
    targets: tuple[str, ...]  # the Streams processes; subscriber i watches through targets[i % len]
    stream_id: str
    key: bytes
    signature_ttl_seconds: int
    first: int  # this process's subscribers: [first, first + count) of all
    count: int
    channels_per_target: int
    client: str  # "raw" (a minimal HTTP/2 client) or "grpc" (grpc.aio)
    open_rate: float  # calls this process opens per second

    async def pace(self, local: int, started: float) -> None:
        """Calls go out at open_rate: a herd of thousands at once would queue in the servers past
        their database pool's timeout."""
        if local % 50 == 49:
            await asyncio.sleep(max(0.0, started + (local + 1) / self.open_rate - time.monotonic()))


@dataclasses.dataclass(slots=True)
class WatchResult:
    latencies_ms: list[float]
    delivered: int
    missing: int
    ended: dict[str, int]  # how subscribers' calls ended before the finish: status (reason) → count
    first_error: str
    cpu_seconds: float


def _raise_nofile() -> None:
    """Up to the hard limit: thousands of calls are few connections, but the servers' and clients'
    sockets, pipes and files should never be what refuses a subscriber."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65_536, hard))


def _reason(error: grpc.aio.AioRpcError) -> str:
    """The status name with the domain reason (`RESOURCE_EXHAUSTED SUBSCRIBER_TOO_SLOW`) when given."""
    return f"{error.code().name} {reason_of(error)}".strip()


class _Subscribers(abc.ABC):
    """One load process's subscribers: each notes only (message bytes, time) as a message arrives;
    parsing waits for the finish, so the time taken is the receipt and nothing else."""

    def __init__(self, job: WatchJob):
        self.job = job
        self.received: list[list[tuple[bytes, float]]] = [[] for _ in range(job.count)]
        self.ready = 0
        self.ended: dict[str, int] = {}
        self.done: set[int] = set()  # subscribers whose call ended
        self.first_error = ""

    def target_of(self, local: int) -> tuple[int, int]:
        """(Streams process, connection to it) of a subscriber: even split over both, then over channels."""
        index = self.job.first + local
        targets = len(self.job.targets)
        return index % targets, (index // targets) % self.job.channels_per_target

    def note(self, local: int, message: bytes, at: float) -> None:
        mine = self.received[local]
        if not mine:
            self.ready += 1
        mine.append((message, at))

    def end(self, local: int, reason: str, detail: str = "") -> None:
        if local in self.done:
            return
        self.done.add(local)
        self.ended[reason] = self.ended.get(reason, 0) + 1
        self.first_error = self.first_error or f"{reason}: {detail}"

    @abc.abstractmethod
    async def open(self) -> None:
        """Opens every subscriber's WatchStream (the two clients do it their own way)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Cancels what is still open."""

    def _tips(self, local: int, start: int, ids: set[str]) -> tuple[int, dict[str, float]]:
        """The measured tips a subscriber received from message `start` on: (next start, id → time)."""
        seen = {}
        messages = self.received[local]
        for message, at in messages[start:]:
            response = spb.WatchStreamResponse.FromString(message)
            if response.HasField("gift_event") and response.gift_event.support_id in ids:
                seen.setdefault(response.gift_event.support_id, at)
        return len(messages), seen

    async def finish(self, commits: dict[str, float], wait_seconds: float) -> WatchResult:
        """Waits until every live subscriber has every measured tip (or the wait ends), then ends
        the calls and answers the latencies."""
        ids = set(commits)
        positions = [0] * self.job.count
        got: list[dict[str, float]] = [{} for _ in range(self.job.count)]
        pending = set(range(self.job.count))
        deadline = time.monotonic() + wait_seconds
        while True:
            for local in list(pending):
                positions[local], seen = self._tips(local, positions[local], ids)
                for support_id, at in seen.items():
                    got[local].setdefault(support_id, at)
                if len(got[local]) == len(ids) or local in self.done:
                    pending.discard(local)
            if not pending or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.1)
        ended, first_error = dict(self.ended), self.first_error
        await self.close()
        latencies = sorted(
            max(0.0, (at - commits[support_id]) * 1000) for mine in got for support_id, at in mine.items()
        )
        delivered = len(latencies)
        return WatchResult(
            latencies_ms=latencies,
            delivered=delivered,
            missing=self.job.count * len(ids) - delivered,
            ended=ended,
            first_error=first_error,
            cpu_seconds=time.process_time(),
        )


class _GrpcSubscribers(_Subscribers):
    """Subscribers as grpc.aio calls (the client library; it costs the machine about as much CPU
    per message as the server does)."""

    def __init__(self, job: WatchJob):
        super().__init__(job)
        self.channels: list[list[grpc.aio.Channel]] = []
        self.tasks: list[asyncio.Task] = []

    async def open(self) -> None:
        job = self.job
        # A local subchannel pool: channels to one target are separate connections.
        options = [("grpc.use_local_subchannel_pool", 1), ("grpc.keepalive_time_ms", 30_000)]
        self.channels = [
            [grpc.aio.insecure_channel(target, options=options) for _ in range(job.channels_per_target)]
            for target in job.targets
        ]
        everyone = [c for per_target in self.channels for c in per_target]
        await asyncio.wait_for(asyncio.gather(*(c.channel_ready() for c in everyone)), STARTUP_SECONDS)
        metadata = tuple(auth.sign(job.key, IDENTITY, WATCH_METHOD, ttl_seconds=job.signature_ttl_seconds))
        request = spb.WatchStreamRequest(stream_id=job.stream_id)
        started = time.monotonic()
        for local in range(job.count):
            target, connection = self.target_of(local)
            # No deserializer: the message stays bytes until the finish.
            stub = self.channels[target][connection].unary_stream(
                WATCH_METHOD, request_serializer=spb.WatchStreamRequest.SerializeToString
            )
            self.tasks.append(asyncio.create_task(self._watch(local, stub(request, metadata=metadata))))
            await job.pace(local, started)

    async def _watch(self, local: int, call) -> None:
        try:
            async for message in call:
                self.note(local, message, time.time())
            self.end(local, "OK", "the server ended the feed")
        except asyncio.CancelledError:
            call.cancel()
            raise
        except grpc.aio.AioRpcError as error:
            self.end(local, f"{error.code().name} {reason_of(error)}".strip(), error.details() or "")

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for per_target in self.channels:
            for channel in per_target:
                await channel.close()


class _RawSubscribers(_Subscribers):
    """Subscribers over a minimal HTTP/2 client (shared/h2client.py): a few microseconds of CPU per
    message instead of the client library's tens, so on a shared machine the load generator takes
    little from the servers."""

    def __init__(self, job: WatchJob):
        super().__init__(job)
        self.connections: list[list[h2client.H2Connection]] = []

    async def open(self) -> None:
        job = self.job
        metadata = auth.sign(job.key, IDENTITY, WATCH_METHOD, ttl_seconds=job.signature_ttl_seconds)
        body = spb.WatchStreamRequest(stream_id=job.stream_id).SerializeToString()
        blocks = []
        for target in job.targets:
            blocks.append(h2client.header_block(WATCH_METHOD, target, metadata))
            per_target = [
                await h2client.connect(target, self.note, self.end, STARTUP_SECONDS)
                for _ in range(job.channels_per_target)
            ]
            self.connections.append(per_target)
        started = time.monotonic()
        for local in range(job.count):
            target, connection = self.target_of(local)
            self.connections[target][connection].call(local, blocks[target], body)
            await job.pace(local, started)

    async def close(self) -> None:
        for per_target in self.connections:
            for connection in per_target:
                connection.close()
        await asyncio.sleep(0)


async def _serve_commands(conn: Connection, job: WatchJob) -> None:
    subscribers = (_RawSubscribers if job.client == "raw" else _GrpcSubscribers)(job)
    loop = asyncio.get_running_loop()
    try:
        await subscribers.open()
        conn.send(("opened", job.count))
        while True:
            command = await loop.run_in_executor(None, conn.recv)
            if command[0] == "status":
                conn.send(("status", subscribers.ready, sum(subscribers.ended.values()), subscribers.first_error))
            elif command[0] == "finish":
                _, commits, wait_seconds = command
                conn.send(("result", await subscribers.finish(commits, wait_seconds)))
                return
    finally:
        await subscribers.close()


def _load_process(conn: Connection) -> None:
    """A spawned load process: holds its WatchJob's subscribers and answers the parent's commands."""
    _raise_nofile()
    conn.send("ready")
    job = conn.recv()
    if job is None:
        return
    try:
        asyncio.run(_serve_commands(conn, job))
    except Exception as exc:  # the parent reports it
        with contextlib.suppress(OSError):
            conn.send(("failed", f"{type(exc).__name__}: {exc}"))


class LoadProcesses(tipbench.LoadProcesses):
    """The shared load processes, spoken to with this scenario's own messages (ask / answer)."""

    def __init__(self, count: int):
        super().__init__(count, _load_process)

    async def ask(self, message, seconds: float) -> list:
        for _, conn in self.links:
            conn.send(message)
        return [await self.answer(conn, seconds) for _, conn in self.links]

    @staticmethod
    async def answer(conn: Connection, seconds: float):
        answer = await recv(conn, seconds)
        if isinstance(answer, tuple) and answer[0] == "failed":
            raise RuntimeError(f"a load process failed: {answer[1]}")
        return answer


class Run:
    def __init__(self, opts, database_url: str, redis_url: str):
        self.opts = opts
        self.database_url = database_url
        self.redis_url = redis_url
        self.settings = load_settings()
        self.run_id = uuid.uuid4().hex[:10]
        self.started = time.monotonic()
        self.processes: list[ServiceProcess] = []
        self.sent = 0  # tips acknowledged, warm-up included (the money checks count them all)

    def say(self, line: str) -> None:
        print(f"[{time.monotonic() - self.started:5.1f} s] {line}", flush=True)

    async def _start(self, log_dir: Path) -> tuple[ServiceProcess, ServiceProcess, list[ServiceProcess]]:
        opts = self.opts
        wallet = ServiceProcess("wallet", self.database_url, opts.pool, log_dir, FANBANK_PRESET=PRESET)
        self.processes.append(wallet)
        gifts = ServiceProcess(
            "gifts",
            self.database_url,
            opts.pool,
            log_dir,
            FANBANK_WALLET_ADDR=wallet.target,
            FANBANK_REDIS_URL=self.redis_url,
            FANBANK_PRESET=PRESET,
        )
        self.processes.append(gifts)
        per_process = -(-opts.subscribers // STREAMS_PROCESSES)
        limits = {
            "FANBANK_STREAMS_MAX_WATCHERS": str(max(self.settings.streams_max_watchers, per_process)),
            "FANBANK_GRPC_MAX_CONCURRENT_RPCS": str(
                max(self.settings.grpc_max_concurrent_rpcs, per_process + RPC_HEADROOM)
            ),
            "FANBANK_GRPC_MAX_PENDING_REQUESTS": str(
                max(self.settings.grpc_max_pending_requests, per_process + RPC_HEADROOM)
            ),
        }
        streams = []
        for _ in range(STREAMS_PROCESSES):
            process = ServiceProcess(
                "streams",
                self.database_url,
                opts.pool,
                log_dir,
                FANBANK_WALLET_ADDR=wallet.target,
                FANBANK_REDIS_URL=self.redis_url,
                FANBANK_PRESET=PRESET,
                **limits,
            )
            self.processes.append(process)
            streams.append(process)
        for process in self.processes:
            await process.serving()
        self.say(
            f"wallet {wallet.pid}, gifts {gifts.pid}, streams {', '.join(str(s.pid) for s in streams)}"
            f" ({', '.join(s.target for s in streams)})"
        )
        return wallet, gifts, streams

    def _tip(self, stream_id: str, label: str, fan: int) -> gpb.SendTipRequest:
        return gpb.SendTipRequest(
            request_id=f"bench-{self.run_id}-{label}",
            sender_id=fan_id(self.run_id, fan),
            creator_id=creator_id(self.run_id),
            amount_tokens=TIP_TOKENS,
            sender_display_name="Bench fan",
            context_type=gpb.CONTEXT_TYPE_STREAM,
            context_id=stream_id,
        )

    async def _send(self, send_tip, request: gpb.SendTipRequest) -> tuple[str, float]:
        reply = await send_tip(request, timeout=DEADLINE_SECONDS)
        at = time.time()
        if reply.tip.status != gpb.TIP_STATUS_COMPLETED:
            raise RuntimeError(f"a tip did not complete: {reply.tip}")
        self.sent += 1
        return reply.tip.tip_id, at

    async def _all_ready(self, loads: LoadProcesses, streams_stub, send_tip, stream_id: str) -> None:
        """Every subscriber registered: it has had a first message. STARTED reaches those that were
        registered when the stream started; a warm-up tip, once a second, the rest."""
        opts = self.opts
        await streams_stub.StartStream(
            spb.StartStreamRequest(request_id=f"bench-{self.run_id}-start", stream_id=stream_id)
        )
        deadline = time.monotonic() + STARTUP_SECONDS + opts.subscribers / opts.open_rate
        warmups, next_warmup = 0, time.monotonic() + 1.0
        next_report = time.monotonic() + 5.0
        while True:
            answers = await loads.ask(("status",), STARTUP_SECONDS)
            ready = sum(a[1] for a in answers)
            ended = sum(a[2] for a in answers)
            if ended:
                raise RuntimeError(f"{ended} subscribers ended before the tips: {[a[3] for a in answers if a[3]]}")
            if ready == opts.subscribers:
                self.say(f"all {ready} subscribers registered ({warmups} warm-up tip(s))")
                return
            if time.monotonic() >= deadline:
                raise RuntimeError(f"only {ready} of {opts.subscribers} subscribers registered")
            if time.monotonic() >= next_report:
                self.say(f"{ready} of {opts.subscribers} subscribers registered")
                next_report = time.monotonic() + 5.0
            if time.monotonic() >= next_warmup and warmups < MAX_WARMUP_TIPS:
                await self._send(send_tip, self._tip(stream_id, f"warmup-{warmups}", opts.tips + warmups))
                warmups += 1
                next_warmup = time.monotonic() + 1.0
            await asyncio.sleep(0.25)

    async def _tips(self, send_tip, stream_id: str) -> dict[str, float]:
        """T tips on a fixed schedule (one every interval, each its own call, so a slow answer does
        not delay the next), each from its own fan."""
        opts = self.opts
        start = time.monotonic() + 0.1

        async def one(seq: int) -> tuple[str, float]:
            await asyncio.sleep(max(0.0, start + seq * opts.interval - time.monotonic()))
            return await self._send(send_tip, self._tip(stream_id, f"tip-{seq}", seq))

        return dict(await asyncio.gather(*(one(seq) for seq in range(opts.tips))))

    async def run(self) -> dict:
        opts = self.opts
        engine = make_engine(self.database_url, 2)
        try:
            await migrate(engine)
        finally:
            await engine.dispose()
        self.say(
            f"fanout: {opts.subscribers} subscribers over {STREAMS_PROCESSES} Streams processes from "
            f"{opts.load_processes} load process(es) ({opts.channels} channel(s) each per Streams process); "
            f"{opts.tips} tips, one every {opts.interval:g} s; {os.cpu_count()} CPUs"
        )
        _raise_nofile()  # inherited by the service processes started below
        loads = LoadProcesses(opts.load_processes)
        problems: list[str] = []
        with tempfile.TemporaryDirectory(prefix="fanbank-bench-") as log_dir:
            try:
                for _, conn in loads.links:
                    if await loads.answer(conn, STARTUP_SECONDS) != "ready":
                        raise RuntimeError("a load process did not start")
                wallet, gifts, streams = await self._start(Path(log_dir))
                async with (
                    client.channel(self.settings, wallet.target, identity=IDENTITY) as wallet_channel,
                    client.channel(self.settings, gifts.target, identity=IDENTITY) as gifts_channel,
                    client.channel(self.settings, streams[0].target, identity=IDENTITY) as streams_channel,
                ):
                    wallet_stub = wallet_grpc.WalletServiceStub(wallet_channel)
                    await tipbench.fund(wallet_stub, self.run_id, opts.tips + MAX_WARMUP_TIPS)
                    streams_stub = streams_grpc.StreamsServiceStub(streams_channel)
                    created = await streams_stub.CreateStream(
                        spb.CreateStreamRequest(
                            request_id=f"bench-{self.run_id}-stream",
                            creator_id=creator_id(self.run_id),
                            title="Fan-out bench",
                            kind=spb.STREAM_KIND_PUBLIC,
                        )
                    )
                    stream_id = created.stream.stream_id
                    send_tip = gifts_channel.unary_unary(
                        SEND_TIP_METHOD,
                        request_serializer=gpb.SendTipRequest.SerializeToString,
                        response_deserializer=gpb.SendTipResponse.FromString,
                    )
                    self.say(f"opening {opts.subscribers} WatchStream calls on stream {stream_id}")
                    per_process, extra = divmod(opts.subscribers, opts.load_processes)
                    first = 0
                    for worker, (_, conn) in enumerate(loads.links):
                        count = per_process + (1 if worker < extra else 0)
                        conn.send(
                            WatchJob(
                                targets=tuple(s.target for s in streams),
                                stream_id=stream_id,
                                key=self.settings.key_for(IDENTITY),
                                signature_ttl_seconds=max(self.settings.signature_ttl_seconds, 3600),
                                first=first,
                                count=count,
                                channels_per_target=opts.channels,
                                client=opts.client,
                                open_rate=opts.open_rate / opts.load_processes,
                            )
                        )
                        first += count
                    for _, conn in loads.links:
                        await loads.answer(conn, STARTUP_SECONDS + opts.subscribers / opts.open_rate)
                    await self._all_ready(loads, streams_stub, send_tip, stream_id)
                    servers = {"wallet": wallet.pid, "gifts": gifts.pid}
                    servers.update({f"streams-{i}": s.pid for i, s in enumerate(streams)})
                    watched = {**servers, **{f"load-{i}": pid for i, pid in enumerate(loads.pids)}}
                    cpu_before = {name: cpu_seconds([pid]) for name, pid in watched.items()}
                    phase_started = time.monotonic()
                    self.say(f"sending {opts.tips} tips, one every {opts.interval:g} s")
                    commits = await self._tips(send_tip, stream_id)
                    answers = await loads.ask(("finish", commits, opts.wait), opts.wait + STARTUP_SECONDS)
                    phase_seconds = time.monotonic() - phase_started
                    cpu = {name: round(cpu_seconds([pid]) - cpu_before[name], 2) for name, pid in watched.items()}
                    problems += await tipbench.wallet_checks(wallet_stub, self.run_id, self.sent)
                    check_engine = make_engine(self.database_url, 1)
                    try:
                        problems += await _gifts_checks(check_engine, self.run_id, self.sent)
                    finally:
                        await check_engine.dispose()
            except BaseException:
                for process in self.processes:
                    print(f"{process.name} output (last lines):\n{process.log_tail()}", flush=True)
                raise
            finally:
                loads.close()
                for process in reversed(self.processes):
                    process.stop()
        results: list[WatchResult] = [a[1] for a in answers]
        latencies = sorted(v for r in results for v in r.latencies_ms)
        delivered = sum(r.delivered for r in results)
        missing = opts.subscribers * opts.tips - delivered
        ended: dict[str, int] = {}
        for r in results:
            for reason, n in r.ended.items():
                ended[reason] = ended.get(reason, 0) + n
        result = {
            "scenario": "fanout",
            "subscribers": opts.subscribers,
            "events": opts.tips,
            "delivered": delivered,
            "missing": missing,
            "p50_ms": round(percentile(latencies, 0.50), 1),
            "p99_ms": round(percentile(latencies, 0.99), 1),
            "audit": "ok" if not problems else "failed",
            "max_ms": round(latencies[-1], 1) if latencies else None,
            "problems": problems,
            "subscribers_ended": ended,
            "first_error": next((r.first_error for r in results if r.first_error), ""),
            "interval_s": opts.interval,
            "streams_processes": STREAMS_PROCESSES,
            "load_processes": opts.load_processes,
            "channels": opts.channels,
            "phase_seconds": round(phase_seconds, 2),
            "cpu_seconds": cpu,
            "cpus": os.cpu_count(),
        }
        self.say(
            f"delivered {delivered} of {opts.subscribers * opts.tips}, missing {missing}; p50 {result['p50_ms']} ms,"
            f" p99 {result['p99_ms']} ms, max {result['max_ms']} ms; CPU-s over {phase_seconds:.1f} s: {cpu}"
        )
        return result


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fanbank bench fanout", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 subscribers (the whole run in under a minute)")
    parser.add_argument("--subscribers", type=bounded(1, MAX_SUBSCRIBERS), help="watchers (10,000; quick 2,000)")
    parser.add_argument("--tips", type=bounded(1, MAX_TIPS), default=20, help="tips sent into the stream (20)")
    parser.add_argument("--interval", type=bounded(0.0, 10.0, float), default=0.1, help="seconds between tips (0.1)")
    parser.add_argument(
        "--load-processes", type=bounded(1, MAX_LOAD_PROCESSES), default=2, help="load generator processes (2)"
    )
    parser.add_argument(
        "--channels", type=bounded(1, MAX_CHANNELS), default=4, help="channels per load process and Streams process (4)"
    )
    parser.add_argument(
        "--client",
        choices=("raw", "grpc"),
        default="raw",
        help="subscribers' client: a minimal HTTP/2 one (raw, the default) or grpc.aio",
    )
    parser.add_argument(
        "--open-rate",
        type=bounded(10.0, 100_000.0, float),
        default=400.0,
        help="WatchStream calls opened per second, all load processes together (400)",
    )
    parser.add_argument("--pool", type=bounded(1, 200), default=4, help="database pool per service process (4)")
    parser.add_argument(
        "--wait", type=bounded(1.0, 600.0, float), default=30.0, help="seconds to wait for the last deliveries (30)"
    )
    opts = parser.parse_args(argv)
    if opts.subscribers is None:
        opts.subscribers = 2_000 if opts.quick else 10_000
    return opts


def main(argv: list[str]) -> int:
    opts = parse_args(argv)
    with _servers(load_settings()) as (database_url, redis_url):
        result = asyncio.run(Run(opts, database_url, redis_url).run())
    print(json.dumps(result), flush=True)
    return 0 if result["missing"] == 0 and result["audit"] == "ok" else 1
