"""Billing with Wallet, in process, on the controlled clock: refusals, heartbeat loss, pause and
resume, replays, Billing's own outage, watch order and resume, two metering replicas."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import hashlib
import json
from contextlib import AsyncExitStack

import grpc
import pytest
from livekit import api as livekit
from sqlalchemy import text

from shared.clock import ControlledClock
from shared.config import DEV_LIVEKIT_API_KEY, DEV_LIVEKIT_API_SECRET
from shared.db import make_engine
from shared.gen.fanbank.billing.v1 import billing_service_pb2 as bpb
from shared.gen.fanbank.wallet.v1 import wallet_service_pb2 as wpb
from tests import harness
from tests.harness import Caller, as_user, migrated_engine, reason_of, running, settings_for, uid

T0 = dt.datetime(2032, 3, 1, tzinfo=dt.UTC)
BLOCK = dt.timedelta(seconds=30)


@dataclasses.dataclass
class Env:
    engine: object
    clock: ControlledClock
    settings: object
    wallet: object  # WalletServiceStub as "platform"
    billing: object  # BillingServiceStub as "platform" (an internal service: the media server)
    users: object  # BillingServiceStub as "edge", for calls made inside as_user()
    service: object  # the Billing service object
    stack: AsyncExitStack


@pytest.fixture(scope="module")
async def env(database_url, redis_url):
    stack = AsyncExitStack()
    # Tests tick by hand (background_ms=0): a background loop would race them for the due rows.
    base = settings_for(database_url, redis_url, background_ms=0)
    engine = await migrated_engine(base, pool_size=20)
    clock = ControlledClock(engine)
    await clock.set(T0)
    wallet_target, _ = await stack.enter_async_context(running("wallet", base, engine))
    settings = dataclasses.replace(base, addresses={**base.addresses, "wallet": wallet_target})
    billing_target, service = await stack.enter_async_context(running("billing", settings, engine))
    wallet_caller = Caller(settings, wallet_target)
    caller = Caller(settings, billing_target)
    edge = Caller(settings, billing_target, identity="edge")
    yield Env(engine, clock, settings, wallet_caller.wallet, caller.billing, edge.billing, service, stack)
    for c in (wallet_caller, caller, edge):
        await c.close()
    await stack.aclose()
    await engine.dispose()


async def fund(env: Env, owner: str, amount: int) -> None:
    await harness.fund(env.wallet, owner, amount)


async def balance(env: Env, owner: str) -> wpb.GetBalanceResponse:
    return await env.wallet.GetBalance(wpb.GetBalanceRequest(owner_id=owner))


def earnings(bal: wpb.GetBalanceResponse) -> int:
    return sum(a.posted for a in bal.accounts if a.ref.code == wpb.ACCOUNT_CODE_CREATOR_EARNINGS)


async def creator(env: Env, rate: int = 100, available: bool = True) -> str:
    creator_id = uid("creator")
    await env.billing.SetCallSettings(
        bpb.SetCallSettingsRequest(creator_id=creator_id, rate_tokens_per_minute=rate, available=available)
    )
    return creator_id


async def start(env: Env, fan: str, creator_id: str, rate: int = 100, **kw) -> bpb.Call:
    request = bpb.StartCallRequest(
        request_id=kw.pop("request_id", uid("start")),
        fan_id=fan,
        creator_id=creator_id,
        rate_tokens_per_minute=rate,
        **kw,
    )
    return (await env.billing.StartCall(request)).call


async def heartbeat(env: Env, call_id: str) -> None:
    await env.billing.Heartbeat(bpb.HeartbeatRequest(call_id=call_id))


async def get(env: Env, call_id: str) -> bpb.Call:
    return (await env.billing.GetCall(bpb.GetCallRequest(call_id=call_id))).call


async def advance(env: Env, by: dt.timedelta, beat: list[str] = ()) -> None:
    """Moves time in steps below the heartbeat grace, heartbeating `beat` at each step, then ticks."""
    step = dt.timedelta(seconds=10)
    left = by
    while left > dt.timedelta(0):
        move = min(step, left)
        await env.clock.advance(move)
        left -= move
        for call_id in beat:
            await heartbeat(env, call_id)
    await env.service.metering.tick()


async def beat_all_impl(env: Env, ids: list[str]) -> None:
    gate = asyncio.Semaphore(16)

    async def one(call_id: str) -> None:
        async with gate:
            await heartbeat(env, call_id)

    await asyncio.gather(*(one(i) for i in ids))


async def refused(coro) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await coro
    return e.value.code(), reason_of(e.value)


async def audit_ok(env: Env) -> None:
    audit = await env.wallet.Audit(wpb.AuditRequest())
    assert audit.ok, audit


async def test_bad_input_changes_nothing(env):
    fan, c = uid("fan"), await creator(env)
    await fund(env, fan, 1000)
    b = env.billing
    nobody = uid("creator")
    cases = [
        (b.GetCall(bpb.GetCallRequest(call_id="nope")), grpc.StatusCode.NOT_FOUND, "CALL_NOT_FOUND"),
        (start(env, fan, nobody), grpc.StatusCode.NOT_FOUND, "CALL_SETTINGS_NOT_FOUND"),
        (start(env, fan, c, rate=0), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_RATE"),
        (start(env, fan, c, rate=10_002), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_RATE"),
        (start(env, fan, c, rate=3), grpc.StatusCode.INVALID_ARGUMENT, "RATE_NOT_DIVISIBLE"),
        (start(env, fan, c, rate=120), grpc.StatusCode.FAILED_PRECONDITION, "PRICE_CHANGED"),
        (start(env, fan, fan), grpc.StatusCode.INVALID_ARGUMENT, "SELF_CALL"),
        (
            b.SetCallSettings(bpb.SetCallSettingsRequest(creator_id=nobody, rate_tokens_per_minute=-5)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_RATE",
        ),
        (
            b.SetCallSettings(bpb.SetCallSettingsRequest(creator_id=nobody, rate_tokens_per_minute=10_002)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_RATE",
        ),
    ]
    for coro, code, reason in cases:
        assert await refused(coro) == (code, reason)
    busy = await creator(env, available=False)
    assert await refused(start(env, fan, busy)) == (grpc.StatusCode.FAILED_PRECONDITION, "CREATOR_UNAVAILABLE")
    poor = uid("fan")
    await fund(env, poor, 49)
    assert await refused(start(env, poor, c)) == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")
    assert (await balance(env, fan)).spendable_available == 1000
    assert (await balance(env, poor)).spendable_available == 49

    call = await start(env, fan, c)
    other = await creator(env)
    assert await refused(start(env, fan, other)) == (grpc.StatusCode.FAILED_PRECONDITION, "FAN_ALREADY_IN_CALL")
    assert await refused(b.ResumeCall(bpb.ResumeCallRequest(request_id=uid("r"), call_id=call.call_id))) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "CALL_NOT_PAUSED",
    )
    stranger = uid("fan")
    async with as_user(stranger):
        for rpc, req in (
            (env.users.EndCall, bpb.EndCallRequest(request_id=uid("e"), call_id=call.call_id)),
            (env.users.PauseCall, bpb.PauseCallRequest(request_id=uid("p"), call_id=call.call_id)),
            (env.users.GetCall, bpb.GetCallRequest(call_id=call.call_id)),
        ):
            assert (await refused(rpc(req)))[0] == grpc.StatusCode.PERMISSION_DENIED
        assert await refused(env.users.Heartbeat(bpb.HeartbeatRequest(call_id=call.call_id))) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "SERVICE_ONLY",
        )
    async with as_user(fan):
        ended = (await env.users.EndCall(bpb.EndCallRequest(request_id=uid("e"), call_id=call.call_id))).call
    assert ended.end_reason == bpb.END_REASON_FAN_ENDED and ended.blocks_charged == 1
    assert await refused(heartbeat(env, call.call_id)) == (grpc.StatusCode.FAILED_PRECONDITION, "CALL_ENDED")
    again = (await b.EndCall(bpb.EndCallRequest(request_id=uid("e"), call_id=call.call_id))).call
    assert again == ended
    assert (await balance(env, fan)).spendable_available == 950
    await audit_ok(env)


async def test_heartbeat_calls_renews_many_leases_at_once(env):
    fans = [uid("fan") for _ in range(3)]
    c1, c2, c3 = [await creator(env) for _ in range(3)]
    for f in fans:
        await fund(env, f, 1000)
    calls = [await start(env, f, c) for f, c in zip(fans, (c1, c2, c3), strict=True)]
    ids = [k.call_id for k in calls]
    await env.billing.EndCall(bpb.EndCallRequest(request_id=uid("e"), call_id=ids[2]))
    node = uid("node")
    unknown = uid("nocall")
    # Grace 20 s: two 15 s steps with one HeartbeatCalls each keep the live calls going.
    for _ in range(2):
        await env.clock.advance(dt.timedelta(seconds=15))
        answer = await env.billing.HeartbeatCalls(bpb.HeartbeatCallsRequest(media_node=node, call_ids=[*ids, unknown]))
    assert [(lease.call_id, lease.status) for lease in answer.leases] == [
        (ids[0], bpb.CALL_STATUS_ACTIVE),
        (ids[1], bpb.CALL_STATUS_ACTIVE),
        (ids[2], bpb.CALL_STATUS_ENDED),
        (unknown, bpb.CALL_STATUS_UNSPECIFIED),
    ]
    await env.service.metering.tick()
    for call_id in ids[:2]:
        got = await get(env, call_id)
        assert (got.status, got.blocks_charged, got.media_node) == (bpb.CALL_STATUS_ACTIVE, 2, node)
    for bad, reason in (
        ([], "NO_CALLS"),
        ([ids[0], ids[0]], "DUPLICATE_CALL_ID"),
        (["not an id"], "INVALID_ID"),
        ([uid("x") for _ in range(1001)], "TOO_MANY_CALLS"),
    ):
        request = bpb.HeartbeatCallsRequest(call_ids=bad)
        assert await refused(env.billing.HeartbeatCalls(request)) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    async with as_user(fans[0]):
        request = bpb.HeartbeatCallsRequest(call_ids=ids[:1])
        assert await refused(env.users.HeartbeatCalls(request)) == (grpc.StatusCode.PERMISSION_DENIED, "SERVICE_ONLY")
    for call_id in ids[:2]:
        await env.billing.EndCall(bpb.EndCallRequest(request_id=uid("e"), call_id=call_id))
    await audit_ok(env)


def livekit_webhook(event: dict, secret: str = DEV_LIVEKIT_API_SECRET) -> bpb.ReceiveMediaWebhookRequest:
    body = json.dumps(event).encode()
    token = (
        livekit.AccessToken(DEV_LIVEKIT_API_KEY, secret)
        .with_sha256(base64.b64encode(hashlib.sha256(body).digest()).decode())
        .to_jwt()
    )
    return bpb.ReceiveMediaWebhookRequest(body=body, authorization=token)


async def test_livekit_webhook_ends_the_call_of_its_room(env):
    fan, c = uid("fan"), await creator(env)
    await fund(env, fan, 1000)
    call = await start(env, fan, c)
    left = {"event": "participant_left", "id": uid("EV"), "room": {"name": call.media_channel}}
    # Forged: signed with another secret, or the body changed after signing. Nothing happens.
    forged = livekit_webhook(left, secret="not-the-livekit-secret-but-one-of-the-same-length-class")
    assert await refused(env.billing.ReceiveMediaWebhook(forged)) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "WEBHOOK_SIGNATURE_INVALID",
    )
    tampered = livekit_webhook({**left, "room": {"name": "call-someone-else"}})
    tampered.body = json.dumps(left).encode()
    assert await refused(env.billing.ReceiveMediaWebhook(tampered)) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "WEBHOOK_SIGNATURE_INVALID",
    )
    unsigned = bpb.ReceiveMediaWebhookRequest(body=json.dumps(left).encode())
    assert (await refused(env.billing.ReceiveMediaWebhook(unsigned)))[1] == "WEBHOOK_UNSIGNED"
    async with as_user(fan):
        assert (await refused(env.users.ReceiveMediaWebhook(livekit_webhook(left))))[1] == "SERVICE_ONLY"
    assert (await get(env, call.call_id)).status == bpb.CALL_STATUS_ACTIVE
    # Another room's event is recorded and changes nothing.
    other = await env.billing.ReceiveMediaWebhook(
        livekit_webhook({"event": "participant_left", "id": uid("EV"), "room": {"name": "lobby"}})
    )
    assert (other.call_id, other.call_ended) == ("", False)
    # Signed correctly: the call ends; a redelivery is answered as a duplicate.
    answer = await env.billing.ReceiveMediaWebhook(livekit_webhook(left))
    assert (answer.call_id, answer.call_ended, answer.duplicate) == (call.call_id, True, False)
    again = await env.billing.ReceiveMediaWebhook(livekit_webhook(left))
    assert (again.call_id, again.call_ended, again.duplicate) == (call.call_id, True, True)
    got = await get(env, call.call_id)
    assert (got.status, got.end_reason, got.blocks_charged) == (bpb.CALL_STATUS_ENDED, bpb.END_REASON_ROOM_CLOSED, 1)
    await advance(env, BLOCK * 2)
    assert (await balance(env, fan)).spendable_available == 950
    await audit_ok(env)


async def test_replayed_start_returns_the_same_call(env):
    fan, c = uid("fan"), await creator(env)
    await fund(env, fan, 500)
    rid = uid("start")
    first = await start(env, fan, c, request_id=rid)
    second = await start(env, fan, c, request_id=rid)
    assert first.call_id == second.call_id and second.blocks_charged == 1
    assert (await balance(env, fan)).spendable_available == 450


async def test_heartbeat_loss_ends_the_call_and_charges_nothing_after(env):
    fan, c = uid("fan"), await creator(env)
    await fund(env, fan, 1000)
    call = await start(env, fan, c)
    assert call.media_node == ""
    node = uid("node")
    await env.billing.Heartbeat(bpb.HeartbeatRequest(call_id=call.call_id, media_node=node))
    await env.billing.Heartbeat(bpb.HeartbeatRequest(call_id=call.call_id, media_node=uid("other")))
    assert (await get(env, call.call_id)).media_node == node  # named once, by the first heartbeat
    await advance(env, BLOCK, beat=[call.call_id])  # block 1 charged
    assert (await get(env, call.call_id)).blocks_charged == 2
    # The media server goes silent: grace 20 s, so block 2 (at 60 s) is not owed.
    await advance(env, dt.timedelta(seconds=90))
    got = await get(env, call.call_id)
    assert got.status == bpb.CALL_STATUS_ENDED and got.end_reason == bpb.END_REASON_HEARTBEAT_LOST
    assert got.blocks_charged == 2
    assert (await balance(env, fan)).spendable_available == 900
    assert earnings(await balance(env, c)) == 100


async def test_pause_carries_the_unused_block_over(env):
    fan, c = uid("fan"), await creator(env)
    await fund(env, fan, 1000)
    call = await start(env, fan, c)
    await advance(env, dt.timedelta(seconds=10), beat=[call.call_id])
    paused = (await env.billing.PauseCall(bpb.PauseCallRequest(request_id=uid("p"), call_id=call.call_id))).call
    assert paused.status == bpb.CALL_STATUS_PAUSED
    await advance(env, dt.timedelta(seconds=120))  # paused: nothing charged, no heartbeat needed
    assert (await get(env, call.call_id)).blocks_charged == 1
    resumed = (await env.billing.ResumeCall(bpb.ResumeCallRequest(request_id=uid("r"), call_id=call.call_id))).call
    assert resumed.status == bpb.CALL_STATUS_ACTIVE
    # 20 s of the paid block remain: nothing due 19 s later, the next block at 20 s.
    await advance(env, dt.timedelta(seconds=19), beat=[call.call_id])
    assert (await get(env, call.call_id)).blocks_charged == 1
    await advance(env, dt.timedelta(seconds=1), beat=[call.call_id])
    assert (await get(env, call.call_id)).blocks_charged == 2
    # A pause longer than the preset's 300 s ends the call.
    await env.billing.PauseCall(bpb.PauseCallRequest(request_id=uid("p"), call_id=call.call_id))
    await advance(env, dt.timedelta(seconds=301))
    got = await get(env, call.call_id)
    assert got.status == bpb.CALL_STATUS_ENDED and got.end_reason == bpb.END_REASON_PAUSE_TOO_LONG
    assert got.blocks_charged == 2 and got.billed_seconds == 30
    assert (await balance(env, fan)).spendable_available == 900


async def test_billing_outage_is_not_charged(env):
    fan, c = uid("fan"), await creator(env)
    await fund(env, fan, 1000)
    call = await start(env, fan, c)
    await advance(env, BLOCK, beat=[call.call_id])
    assert (await get(env, call.call_id)).blocks_charged == 2
    # Billing is down for 5 minutes (no process ticks); the media server keeps heartbeating into the void.
    async with running("billing", env.settings, env.engine):
        pass  # a replica that comes and goes does not matter
    await env.clock.advance(dt.timedelta(minutes=5))
    async with running("billing", env.settings, env.engine) as (_, second):
        await second.metering.tick()
        got = await get(env, call.call_id)
        assert got.status == bpb.CALL_STATUS_ACTIVE, got
        # Blocks at 60 s .. 300 s began in the outage: forgiven. The block starting at the
        # resumption is owed like any other (the call is happening, the grace restarts there).
        assert got.blocks_charged == 3
        await env.clock.advance(dt.timedelta(seconds=25))
        await heartbeat(env, call.call_id)
        await second.metering.tick()
        assert (await get(env, call.call_id)).blocks_charged == 3
        await env.clock.advance(dt.timedelta(seconds=5))
        await second.metering.tick()
        assert (await get(env, call.call_id)).blocks_charged == 4
        await env.billing.EndCall(bpb.EndCallRequest(request_id=uid("e"), call_id=call.call_id))
    assert (await balance(env, fan)).spendable_available == 800


async def test_sweeper_finishes_a_block_left_pending(env):
    fan, c = uid("fan"), await creator(env)
    await fund(env, fan, 1000)
    call = await start(env, fan, c)
    await env.clock.advance(BLOCK)
    await heartbeat(env, call.call_id)
    meter = env.service.metering
    settle, meter.settle = meter.settle, _crash  # dies between Wallet and the outcome commit
    try:
        with pytest.raises(RuntimeError):
            await meter.tick()
    finally:
        meter.settle = settle
    assert (await get(env, call.call_id)).blocks_charged == 1
    assert (await balance(env, fan)).spendable_available == 900  # Wallet did charge
    await meter.tick()  # the charging call is left alone
    assert await meter.sweep(dt.timedelta(0)) == 1
    got = await get(env, call.call_id)
    assert got.blocks_charged == 2
    assert (await balance(env, fan)).spendable_available == 900
    await env.billing.EndCall(bpb.EndCallRequest(request_id=uid("e"), call_id=call.call_id))
    await audit_ok(env)


async def _in_flight(env: Env, call_id: str) -> tuple:
    async with env.engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT charging_block_no, deadline_at FROM billing.calls WHERE call_id = :c"), {"c": call_id}
            )
        ).one()
    return tuple(row)


async def _leave_in_flight(env: Env, call_id: str, block_no: int) -> dt.datetime:
    """Ticks the call's block `block_no`, the process dying between Wallet and the settle; answers
    the deadline the charge keeps while in flight."""
    meter = env.service.metering
    settle, meter.settle = meter.settle, _crash
    try:
        with pytest.raises(RuntimeError):
            await meter.tick()
    finally:
        meter.settle = settle
    charging, deadline = await _in_flight(env, call_id)
    assert charging == block_no
    return deadline


async def test_a_charge_in_flight_outlives_heartbeat_pause_resume_and_end(env):
    """While its block is in flight a call keeps the deadline it was claimed at, whatever happens
    to it, so the sweeper finds the charge; its settle then applies the call's state of that moment
    (a pause keeps the block's unused part, an end keeps the block paid)."""
    fan, c = uid("fan"), await creator(env)
    await fund(env, fan, 1000)
    call = await start(env, fan, c)
    await env.clock.advance(BLOCK)
    await heartbeat(env, call.call_id)
    claimed = await _leave_in_flight(env, call.call_id, 1)
    await env.clock.advance(dt.timedelta(seconds=5))
    await heartbeat(env, call.call_id)
    await env.billing.PauseCall(bpb.PauseCallRequest(request_id=uid("p"), call_id=call.call_id))
    assert await _in_flight(env, call.call_id) == (1, claimed)
    await env.service.metering.tick()  # nothing to do: the call's block is in flight
    assert await env.service.metering.sweep() == 0  # not yet older than the sweeper's lease
    assert await env.service.metering.sweep(dt.timedelta(seconds=5)) == 1
    got = await get(env, call.call_id)
    assert (got.status, got.blocks_charged) == (bpb.CALL_STATUS_PAUSED, 2)
    await env.billing.ResumeCall(bpb.ResumeCallRequest(request_id=uid("r"), call_id=call.call_id))
    # 25 s of block 1 were unused at the pause: block 2 is due 25 s after the resume.
    await advance(env, dt.timedelta(seconds=24), beat=[call.call_id])
    assert (await get(env, call.call_id)).blocks_charged == 2
    await advance(env, dt.timedelta(seconds=1), beat=[call.call_id])
    assert (await get(env, call.call_id)).blocks_charged == 3
    # Block 3 in flight, then the fan hangs up: the block began before the end and stays paid.
    await env.clock.advance(BLOCK)
    await heartbeat(env, call.call_id)
    claimed = await _leave_in_flight(env, call.call_id, 3)
    ended = (await env.billing.EndCall(bpb.EndCallRequest(request_id=uid("e"), call_id=call.call_id))).call
    assert ended.status == bpb.CALL_STATUS_ENDED
    assert await _in_flight(env, call.call_id) == (3, claimed)
    assert await env.service.metering.sweep(dt.timedelta(0)) == 1
    got = await get(env, call.call_id)
    assert (got.status, got.blocks_charged, got.tokens_charged) == (bpb.CALL_STATUS_ENDED, 4, 200)
    assert await _in_flight(env, call.call_id) == (None, None)
    assert (await balance(env, fan)).spendable_available == 800
    await audit_ok(env)


async def test_a_refused_block_of_a_call_ended_meanwhile_is_released(env):
    """The sweeper re-drives a block whose first settle died; by then the call has ended. Wallet
    refuses the block again (the fan ran out): the call lets go of the charge."""
    fan, c = uid("fan"), await creator(env)
    await fund(env, fan, 50)  # exactly the first block
    call = await start(env, fan, c)
    await env.clock.advance(BLOCK)
    await heartbeat(env, call.call_id)
    meter = env.service.metering
    settle, meter.settle = meter.settle, _crash  # dies between Wallet's refusal and the outcome commit
    try:
        with pytest.raises(RuntimeError):
            await meter.tick()
    finally:
        meter.settle = settle
    await env.billing.EndCall(bpb.EndCallRequest(request_id=uid("e"), call_id=call.call_id))
    assert await meter.sweep(dt.timedelta(0)) == 1
    async with env.engine.connect() as conn:
        charging = (
            await conn.execute(
                text("SELECT charging_block_no, charging_since, deadline_at FROM billing.calls WHERE call_id = :c"),
                {"c": call.call_id},
            )
        ).one()
    assert tuple(charging) == (None, None, None)  # released, and an ended call has nothing due
    got = await get(env, call.call_id)
    assert (got.blocks_charged, got.tokens_charged) == (1, 50)
    assert (await balance(env, fan)).spendable_available == 0
    await audit_ok(env)


async def _crash(outcomes, confirming=None):
    raise RuntimeError("process killed")


def _wallet_down() -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down")


async def test_start_call_with_an_unknown_outcome_is_settled_by_the_retry(env):
    fan, c = uid("fan"), await creator(env)
    await fund(env, fan, 1000)
    meter = env.service.metering
    pay = meter.pay

    async def charged_but_answer_lost(charges):
        await pay(charges)
        raise _wallet_down()

    request_id = uid("start")
    meter.pay = charged_but_answer_lost
    try:
        code, reason = await refused(start(env, fan, c, request_id=request_id))
    finally:
        meter.pay = pay
    assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "CALL_STARTING")
    assert (await balance(env, fan)).spendable_available == 950  # Wallet did charge
    # The fan's app retries with the same request id: the call is answered, charged once.
    call = await start(env, fan, c, request_id=request_id)
    assert call.status == bpb.CALL_STATUS_ACTIVE and call.blocks_charged == 1
    assert (await start(env, fan, c, request_id=request_id)).call_id == call.call_id
    await meter.sweep(dt.timedelta(0))  # nothing left for the sweeper
    assert (await get(env, call.call_id)).status == bpb.CALL_STATUS_ACTIVE
    assert (await balance(env, fan)).spendable_available == 950
    await env.billing.EndCall(bpb.EndCallRequest(request_id=uid("e"), call_id=call.call_id))
    await audit_ok(env)


