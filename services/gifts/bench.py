"""`fanbank bench tips`: fans tip one hot creator through Gifts' `SendTip` (Gifts → Wallet).

One run, same machine, same database and settings, same clients, concurrency and duration:

- the baseline: the seeds' design, one row-locked transaction per tip on its own tables (both rows
  locked in id order, two UPDATEs, one tip row INSERT), from `services.wallet.bench`;
- Fanbank: N concurrent clients (default 256: many fans tipping one creator at once; the baseline
  gets the same N) in separate load processes, one tip per `SendTip` RPC, against a
  Gifts OS process (preset digis: a 1-token tip, no fee leg) that pays through a Wallet OS process:
  rate limit, intent, one Wallet batch per group of tips, outcome, leaderboards and two live events
  per tip, exactly as in production.

Checks after the run: Wallet's Audit clean; the creator's earnings equal the acknowledged tips;
Gifts holds exactly that many COMPLETED tips for the creator, none PENDING, and one alert per tip
in its outbox. The last line is one JSON object:
`{"scenario":"tips","tips_per_s":…,"baseline_per_s":…,"ratio_vs_baseline":…,"p99_ms":…,"audit":"ok",…}`.

With FANBANK_DATABASE_URL and FANBANK_REDIS_URL unset the run starts the embedded stack under
<data_dir>/bench and works in a fresh database that is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import tempfile
import time
import uuid
from multiprocessing.connection import Connection
from pathlib import Path

import grpc
import psycopg
from sqlalchemy import text

from shared import client, h2client, tipbench
from shared.bench import STARTUP_SECONDS, ServiceProcess, bounded, cpu_seconds, plain_url, postgres_root, with_database
from shared.config import load_settings
from shared.db import make_engine, migrate
from shared.gen.fanbank.gifts.v1 import gifts_service_pb2 as gpb
from shared.gen.fanbank.wallet.v1 import wallet_service_pb2_grpc as wallet_grpc
from shared.tipbench import TIP_TOKENS, CpuWatch, Load, LoadProcesses, creator_id, fan_id, fan_of

SEND_TIP_METHOD = "/fanbank.gifts.v1.GiftsService/SendTip"
IDENTITY = tipbench.IDENTITY  # the platform's backend, an internal caller
PRESET = "digis"  # tips from 1 token, 0% fee: the same 1-token tip as the baseline
DEADLINE_SECONDS = 10.0
MAX_CLIENTS = 4096
MAX_FANS = 100_000
MAX_SECONDS = 3600
MAX_LOAD_PROCESSES = 8
PHASE_LEAD_SECONDS = 1.0


@dataclasses.dataclass(frozen=True, slots=True)
class TipPhase:
    target: str
    key: bytes
    signature_ttl_seconds: int
    channels: int
    client: str  # "raw" (shared/h2client.py) or "grpc" (grpc.aio)
    first_client: int
    clients: int
    total_clients: int
    fans: int
    run_id: str
    start_at: float  # time.monotonic(), system-wide on Linux and macOS
    warmup_seconds: float
    seconds: float


def tip_request(phase: TipPhase, client_index: int, seq: int) -> gpb.SendTipRequest:
    fan = fan_id(phase.run_id, fan_of(client_index, seq, phase.total_clients, phase.fans))
    return gpb.SendTipRequest(
        request_id=f"bench-{phase.run_id}-tip-{client_index}-{seq}",
        sender_id=fan,
        creator_id=creator_id(phase.run_id),
        amount_tokens=TIP_TOKENS,
        sender_display_name="Bench fan",
        context_type=gpb.CONTEXT_TYPE_STREAM,
        context_id=f"bench-{phase.run_id}",
    )


async def _drive(phase: TipPhase) -> Load:
    return await (_drive_raw(phase) if phase.client == "raw" else _drive_grpc(phase))


async def _drive_raw(phase: TipPhase) -> Load:
    """The clients over the minimal HTTP/2 client: one SendTip per call as on the wire from any gRPC
    client, for a few µs of the load process' CPU instead of grpc.aio's ~150."""
    caller = h2client.UnaryCaller()
    try:
        await caller.open(phase.target, phase.channels, STARTUP_SECONDS)
        signature = tipbench.Signature(phase.key, SEND_TIP_METHOD, phase.signature_ttl_seconds)
        signed, block = None, b""  # the metadata last encoded, and its header block

        def headers() -> bytes:
            nonlocal signed, block
            metadata = signature.current()
            if metadata is not signed:  # re-signed: encode the new block once
                signed = metadata
                block = h2client.header_block(SEND_TIP_METHOD, phase.target, metadata, int(DEADLINE_SECONDS))
            return block

        window = (phase.start_at + phase.warmup_seconds, phase.start_at + phase.warmup_seconds + phase.seconds)

        async def call(client_index: int, seq: int) -> None:
            body = tip_request(phase, client_index, seq).SerializeToString()
            reply = gpb.SendTipResponse.FromString(await caller.call(client_index, headers(), body))
            if not reply.tip.tip_id:
                raise grpc.aio.AioRpcError(
                    grpc.StatusCode.UNKNOWN, grpc.aio.Metadata(), grpc.aio.Metadata(), "a reply without a tip"
                )

        clients = range(phase.first_client, phase.first_client + phase.clients)
        return await tipbench.run_clients(clients, phase.start_at, window, call)
    finally:
        caller.close()


async def _drive_grpc(phase: TipPhase) -> Load:
    # Each channel its own connection (a local subchannel pool; channels to one target otherwise share
    # one), as many fans reach Gifts over many connections (edge workers, other replicas).
    channels = [
        grpc.aio.insecure_channel(
            phase.target, options=[("grpc.keepalive_time_ms", 30_000), ("grpc.use_local_subchannel_pool", 1)]
        )
        for _ in range(phase.channels)
    ]
    try:
        await asyncio.wait_for(asyncio.gather(*(c.channel_ready() for c in channels)), STARTUP_SECONDS)
        stubs = [
            c.unary_unary(
                SEND_TIP_METHOD,
                request_serializer=gpb.SendTipRequest.SerializeToString,
                response_deserializer=gpb.SendTipResponse.FromString,
            )
            for c in channels
        ]
        signature = tipbench.Signature(phase.key, SEND_TIP_METHOD, phase.signature_ttl_seconds)
        window = (phase.start_at + phase.warmup_seconds, phase.start_at + phase.warmup_seconds + phase.seconds)

        async def call(client_index: int, seq: int) -> None:
            stub = stubs[client_index % len(stubs)]
            await stub(tip_request(phase, client_index, seq), metadata=signature.current(), timeout=DEADLINE_SECONDS)

        clients = range(phase.first_client, phase.first_client + phase.clients)
        return await tipbench.run_clients(clients, phase.start_at, window, call)
    finally:
        for c in channels:
            await c.close()


def _load_process(conn: Connection) -> None:
    """A load process (module level, so spawn can import it): runs the SendTip phases it receives."""
    tipbench.serve_phases(conn, _drive)


def _phases(target: str, opts, settings, run_id: str, start_at: float) -> list[TipPhase]:
    per_process, extra = divmod(opts.clients, opts.load_processes)
    phases, first = [], 0
    for worker in range(opts.load_processes):
        count = per_process + (1 if worker < extra else 0)
        phases.append(
            TipPhase(
                target=target,
                key=settings.key_for(IDENTITY),
                signature_ttl_seconds=settings.signature_ttl_seconds,
                channels=opts.channels,
                client=opts.client,
                first_client=first,
                clients=count,
                total_clients=opts.clients,
                fans=opts.fans,
                run_id=run_id,
                start_at=start_at,
                warmup_seconds=opts.warmup,
                seconds=opts.seconds,
            )
        )
        first += count
    return phases


async def _gifts_checks(engine, run_id: str, acknowledged: int) -> list[str]:
    """Gifts' own books agree with the money: one COMPLETED tip and one alert per acknowledged tip."""
    creator = creator_id(run_id)
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT count(*) FILTER (WHERE status = 'COMPLETED') AS completed, "
                    "count(*) FILTER (WHERE status = 'PENDING') AS pending FROM gifts.tips WHERE creator_id = :c"
                ),
                {"c": creator},
            )
        ).one()
        alerts = await conn.scalar(
            text("SELECT count(*) FROM gifts.outbox WHERE channel = :ch"), {"ch": f"alerts:{creator}"}
        )
    problems = []
    if row.completed != acknowledged or row.pending:
        problems.append(f"GIFTS_TIPS: {row.completed} completed, {row.pending} pending, {acknowledged} acknowledged")
    if alerts != acknowledged:
        problems.append(f"GIFTS_ALERTS: {alerts} alerts for {acknowledged} acknowledged tips")
    return problems


