"""What the tip benchmarks share (`fanbank bench wallet-hot`, `tips`, `edge`, `fanout`): one hot
creator tipped by many funded fans, load generators in spawned OS processes that report a `Load`
per phase, signed metadata reused across calls, the seeds' baseline (one row-locked transaction per
tip on its own tables), CPU accounting during the measured window and the report lines. Each
scenario keeps only what differs (which RPC a client calls, which processes it starts).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import multiprocessing
import os
import time
from array import array
from collections import Counter
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection

import grpc
import psutil
from sqlalchemy import text

from shared import auth
from shared.bench import STARTUP_SECONDS, cpu_seconds, percentile, postgres_pids
from shared.gen.fanbank.wallet.v1 import wallet_service_pb2 as pb
from shared.gen.fanbank.wallet.v1 import wallet_service_pb2_grpc as pb_grpc

# The platform's own backend: an internal caller, so the load signs once per method and reuses it.
IDENTITY = "platform"
TIP_TOKENS = 1
# Every fan is funded far beyond what any run can tip, so a tip never fails for want of funds.
FUND_TOKENS = 10**9
DEADLINE_SECONDS = 10.0

# Per load process; latencies beyond this are not kept (the count still is).
MAX_LATENCY_SAMPLES = 2_000_000
# Lead between sending a phase to the load processes and its start, so all of them start together.
PHASE_LEAD_SECONDS = 1.0
# A process at or above this share of one core during the window is counted as CPU-bound.
CPU_BOUND_SHARE = 0.9
# CPU used by processes outside the run (cores) above which the figures are flagged as disturbed.
OTHER_LOAD_WARNING = 0.2


@dataclasses.dataclass(slots=True)
class Load:
    """What a phase measured: calls answered in the window, their latencies, failures, CPU."""

    acknowledged: int = 0  # every successful call, warm-up and drain included
    in_window: int = 0
    latencies_ms: array = dataclasses.field(default_factory=lambda: array("d"))
    errors: Counter = dataclasses.field(default_factory=Counter)
    first_error: str = ""
    cpu_seconds: float = 0.0

    def merge(self, other: Load) -> None:
        self.acknowledged += other.acknowledged
        self.in_window += other.in_window
        self.latencies_ms.extend(other.latencies_ms)
        self.errors.update(other.errors)
        self.first_error = self.first_error or other.first_error
        self.cpu_seconds += other.cpu_seconds

    def record(self, started: float, ended: float, window: tuple[float, float]) -> None:
        if window[0] <= ended < window[1]:
            self.in_window += 1
            if len(self.latencies_ms) < MAX_LATENCY_SAMPLES:
                self.latencies_ms.append((ended - started) * 1000)


# ---- names shared by the load and the checks ------------------------------------------------------


def fan_id(run_id: str, index: int) -> str:
    return f"bench-{run_id}-fan-{index}"


def creator_id(run_id: str) -> str:
    return f"bench-{run_id}-creator"


def fan_of(client_index: int, seq: int, total_clients: int, fans: int) -> int:
    """Concurrent clients tip from different fans, as real fans do: one fan does not tip 64 times at once."""
    return (client_index + seq * total_clients) % fans


class Signature:
    """Signs once per method and re-signs at half the TTL, instead of an HMAC per call."""

    def __init__(self, key: bytes, method: str, ttl_seconds: int):
        self.key, self.method, self.ttl = key, method, ttl_seconds
        self.renew_at = 0.0
        self.metadata: tuple[tuple[str, str], ...] = ()

    def current(self) -> tuple[tuple[str, str], ...]:
        now = time.time()
        if now >= self.renew_at:
            self.metadata = tuple(auth.sign(self.key, IDENTITY, self.method, ttl_seconds=self.ttl, now=now))
            self.renew_at = now + self.ttl / 2
        return self.metadata


async def baseline_setup(engine, schema: str, fans: int) -> None:
    async with engine.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        await conn.execute(
            text(
                f'CREATE TABLE "{schema}".accounts (id bigint PRIMARY KEY, balance bigint NOT NULL CHECK (balance >= 0))'
            )
        )
        await conn.execute(
            text(
                f'CREATE TABLE "{schema}".log (id bigserial PRIMARY KEY, transfer_id text NOT NULL UNIQUE,'
                " fan_id bigint NOT NULL, creator_id bigint NOT NULL, amount bigint NOT NULL,"
                " created_at timestamptz NOT NULL DEFAULT now())"
            )
        )
        # Account 0 is the creator, 1..fans the fans.
        await conn.execute(
            text(
                f'INSERT INTO "{schema}".accounts (id, balance)'
                " SELECT i, CASE WHEN i = 0 THEN 0 ELSE :fund END FROM generate_series(0, :fans) AS i"
            ),
            {"fund": FUND_TOKENS, "fans": fans},
        )


async def baseline_tip(engine, schema: str, transfer_id: str, fan: int) -> None:
    """One tip as the seeds do it: both rows locked in id order, two updates, one log row."""
    creator = 0
    async with engine.begin() as conn:
        rows = await conn.execute(
            text(f'SELECT id, balance FROM "{schema}".accounts WHERE id IN (:a, :b) ORDER BY id FOR UPDATE'),
            {"a": creator, "b": fan},
        )
        balances = dict(rows.all())
        if balances[fan] < TIP_TOKENS:
            raise RuntimeError(f"baseline fan {fan} cannot pay")
        await conn.execute(
            text(f'UPDATE "{schema}".accounts SET balance = balance - :amount WHERE id = :id'),
            {"amount": TIP_TOKENS, "id": fan},
        )
        await conn.execute(
            text(f'UPDATE "{schema}".accounts SET balance = balance + :amount WHERE id = :id'),
            {"amount": TIP_TOKENS, "id": creator},
        )
        await conn.execute(
            text(
                f'INSERT INTO "{schema}".log (transfer_id, fan_id, creator_id, amount)'
                " VALUES (:transfer_id, :fan, :creator, :amount)"
            ),
            {"transfer_id": transfer_id, "fan": fan, "creator": creator, "amount": TIP_TOKENS},
        )


async def baseline_run(engine, schema: str, opts, start_at: float) -> Load:
    load = Load()
    window = (start_at + opts.warmup, start_at + opts.warmup + opts.seconds)

    async def one_client(client_index: int) -> None:
        seq = 0
        while (started := time.monotonic()) < window[1]:
            fan = 1 + fan_of(client_index, seq, opts.clients, opts.fans)
            try:
                await baseline_tip(engine, schema, f"tip-{client_index}-{seq}", fan)
            except Exception as exc:
                load.errors[type(exc).__name__] += 1
                load.first_error = load.first_error or f"{type(exc).__name__}: {exc}"
                seq += 1
                continue
            seq += 1
            load.acknowledged += 1
            load.record(started, time.monotonic(), window)

    async def cpu_during_window() -> None:
        await asyncio.sleep(max(0.0, window[0] - time.monotonic()))
        before = time.process_time()
        await asyncio.sleep(max(0.0, window[1] - time.monotonic()))
        load.cpu_seconds = time.process_time() - before

    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    await asyncio.gather(cpu_during_window(), *(one_client(i) for i in range(opts.clients)))
    return load


async def baseline_check(engine, schema: str, acknowledged: int, fans: int) -> list[str]:
    async with engine.connect() as conn:
        creator = await conn.scalar(text(f'SELECT balance FROM "{schema}".accounts WHERE id = 0'))
        total = await conn.scalar(text(f'SELECT sum(balance) FROM "{schema}".accounts'))
    problems = []
    if creator != acknowledged * TIP_TOKENS:
        problems.append(f"BASELINE_CREATOR_BALANCE: {creator} != {acknowledged} acknowledged × {TIP_TOKENS}")
    if total != fans * FUND_TOKENS:
        problems.append(f"BASELINE_NOT_CONSERVED: Σ balance {total} != {fans * FUND_TOKENS}")
    return problems


# ---- processes and CPU accounting -------------------------------------------------------------


class LoadProcesses:
    """The spawned load generators, kept warm across phases."""

    def __init__(self, count: int, worker: Callable[[Connection], None]):
        """`worker` runs in each process (a module-level function, so spawn can import it): it answers
        "ready", then a Load per phase received, until None; by default this module's Transfer load."""
        context = multiprocessing.get_context("spawn")
        self.links: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []
        for i in range(count):
            parent, child = context.Pipe()
            process = context.Process(target=worker, args=(child,), name=f"bench-load-{i}", daemon=True)
            process.start()
            child.close()
            self.links.append((process, parent))

    @property
    def pids(self) -> list[int]:
        return [p.pid for p, _ in self.links if p.pid is not None]

    async def ready(self) -> None:
        for _, conn in self.links:
            if await recv(conn, STARTUP_SECONDS) != "ready":
                raise RuntimeError("a load process did not start")

    async def run(self, phases: list, seconds: float) -> Load:
        for (_, conn), phase in zip(self.links, phases, strict=True):
            conn.send(phase)
        total = Load()
        for _, conn in self.links:
            answer = await recv(conn, seconds)
            if not isinstance(answer, Load):
                raise RuntimeError(f"load process failed: {answer}")
            total.merge(answer)
        return total

    def close(self) -> None:
        for process, conn in self.links:
            with contextlib.suppress(OSError):
                conn.send(None)
            process.join(5)
            if process.is_alive():
                process.terminate()
                process.join(5)
            conn.close()


