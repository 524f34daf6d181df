"""Gifts with Wallet, in process, on the controlled clock: economics per preset with a clean Audit,
like-tips once per target, every bad input, the rate limit, leaderboards and goals, a crash between
Wallet and the outcome commit, an unreachable Wallet, alerts in order and resumed, overlay tokens."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from contextlib import AsyncExitStack

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import text

from services.gifts import support
from shared import auth
from shared.clock import ControlledClock
from shared.gen.fanbank.gifts.v1 import gift_events_pb2 as epb
from shared.gen.fanbank.gifts.v1 import gifts_service_pb2 as gpb
from shared.gen.fanbank.wallet.v1 import wallet_service_pb2 as wpb
from shared.watch import make_token
from tests import harness
from tests.harness import Caller, as_user, free_port, migrated_engine, reason_of, running, settings_for, uid

T0 = dt.datetime(2032, 3, 3, 12, 0, tzinfo=dt.UTC)  # a Wednesday
STREAM = gpb.CONTEXT_TYPE_STREAM
POST = gpb.CONTEXT_TYPE_POST


@dataclasses.dataclass
class Env:
    engine: object
    clock: ControlledClock
    settings: object
    wallet: object  # WalletServiceStub as "platform"
    digis: object  # GiftsServiceStub (preset digis) as "platform"
    streamit: object  # GiftsServiceStub (preset streamit) as "platform"
    users_digis: object  # as "edge", for calls made inside as_user()
    users_streamit: object
    digis_service: object
    streamit_service: object


@pytest.fixture(scope="module")
async def env(database_url, redis_url):
    stack = AsyncExitStack()
    # Tests sweep by hand (background_ms=0): a background sweeper would race them for the pending rows.
    base = settings_for(database_url, redis_url, background_ms=0)
    engine = await migrated_engine(base, pool_size=20)
    clock = ControlledClock(engine)
    await clock.set(T0)
    wallet_target, _ = await stack.enter_async_context(running("wallet", base, engine))
    settings = dataclasses.replace(base, addresses={**base.addresses, "wallet": wallet_target})
    digis_target, digis = await stack.enter_async_context(
        running("gifts", dataclasses.replace(settings, preset_name="digis"), engine)
    )
    streamit_target, streamit = await stack.enter_async_context(
        running("gifts", dataclasses.replace(settings, preset_name="streamit"), engine)
    )
    callers = [
        Caller(settings, wallet_target),
        Caller(settings, digis_target),
        Caller(settings, streamit_target),
        Caller(settings, digis_target, identity="edge"),
        Caller(settings, streamit_target, identity="edge"),
    ]
    yield Env(
        engine,
        clock,
        settings,
        callers[0].wallet,
        callers[1].gifts,
        callers[2].gifts,
        callers[3].gifts,
        callers[4].gifts,
        digis,
        streamit,
    )
    for c in callers:
        await c.close()
    await stack.aclose()
    await engine.dispose()


async def fund(env: Env, owner: str, amount: int) -> None:
    await harness.fund(env.wallet, owner, amount)


async def spendable(env: Env, owner: str) -> int:
    return await harness.spendable(env.wallet, owner)


async def earnings(env: Env, owner: str) -> int:
    return await harness.earned(env.wallet, owner)


async def ledger_legs(env: Env, group: str) -> dict[str, int]:
    """Read-only look at Wallet's books, in the test only: the postings of one support's group."""
    async with env.engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT item_id, amount FROM wallet.transfers WHERE item_id LIKE :g"), {"g": f"{group}:%"}
            )
        ).all()
    legs: dict[str, int] = {}
    for item_id, amount in rows:
        legs[item_id.rsplit(":", 1)[1]] = legs.get(item_id.rsplit(":", 1)[1], 0) + amount
    return legs


async def audit_ok(env: Env) -> None:
    audit = await env.wallet.Audit(wpb.AuditRequest())
    assert audit.ok, audit


async def refused(coro) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await coro
    return e.value.code(), reason_of(e.value)


def tip_request(sender: str, creator: str, amount: int, **kw) -> gpb.SendTipRequest:
    return gpb.SendTipRequest(
        request_id=kw.pop("request_id", uid("tip")),
        sender_id=sender,
        creator_id=creator,
        amount_tokens=amount,
        context_type=kw.pop("context_type", STREAM),
        context_id=kw.pop("context_id", "stream-1"),
        **kw,
    )


async def tip(stub, sender: str, creator: str, amount: int, **kw) -> gpb.Tip:
    """As the platform's backend (an internal caller), even inside an as_user() block."""
    token = auth.acting_user.set(None)
    try:
        return (await stub.SendTip(tip_request(sender, creator, amount, **kw))).tip
    finally:
        auth.acting_user.reset(token)


async def create_gift(stub, price: int, **kw) -> gpb.Gift:
    gift = gpb.Gift(
        name=kw.pop("name", "Rose"),
        price_tokens=price,
        category=kw.pop("category", "emoji"),
        rarity=kw.pop("rarity", "common"),
        image_url="https://cdn.example/rose.png",
        **kw,
    )
    return (await stub.CreateGift(gpb.CreateGiftRequest(request_id=uid("g"), gift=gift))).gift


def gift_request(sender: str, creator: str, gift: gpb.Gift, quantity: int = 1, **kw) -> gpb.SendGiftRequest:
    return gpb.SendGiftRequest(
        request_id=kw.pop("request_id", uid("gift")),
        sender_id=sender,
        creator_id=creator,
        gift_id=gift.gift_id,
        quantity=quantity,
        price_tokens=kw.pop("price_tokens", gift.price_tokens),
        context_type=kw.pop("context_type", STREAM),
        context_id=kw.pop("context_id", "stream-1"),
        **kw,
    )