class Run:
    def __init__(self, opts, database_url: str, redis_url: str):
        self.opts = opts
        self.database_url = database_url
        self.redis_url = redis_url
        self.settings = load_settings()
        self.run_id = uuid.uuid4().hex[:10]
        self.schema = f"bench_baseline_{self.run_id}"
        self.engine = make_engine(database_url, opts.pool)
        self.postgres_root: int | None = None
        self.started = time.monotonic()

    def say(self, line: str) -> None:
        print(f"[{time.monotonic() - self.started:5.1f} s] {line}", flush=True)

    async def baseline(self) -> tuple[dict, list[str]]:
        start_at = time.monotonic() + PHASE_LEAD_SECONDS
        window = (start_at + self.opts.warmup, start_at + self.opts.warmup + self.opts.seconds)
        cpu = CpuWatch(None, self.postgres_root, self.engine)
        load, _ = await asyncio.gather(
            tipbench.baseline_run(self.engine, self.schema, self.opts, start_at), cpu.watch(window)
        )
        summary = tipbench.summary(load, self.opts.seconds)
        tipbench.report("baseline", summary, load, cpu, 1, None)
        problems = await tipbench.baseline_check(self.engine, self.schema, load.acknowledged, self.opts.fans)
        return summary, problems

    async def fanbank(self, loads: LoadProcesses, log_dir: Path) -> tuple[dict, Load, list[str]]:
        opts = self.opts
        wallet = ServiceProcess("wallet", self.database_url, opts.pool, log_dir)
        gifts = None
        try:
            await wallet.serving()
            gifts = ServiceProcess(
                "gifts",
                self.database_url,
                opts.pool,
                log_dir,
                FANBANK_WALLET_ADDR=wallet.target,
                FANBANK_REDIS_URL=self.redis_url,
                FANBANK_PRESET=PRESET,
            )
            await gifts.serving()
            self.say(f"wallet process {wallet.pid} on {wallet.target}, gifts process {gifts.pid} on {gifts.target}")
            async with client.channel(self.settings, wallet.target, identity=IDENTITY) as channel:
                stub = wallet_grpc.WalletServiceStub(channel)
                await tipbench.fund(stub, self.run_id, opts.fans)
                start_at = time.monotonic() + PHASE_LEAD_SECONDS
                window = (start_at + opts.warmup, start_at + opts.warmup + opts.seconds)
                phases = _phases(gifts.target, opts, self.settings, self.run_id, start_at)
                budget = PHASE_LEAD_SECONDS + opts.warmup + opts.seconds + DEADLINE_SECONDS + STARTUP_SECONDS
                cpu = CpuWatch(gifts.pid, self.postgres_root, self.engine)
                wallet_cpu_before = cpu_seconds([wallet.pid])
                load, _ = await asyncio.gather(loads.run(phases, budget), cpu.watch(window))
                summary = tipbench.summary(load, opts.seconds)
                report = tipbench.report("tips", summary, load, cpu, opts.load_processes, "gifts")
                # The Wallet's share, over the whole phase (its CPU is not in CpuWatch's server figure).
                phase_seconds = opts.warmup + opts.seconds
                wallet_cores = (cpu_seconds([wallet.pid]) - wallet_cpu_before) / phase_seconds
                print(f"          wallet process: {wallet_cores:.2f} cores over warm-up + window", flush=True)
                report["wallet_cores"] = round(wallet_cores, 2)
                problems = await tipbench.wallet_checks(stub, self.run_id, load.acknowledged)
                problems += await _gifts_checks(self.engine, self.run_id, load.acknowledged)
        except BaseException:
            for process in (wallet, gifts):
                if process is not None:
                    print(f"{process.name} output (last lines):\n{process.log_tail()}", flush=True)
            raise
        finally:
            if gifts is not None:
                gifts.stop()
            wallet.stop()
        if load.errors:
            problems.append(f"TIP_ERRORS: {dict(load.errors)} (first: {load.first_error})")
        summary["report"] = report
        return summary, load, problems

    async def run(self) -> dict:
        opts = self.opts
        loads = LoadProcesses(opts.load_processes, _load_process)
        try:
            await migrate(self.engine)
            async with self.engine.connect() as conn:
                synchronous_commit = await conn.scalar(text("SHOW synchronous_commit"))
            self.postgres_root = await postgres_root(self.engine)
            await tipbench.baseline_setup(self.engine, self.schema, opts.fans)
            self.say(
                f"tips: {opts.clients} clients in {opts.load_processes} load process(es), {opts.channels} connection(s) and a {opts.client} client"
                f" each, pool {opts.pool} per process, {opts.fans} fans, warm-up {opts.warmup:g} s + {opts.seconds:g} s"
                f" measured per phase; synchronous_commit={synchronous_commit}; {os.cpu_count()} CPUs"
            )
            await loads.ready()
            baseline, problems = await self.baseline()
            with tempfile.TemporaryDirectory(prefix="fanbank-bench-") as log_dir:
                tips, load, more = await self.fanbank(loads, Path(log_dir))
            problems += more
        finally:
            loads.close()
            with contextlib.suppress(Exception):
                async with self.engine.begin() as conn:
                    await conn.execute(text(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE'))
            await self.engine.dispose()
        self.say("done")
        ratio = round(tips["per_s"] / baseline["per_s"], 2) if baseline["per_s"] else None
        return {
            "scenario": "tips",
            "tips_per_s": tips["per_s"],
            "baseline_per_s": baseline["per_s"],
            "ratio_vs_baseline": ratio,
            "p99_ms": tips["p99_ms"],
            "audit": "ok" if not problems else problems,
            "p50_ms": tips["p50_ms"],
            "baseline_p50_ms": baseline["p50_ms"],
            "baseline_p99_ms": baseline["p99_ms"],
            "clients": opts.clients,
            "pool": opts.pool,
            "fans": opts.fans,
            "seconds": opts.seconds,
            "warmup_seconds": opts.warmup,
            "load_processes": opts.load_processes,
            "synchronous_commit": synchronous_commit,
            "cpus": os.cpu_count(),
            "tips_acknowledged": load.acknowledged,
            "gifts_report": tips["report"],
        }


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fanbank bench tips", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short phases (the whole run in under a minute)")
    # A hot creator is tipped by many fans at once (DESIGN.md "Hot accounts"); both sides get the same
    # clients. Batching gains with concurrency, the baseline's one locked row does not.
    parser.add_argument("--clients", type=bounded(1, MAX_CLIENTS), default=256, help="concurrent clients (256)")
    parser.add_argument("--pool", type=bounded(1, 200), default=8, help="database pool per process (8)")
    parser.add_argument("--seconds", type=bounded(0.5, MAX_SECONDS, float), help="measured seconds per phase")
    parser.add_argument("--warmup", type=bounded(0, MAX_SECONDS, float), help="warm-up seconds before each")
    # Each fan stays well under the preset's 5 tips a second, as real fans do: the limit is per fan.
    parser.add_argument("--fans", type=bounded(1, MAX_FANS), default=5000, help="distinct tipping fans (5000)")
    parser.add_argument(
        "--load-processes", type=bounded(1, MAX_LOAD_PROCESSES), default=1, help="load generator processes (1)"
    )
    parser.add_argument(
        "--channels", type=bounded(1, 32), default=8, help="connections per load process (8; see shared/server.py)"
    )
    parser.add_argument(
        "--client",
        choices=("raw", "grpc"),
        default="raw",
        help="load client: a minimal HTTP/2 client (raw, a few µs per call) or grpc.aio (grpc)",
    )
    opts = parser.parse_args(argv)
    if opts.seconds is None:
        opts.seconds = 8.0 if opts.quick else 30.0
    if opts.warmup is None:
        opts.warmup = min(2.0 if opts.quick else 5.0, opts.seconds)
    return opts


@contextlib.contextmanager
def _servers(settings):
    """(database URL, Redis URL): the configured servers; whatever is not configured comes from the
    embedded stack under <data_dir>/bench (a fresh database there, dropped at the end). Gifts needs
    Redis as well, which `shared.bench.database` does not provide."""
    if settings.database_url and settings.redis_url:
        yield settings.database_url, settings.redis_url
        return
    from shared.embedded import EmbeddedStack

    with EmbeddedStack(settings.data_dir / "bench") as stack:
        redis_url = settings.redis_url or stack.redis_url
        if settings.database_url:
            yield settings.database_url, redis_url
            return
        admin = plain_url(stack.database_url)
        name = f"bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            yield with_database(stack.database_url, name), redis_url
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main(argv: list[str]) -> int:
    opts = parse_args(argv)
    with _servers(load_settings()) as (database_url, redis_url):
        result = asyncio.run(Run(opts, database_url, redis_url).run())
    print(json.dumps(result), flush=True)
    return 0 if result["audit"] == "ok" else 1