async def recv(conn: Connection, seconds: float):
    def wait():
        if not conn.poll(seconds):
            raise TimeoutError(f"no answer from a child process within {seconds:.0f} s")
        return conn.recv()

    return await asyncio.get_running_loop().run_in_executor(None, wait)


class CpuWatch:
    """CPU used during the measured window by the server, PostgreSQL and the whole machine, in cores,
    and the database's transactions per second (how many calls a transaction carried)."""

    def __init__(self, server_pid: int | None, postgres_root: int | None, engine=None):
        self.server_pid = server_pid
        self.postgres_root = postgres_root
        self.engine = engine
        self.cores = {"server": 0.0, "postgres": 0.0, "machine": 0.0}
        self.transactions_per_s: float | None = None

    async def _transactions(self) -> int | None:
        if self.engine is None:
            return None
        # Rollbacks count: SQLAlchemy ends read-only work (engine.connect()) with one.
        async with self.engine.connect() as conn:
            return await conn.scalar(
                text("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()")
            )

    def _sample(self) -> dict[str, float]:
        busy = psutil.cpu_times()
        return {
            "server": cpu_seconds([self.server_pid]) if self.server_pid else 0.0,
            "postgres": cpu_seconds(postgres_pids(self.postgres_root)),
            "machine": sum(busy) - busy.idle - getattr(busy, "iowait", 0.0),
        }

    async def watch(self, window: tuple[float, float]) -> None:
        await asyncio.sleep(max(0.0, window[0] - time.monotonic()))
        before, transactions_before = self._sample(), await self._transactions()
        await asyncio.sleep(max(0.0, window[1] - time.monotonic()))
        after, transactions_after = self._sample(), await self._transactions()
        seconds = window[1] - window[0]
        self.cores = {k: (after[k] - before[k]) / seconds for k in before}
        if transactions_before is not None and transactions_after is not None:
            # PostgreSQL publishes these counters about once a second: good over a window, not finer.
            self.transactions_per_s = (transactions_after - transactions_before) / seconds