async def outbox(env: Env, channel: str) -> list[epb.GiftEvent]:
    async with env.engine.connect() as conn:
        rows = (
            await conn.execute(text("SELECT payload FROM gifts.outbox WHERE channel = :c ORDER BY seq"), {"c": channel})
        ).all()
    return [epb.GiftEvent.FromString(bytes(r.payload)) for r in rows]


# ---- economics ------------------------------------------------------------------------------------


async def test_digis_tip_goes_whole_to_the_creator(env):
    fan, creator = uid("fan"), uid("creator")
    await fund(env, fan, 1000)
    sent = await tip(env.digis, fan, creator, 250, message="great show!", sender_display_name="Ann")
    assert sent.status == gpb.TIP_STATUS_COMPLETED
    assert (sent.amount_tokens, sent.fee_tokens, sent.creator_tokens, sent.fee_bps) == (250, 0, 250, 0)
    assert await earnings(env, creator) == 250
    assert await spendable(env, fan) == 750
    assert await ledger_legs(env, f"tip:{sent.tip_id}") == {"creator": 250}  # no fee leg at 0%
    [alert] = await outbox(env, f"alerts:{creator}")
    assert (alert.type, alert.support_id, alert.amount_tokens) == (epb.GIFT_EVENT_TYPE_TIP, sent.tip_id, 250)
    assert (alert.sender_display_name, alert.message, alert.context_id) == ("Ann", "great show!", "stream-1")
    assert len(await outbox(env, "stream_gifts:stream-1")) >= 1
    await audit_ok(env)


async def test_streamit_gift_and_tip_pay_the_platform_fee(env):
    fan, creator = uid("fan"), uid("creator")
    await fund(env, fan, 1000)
    rose = await create_gift(env.streamit, 100)
    sent = (await env.streamit.SendGift(gift_request(fan, creator, rose))).tip
    assert (sent.kind, sent.amount_tokens, sent.fee_tokens, sent.creator_tokens) == (gpb.TIP_KIND_GIFT, 100, 25, 75)
    assert await ledger_legs(env, f"gift:{sent.tip_id}") == {"creator": 75, "fee": 25}
    assert await earnings(env, creator) == 75
    # A line of 3 × 7 = 21: fee floor(21 × 25%) = 5, the creator the other 16.
    pin = await create_gift(env.streamit, 7, name="Pin", category="badge", rarity="rare")
    line = (await env.streamit.SendGift(gift_request(fan, creator, pin, quantity=3))).tip
    assert (line.amount_tokens, line.fee_tokens, line.creator_tokens, line.quantity) == (21, 5, 16, 3)
    # Tips at 10%: 15 → fee 1, creator 14.
    plain = await tip(env.streamit, fan, creator, 15)
    assert (plain.fee_tokens, plain.creator_tokens) == (1, 14)
    assert await earnings(env, creator) == 75 + 16 + 14
    assert await spendable(env, fan) == 1000 - 100 - 21 - 15
    [gift_alert, *_] = await outbox(env, f"alerts:{creator}")
    assert (gift_alert.gift_name, gift_alert.quantity, gift_alert.image_url) == (
        "Rose",
        1,
        "https://cdn.example/rose.png",
    )
    await audit_ok(env)


async def test_streamit_like_tip_is_charged_once_per_target(env):
    fan, creator = uid("fan"), uid("creator")
    await fund(env, fan, 10)
    like = gpb.LikeTipRequest(sender_id=fan, creator_id=creator, context_type=POST, context_id="post-1")
    like.request_id = uid("like")
    first = await env.streamit.LikeTip(like)
    assert not first.already_paid and first.tip.kind == gpb.TIP_KIND_LIKE
    assert (first.tip.amount_tokens, first.tip.fee_tokens, first.tip.creator_tokens) == (1, 0, 1)
    assert await ledger_legs(env, f"like:{first.tip.tip_id}") == {"creator": 1}  # 10% of 1 rounds to 0: no fee leg
    # Unlike and like again: a new request, the same target, nothing charged.
    like.request_id = uid("like")
    again = await env.streamit.LikeTip(like)
    assert again.already_paid and again.tip.tip_id == first.tip.tip_id
    # Concurrent likes of a new target: one charge.
    likes = [
        gpb.LikeTipRequest(
            request_id=uid("like"),
            sender_id=fan,
            creator_id=creator,
            context_type=gpb.CONTEXT_TYPE_COMMENT,
            context_id="c-9",
        )
        for _ in range(5)
    ]
    answers = await asyncio.gather(*(env.streamit.LikeTip(r) for r in likes))
    assert len({a.tip.tip_id for a in answers}) == 1 and sum(not a.already_paid for a in answers) == 1
    assert await spendable(env, fan) == 8
    assert await earnings(env, creator) == 2
    assert await refused(env.digis.LikeTip(like)) == (grpc.StatusCode.FAILED_PRECONDITION, "LIKE_TIPS_DISABLED")
    await audit_ok(env)


