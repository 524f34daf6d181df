"""`fanbank bench wallet-hot`: fans tip one hot creator through the unary `Transfer` RPC.

One run measures three things on the same machine, with the same clients, concurrency and duration:

- the Wallet: N concurrent clients, one tip per `Transfer` RPC, against a Wallet OS process;
- a baseline: one row-locked transaction per tip (SELECT … FOR UPDATE of both rows in id order, two
  UPDATEs, one log INSERT — the seeds' design) on the same database, driver, pool size and
  durability settings as the Wallet process;
- a ceiling: a bare `grpc.aio` echo server answering a TransferRequest-sized message.

The load generator runs in separate OS processes (spawned, one asyncio loop each) so that neither the
Wallet nor the echo server shares an event loop with its clients. Human-readable lines are printed as
the run goes, with each process's CPU use during the measured window (what limits throughput); the
last line is one JSON object with the results and the settings.

With FANBANK_DATABASE_URL unset the run starts the embedded stack under <data_dir>/bench and works in
a fresh database that is dropped at the end. With it set, the run works in that database (ids are
unique per run; the baseline's schema is dropped at the end).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import multiprocessing
import os
import sys
import tempfile
import time
import uuid
from multiprocessing.connection import Connection
from pathlib import Path

import grpc
from sqlalchemy import text

from shared import client
from shared.bench import (
    STARTUP_SECONDS,
    ServiceProcess,
    bounded,
    database,
    postgres_root,
    wait_serving,
)
from shared.config import load_settings
from shared.db import make_engine, migrate
from shared.gen.fanbank.wallet.v1 import wallet_service_pb2 as pb
from shared.gen.fanbank.wallet.v1 import wallet_service_pb2_grpc as pb_grpc
from shared.tipbench import (
    DEADLINE_SECONDS,
    IDENTITY,
    PHASE_LEAD_SECONDS,
    TIP_TOKENS,
    CpuWatch,
    Load,
    LoadProcesses,
    Signature,
    baseline_check,
    baseline_run,
    baseline_setup,
    creator_id,
    fan_id,
    fan_of,
    fund,
    recv,
    run_clients,
    serve_phases,
    wallet_checks,
)
from shared.tipbench import (
    report as report_lines,
)
from shared.tipbench import (
    summary as summarize,
)

TRANSFER_METHOD = "/fanbank.wallet.v1.WalletService/Transfer"
ECHO_SERVICE = "fanbank.bench.v1.Echo"
ECHO_METHOD = f"/{ECHO_SERVICE}/Echo"
# Bounds: a run that would need more than this is a mistake, not a benchmark.
MAX_CLIENTS = 4096
MAX_FANS = 100_000
MAX_SECONDS = 3600
MAX_LOAD_PROCESSES = 8
MAX_CHANNELS = 16


@dataclasses.dataclass(frozen=True, slots=True)
class Phase:
    """What one load process runs: its share of the clients against one target, on a shared clock."""

    kind: str  # "wallet" or "echo"
    target: str
    key: bytes
    signature_ttl_seconds: int
    signing: str  # "metadata" or "client"
    channels: int
    first_client: int
    clients: int
    total_clients: int
    fans: int
    run_id: str
    creator_id: str
    start_at: float  # time.monotonic(), which is system-wide on Linux and macOS
    warmup_seconds: float
    seconds: float


def tip_request(phase: Phase, client_index: int, seq: int) -> pb.TransferRequest:
    fan = fan_id(phase.run_id, fan_of(client_index, seq, phase.total_clients, phase.fans))
    return pb.TransferRequest(
        transfer=pb.TransferSpec(
            transfer_id=f"bench-{phase.run_id}-tip-{client_index}-{seq}",
            debit=pb.AccountRef(owner_id=fan, code=pb.ACCOUNT_CODE_USER_WALLET, asset=pb.ASSET_TOKEN),
            credit=pb.AccountRef(
                owner_id=phase.creator_id, code=pb.ACCOUNT_CODE_CREATOR_EARNINGS, asset=pb.ASSET_TOKEN
            ),
            amount=TIP_TOKENS,
            code=pb.TRANSFER_CODE_TIP,
            context_type="stream",
            context_id=f"bench-{phase.run_id}",
            counterparty_id=phase.creator_id,
        )
    )


# ---- the load generator (runs in spawned processes) ------------------------------------------------


def _channel(phase: Phase) -> grpc.aio.Channel:
    if phase.signing == "client":
        settings = dataclasses.replace(
            load_settings(), service_keys={IDENTITY: phase.key}, signature_ttl_seconds=phase.signature_ttl_seconds
        )
        return client.channel(settings, phase.target, identity=IDENTITY, deadline_seconds=DEADLINE_SECONDS)
    # The same options as shared.client's channels; the load signs with metadata made once per method.
    return grpc.aio.insecure_channel(
        phase.target,
        options=[
            ("grpc.enable_retries", 1),
            ("grpc.service_config", client._SERVICE_CONFIG),
            ("grpc.keepalive_time_ms", 30_000),
        ],
    )


async def _drive(phase: Phase) -> Load:
    method = TRANSFER_METHOD if phase.kind == "wallet" else ECHO_METHOD
    response_type = pb.TransferResponse if phase.kind == "wallet" else pb.TransferRequest
    channels = [_channel(phase) for _ in range(phase.channels)]
    try:
        await asyncio.wait_for(asyncio.gather(*(c.channel_ready() for c in channels)), STARTUP_SECONDS)
        stubs = [
            c.unary_unary(
                method,
                request_serializer=pb.TransferRequest.SerializeToString,
                response_deserializer=response_type.FromString,
            )
            for c in channels
        ]
        signature = Signature(phase.key, method, phase.signature_ttl_seconds)
        signed = phase.signing == "metadata"
        window = (phase.start_at + phase.warmup_seconds, phase.start_at + phase.warmup_seconds + phase.seconds)

        async def call(client_index: int, seq: int) -> None:
            stub = stubs[client_index % len(stubs)]
            request = tip_request(phase, client_index, seq)
            if signed:
                await stub(request, metadata=signature.current(), timeout=DEADLINE_SECONDS)
            else:
                await stub(request)

        clients = range(phase.first_client, phase.first_client + phase.clients)
        return await run_clients(clients, phase.start_at, window, call)
    finally:
        for c in channels:
            await c.close()


def _load_process(conn: Connection) -> None:
    """A load process (module level, so spawn can import it): runs the Transfer phases it receives."""
    serve_phases(conn, _drive)


# ---- the echo server (runs in a spawned process) -------------------------------------------------


async def _echo_serve(conn: Connection) -> None:
    async def echo(request: pb.TransferRequest, context) -> pb.TransferRequest:
        return request

    # Bare on purpose (no interceptor, no health, no auth check): the ceiling of grpc.aio on this box.
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    handler = grpc.unary_unary_rpc_method_handler(
        echo,
        request_deserializer=pb.TransferRequest.FromString,
        response_serializer=pb.TransferRequest.SerializeToString,
    )
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(ECHO_SERVICE, {"Echo": handler})])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    conn.send(port)
    await asyncio.get_running_loop().run_in_executor(None, conn.recv)
    await server.stop(0)


def _echo_process(conn: Connection) -> None:
    asyncio.run(_echo_serve(conn))


# ---- the baseline (runs in this process) --------------------------------------------------------


def _phases(kind: str, target: str, opts, settings, run_id: str, start_at: float) -> list[Phase]:
    per_process, extra = divmod(opts.clients, opts.load_processes)
    phases, first = [], 0
    for worker in range(opts.load_processes):
        count = per_process + (1 if worker < extra else 0)
        phases.append(
            Phase(
                kind=kind,
                target=target,
                key=settings.key_for(IDENTITY),
                signature_ttl_seconds=settings.signature_ttl_seconds,
                signing=opts.signing,
                channels=opts.channels,
                first_client=first,
                clients=count,
                total_clients=opts.clients,
                fans=opts.fans,
                run_id=run_id,
                creator_id=creator_id(run_id),
                start_at=start_at,
                warmup_seconds=opts.warmup,
                seconds=opts.seconds,
            )
        )
        first += count
    return phases


async def _measure(loads: LoadProcesses, kind: str, target: str, opts, settings, run_id: str, cpu: CpuWatch) -> Load:
    start_at = time.monotonic() + PHASE_LEAD_SECONDS
    window = (start_at + opts.warmup, start_at + opts.warmup + opts.seconds)
    phases = _phases(kind, target, opts, settings, run_id, start_at)
    budget = PHASE_LEAD_SECONDS + opts.warmup + opts.seconds + DEADLINE_SECONDS + STARTUP_SECONDS
    load, _ = await asyncio.gather(loads.run(phases, budget), cpu.watch(window))
    return load


@dataclasses.dataclass
class Outcome:
    """One phase's result: the calls it measured, their summary, and what the report said of them."""

    load: Load
    summary: dict
    report: dict