# ---- the run ------------------------------------------------------------------------------------


def summary(load: Load, seconds: float) -> dict:
    latencies = sorted(load.latencies_ms)
    return {
        "seconds": seconds,
        "per_s": round(load.in_window / seconds, 1),
        "p50_ms": round(percentile(latencies, 0.50), 3),
        "p99_ms": round(percentile(latencies, 0.99), 3),
    }


def cpu_line(cores: dict[str, float], server_label: str | None) -> str:
    parts = [f"{server_label} {cores['server']:.2f}"] if server_label else []
    parts.append(f"load {cores['load']:.2f}")
    if cores["postgres"]:
        parts.append(f"postgres {cores['postgres']:.2f}")
    parts.append(f"other processes {cores['other']:.2f}")
    parts.append(f"machine {cores['machine']:.2f}/{os.cpu_count()}")
    return "cpu (cores): " + ", ".join(parts)


def limit_line(cores: dict[str, float], load_processes: int, server_label: str | None) -> str:
    """Names what held throughput back, from CPU shares (a single-threaded Python process tops out at 1 core)."""
    found = []
    if server_label and cores["server"] >= CPU_BOUND_SHARE:
        found.append(f"{server_label} process CPU-bound")
    if cores["load"] / load_processes >= CPU_BOUND_SHARE:
        found.append("load generator CPU-bound")
    if cores["machine"] >= CPU_BOUND_SHARE * (os.cpu_count() or 1):
        found.append("machine CPU-saturated")
    if cores["other"] >= OTHER_LOAD_WARNING:
        found.append(f"WARNING: other processes used {cores['other']:.2f} cores, figures are disturbed")
    return ", ".join(found) or "no process CPU-bound: waiting (locks, fsync, round trips)"


