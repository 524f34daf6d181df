"""Two Billing OS processes meter 2,000 calls for 100 simulated blocks on one database: every
block is charged exactly once (Wallet's transfers counted by derived id), none is missed, both
processes did part of the work, and Wallet's Audit is clean.

Time is the controlled clock shared through the database: the test moves it in 15 s steps (below
the 20 s heartbeat grace), renews every lease with HeartbeatCalls after each step, and waits for
the processes' own background ticks to charge the block.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import uuid
from contextlib import AsyncExitStack

from sqlalchemy import text

from shared.bench import ServiceProcess
from shared.clock import ControlledClock
from shared.gen.fanbank.billing.v1 import billing_service_pb2 as bpb
from shared.gen.fanbank.wallet.v1 import wallet_service_pb2 as wpb
from tests.harness import Caller, migrated_engine, running, settings_for

CALLS = 2000
BLOCKS = 100  # after the first, charged by StartCall
TOKENS = 50  # digis, 100 tokens per minute
T0 = dt.datetime(2034, 1, 1, tzinfo=dt.UTC)
STEP = dt.timedelta(seconds=15)
BLOCK_WAIT_S = 120.0


async def _wait_charged(engine, block_no: int) -> None:
    deadline = time.monotonic() + BLOCK_WAIT_S
    while True:
        async with engine.connect() as conn:
            charged = await conn.scalar(
                text("SELECT count(*) FROM billing.calls WHERE blocks_charged > :b AND charging_block_no IS NULL"),
                {"b": block_no},
            )
        if charged == CALLS:
            return
        assert time.monotonic() < deadline, f"block {block_no}: {charged} of {CALLS} charged"
        await asyncio.sleep(0.05)


def _charged_by(process: ServiceProcess) -> int:
    total = 0
    for line in process.log_path.read_text(errors="replace").splitlines():
        if '"metering tick"' in line:
            total += json.loads(line).get("blocks_charged", 0)
    return total


async def test_two_billing_processes_charge_every_block_exactly_once(database_url, tmp_path):
    settings = settings_for(database_url, None, background_ms=0)
    engine = await migrated_engine(settings, pool_size=8)
    clock = ControlledClock(engine)
    await clock.set(T0)
    async with AsyncExitStack() as stack:
        wallet_target, _ = await stack.enter_async_context(running("wallet", settings, engine))
        wallet = Caller(settings, wallet_target)
        stack.push_async_callback(wallet.close)
        env = {
            "FANBANK_CLOCK": "controlled",
            "FANBANK_LOG_LEVEL": "INFO",
            "FANBANK_BACKGROUND_MS": "20",
            "FANBANK_BILLING_CLAIM_CHUNK": "250",
            "FANBANK_WALLET_ADDR": wallet_target,
            "FANBANK_PRESET": "digis",
        }
        processes = [ServiceProcess("billing", database_url, 8, tmp_path, **env) for _ in range(2)]
        for process in processes:
            stack.callback(process.stop)
        for process in processes:
            await process.serving()
        stubs = []
        for process in processes:
            caller = Caller(settings, process.target)
            stack.push_async_callback(caller.close)
            stubs.append(caller.billing)

        run = uuid.uuid4().hex[:8]
        fans = [f"rep-{run}-fan-{i}" for i in range(CALLS)]
        creators = [f"rep-{run}-creator-{i}" for i in range(CALLS // 20)]
        clearing = wpb.AccountRef(code=wpb.ACCOUNT_CODE_PROVIDER_CLEARING, asset=wpb.ASSET_TOKEN)
        for first in range(0, CALLS, 1000):
            items = [
                wpb.TransferSpec(
                    transfer_id=f"rep-{run}-fund-{i}",
                    debit=clearing,
                    credit=wpb.AccountRef(
                        owner_id=fans[i], code=wpb.ACCOUNT_CODE_USER_PURCHASED, asset=wpb.ASSET_TOKEN
                    ),
                    amount=TOKENS * (BLOCKS + 1),
                    code=wpb.TRANSFER_CODE_PURCHASE,
                )
                for i in range(first, first + 1000)
            ]
            await wallet.wallet.BatchTransfer(
                wpb.BatchTransferRequest(
                    batch_id=f"rep-{run}-fund-{first}", mode=wpb.BATCH_MODE_LINKED, transfers=items
                )
            )
        for creator in creators:
            await stubs[0].SetCallSettings(
                bpb.SetCallSettingsRequest(creator_id=creator, rate_tokens_per_minute=100, available=True)
            )
        gate = asyncio.Semaphore(32)

        async def start(i: int) -> str:
            async with gate:
                call = await stubs[i % 2].StartCall(
                    bpb.StartCallRequest(
                        request_id=f"rep-{run}-start-{i}",
                        fan_id=fans[i],
                        creator_id=creators[i % len(creators)],
                        rate_tokens_per_minute=100,
                        media_node=f"rep-{run}-node-{i % 4}",
                    )
                )
                return call.call.call_id

        ids = await asyncio.gather(*(start(i) for i in range(CALLS)))

        async def beat() -> None:
            for first in range(0, CALLS, 1000):
                answer = await stubs[first // 1000 % 2].HeartbeatCalls(
                    bpb.HeartbeatCallsRequest(call_ids=ids[first : first + 1000])
                )
                assert all(lease.status == bpb.CALL_STATUS_ACTIVE for lease in answer.leases)

        for block_no in range(1, BLOCKS + 1):
            for _ in range(2):
                await clock.advance(STEP)
                await beat()
            await _wait_charged(engine, block_no)

        async with engine.connect() as conn:
            # Read-only look at Wallet's books, in the test only: one posting per derived block id.
            per_block = (
                await conn.execute(
                    text(
                        "SELECT count(*) AS postings, count(DISTINCT item_id) AS blocks, "
                        "coalesce(sum(amount), 0) AS tokens FROM wallet.transfers WHERE item_id LIKE 'call:%'"
                    )
                )
            ).one()
            statuses = dict(
                (await conn.execute(text("SELECT status, count(*) FROM billing.calls GROUP BY status"))).all()
            )
            in_flight = await conn.scalar(
                text("SELECT count(*) FROM billing.calls WHERE charging_block_no IS NOT NULL")
            )
        expected = CALLS * (BLOCKS + 1)
        assert (per_block.postings, per_block.blocks, per_block.tokens) == (expected, expected, expected * TOKENS)
        assert statuses == {"ACTIVE": CALLS} and in_flight == 0
        shares = [_charged_by(p) for p in processes]
        assert sum(shares) == CALLS * BLOCKS and all(shares), shares  # both did part of the work
        audit = await wallet.wallet.Audit(wpb.AuditRequest())
        assert audit.ok, audit
        for call_id in ids[:10]:
            got = (await stubs[0].GetCall(bpb.GetCallRequest(call_id=call_id))).call
            assert (got.blocks_charged, got.tokens_charged) == (BLOCKS + 1, TOKENS * (BLOCKS + 1))
    await engine.dispose()
