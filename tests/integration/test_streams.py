"""Streams with Wallet, in process, on the controlled clock: ticket economics per preset, the cap
under concurrent buyers, refunds on cancel, every refusal, presence, the merged resumable live feed
(the Gifts side simulated with events appended to a scratch outbox), slow watchers, and a crash
between Wallet and the outcome commit."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time
import uuid
from contextlib import AsyncExitStack

import grpc
import pytest
from redis.asyncio import Redis
from sqlalchemy import text

from services.streams import server as streams_server
from shared.clock import ControlledClock, db_now
from shared.gen.fanbank.gifts.v1 import gift_events_pb2 as gpb
from shared.gen.fanbank.streams.v1 import streams_service_pb2 as spb
from shared.gen.fanbank.wallet.v1 import wallet_service_pb2 as wpb
from shared.outbox import Event, Relay, append, outbox_migration_sql
from shared.watch import make_multi_token
from tests import harness
from tests.harness import Caller, as_user, migrated_engine, reason_of, running, settings_for, uid

T0 = dt.datetime(2032, 5, 1, tzinfo=dt.UTC)
GIFTS = "gifts_scratch"  # stands in for Gifts' outbox: the only writer of stream_gifts: channels
WAIT = 20.0


@dataclasses.dataclass
class Env:
    engine: object
    clock: ControlledClock
    settings: object
    wallet: object  # WalletServiceStub as "platform"
    streams: object  # StreamsServiceStub as "platform" (internal, privileged)
    users: object  # StreamsServiceStub as "edge", for calls inside as_user()
    service: object  # the Streams service object (digis)
    target: str
    gifts_relay: Relay
    stack: AsyncExitStack


@pytest.fixture(scope="module")
async def env(database_url, redis_url):
    stack = AsyncExitStack()
    # The background loop's work runs by hand (background_ms=0); a 30 s sweep lease.
    base = settings_for(database_url, redis_url, background_ms=0, sweep_after_seconds=30)
    engine = await migrated_engine(base, pool_size=30)
    async with engine.begin() as conn:
        await conn.exec_driver_sql(outbox_migration_sql(GIFTS))
    clock = ControlledClock(engine)
    await clock.set(T0)
    wallet_target, _ = await stack.enter_async_context(running("wallet", base, engine))
    settings = dataclasses.replace(base, addresses={**base.addresses, "wallet": wallet_target})
    target, service = await stack.enter_async_context(running("streams", settings, engine))
    redis = Redis.from_url(redis_url)
    gifts_relay = Relay(engine, redis, GIFTS)
    gifts_relay.start()
    wallet_caller, caller, edge = (
        Caller(settings, wallet_target),
        Caller(settings, target),
        Caller(settings, target, "edge"),
    )
    yield Env(
        engine, clock, settings, wallet_caller.wallet, caller.streams, edge.streams, service, target, gifts_relay, stack
    )
    await gifts_relay.stop()
    await redis.aclose()
    for c in (wallet_caller, caller, edge):
        await c.close()
    await stack.aclose()
    await engine.dispose()


async def fund(env: Env, owner: str, amount: int) -> None:
    await harness.fund(env.wallet, owner, amount)


async def spendable(env: Env, owner: str) -> int:
    return await harness.spendable(env.wallet, owner)


async def earnings(env: Env, owner: str) -> int:
    return await harness.earned(env.wallet, owner)


async def platform_revenue(env: Env) -> int:
    ref = wpb.AccountRef(owner_id="", code=wpb.ACCOUNT_CODE_PLATFORM_REVENUE, asset=wpb.ASSET_TOKEN)
    try:
        return (await env.wallet.GetAccount(wpb.GetAccountRequest(account=ref))).account.posted
    except grpc.aio.AioRpcError as error:
        assert reason_of(error) == "ACCOUNT_NOT_FOUND"
        return 0


async def audit_ok(env: Env) -> None:
    audit = await env.wallet.Audit(wpb.AuditRequest())
    assert audit.ok, audit


async def refused(coro) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await coro
    return e.value.code(), reason_of(e.value)


async def create(stub, creator: str, kind=spb.STREAM_KIND_PRIVATE, price: int = 500, **kw) -> spb.Stream:
    request = spb.CreateStreamRequest(
        request_id=kw.pop("request_id", uid("create")), creator_id=creator, kind=kind, price_tokens=price, **kw
    )
    return (await stub.CreateStream(request)).stream


async def buy(stub, stream: spb.Stream, fan: str, price: int | None = None, request_id: str | None = None):
    request = spb.PurchaseTicketRequest(
        request_id=request_id or uid("buy"),
        stream_id=stream.stream_id,
        fan_id=fan,
        price_tokens=stream.price_tokens if price is None else price,
    )
    return await stub.PurchaseTicket(request)


async def start(env: Env, stream: spb.Stream) -> spb.Stream:
    return (
        await env.streams.StartStream(spb.StartStreamRequest(request_id=uid("s"), stream_id=stream.stream_id))
    ).stream


async def wallet_legs(env: Env, stream_id: str) -> list[tuple[int, int]]:
    """(credit account code, amount) of every ticket posting of a stream, read-only, in the test."""
    async with env.engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT a.code, t.amount FROM wallet.transfers t JOIN wallet.accounts a ON a.id = t.credit_account_id "
                    "WHERE t.context_type = 'stream' AND t.context_id = :s AND t.reverses_transfer_id IS NULL "
                    "ORDER BY t.id"
                ),
                {"s": stream_id},
            )
        ).all()
    return [(r.code, r.amount) for r in rows]


# ---- economics ----------------------------------------------------------------------------------


async def test_digis_ticket_goes_wholly_to_the_creator(env):
    creator, fan = uid("creator"), uid("fan")
    await fund(env, fan, 800)
    stream = await create(env.streams, creator, price=500)
    assert (stream.fee_bps, stream.status) == (0, spb.STREAM_STATUS_SCHEDULED)
    revenue = await platform_revenue(env)
    bought = await buy(env.streams, stream, fan)
    assert bought.charged and bought.ticket.status == spb.TICKET_STATUS_VALID
    assert (bought.ticket.price_tokens, bought.ticket.fee_tokens) == (500, 0)
    assert await spendable(env, fan) == 300
    assert await earnings(env, creator) == 500
    assert await platform_revenue(env) == revenue
    legs = await wallet_legs(env, stream.stream_id)
    assert [amount for _, amount in legs] == [500]  # no fee leg at 0%
    await audit_ok(env)


async def test_streamit_ticket_pays_30_percent_to_the_platform(env):
    settings = dataclasses.replace(env.settings, preset_name="streamit")
    async with running("streams", settings, env.engine) as (target, _):
        caller = Caller(settings, target)
        try:
            creator, fan = uid("creator"), uid("fan")
            await fund(env, fan, 1000)
            stream = await create(caller.streams, creator, kind=spb.STREAM_KIND_PREMIUM, price=333)
            assert stream.fee_bps == 3000
            revenue = await platform_revenue(env)
            ticket = (await buy(caller.streams, stream, fan)).ticket
            # fee = floor(333 x 3000 / 10000) = 99; the creator gets the rest.
            assert (ticket.price_tokens, ticket.fee_tokens, ticket.fee_bps) == (333, 99, 3000)
            assert await spendable(env, fan) == 667
            assert await earnings(env, creator) == 234
            assert await platform_revenue(env) == revenue + 99
            assert sorted(amount for _, amount in await wallet_legs(env, stream.stream_id)) == [99, 234]
            await audit_ok(env)
        finally:
            await caller.close()


async def test_already_owned_and_replays_charge_once(env):
    creator, fan = uid("creator"), uid("fan")
    await fund(env, fan, 1000)
    stream = await create(env.streams, creator, price=300)
    rid = uid("buy")
    first = await buy(env.streams, stream, fan, request_id=rid)
    again = await buy(env.streams, stream, fan, request_id=rid)
    assert again == first and first.charged
    other = await buy(env.streams, stream, fan)  # another request: already owned, nothing charged
    assert not other.charged and other.ticket == first.ticket
    assert await spendable(env, fan) == 700
    assert (await env.streams.GetStream(spb.GetStreamRequest(stream_id=stream.stream_id))).stream.tickets_sold == 1


async def test_insufficient_funds_charges_nothing_and_frees_the_seat(env):
    creator, poor, rich = uid("creator"), uid("fan"), uid("fan")
    await fund(env, poor, 99)
    await fund(env, rich, 100)
    stream = await create(env.streams, creator, price=100, viewer_cap=1)
    rid = uid("buy")
    assert await refused(buy(env.streams, stream, poor, request_id=rid)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "INSUFFICIENT_FUNDS",
    )
    never_funded = uid("fan")
    assert (await refused(buy(env.streams, stream, never_funded)))[1] == "INSUFFICIENT_FUNDS"
    await fund(env, poor, 1)
    # The replay answers the first outcome, even though the fan could pay now.
    assert (await refused(buy(env.streams, stream, poor, request_id=rid)))[1] == "INSUFFICIENT_FUNDS"
    assert await spendable(env, poor) == 100
    assert (await buy(env.streams, stream, rich)).charged  # the seat was given back
    await audit_ok(env)


# ---- the cap --------------------------------------------------------------------------------------


async def test_cap_holds_under_200_concurrent_buyers(env):
    creator, cap, buyers = uid("creator"), 37, 200
    fans = [uid("fan") for _ in range(buyers)]
    await asyncio.gather(*(fund(env, f, 100) for f in fans))
    stream = await create(env.streams, creator, kind=spb.STREAM_KIND_PREMIUM, price=100, viewer_cap=cap)
    go = asyncio.Event()

    async def attempt(fan: str):
        await go.wait()
        try:
            return (await buy(env.streams, stream, fan)).ticket.fan_id
        except grpc.aio.AioRpcError as error:
            return error.code(), reason_of(error)

    tasks = [asyncio.create_task(attempt(f)) for f in fans]
    go.set()
    results = await asyncio.gather(*tasks)
    winners = [r for r in results if isinstance(r, str)]
    losers = [r for r in results if not isinstance(r, str)]
    assert len(winners) == cap
    assert set(losers) == {(grpc.StatusCode.FAILED_PRECONDITION, "SOLD_OUT")}
    balances = dict(zip(fans, await asyncio.gather(*(spendable(env, f) for f in fans)), strict=True))
    assert sorted(f for f, b in balances.items() if b == 0) == sorted(winners)
    assert all(balances[f] == 100 for f in fans if f not in winners)  # every loser charged nothing
    got = (await env.streams.GetStream(spb.GetStreamRequest(stream_id=stream.stream_id))).stream
    assert got.tickets_sold == cap
    assert await earnings(env, creator) == cap * 100
    await audit_ok(env)


# ---- refunds ---------------------------------------------------------------------------------------


async def test_cancel_refunds_every_leg_exactly_once(env):
    settings = dataclasses.replace(env.settings, preset_name="streamit")
    async with running("streams", settings, env.engine) as (target, service):
        caller = Caller(settings, target)
        try:
            creator = uid("creator")
            fans = [uid("fan") for _ in range(3)]
            await asyncio.gather(*(fund(env, f, 1000) for f in fans))
            stream = await create(caller.streams, creator, kind=spb.STREAM_KIND_PREMIUM, price=250)
            revenue = await platform_revenue(env)
            for fan in fans:
                await buy(caller.streams, stream, fan)
            assert await platform_revenue(env) == revenue + 3 * 75
            assert await earnings(env, creator) == 3 * 175
            cancel = spb.CancelStreamRequest(request_id=uid("c"), stream_id=stream.stream_id)
            first = await caller.streams.CancelStream(cancel)
            assert first.stream.status == spb.STREAM_STATUS_CANCELLED
            assert (first.tickets_refunded, first.refunds_pending, first.refunds_failed) == (3, 0, 0)
            again = await caller.streams.CancelStream(
                spb.CancelStreamRequest(request_id=uid("c"), stream_id=stream.stream_id)
            )
            assert (again.tickets_refunded, again.refunds_pending) == (3, 0)
            for fan in fans:
                assert await spendable(env, fan) == 1000
            assert await earnings(env, creator) == 0
            assert await platform_revenue(env) == revenue  # the fee went back too
            access = await caller.streams.CheckAccess(
                spb.CheckAccessRequest(stream_id=stream.stream_id, user_id=fans[0])
            )
            assert not access.allowed and access.ticket.status == spb.TICKET_STATUS_REFUNDED
            assert await refused(buy(caller.streams, stream, uid("fan"))) == (
                grpc.StatusCode.FAILED_PRECONDITION,
                "STREAM_CANCELLED",
            )
            await service.tickets.sweep(dt.timedelta(0))  # the sweeper finds nothing left to refund
            for fan in fans:
                assert await spendable(env, fan) == 1000
            await audit_ok(env)
        finally:
            await caller.close()


async def test_a_scheduled_stream_that_never_starts_is_cancelled_and_refunded(env):
    """FANBANK_STREAMS_NO_SHOW_HOURS (24) after its scheduled start, a stream still SCHEDULED is
    cancelled by the background loop and every ticket refunded, as CancelStream would."""
    now = await db_now(env.engine)
    creator, fan = uid("creator"), uid("fan")
    await fund(env, fan, 1000)
    stream = await create(env.streams, creator, price=300, scheduled_start_time=_stamp(now + dt.timedelta(hours=1)))
    await buy(env.streams, stream, fan)
    assert (await spendable(env, fan), await earnings(env, creator)) == (700, 300)
    await env.clock.advance(dt.timedelta(hours=25) - dt.timedelta(seconds=1))
    await env.service.cancel_no_shows()
    got = await env.streams.GetStream(spb.GetStreamRequest(stream_id=stream.stream_id))
    assert got.stream.status == spb.STREAM_STATUS_SCHEDULED  # a late start is still a start
    await env.clock.advance(dt.timedelta(seconds=2))
    assert await env.service.cancel_no_shows() >= 1
    got = await env.streams.GetStream(spb.GetStreamRequest(stream_id=stream.stream_id))
    assert got.stream.status == spb.STREAM_STATUS_CANCELLED
    assert (await spendable(env, fan), await earnings(env, creator)) == (1000, 0)
    assert await env.service.cancel_no_shows() == 0  # once
    assert (await spendable(env, fan), await earnings(env, creator)) == (1000, 0)
    await audit_ok(env)


# ---- bad input -------------------------------------------------------------------------------------


async def test_bad_input_is_refused_and_changes_nothing(env):
    creator, other, fan = uid("creator"), uid("creator"), uid("fan")
    await fund(env, fan, 1000)
    s = env.streams
    public = await create(s, creator, kind=spb.STREAM_KIND_PUBLIC, price=0)
    private = await create(s, creator, price=200)
    ended = await create(s, creator, price=200)
    await start(env, ended)
    await s.EndStream(spb.EndStreamRequest(request_id=uid("e"), stream_id=ended.stream_id))
    invite_only = await create(s, creator, price=200, invite_only=True, invited_user_ids=[uid("fan")])
    rid = uid("create")
    await create(s, creator, price=200, request_id=rid)
    INVALID, PRECONDITION = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION
    cases = [
        (create(s, creator, price=-5), INVALID, "INVALID_PRICE"),
        (create(s, creator, price=0), INVALID, "INVALID_PRICE"),
        (create(s, creator, price=100_001), INVALID, "INVALID_PRICE"),
        (create(s, creator, price=10**15), INVALID, "INVALID_PRICE"),
        (create(s, creator, kind=spb.STREAM_KIND_PUBLIC, price=10), INVALID, "INVALID_PRICE"),
        (create(s, creator, kind=spb.STREAM_KIND_PUBLIC, price=0, viewer_cap=5), INVALID, "TICKETED_ONLY"),
        (create(s, creator, kind=spb.STREAM_KIND_UNSPECIFIED), INVALID, "INVALID_KIND"),
        (create(s, creator, viewer_cap=-1), INVALID, "INVALID_VIEWER_CAP"),
        (create(s, creator, title="x" * 201), INVALID, "INVALID_TITLE"),
        (create(s, creator, invited_user_ids=["a"]), INVALID, "INVITES_NEED_INVITE_ONLY"),
        (create(s, creator, price=201, request_id=rid), grpc.StatusCode.ALREADY_EXISTS, "ID_REUSED"),
        (
            create(s, creator, scheduled_start_time=_stamp(T0 - dt.timedelta(days=1))),
            INVALID,
            "INVALID_SCHEDULED_START",
        ),
        (buy(s, public, fan, price=10), PRECONDITION, "STREAM_IS_PUBLIC"),
        (buy(s, ended, fan), PRECONDITION, "STREAM_ENDED"),
        (buy(s, private, fan, price=199), PRECONDITION, "PRICE_CHANGED"),
        (buy(s, private, fan, price=0), INVALID, "INVALID_PRICE"),
        (buy(s, private, fan, price=-1), INVALID, "INVALID_PRICE"),
        (buy(s, private, fan, price=10**13), INVALID, "INVALID_PRICE"),
        (buy(s, private, creator), PRECONDITION, "CREATOR_NEEDS_NO_TICKET"),
        (buy(s, invite_only, fan), grpc.StatusCode.PERMISSION_DENIED, "NOT_INVITED"),
        (s.GetStream(spb.GetStreamRequest(stream_id="no-such-stream")), grpc.StatusCode.NOT_FOUND, "STREAM_NOT_FOUND"),
        (
            s.PurchaseTicket(
                spb.PurchaseTicketRequest(request_id=uid("b"), stream_id="nope", fan_id=fan, price_tokens=5)
            ),
            grpc.StatusCode.NOT_FOUND,
            "STREAM_NOT_FOUND",
        ),
        (s.GetStream(spb.GetStreamRequest(stream_id="bad id!")), INVALID, "INVALID_ID"),
        (
            s.EndStream(spb.EndStreamRequest(request_id=uid("e"), stream_id=private.stream_id)),
            PRECONDITION,
            "STREAM_NOT_STARTED",
        ),
        (
            s.StartStream(spb.StartStreamRequest(request_id=uid("s"), stream_id=ended.stream_id)),
            PRECONDITION,
            "STREAM_ENDED",
        ),
        (
            s.CancelStream(spb.CancelStreamRequest(request_id=uid("c"), stream_id=ended.stream_id)),
            PRECONDITION,
            "STREAM_ALREADY_STARTED",
        ),
        (
            s.UpdateInvites(
                spb.UpdateInvitesRequest(request_id=uid("i"), stream_id=private.stream_id, add_user_ids=["a"])
            ),
            PRECONDITION,
            "NOT_INVITE_ONLY",
        ),
        (
            s.ListCreatorStreams(spb.ListCreatorStreamsRequest(creator_id=creator, page_token="garbage")),
            INVALID,
            "INVALID_PAGE_TOKEN",
        ),
    ]
    for coro, code, reason in cases:
        assert await refused(coro) == (code, reason), reason
    # A replayed purchase id with other fields.
    rid = uid("buy")
    await buy(s, private, fan, request_id=rid)
    assert await refused(buy(s, public, fan, price=200, request_id=rid)) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "ID_REUSED",
    )
    assert await refused(buy(s, private, fan, price=201, request_id=rid)) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "ID_REUSED",
    )
    # Another creator, a fan acting for someone else, a fan without the creator role.
    async with as_user(other, "creator"):
        u = env.users
        for call in (
            u.EndStream(spb.EndStreamRequest(request_id=uid("e"), stream_id=private.stream_id)),
            u.StartStream(spb.StartStreamRequest(request_id=uid("s"), stream_id=private.stream_id)),
            u.CancelStream(spb.CancelStreamRequest(request_id=uid("c"), stream_id=private.stream_id)),
            u.UpdateInvites(
                spb.UpdateInvitesRequest(request_id=uid("i"), stream_id=invite_only.stream_id, add_user_ids=[other])
            ),
            u.ListInvites(spb.ListInvitesRequest(stream_id=invite_only.stream_id)),
        ):
            assert await refused(call) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_YOUR_STREAM")
        assert await refused(create(u, creator)) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_YOURS")
        assert await refused(buy(u, private, fan)) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_YOURS")
    async with as_user(fan):
        assert await refused(create(env.users, fan)) == (grpc.StatusCode.PERMISSION_DENIED, "CREATOR_ROLE_REQUIRED")
    # Nothing changed: one ticket bought (200), no stream started or ended by the refusals.
    assert await spendable(env, fan) == 800
    got = (await s.GetStream(spb.GetStreamRequest(stream_id=private.stream_id))).stream
    assert (got.status, got.tickets_sold) == (spb.STREAM_STATUS_SCHEDULED, 1)
    invites = await s.ListInvites(spb.ListInvitesRequest(stream_id=invite_only.stream_id))
    assert len(invites.user_ids) == 1
    mine = await s.ListCreatorStreams(spb.ListCreatorStreamsRequest(creator_id=creator))
    assert len(mine.streams) == 5
    await audit_ok(env)


def _stamp(when: dt.datetime):
    from google.protobuf.timestamp_pb2 import Timestamp

    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


async def test_invites_and_paged_listing(env):
    creator, invited, stranger = uid("creator"), uid("fan"), uid("fan")
    await fund(env, invited, 500)
    await fund(env, stranger, 500)
    async with as_user(creator, "creator"):
        stream = await create(env.users, creator, price=100, invite_only=True)
        updated = await env.users.UpdateInvites(
            spb.UpdateInvitesRequest(request_id=uid("i"), stream_id=stream.stream_id, add_user_ids=[invited, stranger])
        )
        assert updated.invite_count == 2
        updated = await env.users.UpdateInvites(
            spb.UpdateInvitesRequest(request_id=uid("i"), stream_id=stream.stream_id, remove_user_ids=[stranger])
        )
        assert updated.invite_count == 1
        for _ in range(4):
            await create(env.users, creator, kind=spb.STREAM_KIND_PUBLIC, price=0)
            await env.clock.advance(dt.timedelta(seconds=1))
        pages, token = [], ""
        for _ in range(5):
            page = await env.users.ListCreatorStreams(
                spb.ListCreatorStreamsRequest(creator_id=creator, page_size=2, page_token=token)
            )
            pages.append(len(page.streams))
            token = page.next_page_token
            if not token:
                break
        assert pages == [2, 2, 1]
        scheduled = await env.users.ListCreatorStreams(
            spb.ListCreatorStreamsRequest(creator_id=creator, status=spb.STREAM_STATUS_LIVE)
        )
        assert len(scheduled.streams) == 0
    async with as_user(invited):
        assert (await buy(env.users, stream, invited)).charged
    async with as_user(stranger):
        assert await refused(buy(env.users, stream, stranger)) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_INVITED")


# ---- access and presence -------------------------------------------------------------------------


async def test_join_needs_access_and_counts_viewers(env):
    creator, holder, stranger, admin = uid("creator"), uid("fan"), uid("fan"), uid("ops")
    await fund(env, holder, 500)
    stream = await create(env.streams, creator, price=100)
    public = await create(env.streams, creator, kind=spb.STREAM_KIND_PUBLIC, price=0)
    await buy(env.streams, stream, holder)

    def join(s, user):
        return env.users.JoinStream(spb.JoinStreamRequest(request_id=uid("j"), stream_id=s.stream_id, user_id=user))

    async with as_user(holder):
        assert await refused(join(stream, holder)) == (grpc.StatusCode.FAILED_PRECONDITION, "STREAM_NOT_LIVE")
    await start(env, stream)
    await start(env, public)
    async with as_user(stranger):
        assert await refused(join(stream, stranger)) == (grpc.StatusCode.PERMISSION_DENIED, "TICKET_REQUIRED")
        assert await refused(join(stream, holder)) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_YOURS")
        assert (await join(public, stranger)).viewer_count == 1
        access = await env.users.CheckAccess(spb.CheckAccessRequest(stream_id=stream.stream_id, user_id=stranger))
        assert (access.allowed, access.denial_reason) == (False, "TICKET_REQUIRED")
        assert await refused(
            env.users.CheckAccess(spb.CheckAccessRequest(stream_id=stream.stream_id, user_id=holder))
        ) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_YOURS")
    async with as_user(holder):
        assert (await join(stream, holder)).viewer_count == 1
        assert (await join(stream, holder)).viewer_count == 1  # a repeat is the heartbeat, counted once
        access = await env.users.CheckAccess(spb.CheckAccessRequest(stream_id=stream.stream_id, user_id=holder))
        assert (access.allowed, access.grant) == (True, spb.ACCESS_GRANT_TICKET)
    async with as_user(creator, "creator"):
        assert (await join(stream, creator)).viewer_count == 2
        access = await env.users.CheckAccess(spb.CheckAccessRequest(stream_id=stream.stream_id, user_id=stranger))
        assert not access.allowed  # the creator may ask about anyone
    async with as_user(admin, "admin"):
        assert (await join(stream, admin)).viewer_count == 3
    got = (await env.streams.GetStream(spb.GetStreamRequest(stream_id=stream.stream_id))).stream
    assert got.viewer_count == 3
    service = env.service
    assert await service.publish_viewer_counts() >= 1
    assert await service.publish_viewer_counts() == 0  # nothing changed since: no event
    async with as_user(holder):
        left = await env.users.LeaveStream(
            spb.LeaveStreamRequest(request_id=uid("l"), stream_id=stream.stream_id, user_id=holder)
        )
        assert left.viewer_count == 2
    # Presence is a lease: the creator and the admin stop heartbeating, the holder comes back.
    await env.clock.advance(streams_server.PRESENCE_TTL - dt.timedelta(seconds=1))
    async with as_user(holder):
        await join(stream, holder)
    await env.clock.advance(dt.timedelta(seconds=2))
    await service.expire_presence()
    got = (await env.streams.GetStream(spb.GetStreamRequest(stream_id=stream.stream_id))).stream
    assert got.viewer_count == 1
    await service.publish_viewer_counts()
    counts = [m.stream_event.viewer_count for m in await watch(env, stream.stream_id, 5, types={"viewer_count"})]
    assert counts == [3, 1]
    ended = (await env.streams.EndStream(spb.EndStreamRequest(request_id=uid("e"), stream_id=stream.stream_id))).stream
    assert ended.viewer_count == 0


# ---- the live feed -------------------------------------------------------------------------------


def from_start(stream_id: str) -> str:
    return make_multi_token(streams_server.feed_channels(stream_id), (0, 0))


async def watch(env: Env, stream_id: str, n: int, token: str | None = None, stub=None, types=None, within=3.0):
    """Up to n messages of the feed (from the start by default); stops early after `within` s of
    silence."""
    stub = stub or env.streams
    request = spb.WatchStreamRequest(
        stream_id=stream_id, resume_token=from_start(stream_id) if token is None else token
    )
    call = stub.WatchStream(request, timeout=WAIT)
    out = []
    try:
        while len(out) < n:
            try:
                message = await asyncio.wait_for(call.read(), within)
            except TimeoutError:
                break
            if message is grpc.aio.EOF:
                break
            if types is None or message.WhichOneof("event") == "stream_event" and _etype(message) in types:
                out.append(message)
    finally:
        call.cancel()
    return out


def _etype(message) -> str:
    return spb.StreamEventType.Name(message.stream_event.type).removeprefix("STREAM_EVENT_TYPE_").lower()


async def gift(env: Env, stream_id: str, support_id: str, message: str = "") -> None:
    event = gpb.GiftEvent(
        type=gpb.GIFT_EVENT_TYPE_TIP,
        support_id=support_id,
        amount_tokens=50,
        message=message,
        context_type="stream",
        context_id=stream_id,
    )
    async with env.engine.begin() as conn:
        await append(conn, GIFTS, [Event(f"stream_gifts:{stream_id}", "TIP", event.SerializeToString())])
    env.gifts_relay.notify()


def label(message) -> str:
    if message.WhichOneof("event") == "gift_event":
        return f"gift:{message.gift_event.support_id}"
    if message.stream_event.type == spb.STREAM_EVENT_TYPE_TICKET_SOLD:
        return f"ticket:{message.stream_event.fan_id}"
    return _etype(message)


async def test_watch_merges_both_channels_in_order_and_resumes(env):
    creator = uid("creator")
    fans = [f"fan{i}-{uuid.uuid4().hex[:6]}" for i in range(4)]
    await asyncio.gather(*(fund(env, f, 100) for f in fans))
    stream = await create(env.streams, creator, price=10)
    sid = stream.stream_id
    await buy(env.streams, stream, fans[0])
    await gift(env, sid, "g1")
    await start(env, stream)
    await gift(env, sid, "g2")
    await buy(env.streams, stream, fans[1])
    first = await watch(env, sid, 5)
    assert sorted(label(m) for m in first) == sorted(
        ["ticket:" + fans[0], "gift:g1", "started", "gift:g2", "ticket:" + fans[1]]
    )
    # Within each channel, commit order.
    own = [label(m) for m in first if m.WhichOneof("event") == "stream_event"]
    assert own == ["ticket:" + fans[0], "started", "ticket:" + fans[1]]
    assert [label(m) for m in first if m.WhichOneof("event") == "gift_event"] == ["gift:g1", "gift:g2"]

    # Disconnect after two messages; more happens on both channels; resume: no gap, no duplicate.
    seen = first[:2]
    await gift(env, sid, "g3")
    await buy(env.streams, stream, fans[2])
    rest = await watch(env, sid, 10, token=seen[-1].resume_token)
    labels = [label(m) for m in seen + rest]
    assert sorted(labels) == sorted([label(m) for m in first] + ["gift:g3", "ticket:" + fans[2]])
    assert len(set(labels)) == len(labels)

    # Across a Streams process restart: a watcher of a second process, which stops while the watch
    # is open; writes go on (through the first process); a new process starts and the watcher
    # resumes there with the last token it got.
    quick = dataclasses.replace(env.settings, shutdown_grace_seconds=1)
    async with running("streams", quick, env.engine) as (target, _):
        caller = Caller(quick, target)
        request = spb.WatchStreamRequest(stream_id=sid, resume_token=rest[0].resume_token)
        call = caller.streams.WatchStream(request, timeout=WAIT)
        before = [await asyncio.wait_for(call.read(), WAIT) for _ in range(3)]
    try:
        with pytest.raises(grpc.aio.AioRpcError):  # the stopped process ended the watch
            for _ in range(10):
                assert await asyncio.wait_for(call.read(), WAIT) is not grpc.aio.EOF
    finally:
        await caller.close()
    await gift(env, sid, "g4")
    await buy(env.streams, stream, fans[3])
    async with running("streams", quick, env.engine) as (target, _):
        caller = Caller(quick, target)
        try:
            after = await watch(env, sid, 20, token=before[-1].resume_token, stub=caller.streams)
        finally:
            await caller.close()
    everything = [label(m) for m in seen] + [label(rest[0])] + [label(m) for m in before + after]
    assert len(set(everything)) == len(everything)
    assert set(everything) == {f"ticket:{f}" for f in fans} | {f"gift:g{i}" for i in range(1, 5)} | {"started"}


async def test_live_watch_without_a_token_and_token_errors(env):
    creator = uid("creator")
    stream = await create(env.streams, creator, kind=spb.STREAM_KIND_PUBLIC, price=0)
    sid = stream.stream_id
    hub = env.service.hub
    before = hub.subscriber_count
    call = env.streams.WatchStream(spb.WatchStreamRequest(stream_id=sid), timeout=WAIT)
    read = asyncio.ensure_future(call.read())
    deadline = time.monotonic() + WAIT
    while hub.subscriber_count < before + 2:  # both channels registered: "now" is fixed
        assert time.monotonic() < deadline, "the watch never subscribed"
        await asyncio.sleep(0.01)
    await gift(env, sid, "live-1")
    message = await asyncio.wait_for(read, WAIT)
    assert message.gift_event.support_id == "live-1"
    await start(env, stream)
    message = await asyncio.wait_for(call.read(), WAIT)
    assert message.stream_event.type == spb.STREAM_EVENT_TYPE_STARTED
    call.cancel()

    for token in ("garbage", make_multi_token(["stream:x", "stream_gifts:x"], (0, 0)), message.resume_token + "A"):
        code, reason = await refused(watch(env, sid, 1, token=token))
        assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_RESUME_TOKEN"), token
    # A single-channel token is not a feed token.
    from shared.watch import make_token

    assert (await refused(watch(env, sid, 1, token=make_token(f"stream:{sid}", 1))))[1] == "INVALID_RESUME_TOKEN"
    # Too old: Redis no longer holds the gifts after the token, and only Gifts' outbox could.
    for i in range(5):
        await gift(env, sid, f"old-{i}")
    await _until(lambda: _xlen(env, f"stream_gifts:{sid}", 6))
    redis = env.service.live.redis
    await redis.xtrim(f"stream_gifts:{sid}", maxlen=2, approximate=False)
    old = make_multi_token(streams_server.feed_channels(sid), (1, 1))
    assert await refused(watch(env, sid, 1, token=old)) == (grpc.StatusCode.FAILED_PRECONDITION, "RESUME_TOKEN_TOO_OLD")
    await _until(lambda: _subscribers_back(hub, before))


async def _subscribers_back(hub, n):
    return hub.subscriber_count == n


async def _xlen(env, key, n):
    return await env.service.live.redis.xlen(key) >= n


async def _until(predicate):
    deadline = time.monotonic() + WAIT
    while not await predicate():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)


async def test_watch_of_a_ticketed_stream_needs_access(env):
    creator, fan = uid("creator"), uid("fan")
    stream = await create(env.streams, creator, price=10)
    async with as_user(fan):
        assert await refused(watch(env, stream.stream_id, 1, stub=env.users)) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "TICKET_REQUIRED",
        )
    async with as_user(creator, "creator"):
        await start(env, stream)
        assert [label(m) for m in await watch(env, stream.stream_id, 1, stub=env.users)] == ["started"]


async def test_slow_watcher_is_dropped_and_others_get_everything(env):
    settings = dataclasses.replace(env.settings, streams_watch_queue=100)
    async with running("streams", settings, env.engine) as (target, _):
        callers = [Caller(settings, target) for _ in range(3)]  # separate connections
        try:
            stream = await create(callers[0].streams, uid("creator"), kind=spb.STREAM_KIND_PUBLIC, price=0)
            sid = stream.stream_id
            total, big = 300, "x" * 50_000
            slow = callers[0].streams.WatchStream(
                spb.WatchStreamRequest(stream_id=sid, resume_token=from_start(sid)), timeout=60
            )
            fast = [asyncio.create_task(watch(env, sid, total, stub=c.streams, within=WAIT)) for c in callers[1:]]
            for i in range(total):
                await gift(env, sid, f"big-{i}", message=big)
            for task in fast:
                got = await task
                assert [m.gift_event.support_id for m in got] == [f"big-{i}" for i in range(total)]
            received = 0
            with pytest.raises(grpc.aio.AioRpcError) as dropped:
                async for _ in slow:
                    received += 1
            assert dropped.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert reason_of(dropped.value) == "SUBSCRIBER_TOO_SLOW"
            assert received < total
        finally:
            for c in callers:
                await c.close()


async def test_watchers_per_process_are_bounded(env):
    settings = dataclasses.replace(env.settings, streams_max_watchers=2)
    async with running("streams", settings, env.engine) as (target, service):
        caller = Caller(settings, target)
        try:
            stream = await create(caller.streams, uid("creator"), kind=spb.STREAM_KIND_PUBLIC, price=0)
            sid = stream.stream_id
            calls = [caller.streams.WatchStream(spb.WatchStreamRequest(stream_id=sid), timeout=WAIT) for _ in range(2)]
            reads = [asyncio.ensure_future(c.read()) for c in calls]
            await _until(lambda: _subscribers(service, 4))
            assert await refused(watch(env, sid, 1, stub=caller.streams)) == (
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "TOO_MANY_SUBSCRIBERS",
            )
            for c in calls:
                c.cancel()
            await asyncio.gather(*reads, return_exceptions=True)
        finally:
            await caller.close()


async def _subscribers(service, n):
    return service.hub.subscriber_count >= n


# ---- crashes and unknown outcomes ----------------------------------------------------------------


async def test_crash_between_wallet_and_outcome_is_finished_by_the_sweeper(env):
    creator, fan = uid("creator"), uid("fan")
    await fund(env, fan, 1000)
    stream = await create(env.streams, creator, price=400)
    tickets = env.service.tickets
    settle = tickets.settle

    async def crash(outcome):
        tickets.settle = settle  # once
        raise RuntimeError("process killed")

    tickets.settle = crash
    rid = uid("buy")
    try:
        assert (await refused(buy(env.streams, stream, fan, request_id=rid)))[0] == grpc.StatusCode.INTERNAL
    finally:
        tickets.settle = settle
    assert await spendable(env, fan) == 600  # Wallet did charge
    access = await env.streams.CheckAccess(spb.CheckAccessRequest(stream_id=stream.stream_id, user_id=fan))
    assert (access.allowed, access.denial_reason) == (False, "TICKET_PENDING")
    assert await tickets.sweep(dt.timedelta(seconds=30)) == 0  # too young for the sweeper
    await env.clock.advance(dt.timedelta(seconds=31))
    assert await tickets.sweep() == 1
    access = await env.streams.CheckAccess(spb.CheckAccessRequest(stream_id=stream.stream_id, user_id=fan))
    assert access.allowed and access.ticket.status == spb.TICKET_STATUS_VALID
    replay = await buy(env.streams, stream, fan, request_id=rid)
    assert replay.charged and replay.ticket.ticket_id == access.ticket.ticket_id
    assert await spendable(env, fan) == 600
    assert await earnings(env, creator) == 400
    sold = [m for m in await watch(env, stream.stream_id, 5) if label(m) == f"ticket:{fan}"]
    assert len(sold) == 1
    await audit_ok(env)


class _LostAnswers:
    """A Wallet stub whose BatchTransfer commits but whose answer is lost (UNAVAILABLE), `times` times."""

    def __init__(self, real, times: int):
        self.real = real
        self.times = times

    def __getattr__(self, name):
        return getattr(self.real, name)

    async def BatchTransfer(self, request, **kwargs):
        response = await self.real.BatchTransfer(request, **kwargs)
        if self.times > 0:
            self.times -= 1
            raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "lost")
        return response


async def test_unknown_wallet_outcome_answers_retryable_and_the_replay_the_outcome(env):
    creator, fan = uid("creator"), uid("fan")
    await fund(env, fan, 1000)
    stream = await create(env.streams, creator, price=250)
    tickets = env.service.tickets
    real = tickets.wallet
    # Every attempt the client's retry policy makes (UNAVAILABLE is retried, up to 4 attempts)
    # loses Wallet's answer again.
    lost = tickets.wallet = _LostAnswers(real, 4)
    rid = uid("buy")
    try:
        code, reason = await refused(buy(env.streams, stream, fan, request_id=rid))
        assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "TICKET_PENDING")
        assert await spendable(env, fan) == 750  # charged, not yet known to Streams
        access = await env.streams.CheckAccess(spb.CheckAccessRequest(stream_id=stream.stream_id, user_id=fan))
        assert access.denial_reason == "TICKET_PENDING"
        lost.times = 0
        replay = await buy(env.streams, stream, fan, request_id=rid)
    finally:
        tickets.wallet = real
    assert replay.charged and replay.ticket.status == spb.TICKET_STATUS_VALID
    assert await spendable(env, fan) == 750
    assert await tickets.sweep(dt.timedelta(0)) == 0
    await audit_ok(env)


async def test_refund_wallet_refuses_is_recorded_not_retried_forever(env):
    creator, fan = uid("creator"), uid("fan")
    await fund(env, fan, 100)
    stream = await create(env.streams, creator, price=100)
    await buy(env.streams, stream, fan)
    # The creator's earnings leave before the cancellation (a payout).
    await env.wallet.Transfer(
        wpb.TransferRequest(
            transfer=wpb.TransferSpec(
                transfer_id=uid("payout"),
                debit=wpb.AccountRef(owner_id=creator, code=wpb.ACCOUNT_CODE_CREATOR_EARNINGS, asset=wpb.ASSET_TOKEN),
                credit=wpb.AccountRef(owner_id="", code=wpb.ACCOUNT_CODE_PAYOUT_CLEARING, asset=wpb.ASSET_TOKEN),
                amount=100,
                code=wpb.TRANSFER_CODE_PAYOUT,
            )
        )
    )
    cancelled = await env.streams.CancelStream(spb.CancelStreamRequest(request_id=uid("c"), stream_id=stream.stream_id))
    assert (cancelled.tickets_refunded, cancelled.refunds_pending, cancelled.refunds_failed) == (0, 0, 1)
    access = await env.streams.CheckAccess(spb.CheckAccessRequest(stream_id=stream.stream_id, user_id=fan))
    assert access.ticket.status == spb.TICKET_STATUS_REFUND_FAILED
    assert access.ticket.refund_failure_reason == "INSUFFICIENT_FUNDS"
    assert await spendable(env, fan) == 0
    await audit_ok(env)


async def test_two_processes_serve_one_streams_watchers(env):
    stream = await create(env.streams, uid("creator"), kind=spb.STREAM_KIND_PUBLIC, price=0)
    sid = stream.stream_id
    async with running("streams", env.settings, env.engine) as (target, _):
        other = Caller(env.settings, target)
        try:
            watchers = [
                asyncio.create_task(watch(env, sid, 11, stub=stub, within=WAIT))
                for stub in (env.streams, other.streams)
            ]
            await start(env, stream)
            for i in range(10):
                await gift(env, sid, f"both-{i}")
            for task in watchers:
                got = [label(m) for m in await task]
                assert sorted(got) == sorted(["started", *(f"gift:both-{i}" for i in range(10))])
        finally:
            await other.close()
