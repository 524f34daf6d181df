"""`fanbank bench metering`: one metering tick over C live calls, against the seeds' per-call design.

Set-up (documented bulk path, not measured): C fans, each funded through `Wallet.BatchTransfer`, and
C creators (a creator is in one 1:1 call at a time) with an ACTIVE call each, inserted into
`billing.calls` in one statement with block 0 due now. Business time is the controlled clock
(shared/clock.py; the Wallet process runs on it too), standing still during a tick: a tick slower
than the 30 s block would otherwise find the next block due before it finished and never end. A
first, untimed tick charges block 0 and so creates every creator's earnings account, as in a
running system. Then the clock moves one block on, every lease is renewed in one UPDATE (standing
in for the media server's HeartbeatCalls), the tables a tick writes are vacuumed (a running system's
state between ticks; the JSON counts any autovacuum run that overlapped the tick anyway) and the
measured tick runs: the real `Metering.tick()` — claims (each call marked as charging its block),
`Wallet.BatchTransfer` to a Wallet OS process (or `--wallets N` of them, the calls spread round
robin as over replicas behind one address), outcomes, call updates, outbox events — until nothing
is due.

Baseline, in the same run and database: the seeds' cron design on its own tables — one row-locked
transaction per call (lock the call, lock the fan's and the creator's wallet rows in id order, check
the balance, two balance UPDATEs, two log rows, UPDATE the call, COMMIT), calls one after another, on
a sample of the calls; its rate is extrapolated to C.

Checks after the tick: every call charged exactly blocks 0 and 1 (Wallet's operations counted by
derived id), no charge left in flight, Wallet's Audit clean, the creators' earnings and the fans'
balances as expected. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import text

from services.billing import metering
from services.billing.metering import Metering
from shared import client
from shared.bench import (
    WAL_SQL,
    ServiceProcess,
    bounded,
    cpu_seconds,
    database,
    postgres_pids,
    postgres_root,
    wal_figures,
)
from shared.clock import ControlledClock
from shared.config import load_settings
from shared.db import make_engine, migrate
from shared.gen.fanbank.wallet.v1 import wallet_service_pb2 as wpb
from shared.gen.fanbank.wallet.v1 import wallet_service_pb2_grpc as wallet_grpc
from shared.host import tune_gc
from shared.presets import fee_amount, load_preset

MAX_CALLS = 1_000_000
FUND_TOKENS = 10_000
RATE = 100  # tokens per minute: 50 per 30 s block in every preset that offers calls
FUND_CHUNK = 1000  # BatchTransfer's item limit


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fanbank bench metering", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 calls, a smaller baseline sample (< 60 s)")
    parser.add_argument("--calls", type=bounded(1, MAX_CALLS), help="live calls (100,000; quick 20,000)")
    parser.add_argument("--baseline-sample", type=bounded(1, MAX_CALLS), help="calls the baseline charges")
    parser.add_argument("--pool", type=bounded(1, 100), default=8, help="database pool of each side (8)")
    parser.add_argument(
        "--wallets", type=bounded(1, 16), default=1, help="Wallet processes Billing spreads its calls over (1)"
    )
    parser.add_argument("--preset", default=None, help="preset (FANBANK_PRESET, default digis)")
    opts = parser.parse_args(argv)
    if opts.calls is None:
        opts.calls = 20_000 if opts.quick else 100_000
    if opts.baseline_sample is None:
        opts.baseline_sample = min(opts.calls, 2_000 if opts.quick else 5_000)
    return opts


class Run:
    def __init__(self, opts, database_url: str):
        self.opts = opts
        self.database_url = database_url
        self.settings = load_settings()
        self.preset = load_preset(opts.preset or self.settings.preset_name)
        self.run_id = uuid.uuid4().hex[:8]
        self.tokens = self.preset.calls.tokens_per_block(RATE)
        self.fee = fee_amount(self.tokens, self.preset.fees.call_bps)
        self.engine = make_engine(database_url, opts.pool)
        self.started = time.monotonic()

    def say(self, line: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f} s] {line}", flush=True)

    def fan(self, i: int) -> str:
        return f"bm-{self.run_id}-fan-{i}"

    def creator(self, i: int) -> str:
        return f"bm-{self.run_id}-creator-{i}"

    # ---- set-up ---------------------------------------------------------------------------------

    async def fund(self, wallet) -> None:
        clearing = wpb.AccountRef(code=wpb.ACCOUNT_CODE_PROVIDER_CLEARING, asset=wpb.ASSET_TOKEN)
        gate = asyncio.Semaphore(4)

        async def chunk(first: int) -> None:
            items = [
                wpb.TransferSpec(
                    transfer_id=f"bm-{self.run_id}-fund-{i}",
                    debit=clearing,
                    credit=wpb.AccountRef(
                        owner_id=self.fan(i), code=wpb.ACCOUNT_CODE_USER_PURCHASED, asset=wpb.ASSET_TOKEN
                    ),
                    amount=FUND_TOKENS,
                    code=wpb.TRANSFER_CODE_PURCHASE,
                )
                for i in range(first, min(first + FUND_CHUNK, self.opts.calls))
            ]
            request = wpb.BatchTransferRequest(mode=wpb.BATCH_MODE_INDEPENDENT, transfers=items)
            async with gate:
                response = await wallet.BatchTransfer(request, timeout=120)
            failed = [r.transfer_id for r in response.results if r.HasField("error")]
            if failed:
                raise RuntimeError(f"funding failed for {len(failed)} fans, e.g. {failed[0]}")

        await asyncio.gather(*(chunk(first) for first in range(0, self.opts.calls, FUND_CHUNK)))

    async def insert_calls(self) -> None:
        calls = self.preset.calls
        async with self.engine.begin() as conn:
            await conn.execute(
                text(
                    f"""
                    INSERT INTO billing.calls (call_id, request_scope, request_id, fan_id, creator_id, status,
                        rate_tokens_per_minute, tokens_per_block, block_seconds, fee_bps, grace_seconds,
                        max_pause_seconds, warning_blocks, media_channel, media_node, started_at,
                        next_block_no, next_block_at, deadline_at, last_heartbeat_at, segment_started_at)
                    SELECT 'bm-{self.run_id}-call-' || i, 'bench', 'bm-{self.run_id}-' || i,
                        'bm-{self.run_id}-fan-' || i, 'bm-{self.run_id}-creator-' || i, 'ACTIVE',
                        :rate, :tokens, :block, :bps, :grace, :pause, :warn,
                        'call-bm-{self.run_id}-' || i, 'bench-node-' || (i % 8), {metering.NOW_SQL},
                        0, {metering.NOW_SQL}, {metering.NOW_SQL}, {metering.NOW_SQL}, {metering.NOW_SQL}
                    FROM generate_series(0, :n - 1) AS i
                    """
                ),
                {
                    "rate": RATE,
                    "tokens": self.tokens,
                    "block": calls.block_seconds,
                    "bps": self.preset.fees.call_bps,
                    "grace": calls.heartbeat_grace_seconds,
                    "pause": calls.max_pause_seconds,
                    "warn": calls.low_balance_warning_blocks,
                    "n": self.opts.calls,
                },
            )

    async def next_block(self) -> int:
        """Moves the clock one block on and renews every call's lease; answers the calls now due."""
        await self.clock.advance(dt.timedelta(seconds=self.preset.calls.block_seconds))
        async with self.engine.begin() as conn:
            result = await conn.execute(
                text(
                    f"UPDATE billing.calls SET last_heartbeat_at = {metering.NOW_SQL} "
                    f"WHERE status = 'ACTIVE' AND call_id LIKE :prefix AND next_block_at <= {metering.NOW_SQL}"
                ),
                {"prefix": f"bm-{self.run_id}-call-%"},
            )
        return result.rowcount

    # The tables a tick writes. Set-up vacuums them before the measured tick, and the run counts the
    # autovacuum and autoanalyze runs on them that overlapped the tick.
    TICK_TABLES = (
        "billing.calls", "billing.outbox", "billing.outbox_channels", "wallet.accounts", "wallet.operations",
        "wallet.transfers", "wallet.entries",
    )  # fmt: skip

    async def vacuum(self) -> None:
        """The state of a running system before a tick: the previous block's dead row versions (the
        warm tick's claims and settles, the lease renewal) vacuumed and statistics fresh, as
        autovacuum does in the part of the 30 s block a tick leaves idle. Without this, autovacuum
        fired at some point of some measured ticks and took a fifth of PostgreSQL's CPU."""
        async with self.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f"VACUUM (ANALYZE) {', '.join(self.TICK_TABLES)}"))

    async def wal(self):
        async with self.engine.connect() as conn:
            return (await conn.execute(text(WAL_SQL))).one()

    async def maintenance_runs(self) -> int:
        """Autovacuum and autoanalyze runs on the tick's tables so far (pg_stat_user_tables)."""
        async with self.engine.connect() as conn:
            return await conn.scalar(
                text(
                    "SELECT CAST(COALESCE(sum(autovacuum_count + autoanalyze_count), 0) AS int) FROM pg_stat_user_tables "
                    "WHERE schemaname || '.' || relname = ANY(:tables)"
                ),
                {"tables": list(self.TICK_TABLES)},
            )

    # ---- baseline -------------------------------------------------------------------------------

    async def baseline(self) -> float:
        """Blocks per second of the seeds' design, one transaction per call, on a sample."""
        schema = f"bench_meter_baseline_{self.run_id}"
        n = self.opts.baseline_sample
        async with self.engine.begin() as conn:
            await conn.execute(text(f"CREATE SCHEMA {schema}"))
            await conn.execute(
                text(f"CREATE TABLE {schema}.wallets (id bigserial PRIMARY KEY, user_id text UNIQUE, balance bigint)")
            )
            await conn.execute(
                text(
                    f"CREATE TABLE {schema}.calls (id text PRIMARY KEY, fan_id text, creator_id text, "
                    "tokens_per_block bigint, blocks bigint NOT NULL DEFAULT 0, status text, next_block_at timestamptz)"
                )
            )
            await conn.execute(
                text(
                    f"CREATE TABLE {schema}.billing_events (id bigserial PRIMARY KEY, call_id text, user_id text, "
                    "amount bigint, kind text, created_at timestamptz DEFAULT now())"
                )
            )
            await conn.execute(
                text(
                    f"INSERT INTO {schema}.wallets (user_id, balance) SELECT 'f' || i, :fund FROM generate_series(0, :n - 1) i "
                    f"UNION ALL SELECT 'c' || i, 0 FROM generate_series(0, :n - 1) i"
                ),
                {"fund": FUND_TOKENS, "n": n},
            )
            await conn.execute(
                text(
                    f"INSERT INTO {schema}.calls SELECT 'call' || i, 'f' || i, 'c' || i, :t, 0, 'active', now() "
                    "FROM generate_series(0, :n - 1) i"
                ),
                {"t": self.tokens, "n": n},
            )
        try:
            started = time.perf_counter()
            async with self.engine.connect() as conn:
                due = (
                    await conn.execute(
                        text(f"SELECT id FROM {schema}.calls WHERE status = 'active' AND next_block_at <= now()")
                    )
                ).all()
                await conn.rollback()
                for (call_id,) in due:
                    async with conn.begin():
                        call = (
                            await conn.execute(
                                text(
                                    f"SELECT fan_id, creator_id, tokens_per_block FROM {schema}.calls "
                                    "WHERE id = :id AND status = 'active' FOR UPDATE"
                                ),
                                {"id": call_id},
                            )
                        ).one()
                        rows = (
                            await conn.execute(
                                text(
                                    f"SELECT user_id, balance FROM {schema}.wallets WHERE user_id IN (:f, :c) "
                                    "ORDER BY id FOR UPDATE"
                                ),
                                {"f": call.fan_id, "c": call.creator_id},
                            )
                        ).all()
                        balance = {r.user_id: r.balance for r in rows}
                        if balance[call.fan_id] < call.tokens_per_block:
                            await conn.execute(
                                text(f"UPDATE {schema}.calls SET status = 'ended' WHERE id = :id"), {"id": call_id}
                            )
                            continue
                        for user, signed in (
                            (call.fan_id, -call.tokens_per_block),
                            (call.creator_id, call.tokens_per_block),
                        ):
                            await conn.execute(
                                text(f"UPDATE {schema}.wallets SET balance = balance + :a WHERE user_id = :u"),
                                {"a": signed, "u": user},
                            )
                            await conn.execute(
                                text(
                                    f"INSERT INTO {schema}.billing_events (call_id, user_id, amount, kind) "
                                    "VALUES (:c, :u, :a, 'call_block')"
                                ),
                                {"c": call_id, "u": user, "a": signed},
                            )
                        await conn.execute(
                            text(
                                f"UPDATE {schema}.calls SET blocks = blocks + 1, "
                                "next_block_at = next_block_at + interval '30 seconds' WHERE id = :id"
                            ),
                            {"id": call_id},
                        )
            elapsed = time.perf_counter() - started
            async with self.engine.connect() as conn:
                charged = await conn.scalar(text(f"SELECT count(*) FROM {schema}.calls WHERE blocks = 1"))
            if charged != n:
                raise RuntimeError(f"baseline charged {charged} of {n} calls")
            return n / elapsed
        finally:
            async with self.engine.begin() as conn:
                await conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))

    # ---- checks ---------------------------------------------------------------------------------

    async def checks(self, wallet) -> list[str]:
        problems = []
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT count(*) FILTER (WHERE blocks_charged = 2 AND status = 'ACTIVE') AS good, count(*) AS n "
                        "FROM billing.calls WHERE call_id LIKE :prefix"
                    ),
                    {"prefix": f"bm-{self.run_id}-call-%"},
                )
            ).one()
            if row.good != row.n or row.n != self.opts.calls:
                problems.append(f"CALLS: {row.good} of {row.n} calls have exactly 2 blocks ({self.opts.calls} set up)")
            # Read-only look at Wallet's books, in the benchmark only: one operation per derived
            # block id (call:<call>:block:<n>), blocks 0 and 1 of every call.
            blocks = await conn.scalar(
                text(
                    "SELECT count(*) FROM wallet.operations WHERE scope = 'service:billing' AND kind = 'BATCH' "
                    "AND key LIKE :prefix AND split_part(key, ':block:', 2) IN ('0', '1')"
                ),
                {"prefix": f"call:bm-{self.run_id}-call-%"},
            )
            if blocks != 2 * self.opts.calls:
                problems.append(f"BLOCKS: Wallet charged {blocks} derived block ids, expected {2 * self.opts.calls}")
            in_flight = await conn.scalar(
                text("SELECT count(*) FROM billing.calls WHERE call_id LIKE :prefix AND charging_block_no IS NOT NULL"),
                {"prefix": f"bm-{self.run_id}-call-%"},
            )
            if in_flight:
                problems.append(f"IN_FLIGHT: {in_flight} charges left in flight")
        audit = await wallet.Audit(wpb.AuditRequest(), timeout=600)
        problems += [f"{v.kind}: {v.detail}" for v in audit.violations]
        for i in sorted({0, self.opts.calls // 2, self.opts.calls - 1}):
            fan = await wallet.GetBalance(wpb.GetBalanceRequest(owner_id=self.fan(i), asset=wpb.ASSET_TOKEN))
            if fan.spendable_available != FUND_TOKENS - 2 * self.tokens:
                problems.append(f"FAN_BALANCE: {self.fan(i)} has {fan.spendable_available}")
            creator = await wallet.GetBalance(wpb.GetBalanceRequest(owner_id=self.creator(i), asset=wpb.ASSET_TOKEN))
            earned = sum(a.posted for a in creator.accounts if a.ref.code == wpb.ACCOUNT_CODE_CREATOR_EARNINGS)
            if earned != 2 * (self.tokens - self.fee):
                problems.append(f"CREATOR_BALANCE: {self.creator(i)} earned {earned}")
        return problems

    # ---- the run --------------------------------------------------------------------------------

    async def run(self, log_dir: Path) -> dict:
        opts = self.opts
        await migrate(self.engine)
        pg_root = await postgres_root(self.engine)
        self.clock = ControlledClock(self.engine)
        await self.clock.set(dt.datetime.now(dt.UTC).replace(microsecond=0))
        wallets = [
            ServiceProcess("wallet", self.database_url, opts.pool, log_dir, FANBANK_CLOCK="controlled")
            for _ in range(opts.wallets)
        ]
        channel = None
        try:
            for process in wallets:
                await process.serving()
            # Several replicas behind one address, as FANBANK_WALLET_ADDR may name them (round robin).
            target = "ipv4:" + ",".join(process.target for process in wallets)
            channel = client.channel(self.settings, target, identity="billing", deadline_seconds=600)
            wallet = wallet_grpc.WalletServiceStub(channel)
            self.say(f"preset {self.preset.platform.name}: {self.tokens} tokens per block, fee {self.fee}")
            self.say(f"baseline: the seeds' design on {opts.baseline_sample} calls …")
            baseline_per_s = await self.baseline()
            self.say(
                f"baseline: {baseline_per_s:,.0f} blocks/s → {opts.calls / baseline_per_s:,.1f} s for {opts.calls:,} calls"
            )
            self.say(f"set-up: funding {opts.calls:,} fans through Wallet …")
            await self.fund(wallet)
            await self.insert_calls()
            meter = Metering(self.engine, wallet, self.settings)
            self.say("set-up: first tick (block 0 of every call, creates the creators' accounts) …")
            warm_started = time.perf_counter()
            warm = await meter.tick()
            self.say(f"set-up: first tick charged {warm:,} blocks in {time.perf_counter() - warm_started:.2f} s")
            due = await self.next_block()
            self.say("set-up: VACUUM (ANALYZE) of the tables a tick writes …")
            await self.vacuum()
            maintenance_before = await self.maintenance_runs()
            self.say(f"measured tick: block 1 due on {due:,} calls …")
            pids = [process.pid for process in wallets]
            wal_before = await self.wal()
            cpu_before = (cpu_seconds(pids), cpu_seconds([os.getpid()]), cpu_seconds(postgres_pids(pg_root)))
            started = time.perf_counter()
            charged = await meter.tick()
            tick_s = time.perf_counter() - started
            cpu_after = (cpu_seconds(pids), cpu_seconds([os.getpid()]), cpu_seconds(postgres_pids(pg_root)))
            wal = wal_figures(wal_before, await self.wal(), charged)
            wallet_cpu, billing_cpu, pg_cpu = (a - b for a, b in zip(cpu_after, cpu_before, strict=True))
            self.say(
                f"measured tick: {charged:,} blocks in {tick_s:.2f} s = {charged / tick_s:,.0f} blocks/s "
                f"(CPU s: billing {billing_cpu:.1f}, wallet {wallet_cpu:.1f}, postgres {pg_cpu:.1f})"
            )
            self.say(
                f"measured tick: WAL {wal['wal_records_per_unit']} records, {wal['wal_bytes_per_unit']} bytes per "
                f"block, {wal['wal_full_page_images']} full page images"
            )
            # A lower bound: a worker reports a table when it is done with it, so a run still going
            # at this point is not counted.
            maintenance = await self.maintenance_runs() - maintenance_before
            if maintenance:
                self.say(f"measured tick: {maintenance} autovacuum/autoanalyze run(s) overlapped it")
            steps = ", ".join(f"{k} {v:.2f}" for k, v in meter.seconds.items())
            self.say(f"measured tick: seconds summed over rounds (incl. the warm tick): {steps}")
            self.say("checks: calls, blocks by derived id, Wallet Audit, balances …")
            problems = await self.checks(wallet)
        except BaseException:
            for process in wallets:
                print(f"wallet output (last lines):\n{process.log_tail()}", flush=True)
            raise
        finally:
            if channel is not None:
                await channel.close()
            for process in wallets:
                process.stop()
            await self.clock.release()  # a database given by URL goes back to its own time
            await self.engine.dispose()
        for problem in problems[:20]:
            self.say(f"PROBLEM {problem}")
        blocks_per_s = charged / tick_s if tick_s else 0.0
        return {
            "scenario": "metering",
            "calls": opts.calls,
            "tick_s": round(tick_s, 3),
            "blocks_per_s": round(blocks_per_s, 1),
            "baseline_blocks_per_s": round(baseline_per_s, 1),
            "ratio_vs_baseline": round(blocks_per_s / baseline_per_s, 2),
            "audit": "ok" if not problems and charged == opts.calls else "failed",
            "charged": charged,
            "preset": self.preset.platform.name,
            "baseline_sample": opts.baseline_sample,
            "wallets": opts.wallets,
            "autovacuum_runs": maintenance,
            "cpu_s": {"billing": round(billing_cpu, 2), "wallet": round(wallet_cpu, 2), "postgres": round(pg_cpu, 2)},
            "wal": wal,
        }


def main(argv: list[str]) -> int:
    opts = parse_args(argv)
    tune_gc()  # Billing's metering runs in this process, tuned as `fanbank serve billing` is
    with database(load_settings()) as database_url, tempfile.TemporaryDirectory(prefix="fanbank-bench-") as logs:
        result = asyncio.run(Run(opts, database_url).run(Path(logs)))
    print(json.dumps(result), flush=True)
    return 0 if result["audit"] == "ok" else 1