@pytest.mark.parametrize("wallet_charged", [True, False])
async def test_an_unconfirmed_start_is_abandoned_and_refunded(env, wallet_charged):
    fan, c = uid("fan"), await creator(env)
    await fund(env, fan, 1000)
    meter = env.service.metering
    pay = meter.pay

    async def lost(charges):
        if wallet_charged:
            await pay(charges)
        raise _wallet_down()

    request_id = uid("start")
    meter.pay = lost
    try:
        code, reason = await refused(start(env, fan, c, request_id=request_id))
    finally:
        meter.pay = pay
    assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "CALL_STARTING")
    # The fan gave up. The sweeper finds the PENDING first block; it never starts the call.
    await env.clock.advance(dt.timedelta(minutes=2))
    await meter.sweep()
    async with env.engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT call_id, status, end_reason, refund_state FROM billing.calls WHERE request_id = :r"),
                {"r": request_id},
            )
        ).one()
    assert (row.status, row.end_reason) == ("FAILED", "START_ABANDONED")
    # Whether or not the lost attempt reached Wallet, the re-drive (same derived id) is what tells:
    # it charges at most once, and the abandoned start's charge is refunded.
    assert row.refund_state == "DONE"
    assert (await balance(env, fan)).spendable_available == 1000  # whole again
    assert (await balance(env, c)).spendable_available == 0
    # A late retry is told the truth, and a new call can start.
    code, reason = await refused(start(env, fan, c, request_id=request_id))
    assert (code, reason) == (grpc.StatusCode.ABORTED, "CALL_START_ABANDONED")
    call = await start(env, fan, c)
    assert call.status == bpb.CALL_STATUS_ACTIVE
    await env.billing.EndCall(bpb.EndCallRequest(request_id=uid("e"), call_id=call.call_id))
    await meter.sweep()  # the refund is not repeated
    assert (await balance(env, fan)).spendable_available == 950
    await audit_ok(env)