async def test_replay_answers_the_first_result_and_refuses_other_fields(env):
    fan, creator = uid("fan"), uid("creator")
    await fund(env, fan, 500)
    request = tip_request(fan, creator, 100, message="hi")
    first = (await env.digis.SendTip(request)).tip
    second = (await env.digis.SendTip(request)).tip
    assert first == second
    assert await spendable(env, fan) == 400
    changed = gpb.SendTipRequest()
    changed.CopyFrom(request)
    changed.amount_tokens = 101
    assert await refused(env.digis.SendTip(changed)) == (grpc.StatusCode.ALREADY_EXISTS, "ID_REUSED_AMOUNT_TOKENS")
    changed.amount_tokens, changed.message = 100, "other"
    assert await refused(env.digis.SendTip(changed)) == (grpc.StatusCode.ALREADY_EXISTS, "ID_REUSED_MESSAGE")
    # A gift bought before the price moved: its retry still gets the first answer.
    gift = await create_gift(env.digis, 40)
    bought = gift_request(fan, creator, gift)
    original = (await env.digis.SendGift(bought)).tip
    await env.digis.UpdateGift(
        gpb.UpdateGiftRequest(
            request_id=uid("u"),
            gift_id=gift.gift_id,
            gift=gpb.Gift(name="Rose", price_tokens=45, category="emoji", rarity="common", active=True),
        )
    )
    assert (await env.digis.SendGift(bought)).tip == original
    assert await spendable(env, fan) == 360


async def test_insufficient_funds_charges_nothing_and_replays_the_refusal(env):
    fan, creator = uid("fan"), uid("creator")
    await fund(env, fan, 30)
    request = tip_request(fan, creator, 50)
    assert await refused(env.digis.SendTip(request)) == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")
    await fund(env, fan, 100)
    assert await refused(env.digis.SendTip(request)) == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")
    assert await spendable(env, fan) == 130
    assert await outbox(env, f"alerts:{creator}") == []
    nobody = uid("fan")  # no Wallet account at all
    assert await refused(tip(env.digis, nobody, creator, 5)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "INSUFFICIENT_FUNDS",
    )
    sent = (await env.digis.ListTips(gpb.ListTipsRequest(sender_id=fan))).tips
    assert [(t.status, t.failure_reason) for t in sent] == [(gpb.TIP_STATUS_FAILED, "INSUFFICIENT_FUNDS")]
    await audit_ok(env)


async def test_a_late_charge_wins_over_an_unrecorded_refusal(env):
    # A fan with no Wallet account is refused with ACCOUNT_NOT_FOUND, which Wallet does not record.
    # A re-drive of the same ids that raced the first and found the fan funded did move the money:
    # its settle must turn the FAILED record into the tip it was (one charge, one alert).
    fan, creator = uid("fan"), uid("creator")
    assert await refused(tip(env.digis, fan, creator, 30)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "INSUFFICIENT_FUNDS",
    )
    [failed] = (await env.digis.ListTips(gpb.ListTipsRequest(sender_id=fan))).tips
    await fund(env, fan, 100)
    payments = env.digis_service.payments
    async with env.engine.connect() as conn:
        row = (await conn.execute(text("SELECT * FROM gifts.tips WHERE tip_id = :t"), {"t": failed.tip_id})).one()
    late = await payments.pay([support.Charge.of_row(row)])
    assert [o.charged for o in late] == [True]
    assert list(await payments.settle(late)) == [failed.tip_id]
    assert await payments.settle(late) == {}  # settled once
    [done] = (await env.digis.ListTips(gpb.ListTipsRequest(sender_id=fan))).tips
    assert (done.status, done.failure_reason) == (gpb.TIP_STATUS_COMPLETED, "")
    assert await spendable(env, fan) == 70 and await earnings(env, creator) == 30
    assert [e.support_id for e in await outbox(env, f"alerts:{creator}")] == [failed.tip_id]
    await audit_ok(env)


# ---- bad input ------------------------------------------------------------------------------------