class Run:
    """One benchmark run: its database, load processes and the three phases."""

    def __init__(self, opts, database_url: str):
        self.opts = opts
        self.database_url = database_url
        self.settings = load_settings()
        self.run_id = uuid.uuid4().hex[:10]
        self.schema = f"bench_baseline_{self.run_id}"
        self.engine = make_engine(database_url, opts.pool)
        self.postgres_root: int | None = None
        self.started = time.monotonic()

    def say(self, line: str) -> None:
        print(f"[{time.monotonic() - self.started:5.1f} s] {line}", flush=True)

    async def echo(self, loads: LoadProcesses) -> Outcome:
        context = multiprocessing.get_context("spawn")
        conn, child = context.Pipe()
        process = context.Process(target=_echo_process, args=(child,), name="bench-echo", daemon=True)
        process.start()
        child.close()
        try:
            port = await recv(conn, STARTUP_SECONDS)
            cpu = CpuWatch(process.pid, None)
            load = await _measure(loads, "echo", f"127.0.0.1:{port}", self.opts, self.settings, self.run_id, cpu)
            conn.send(None)
        finally:
            process.join(5)
            if process.is_alive():
                process.terminate()
                process.join(5)
            conn.close()
        summary = summarize(load, self.opts.seconds)
        return Outcome(load, summary, report_lines("echo", summary, load, cpu, self.opts.load_processes, "echo server"))

    async def baseline(self) -> tuple[Outcome, list[str]]:
        start_at = time.monotonic() + PHASE_LEAD_SECONDS
        window = (start_at + self.opts.warmup, start_at + self.opts.warmup + self.opts.seconds)
        cpu = CpuWatch(None, self.postgres_root, self.engine)
        load, _ = await asyncio.gather(baseline_run(self.engine, self.schema, self.opts, start_at), cpu.watch(window))
        summary = summarize(load, self.opts.seconds)
        outcome = Outcome(load, summary, report_lines("baseline", summary, load, cpu, 1, None))
        return outcome, await baseline_check(self.engine, self.schema, load.acknowledged, self.opts.fans)

    async def wallet(self, loads: LoadProcesses, log_dir: Path) -> tuple[Outcome, list[str]]:
        wallet = ServiceProcess("wallet", self.database_url, self.opts.pool, log_dir)
        try:
            await wait_serving(wallet.target, wallet.process)
            self.say(f"wallet process {wallet.process.pid} serving on {wallet.target}")
            async with client.channel(self.settings, wallet.target, identity=IDENTITY) as channel:
                stub = pb_grpc.WalletServiceStub(channel)
                await fund(stub, self.run_id, self.opts.fans)
                cpu = CpuWatch(wallet.process.pid, self.postgres_root, self.engine)
                load = await _measure(loads, "wallet", wallet.target, self.opts, self.settings, self.run_id, cpu)
                summary = summarize(load, self.opts.seconds)
                report = report_lines("wallet", summary, load, cpu, self.opts.load_processes, "wallet")
                problems = await wallet_checks(stub, self.run_id, load.acknowledged)
        except BaseException:
            print(f"wallet process output (last lines):\n{wallet.log_tail()}", file=sys.stderr)
            raise
        finally:
            wallet.stop()
        if load.errors:
            problems.append(f"TIP_ERRORS: {dict(load.errors)}")
        return Outcome(load, summary, report), problems

    async def run(self) -> dict:
        opts = self.opts
        loads = LoadProcesses(opts.load_processes, _load_process)
        try:
            await migrate(self.engine)
            async with self.engine.connect() as conn:
                synchronous_commit = await conn.scalar(text("SHOW synchronous_commit"))
                fsync = await conn.scalar(text("SHOW fsync"))
            self.postgres_root = await postgres_root(self.engine)
            await baseline_setup(self.engine, self.schema, opts.fans)
            self.say(
                f"wallet-hot: {opts.clients} clients in {opts.load_processes} load process(es),"
                f" {opts.channels} channel(s) each, signing={opts.signing}, pool {opts.pool}, {opts.fans} fans,"
                f" warm-up {opts.warmup:g} s + {opts.seconds:g} s measured per phase;"
                f" synchronous_commit={synchronous_commit} fsync={fsync}; {os.cpu_count()} CPUs"
            )
            await loads.ready()
            echo = await self.echo(loads)
            baseline, problems = await self.baseline()
            with tempfile.TemporaryDirectory(prefix="fanbank-bench-") as log_dir:
                wallet, wallet_problems = await self.wallet(loads, Path(log_dir))
            problems += wallet_problems
        finally:
            loads.close()
            with contextlib.suppress(Exception):
                async with self.engine.begin() as conn:
                    await conn.execute(text(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE'))
            await self.engine.dispose()
        self.say("done")

        def ratio(a: float, b: float, digits: int) -> float | None:
            return round(a / b, digits) if b else None

        tips = wallet.summary["per_s"]
        return {
            "scenario": "wallet-hot",
            "transfers_per_s": tips,
            "baseline_per_s": baseline.summary["per_s"],
            "ratio_vs_baseline": ratio(tips, baseline.summary["per_s"], 2),
            "echo_rpc_per_s": echo.summary["per_s"],
            "ratio_vs_echo": ratio(tips, echo.summary["per_s"], 3),
            "p50_ms": wallet.summary["p50_ms"],
            "p99_ms": wallet.summary["p99_ms"],
            "baseline_p50_ms": baseline.summary["p50_ms"],
            "baseline_p99_ms": baseline.summary["p99_ms"],
            "echo_p50_ms": echo.summary["p50_ms"],
            "echo_p99_ms": echo.summary["p99_ms"],
            "clients": opts.clients,
            "pool": opts.pool,
            "synchronous_commit": synchronous_commit,
            "fsync": fsync,
            "seconds": opts.seconds,
            "warmup_seconds": opts.warmup,
            "fans": opts.fans,
            "load_processes": opts.load_processes,
            "channels": opts.channels,
            "signing": opts.signing,
            "cpus": os.cpu_count(),
            "tips_acknowledged": wallet.load.acknowledged,
            "phases": {"echo": echo.report, "baseline": baseline.report, "wallet": wallet.report},
            "audit": "ok" if not problems else problems,
        }


# ---- databases ------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fanbank bench wallet-hot", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short phases (the whole run in under a minute)")
    parser.add_argument("--clients", type=bounded(1, MAX_CLIENTS), default=64, help="concurrent clients (64)")
    parser.add_argument("--pool", type=bounded(1, 200), default=8, help="database pool size of both sides (8)")
    parser.add_argument("--seconds", type=bounded(0.5, MAX_SECONDS, float), help="measured seconds per phase")
    parser.add_argument("--warmup", type=bounded(0, MAX_SECONDS, float), help="warm-up seconds before each")
    parser.add_argument("--fans", type=bounded(1, MAX_FANS), default=1000, help="distinct tipping fans (1000)")
    parser.add_argument(
        "--load-processes", type=bounded(1, MAX_LOAD_PROCESSES), default=1, help="load generator processes (1)"
    )
    parser.add_argument("--channels", type=bounded(1, MAX_CHANNELS), default=1, help="channels per load process (1)")
    parser.add_argument(
        "--signing",
        choices=("metadata", "client"),
        default="metadata",
        help="metadata: sign once per method and reuse it (default); client: shared.client's signed channel",
    )
    opts = parser.parse_args(argv)
    if opts.seconds is None:
        opts.seconds = 8.0 if opts.quick else 30.0
    if opts.warmup is None:
        opts.warmup = min(2.0 if opts.quick else 5.0, opts.seconds)
    return opts


def main(argv: list[str]) -> int:
    opts = parse_args(argv)
    with database(load_settings()) as database_url:
        result = asyncio.run(Run(opts, database_url).run())
    print(json.dumps(result), flush=True)
    return 0 if result["audit"] == "ok" else 1