async def test_watch_call_in_order_and_resumes(env):
    fan, c = uid("fan"), await creator(env)
    await fund(env, fan, 175)
    call = await start(env, fan, c)
    for _ in range(3):
        await advance(env, BLOCK, beat=[call.call_id])
    got = await get(env, call.call_id)
    assert got.end_reason == bpb.END_REASON_INSUFFICIENT_FUNDS

    async def collect(token: str = "", limit: int = 100):
        out = []
        stream = env.billing.WatchCall(bpb.WatchCallRequest(call_id=call.call_id, resume_token=token))
        async for message in stream:
            out.append(message)
            if message.event.type == bpb.CALL_EVENT_TYPE_ENDED or len(out) >= limit:
                stream.cancel()
                break
        return out

    first = await collect(_first_token(call.call_id))
    events = [(m.event.type, m.event.block_no) for m in first]
    assert events == [
        (bpb.CALL_EVENT_TYPE_BLOCK_CHARGED, 0),
        (bpb.CALL_EVENT_TYPE_BLOCK_CHARGED, 1),
        (bpb.CALL_EVENT_TYPE_BLOCK_CHARGED, 2),
        (bpb.CALL_EVENT_TYPE_LOW_BALANCE_WARNING, 0),
        (bpb.CALL_EVENT_TYPE_ENDED, 0),
    ]
    resumed = await collect(first[1].resume_token)
    assert [m.resume_token for m in resumed] == [m.resume_token for m in first[2:]]