async def test_bad_input_changes_nothing(env):
    fan, creator = uid("fan"), uid("creator")
    await fund(env, fan, 1000)
    d, s = env.digis, env.streamit
    rose = await create_gift(s, 100)
    gone = await create_gift(s, 100, name="Gone")
    await s.DeactivateGift(gpb.DeactivateGiftRequest(request_id=uid("d"), gift_id=gone.gift_id))
    invalid, precondition = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION
    cases = [
        (tip(d, fan, creator, 0), invalid, "INVALID_AMOUNT"),
        (tip(d, fan, creator, -5), invalid, "INVALID_AMOUNT"),
        (tip(s, fan, creator, 9), invalid, "AMOUNT_BELOW_MINIMUM"),
        (tip(d, fan, creator, 100_001), invalid, "AMOUNT_ABOVE_MAXIMUM"),
        (tip(d, fan, creator, 10, message="x" * 201), invalid, "MESSAGE_TOO_LONG"),
        (tip(d, fan, creator, 10, message="bell\x07"), invalid, "TEXT_NOT_PLAIN"),
        (tip(d, fan, creator, 10, sender_display_name="n" * 51), invalid, "TEXT_TOO_LONG"),
        (tip(d, fan, creator, 10, sender_display_name="a\nb"), invalid, "TEXT_NOT_PLAIN"),
        (tip(d, fan, fan, 10), invalid, "SELF_TIP"),
        (tip(d, fan, creator, 10, context_type=gpb.CONTEXT_TYPE_UNSPECIFIED), invalid, "INVALID_CONTEXT_TYPE"),
        (tip(d, fan, creator, 10, context_type=gpb.CONTEXT_TYPE_COMMENT), invalid, "INVALID_CONTEXT_TYPE"),
        (tip(d, fan, creator, 10, context_id="bad id"), invalid, "INVALID_ID"),
        (tip(d, fan, creator, 10, request_id=""), invalid, "MISSING_ID"),
        (
            s.SendGift(gift_request(fan, creator, gpb.Gift(gift_id="nope", price_tokens=1))),
            grpc.StatusCode.NOT_FOUND,
            "GIFT_NOT_FOUND",
        ),
        (s.SendGift(gift_request(fan, creator, gone)), precondition, "GIFT_INACTIVE"),
        (s.SendGift(gift_request(fan, creator, rose, quantity=0)), invalid, "INVALID_QUANTITY"),
        (s.SendGift(gift_request(fan, creator, rose, quantity=-1)), invalid, "INVALID_QUANTITY"),
        (s.SendGift(gift_request(fan, creator, rose, quantity=1001)), invalid, "INVALID_QUANTITY"),
        (s.SendGift(gift_request(fan, creator, rose, price_tokens=90)), precondition, "PRICE_CHANGED"),
        (
            s.LikeTip(
                gpb.LikeTipRequest(
                    request_id=uid("l"), sender_id=fan, creator_id=creator, context_type=STREAM, context_id="x"
                )
            ),
            invalid,
            "INVALID_CONTEXT_TYPE",
        ),
        (
            s.CreateGift(
                gpb.CreateGiftRequest(
                    request_id=uid("g"), gift=gpb.Gift(name="X", price_tokens=0, category="emoji", rarity="common")
                )
            ),
            invalid,
            "INVALID_PRICE",
        ),
        (
            s.CreateGift(
                gpb.CreateGiftRequest(
                    request_id=uid("g"), gift=gpb.Gift(name="X", price_tokens=5, category="car", rarity="common")
                )
            ),
            invalid,
            "INVALID_CATEGORY",
        ),
        (
            s.CreateGift(
                gpb.CreateGiftRequest(
                    request_id=uid("g"),
                    gift=gpb.Gift(
                        name="X", price_tokens=5, category="emoji", rarity="common", image_url="javascript:alert(1)"
                    ),
                )
            ),
            invalid,
            "INVALID_URL",
        ),
        (d.ListTips(gpb.ListTipsRequest(sender_id=fan, creator_id=creator)), invalid, "ONE_OWNER"),
        (d.ListTips(gpb.ListTipsRequest(sender_id=fan, page_token="%%%")), invalid, "INVALID_PAGE_TOKEN"),
        (
            d.GetLeaderboard(gpb.GetLeaderboardRequest(creator_id=creator, period=gpb.PERIOD_MONTH)),
            invalid,
            "INVALID_PERIOD",
        ),
        (
            d.GetLeaderboard(gpb.GetLeaderboardRequest(creator_id=creator, period=gpb.PERIOD_DAY, date="2032-02-30")),
            invalid,
            "INVALID_DATE",
        ),
        (d.GetTipStats(gpb.GetTipStatsRequest(creator_id=creator)), invalid, "INVALID_PERIOD"),
        (
            d.SetGoal(gpb.SetGoalRequest(request_id=uid("g"), creator_id=creator, stream_id="s", target_tokens=0)),
            invalid,
            "INVALID_TARGET",
        ),
        (
            d.GetGoal(gpb.GetGoalRequest(creator_id=creator, stream_id="none")),
            grpc.StatusCode.NOT_FOUND,
            "GOAL_NOT_FOUND",
        ),
        (
            d.HideMessage(gpb.HideMessageRequest(request_id=uid("h"), tip_id="nope")),
            grpc.StatusCode.NOT_FOUND,
            "TIP_NOT_FOUND",
        ),
    ]
    for coro, code, reason in cases:
        assert await refused(coro) == (code, reason), reason
    async with as_user(fan):
        assert await refused(env.users_digis.SendTip(tip_request(uid("fan"), creator, 10))) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "NOT_YOURS",
        )
        assert await refused(env.users_digis.ListTips(gpb.ListTipsRequest(creator_id=creator))) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "NOT_YOURS",
        )
        assert await refused(env.users_digis.CreateGift(gpb.CreateGiftRequest(request_id=uid("g"), gift=rose))) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "ADMIN_ONLY",
        )
        assert await refused(
            env.users_digis.DeactivateGift(gpb.DeactivateGiftRequest(request_id=uid("g"), gift_id=rose.gift_id))
        ) == (grpc.StatusCode.PERMISSION_DENIED, "ADMIN_ONLY")
        assert await refused(
            env.users_digis.UpdateGift(gpb.UpdateGiftRequest(request_id=uid("g"), gift_id=rose.gift_id, gift=rose))
        ) == (grpc.StatusCode.PERMISSION_DENIED, "ADMIN_ONLY")
        assert await refused(env.users_digis.HideMessage(gpb.HideMessageRequest(request_id=uid("h"), tip_id="x"))) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "ADMIN_ONLY",
        )
        assert await refused(
            env.users_digis.ResolveOverlayToken(gpb.ResolveOverlayTokenRequest(overlay_token="x"))
        ) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "SERVICE_ONLY",
        )
    assert await spendable(env, fan) == 1000
    async with env.engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM gifts.tips WHERE sender_id = :f"), {"f": fan}) == 0
    assert (await s.ListGifts(gpb.ListGiftsRequest())).gifts  # the catalog itself is untouched by refusals
    await audit_ok(env)