def report(
    name: str, summary: dict, load: Load, watch: CpuWatch, load_processes: int, server_label: str | None
) -> dict:
    """Prints one phase's figures; answers its CPU use in cores (the load generator's included) and its limit."""
    cores = dict(watch.cores, load=load.cpu_seconds / summary["seconds"])
    cores["other"] = max(0.0, cores["machine"] - sum(cores[k] for k in ("server", "postgres", "load")))
    limit = limit_line(cores, load_processes, server_label)
    errors = sum(load.errors.values())
    print(
        f"{name:<9} {summary['per_s']:>10,.1f}/s  p50 {summary['p50_ms']:.2f} ms  p99 {summary['p99_ms']:.2f} ms"
        f"  errors {errors}" + (f" (first: {load.first_error})" if load.first_error else ""),
        flush=True,
    )
    print(f"          {cpu_line(cores, server_label)}", flush=True)
    if watch.transactions_per_s:
        print(
            f"          database: {watch.transactions_per_s:,.0f} transactions/s,"
            f" {summary['per_s'] / watch.transactions_per_s:.1f} answered calls per transaction",
            flush=True,
        )
    print(f"          limit: {limit}", flush=True)
    return {"cpu_cores": {k: round(v, 2) for k, v in cores.items()}, "limit": limit}


async def fund(stub: pb_grpc.WalletServiceStub, run_id: str, fans: int) -> None:
    clearing = pb.AccountRef(code=pb.ACCOUNT_CODE_PROVIDER_CLEARING, asset=pb.ASSET_TOKEN)
    chunk = 1000  # BatchTransfer's item limit (model.MAX_BATCH_ITEMS)
    for first in range(0, fans, chunk):
        items = [
            pb.TransferSpec(
                transfer_id=f"bench-{run_id}-fund-{i}",
                debit=clearing,
                credit=pb.AccountRef(
                    owner_id=fan_id(run_id, i), code=pb.ACCOUNT_CODE_USER_PURCHASED, asset=pb.ASSET_TOKEN
                ),
                amount=FUND_TOKENS,
                code=pb.TRANSFER_CODE_PURCHASE,
            )
            for i in range(first, min(first + chunk, fans))
        ]
        await stub.BatchTransfer(
            pb.BatchTransferRequest(
                batch_id=f"bench-{run_id}-fund-{first}", mode=pb.BATCH_MODE_LINKED, transfers=items
            ),
            timeout=60,
        )


async def wallet_checks(stub: pb_grpc.WalletServiceStub, run_id: str, acknowledged: int) -> list[str]:
    audit = await stub.Audit(pb.AuditRequest(), timeout=120)
    problems = [f"{v.kind}: {v.detail}" for v in audit.violations]
    balance = await stub.GetBalance(pb.GetBalanceRequest(owner_id=creator_id(run_id), asset=pb.ASSET_TOKEN))
    earned = sum(a.posted for a in balance.accounts if a.ref.code == pb.ACCOUNT_CODE_CREATOR_EARNINGS)
    if earned != acknowledged * TIP_TOKENS:
        problems.append(f"CREATOR_BALANCE: {earned} != {acknowledged} acknowledged tips × {TIP_TOKENS}")
    return problems


# ---- the load generator's loops (in spawned processes) -------------------------------------------


async def run_clients(
    clients: range, start_at: float, window: tuple[float, float], call: Callable[[int, int], Awaitable]
) -> Load:
    """One loop per client index from `start_at`: `call(client_index, seq)` again and again until the
    window ends; answered calls in the window are timed, failures counted by code, and the process'
    CPU during the window recorded. In-flight calls are awaited, never cancelled: a cancelled tip may
    still commit, and the checks compare money with the calls acknowledged."""
    load = Load()

    async def one_client(client_index: int) -> None:
        seq = 0
        while (started := time.monotonic()) < window[1]:
            this, seq = seq, seq + 1
            try:
                await call(client_index, this)
            except grpc.aio.AioRpcError as error:
                load.errors[error.code().name] += 1
                load.first_error = load.first_error or f"{error.code().name}: {error.details()}"
                continue
            load.acknowledged += 1
            load.record(started, time.monotonic(), window)

    async def cpu_during_window() -> None:
        await asyncio.sleep(max(0.0, window[0] - time.monotonic()))
        before = time.process_time()
        await asyncio.sleep(max(0.0, window[1] - time.monotonic()))
        load.cpu_seconds = time.process_time() - before

    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    await asyncio.gather(cpu_during_window(), *(one_client(i) for i in clients))
    return load


def serve_phases(conn: Connection, drive: Callable[[object], Awaitable[Load]]) -> None:
    """A load process's life: answers "ready", then runs each phase it receives with `drive` and
    answers its Load (or the error, the process staying usable); None ends it."""
    conn.send("ready")
    while (phase := conn.recv()) is not None:
        try:
            conn.send(asyncio.run(drive(phase)))
        except Exception as exc:  # the parent reports it
            conn.send(f"{type(exc).__name__}: {exc}")