def _first_token(call_id: str) -> str:
    # Seq 1 is STARTED; resuming after it replays everything else.
    from shared.watch import make_token

    return make_token(f"call:{call_id}", 1)


async def test_two_replicas_charge_every_block_once(env, database_url):
    work = [0, 0]
    calls_n, blocks = 200, 4
    c = await creator(env)
    fans = [uid("fan") for _ in range(calls_n)]
    await asyncio.gather(*(fund(env, f, 50 * (blocks + 1)) for f in fans))
    gate = asyncio.Semaphore(16)

    async def start_one(fan: str) -> bpb.Call:
        async with gate:
            return await start(env, fan, c)

    calls = await asyncio.gather(*(start_one(f) for f in fans))
    ids = [k.call_id for k in calls]
    other_engine = make_engine(database_url, 8)
    try:
        # Small claims, so the two replicas interleave rounds rather than one taking everything.
        small = dataclasses.replace(env.settings, billing_claim_chunk=25)
        async with running("billing", small, other_engine) as (_, second):
            env.service.metering.claim_chunk = 25
            for _ in range(blocks):
                await env.clock.advance(BLOCK)
                await beat_all_impl(env, ids)
                charged = await asyncio.gather(env.service.metering.tick(), second.metering.tick())
                assert sum(charged) == calls_n
                work = [w + n for w, n in zip(work, charged, strict=True)]
    finally:
        env.service.metering.claim_chunk = env.settings.billing_claim_chunk
        await other_engine.dispose()
    assert all(work), work  # both replicas did part of the work
    async with env.engine.connect() as conn:
        # Read-only look at Wallet's books, in the test only: one group per (call, block).
        rows = (
            await conn.execute(
                text(
                    "SELECT context_id, count(DISTINCT item_id), sum(amount) FROM wallet.transfers "
                    "WHERE context_type = 'call' AND context_id = ANY(:ids) GROUP BY context_id"
                ),
                {"ids": ids},
            )
        ).all()
    assert len(rows) == calls_n and {(n, total) for _, n, total in rows} == {(blocks + 1, 50 * (blocks + 1))}
    for call_id in ids:
        await env.billing.EndCall(bpb.EndCallRequest(request_id=uid("e"), call_id=call_id))
    assert earnings(await balance(env, c)) == calls_n * 50 * (blocks + 1)
    await audit_ok(env)