async def test_more_refusals_and_reused_ids(env):
    s, creator = env.streamit, uid("creator")
    invalid, exists = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.ALREADY_EXISTS

    def gift(**kw):
        fields = {"name": "Star", "price_tokens": 5, "category": "emoji", "rarity": "common", **kw}
        return gpb.CreateGiftRequest(request_id=uid("g"), gift=gpb.Gift(**fields))

    cases = [
        (s.CreateGift(gift(rarity="mythic")), invalid, "INVALID_RARITY"),
        (s.CreateGift(gift(sort_order=2_000_000)), invalid, "INVALID_SORT_ORDER"),
        (s.CreateGift(gift(name=" ")), invalid, "TEXT_REQUIRED"),
        (s.CreateGift(gift(name="n" * 61)), invalid, "TEXT_TOO_LONG"),
        (s.ListGifts(gpb.ListGiftsRequest(page_size=-1)), invalid, "INVALID_PAGE_SIZE"),
        (s.ListGifts(gpb.ListGiftsRequest(category="car")), invalid, "INVALID_CATEGORY"),
        (
            s.GetLeaderboard(gpb.GetLeaderboardRequest(creator_id=creator, period=gpb.PERIOD_DAY, limit=101)),
            invalid,
            "INVALID_LIMIT",
        ),
        (
            s.SetGoal(
                gpb.SetGoalRequest(
                    request_id=uid("g"), creator_id=creator, stream_id="s", target_tokens=5, title="\x00"
                )
            ),
            invalid,
            "TEXT_NOT_PLAIN",
        ),
    ]
    for coro, code, reason in cases:
        assert await refused(coro) == (code, reason), reason
    request = gift()
    await s.CreateGift(request)
    request.gift.price_tokens = 6
    assert await refused(s.CreateGift(request)) == (exists, "ID_REUSED_PRICE_TOKENS")
    goal = gpb.SetGoalRequest(request_id=uid("g"), creator_id=creator, stream_id="s", target_tokens=5)
    first = (await s.SetGoal(goal)).goal
    assert (await s.SetGoal(goal)).goal == first
    goal.target_tokens = 6
    assert await refused(s.SetGoal(goal)) == (exists, "ID_REUSED_TARGET_TOKENS")
    rotation = gpb.RotateOverlayTokenRequest(request_id=uid("r"), creator_id=creator)
    await s.RotateOverlayToken(rotation)
    rotation.creator_id = uid("creator")
    assert await refused(s.RotateOverlayToken(rotation)) == (exists, "ID_REUSED_CREATOR_ID")


async def test_without_the_rate_limiter_nothing_new_is_taken(env):
    fan, creator = uid("fan"), uid("creator")
    await fund(env, fan, 100)
    no_redis = dataclasses.replace(env.settings, preset_name="digis", redis_url=f"redis://127.0.0.1:{free_port()}/0")
    async with running("gifts", no_redis, env.engine) as (target, _):
        caller = Caller(env.settings, target)
        try:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await tip(caller.gifts, fan, creator, 10)
        finally:
            await caller.close()
    assert (e.value.code(), reason_of(e.value)) == (grpc.StatusCode.UNAVAILABLE, "RATE_LIMIT_UNAVAILABLE")
    assert await spendable(env, fan) == 100
    async with env.engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM gifts.tips WHERE sender_id = :f"), {"f": fan}) == 0


async def test_a_platform_without_tips_or_gifts_refuses_them(env):
    flowtab = dataclasses.replace(env.settings, preset_name="flowtab")
    fan, creator = uid("fan"), uid("creator")
    async with running("gifts", flowtab, env.engine) as (target, _):
        caller = Caller(env.settings, target)
        try:
            g = caller.gifts
            precondition = grpc.StatusCode.FAILED_PRECONDITION
            like = gpb.LikeTipRequest(
                request_id=uid("l"), sender_id=fan, creator_id=creator, context_type=POST, context_id="p"
            )
            cases = [
                (tip(g, fan, creator, 5), "TIPS_DISABLED"),
                (g.SendGift(gift_request(fan, creator, gpb.Gift(gift_id="any", price_tokens=5))), "GIFTS_DISABLED"),
                (g.LikeTip(like), "LIKE_TIPS_DISABLED"),
                (
                    g.CreateGift(
                        gpb.CreateGiftRequest(
                            request_id=uid("g"),
                            gift=gpb.Gift(name="X", price_tokens=5, category="emoji", rarity="common"),
                        )
                    ),
                    "GIFTS_DISABLED",
                ),
            ]
            for coro, reason in cases:
                assert await refused(coro) == (precondition, reason), reason
        finally:
            await caller.close()


async def test_fan_tips_as_themselves_through_the_edge_identity(env):
    fan, creator = uid("fan"), uid("creator")
    await fund(env, fan, 100)
    async with as_user(fan):
        sent = (await env.users_digis.SendTip(tip_request(fan, creator, 60))).tip
        listed = (await env.users_digis.ListTips(gpb.ListTipsRequest(sender_id=fan))).tips
    assert [t.tip_id for t in listed] == [sent.tip_id]
    async with as_user(creator, "creator"):
        received = (await env.users_digis.ListTips(gpb.ListTipsRequest(creator_id=creator))).tips
    assert [t.tip_id for t in received] == [sent.tip_id]
    assert await spendable(env, fan) == 40


# ---- rate limit -----------------------------------------------------------------------------------


