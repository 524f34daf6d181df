"""The pay-per-minute call of PRODUCT.md money flow 6, end to end through Billing and Wallet on the
controlled clock: a fan with 175 tokens calls a creator at 100 tokens/min (50 per 30 s block)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from contextlib import AsyncExitStack

import pytest

from shared.clock import ControlledClock
from shared.gen.fanbank.billing.v1 import billing_service_pb2 as bpb
from shared.gen.fanbank.wallet.v1 import wallet_service_pb2 as wpb
from shared.watch import make_token
from tests.harness import Caller, migrated_engine, reason_of, running, settings_for

T0 = dt.datetime(2033, 6, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
async def world(database_url, redis_url):
    """Wallet plus one Billing per preset (digis, streamit) on one database."""
    stack = AsyncExitStack()
    base = settings_for(database_url, redis_url, background_ms=0)  # the test ticks by hand
    engine = await migrated_engine(base, pool_size=12)
    clock = ControlledClock(engine)
    await clock.set(T0)
    wallet_target, _ = await stack.enter_async_context(running("wallet", base, engine))
    wired = dataclasses.replace(base, addresses={**base.addresses, "wallet": wallet_target})
    wallet = Caller(wired, wallet_target)
    billings = {}
    callers = [wallet]
    for preset in ("digis", "streamit"):
        settings = dataclasses.replace(wired, preset_name=preset)
        target, service = await stack.enter_async_context(running("billing", settings, engine))
        caller = Caller(settings, target)
        callers.append(caller)
        billings[preset] = (caller.billing, service)
    yield clock, wallet.wallet, billings
    for caller in callers:
        await caller.close()
    await stack.aclose()
    await engine.dispose()


def earnings(balance: wpb.GetBalanceResponse) -> int:
    return sum(a.posted for a in balance.accounts if a.ref.code == wpb.ACCOUNT_CODE_CREATOR_EARNINGS)


async def run_call(world, preset: str):
    clock, wallet, billings = world
    billing, service = billings[preset]
    fan, creator = f"fan-{uuid.uuid4().hex[:8]}", f"creator-{uuid.uuid4().hex[:8]}"
    # Redis outlives this module's database: channel names must be new to it.
    node = f"node-{uuid.uuid4().hex[:8]}"
    await wallet.Transfer(
        wpb.TransferRequest(
            transfer=wpb.TransferSpec(
                transfer_id=f"buy-{fan}",
                debit=wpb.AccountRef(owner_id="", code=wpb.ACCOUNT_CODE_PROVIDER_CLEARING, asset=wpb.ASSET_TOKEN),
                credit=wpb.AccountRef(owner_id=fan, code=wpb.ACCOUNT_CODE_USER_PURCHASED, asset=wpb.ASSET_TOKEN),
                amount=175,
                code=wpb.TRANSFER_CODE_PURCHASE,
            )
        )
    )
    await billing.SetCallSettings(
        bpb.SetCallSettingsRequest(creator_id=creator, rate_tokens_per_minute=100, available=True)
    )
    call = (
        await billing.StartCall(
            bpb.StartCallRequest(
                request_id=f"start-{fan}", fan_id=fan, creator_id=creator, rate_tokens_per_minute=100, media_node=node
            )
        )
    ).call
    assert call.tokens_per_block == 50 and call.blocks_charged == 1
    spendable = [(await wallet.GetBalance(wpb.GetBalanceRequest(owner_id=fan))).spendable_available]
    for _ in range(3):
        for _ in range(3):  # heartbeats every 10 s, inside the 20 s grace
            await clock.advance(dt.timedelta(seconds=10))
            if (await billing.GetCall(bpb.GetCallRequest(call_id=call.call_id))).call.status == bpb.CALL_STATUS_ACTIVE:
                await billing.Heartbeat(bpb.HeartbeatRequest(call_id=call.call_id))
        await service.metering.tick()
        spendable.append((await wallet.GetBalance(wpb.GetBalanceRequest(owner_id=fan))).spendable_available)
    assert spendable == [125, 75, 25, 25]
    ended = (await billing.GetCall(bpb.GetCallRequest(call_id=call.call_id))).call
    assert ended.status == bpb.CALL_STATUS_ENDED
    assert ended.end_reason == bpb.END_REASON_INSUFFICIENT_FUNDS
    assert ended.blocks_charged == 3 and ended.tokens_charged == 150
    assert ended.billed_seconds == 90

    # The fan's app sees every event in order (resuming after STARTED, seq 1).
    seen = []
    stream = billing.WatchCall(
        bpb.WatchCallRequest(call_id=call.call_id, resume_token=make_token(f"call:{call.call_id}", 1))
    )
    async for message in stream:
        seen.append((message.event.type, message.event.block_no))
        if message.event.type == bpb.CALL_EVENT_TYPE_ENDED:
            assert message.event.end_reason == bpb.END_REASON_INSUFFICIENT_FUNDS
            stream.cancel()
            break
    assert seen == [
        (bpb.CALL_EVENT_TYPE_BLOCK_CHARGED, 0),
        (bpb.CALL_EVENT_TYPE_BLOCK_CHARGED, 1),
        (bpb.CALL_EVENT_TYPE_BLOCK_CHARGED, 2),
        (bpb.CALL_EVENT_TYPE_LOW_BALANCE_WARNING, 0),
        (bpb.CALL_EVENT_TYPE_ENDED, 0),
    ]
    # The media server follows the life of every call of its node in one stream (after STARTED, seq
    # 1): the warning and the end, not the per-block charges.
    node_seen = []
    stream = billing.WatchNodeCalls(
        bpb.WatchNodeCallsRequest(media_node=node, resume_token=make_token(f"node:{node}", 1))
    )
    async for message in stream:
        assert message.event.call_id == call.call_id and message.resume_token
        node_seen.append(message.event.type)
        if message.event.type == bpb.CALL_EVENT_TYPE_ENDED:
            stream.cancel()
            break
    assert node_seen == [bpb.CALL_EVENT_TYPE_LOW_BALANCE_WARNING, bpb.CALL_EVENT_TYPE_ENDED]
    creator_balance = await wallet.GetBalance(wpb.GetBalanceRequest(owner_id=creator))
    audit = await wallet.Audit(wpb.AuditRequest())
    assert audit.ok, audit
    stats = await billing.GetCallStats(bpb.GetCallStatsRequest(creator_id=creator))
    assert (stats.calls, stats.blocks_charged, stats.tokens_charged) == (1, 3, 150)
    return ended, earnings(creator_balance), stats


async def test_digis_call_until_the_fan_runs_out(world):
    ended, creator_gain, stats = await run_call(world, "digis")
    assert creator_gain == 150 and ended.fee_tokens == 0 and stats.fee_tokens == 0


async def test_streamit_call_takes_the_30_percent_fee(world):
    ended, creator_gain, stats = await run_call(world, "streamit")
    # 30% of each 50-token block (15) to the platform, 35 to the creator.
    assert ended.fee_bps == 3000
    assert creator_gain == 105 and ended.fee_tokens == 45 and stats.fee_tokens == 45


async def test_a_call_needs_one_block_to_start(world):
    _, wallet, billings = world
    billing, _ = billings["digis"]
    creator = f"creator-{uuid.uuid4().hex[:8]}"
    await billing.SetCallSettings(
        bpb.SetCallSettingsRequest(creator_id=creator, rate_tokens_per_minute=100, available=True)
    )
    with pytest.raises(Exception) as e:
        await billing.StartCall(
            bpb.StartCallRequest(request_id="broke", fan_id="fan-broke", creator_id=creator, rate_tokens_per_minute=100)
        )
    assert reason_of(e.value) == "INSUFFICIENT_FUNDS"