async def test_fan_starts_and_lists_own_calls_through_the_edge(env):
    fan, c = uid("fan"), await creator(env, rate=60)
    await fund(env, fan, 1000)
    settings = (await env.billing.GetCallSettings(bpb.GetCallSettingsRequest(creator_id=c))).settings
    assert (settings.rate_tokens_per_minute, settings.available) == (60, True)
    async with as_user(uid("fan")):
        request = bpb.StartCallRequest(request_id=uid("s"), fan_id=fan, creator_id=c, rate_tokens_per_minute=60)
        assert (await refused(env.users.StartCall(request)))[0] == grpc.StatusCode.PERMISSION_DENIED
    ids = []
    async with as_user(fan):
        for _ in range(3):
            request = bpb.StartCallRequest(request_id=uid("s"), fan_id=fan, creator_id=c, rate_tokens_per_minute=60)
            call = (await env.users.StartCall(request)).call
            assert call.tokens_per_block == 30 and call.media_channel
            ids.append(call.call_id)
            await env.users.EndCall(bpb.EndCallRequest(request_id=uid("e"), call_id=call.call_id))
            await env.clock.advance(dt.timedelta(seconds=1))
        pages, token = [], ""
        for _ in range(5):
            page = await env.users.ListCalls(bpb.ListCallsRequest(fan_id=fan, page_size=2, page_token=token))
            pages.append([k.call_id for k in page.calls])
            token = page.next_page_token
            if not token:
                break
        assert pages == [ids[::-1][:2], ids[::-1][2:]]
        assert (await refused(env.users.ListCalls(bpb.ListCallsRequest(fan_id=uid("fan")))))[0] == (
            grpc.StatusCode.PERMISSION_DENIED
        )
    stats = await env.billing.GetCallStats(bpb.GetCallStatsRequest(creator_id=c))
    assert (stats.calls, stats.blocks_charged, stats.tokens_charged) == (3, 3, 90)
    assert (await balance(env, fan)).spendable_available == 910