async def test_rate_limit_per_sender_with_retry_info(env):
    fan, other, creator = uid("fan"), uid("fan"), uid("creator")
    await fund(env, fan, 10_000)
    await fund(env, other, 100)
    # streamit: 5 a second, bursts of 20. Time stands still: the burst, then nothing.
    for _ in range(20):
        await tip(env.streamit, fan, creator, 10)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await tip(env.streamit, fan, creator, 10)
    assert (e.value.code(), reason_of(e.value)) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    status = rpc_status.from_call(e.value)
    retry = [d for d in status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
    info = error_details_pb2.RetryInfo()
    retry[0].Unpack(info)
    assert info.retry_delay.ToMilliseconds() == 200
    assert await spendable(env, fan) == 10_000 - 200  # the refused tip charged nothing
    await tip(env.streamit, other, creator, 10)  # another sender is not limited
    # A retry of an admitted request is answered, not limited.
    request = tip_request(fan, creator, 10)
    await env.clock.advance(dt.timedelta(milliseconds=200))
    first = (await env.streamit.SendTip(request)).tip
    assert (await env.streamit.SendTip(request)).tip == first
    assert (await refused(tip(env.streamit, fan, creator, 10)))[1] == "RATE_LIMITED"
    await env.clock.advance(dt.timedelta(seconds=1))
    for _ in range(5):
        await tip(env.streamit, fan, creator, 10)
    assert (await refused(tip(env.streamit, fan, creator, 10)))[1] == "RATE_LIMITED"
    assert await spendable(env, fan) == 10_000 - 260


# ---- leaderboards, stats, goals ---------------------------------------------------------------------


async def test_leaderboards_by_utc_day_iso_week_and_all_time(env):
    creator, stream = uid("creator"), uid("stream")
    ann, bob, cat = uid("ann"), uid("bob"), uid("cat")
    for fan in (ann, bob, cat):
        await fund(env, fan, 1000)
    await env.clock.set(dt.datetime(2032, 3, 7, 23, 30, tzinfo=dt.UTC))  # Sunday, ISO week 10
    await tip(env.digis, ann, creator, 100, context_id=stream, sender_display_name="Ann")
    await tip(env.digis, bob, creator, 50, context_id=stream, sender_display_name="Bob")
    await tip(env.digis, cat, creator, 500, context_type=POST, context_id="post-7")  # not in the stream
    await env.clock.set(dt.datetime(2032, 3, 8, 0, 30, tzinfo=dt.UTC))  # Monday, ISO week 11
    await tip(env.digis, bob, creator, 100, context_id=stream, sender_display_name="Bobby")

    async def board(period, stream_id="", date=""):
        answer = await env.digis.GetLeaderboard(
            gpb.GetLeaderboardRequest(creator_id=creator, stream_id=stream_id, period=period, date=date)
        )
        return [(e.rank, e.sender_id, e.amount_tokens) for e in answer.entries], answer

    assert (await board(gpb.PERIOD_DAY, stream))[0] == [(1, bob, 100)]
    assert (await board(gpb.PERIOD_ISO_WEEK, stream))[0] == [(1, bob, 100)]
    last_week, answer = await board(gpb.PERIOD_ISO_WEEK, stream, date="2032-03-07")
    assert last_week == [(1, ann, 100), (2, bob, 50)]
    assert (answer.start_date, answer.end_date) == ("2032-03-01", "2032-03-08")
    all_time, answer = await board(gpb.PERIOD_ALL_TIME, stream)
    assert all_time == [(1, bob, 150), (2, ann, 100)]
    assert answer.entries[0].sender_display_name == "Bobby" and answer.entries[0].tip_count == 2
    assert (await board(gpb.PERIOD_ALL_TIME))[0] == [(1, cat, 500), (2, bob, 150), (3, ann, 100)]
    assert (await board(gpb.PERIOD_DAY, date="2032-03-07"))[0] == [(1, cat, 500), (2, ann, 100), (3, bob, 50)]

    stats = await env.digis.GetTipStats(
        gpb.GetTipStatsRequest(creator_id=creator, period=gpb.PERIOD_ISO_WEEK, date="2032-03-07")
    )
    by_context = {t.context_type: (t.count, t.gross_tokens) for t in stats.totals}
    assert by_context == {gpb.CONTEXT_TYPE_STREAM: (2, 150), gpb.CONTEXT_TYPE_POST: (1, 500)}
    assert (stats.count, stats.gross_tokens, stats.fee_tokens) == (3, 650, 0)
    month = await env.digis.GetTipStats(gpb.GetTipStatsRequest(creator_id=creator, period=gpb.PERIOD_MONTH))
    assert (month.start_date, month.end_date, month.gross_tokens) == ("2032-03-01", "2032-04-01", 750)
    await env.clock.set(T0)


async def test_goal_progress_and_reached_events(env):
    creator, stream, fan = uid("creator"), uid("stream"), uid("fan")
    await fund(env, fan, 1000)
    goal = (
        await env.streamit.SetGoal(
            gpb.SetGoalRequest(
                request_id=uid("goal"), creator_id=creator, stream_id=stream, title="New mic", target_tokens=300
            )
        )
    ).goal
    rose = await create_gift(env.streamit, 100)
    await tip(env.streamit, fan, creator, 150, context_id=stream)
    await env.streamit.SendGift(gift_request(fan, creator, rose, quantity=2, context_id=stream))
    await tip(env.streamit, fan, creator, 20, context_id=stream)
    await tip(env.streamit, fan, creator, 20, context_type=POST, context_id="post-1")  # not the stream's
    current = (await env.streamit.GetGoal(gpb.GetGoalRequest(creator_id=creator, stream_id=stream))).goal
    assert (current.goal_id, current.progress_tokens, current.reached) == (goal.goal_id, 370, True)  # gross amounts
    events = await outbox(env, f"stream_gifts:{stream}")
    kinds = [(e.type, e.goal_progress_tokens) for e in events]
    assert kinds == [
        (epb.GIFT_EVENT_TYPE_TIP, 0),
        (epb.GIFT_EVENT_TYPE_GOAL_PROGRESS, 150),
        (epb.GIFT_EVENT_TYPE_GIFT, 0),
        (epb.GIFT_EVENT_TYPE_GOAL_PROGRESS, 350),
        (epb.GIFT_EVENT_TYPE_GOAL_REACHED, 350),
        (epb.GIFT_EVENT_TYPE_TIP, 0),
        (epb.GIFT_EVENT_TYPE_GOAL_PROGRESS, 370),
    ]
    alerts = await outbox(env, f"alerts:{creator}")
    assert [e.type for e in alerts] == [e.type for e in events] + [epb.GIFT_EVENT_TYPE_TIP]
    # A new goal starts from 0; the old request id answers the old goal.
    fresh = (
        await env.streamit.SetGoal(
            gpb.SetGoalRequest(
                request_id=uid("goal"), creator_id=creator, stream_id=stream, title="Camera", target_tokens=1000
            )
        )
    ).goal
    assert fresh.progress_tokens == 0 and fresh.goal_id != goal.goal_id
    async with as_user(uid("fan")):
        denied = gpb.SetGoalRequest(request_id=uid("goal"), creator_id=creator, stream_id=stream, target_tokens=5)
        assert await refused(env.users_streamit.SetGoal(denied)) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_YOURS")


async def test_admin_hides_a_message_and_the_money_stays(env):
    fan, creator = uid("fan"), uid("creator")
    await fund(env, fan, 100)
    sent = await tip(env.digis, fan, creator, 40, message="rude words")
    async with as_user("ops-1", "admin"):
        hidden = (
            await env.users_digis.HideMessage(gpb.HideMessageRequest(request_id=uid("h"), tip_id=sent.tip_id))
        ).tip
    assert (hidden.message, hidden.message_hidden, hidden.amount_tokens) == ("", True, 40)
    [listed] = (await env.digis.ListTips(gpb.ListTipsRequest(creator_id=creator))).tips
    assert (listed.message, listed.message_hidden, listed.status) == ("", True, gpb.TIP_STATUS_COMPLETED)
    assert await earnings(env, creator) == 40
    # The alert already went out with the message: every channel it went to hears it is hidden, after it.
    for channel in (f"alerts:{creator}", "stream_gifts:stream-1"):
        mine = [(e.type, e.message) for e in await outbox(env, channel) if e.support_id == sent.tip_id]
        assert mine == [(epb.GIFT_EVENT_TYPE_TIP, "rude words"), (epb.GIFT_EVENT_TYPE_MESSAGE_HIDDEN, "")], channel
    # Hiding again, or hiding a tip that had no message, says nothing more.
    quiet = await tip(env.digis, fan, creator, 10)
    async with as_user("ops-1", "admin"):
        for tip_id in (sent.tip_id, quiet.tip_id):
            again = await env.users_digis.HideMessage(gpb.HideMessageRequest(request_id=uid("h"), tip_id=tip_id))
            assert again.tip.message_hidden and again.tip.message == ""
    assert [e.type for e in await outbox(env, f"alerts:{creator}")] == [
        epb.GIFT_EVENT_TYPE_TIP,
        epb.GIFT_EVENT_TYPE_MESSAGE_HIDDEN,
        epb.GIFT_EVENT_TYPE_TIP,
    ]


async def test_list_tips_pages_newest_first(env):
    fan, creator = uid("fan"), uid("creator")
    await fund(env, fan, 1000)
    ids = []
    for amount in (10, 20, 30):
        ids.append((await tip(env.digis, fan, creator, amount)).tip_id)
        await env.clock.advance(dt.timedelta(seconds=1))
    pages, token = [], ""
    for _ in range(5):
        page = await env.digis.ListTips(gpb.ListTipsRequest(creator_id=creator, page_size=2, page_token=token))
        pages.append([t.tip_id for t in page.tips])
        token = page.next_page_token
        if not token:
            break
    assert pages == [ids[::-1][:2], ids[::-1][2:]]


# ---- crashes and an unreachable Wallet --------------------------------------------------------------


async def test_crash_between_wallet_and_outcome_is_finished_by_the_sweeper(env):
    fan, creator = uid("fan"), uid("creator")
    await fund(env, fan, 500)
    payments = env.digis_service.payments
    settle = payments.settle

    async def crash(outcomes):
        raise RuntimeError("process killed between the Wallet call and the outcome commit")

    payments.settle = crash
    request = tip_request(fan, creator, 120)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await env.digis.SendTip(request)
    finally:
        payments.settle = settle
    assert (e.value.code(), reason_of(e.value)) == (grpc.StatusCode.UNAVAILABLE, "TIP_OUTCOME_UNKNOWN")
    assert await spendable(env, fan) == 380  # Wallet did charge
    [pending] = (await env.digis.ListTips(gpb.ListTipsRequest(sender_id=fan))).tips
    assert pending.status == gpb.TIP_STATUS_PENDING
    assert await outbox(env, f"alerts:{creator}") == []
    assert await payments.sweep(dt.timedelta(minutes=1)) == 0  # not old enough yet
    assert await payments.sweep(dt.timedelta(0)) == 1
    done = (await env.digis.SendTip(request)).tip  # the retry answers the final outcome
    assert (done.tip_id, done.status) == (pending.tip_id, gpb.TIP_STATUS_COMPLETED)
    assert await payments.sweep(dt.timedelta(0)) == 0
    assert await spendable(env, fan) == 380 and await earnings(env, creator) == 120  # one charge
    assert len(await outbox(env, f"alerts:{creator}")) == 1  # one alert
    await audit_ok(env)


async def test_unreachable_wallet_answers_unavailable_and_the_replay_settles(env):
    fan, creator = uid("fan"), uid("creator")
    await fund(env, fan, 300)
    dead = dataclasses.replace(
        env.settings, preset_name="digis", addresses={**env.settings.addresses, "wallet": f"127.0.0.1:{free_port()}"}
    )
    request = tip_request(fan, creator, 100)
    async with running("gifts", dead, env.engine) as (target, _):
        cut_off = Caller(env.settings, target)
        try:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await cut_off.gifts.SendTip(request)
        finally:
            await cut_off.close()
    assert (e.value.code(), reason_of(e.value)) == (grpc.StatusCode.UNAVAILABLE, "TIP_OUTCOME_UNKNOWN")
    assert await spendable(env, fan) == 300  # nothing charged yet
    # The fan retries (through a Gifts that reaches Wallet): the same intent, charged once.
    done = (await env.digis.SendTip(request)).tip
    assert done.status == gpb.TIP_STATUS_COMPLETED
    assert (await env.digis.SendTip(request)).tip == done
    assert await spendable(env, fan) == 200 and await earnings(env, creator) == 100
    assert len(await outbox(env, f"alerts:{creator}")) == 1
    await audit_ok(env)


# ---- alerts and overlay tokens -----------------------------------------------------------------------


async def collect(stub, request: gpb.WatchCreatorAlertsRequest, count: int) -> list[gpb.WatchCreatorAlertsResponse]:
    out = []
    stream = stub.WatchCreatorAlerts(request)
    async for message in stream:
        out.append(message)
        if len(out) >= count:
            stream.cancel()
            break
    return out


async def test_alerts_arrive_in_order_and_resume_without_gap_or_duplicate(env):
    fan, creator = uid("fan"), uid("creator")
    await fund(env, fan, 1000)
    amounts = [11, 12, 13, 14, 15, 16]
    for amount in amounts:
        await tip(env.digis, fan, creator, amount, context_type=gpb.CONTEXT_TYPE_PROFILE, context_id=creator)
    channel = f"alerts:{creator}"
    async with as_user(creator, "creator"):
        first = await asyncio.wait_for(
            collect(
                env.users_digis,
                gpb.WatchCreatorAlertsRequest(creator_id=creator, resume_token=make_token(channel, 1)),
                5,
            ),
            30,
        )
        assert [m.event.amount_tokens for m in first] == amounts[1:]
        resumed = await asyncio.wait_for(
            collect(
                env.users_digis,
                gpb.WatchCreatorAlertsRequest(creator_id=creator, resume_token=first[1].resume_token),
                3,
            ),
            30,
        )
        assert [m.resume_token for m in resumed] == [m.resume_token for m in first[2:]]
        # Live: a watch from now receives the next tip.
        live = asyncio.create_task(
            collect(
                env.users_digis,
                gpb.WatchCreatorAlertsRequest(creator_id=creator, resume_token=first[-1].resume_token),
                1,
            )
        )
        await tip(env.digis, fan, creator, 17, context_type=gpb.CONTEXT_TYPE_PROFILE, context_id=creator)
        [next_one] = await asyncio.wait_for(live, 30)
        assert next_one.event.amount_tokens == 17
        bad = gpb.WatchCreatorAlertsRequest(creator_id=creator, resume_token="not-a-token")
        assert (await refused(collect(env.users_digis, bad, 1)))[1] == "INVALID_RESUME_TOKEN"
    async with as_user(fan):
        assert await refused(collect(env.users_digis, gpb.WatchCreatorAlertsRequest(creator_id=creator), 1)) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "NOT_YOURS",
        )


async def test_overlay_token_rotation_stops_the_old_token_at_once(env):
    fan, creator = uid("fan"), uid("creator")
    await fund(env, fan, 1000)
    await tip(env.digis, fan, creator, 5)
    await tip(env.digis, fan, creator, 55)
    async with as_user(creator, "creator"):
        request = gpb.RotateOverlayTokenRequest(request_id=uid("rot"), creator_id=creator)
        old = (await env.users_digis.RotateOverlayToken(request)).overlay_token
        assert (await env.users_digis.RotateOverlayToken(request)).overlay_token == old  # a replay
    resolved = await env.digis.ResolveOverlayToken(gpb.ResolveOverlayTokenRequest(overlay_token=old))
    assert resolved.creator_id == creator
    channel = f"alerts:{creator}"
    # The edge (any signed caller) watches with the token instead of being the creator.
    async with as_user("overlay-viewer"):
        after_first = gpb.WatchCreatorAlertsRequest(overlay_token=old, resume_token=make_token(channel, 1))
        [seen] = await asyncio.wait_for(collect(env.users_digis, after_first, 1), 30)
        assert seen.event.amount_tokens == 55
        open_watch = env.users_digis.WatchCreatorAlerts(
            gpb.WatchCreatorAlertsRequest(overlay_token=old, resume_token=seen.resume_token)
        )
        async with as_user(creator, "creator"):
            new = (
                await env.users_digis.RotateOverlayToken(
                    gpb.RotateOverlayTokenRequest(request_id=uid("rot"), creator_id=creator)
                )
            ).overlay_token
            assert await refused(env.users_digis.RotateOverlayToken(request)) == (
                grpc.StatusCode.FAILED_PRECONDITION,
                "OVERLAY_TOKEN_SUPERSEDED",
            )
        await tip(env.digis, fan, creator, 6)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            async for _ in open_watch:
                pytest.fail("an event reached a rotated overlay token")
        assert (e.value.code(), reason_of(e.value)) == (grpc.StatusCode.PERMISSION_DENIED, "OVERLAY_TOKEN_INVALID")
        stale = gpb.WatchCreatorAlertsRequest(overlay_token=old)
        assert await refused(collect(env.users_digis, stale, 1)) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "OVERLAY_TOKEN_INVALID",
        )
        [current] = await asyncio.wait_for(
            collect(
                env.users_digis, gpb.WatchCreatorAlertsRequest(overlay_token=new, resume_token=seen.resume_token), 1
            ),
            30,
        )
        assert current.event.amount_tokens == 6
        other = gpb.WatchCreatorAlertsRequest(overlay_token=new, creator_id=uid("creator"))
        assert (await refused(collect(env.users_digis, other, 1)))[1] == "OVERLAY_TOKEN_INVALID"
    assert await refused(env.digis.ResolveOverlayToken(gpb.ResolveOverlayTokenRequest(overlay_token=old))) == (
        grpc.StatusCode.NOT_FOUND,
        "OVERLAY_TOKEN_UNKNOWN",
    )
    assert new != old and new.startswith("ovl_")
