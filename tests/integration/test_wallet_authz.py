"""Who may call the Wallet and what for: users through the edge (their own money only), internal
services (anything, ids scoped to them), admins (adjustments), and nobody unsigned — except the
health and reflection services, which probes and generic clients reach without a signature.
"""

from __future__ import annotations

import time
import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from sqlalchemy import text

from services.wallet.server import SERVICE_NAME
from shared import auth
from shared.gen.fanbank.wallet.v1 import wallet_service_pb2 as pb
from shared.gen.fanbank.wallet.v1 import wallet_service_pb2_grpc as wallet_grpc
from tests.harness import Caller, as_user, migrated_engine, reason_of, running, settings_for

WALLET = pb.ACCOUNT_CODE_USER_WALLET
PURCHASED = pb.ACCOUNT_CODE_USER_PURCHASED
EARNINGS = pb.ACCOUNT_CODE_CREATOR_EARNINGS
CLEARING = pb.ACCOUNT_CODE_PROVIDER_CLEARING

DENIED = grpc.StatusCode.PERMISSION_DENIED
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
GET_BALANCE = f"/{SERVICE_NAME}/GetBalance"


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def ref(owner: str, code: int) -> pb.AccountRef:
    return pb.AccountRef(owner_id=owner, code=code, asset=pb.ASSET_TOKEN)


def tip(fan: str, creator: str, amount: int, transfer_id: str | None = None, **fields) -> pb.TransferSpec:
    base = dict(
        transfer_id=fresh("tip") if transfer_id is None else transfer_id,
        debit=ref(fan, WALLET),
        credit=ref(creator, EARNINGS),
        amount=amount,
        code=pb.TRANSFER_CODE_TIP,
    )
    return pb.TransferSpec(**(base | fields))


class Env:
    def __init__(self, settings, target, engine):
        self.settings = settings
        self.target = target
        self.engine = engine
        self.platform = Caller(settings, target)
        self.edge = Caller(settings, target, identity="edge")
        self.gifts = Caller(settings, target, identity="gifts")

    async def close(self):
        for caller in (self.platform, self.edge, self.gifts):
            await caller.close()


@pytest.fixture(scope="module")
async def env(database_url):
    settings = settings_for(database_url)
    engine = await migrated_engine(settings)
    async with running("wallet", settings, engine) as (target, _service):
        environment = Env(settings, target, engine)
        yield environment
        await environment.close()
    await engine.dispose()


async def fund(env: Env, owner: str, amount: int) -> None:
    spec = pb.TransferSpec(
        transfer_id=fresh("buy"),
        debit=ref("", CLEARING),
        credit=ref(owner, PURCHASED),
        amount=amount,
        code=pb.TRANSFER_CODE_PURCHASE,
    )
    await env.platform.wallet.Transfer(pb.TransferRequest(transfer=spec))


async def spendable(env: Env, owner: str) -> int:
    return (await env.platform.wallet.GetBalance(pb.GetBalanceRequest(owner_id=owner))).spendable_posted


async def refused(call, code: grpc.StatusCode, reason: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call()
    assert (caught.value.code(), reason_of(caught.value)) == (code, reason), caught.value.details()


@pytest.fixture
async def pair(env):
    """A funded fan and a creator with an earnings account, fresh for each test."""
    fan, creator = fresh("fan"), fresh("creator")
    await fund(env, fan, 100)
    await env.platform.wallet.CreateAccount(
        pb.CreateAccountRequest(request_id=fresh("acct"), account=ref(creator, EARNINGS))
    )
    return fan, creator


# ---- users through the edge --------------------------------------------------------------------------


async def test_user_reads_only_their_own_money(env, pair):
    fan, creator = pair
    w = env.edge.wallet
    async with as_user(fan):
        assert (await w.GetBalance(pb.GetBalanceRequest(owner_id=fan))).spendable_posted == 100
        assert len((await w.ListEntries(pb.ListEntriesRequest(owner_id=fan))).entries) == 1
        for call in (
            lambda: w.GetBalance(pb.GetBalanceRequest(owner_id=creator)),
            lambda: w.ListEntries(pb.ListEntriesRequest(owner_id=creator)),
            lambda: w.GetAccount(pb.GetAccountRequest(account=ref(creator, EARNINGS))),
        ):
            await refused(call, DENIED, "NOT_YOUR_ACCOUNT")
        stream = w.WatchBalance(pb.WatchBalanceRequest(owner_id=creator))
        await refused(stream.read, DENIED, "NOT_YOUR_ACCOUNT")
    # Reading someone else's money takes the admin role.
    async with as_user("ops-1", auth.ROLE_ADMIN):
        assert (await w.GetBalance(pb.GetBalanceRequest(owner_id=fan))).spendable_posted == 100


async def test_user_spends_only_their_own_wallet_and_only_on_creators(env, pair):
    fan, creator = pair
    other = fresh("fan")
    await fund(env, other, 50)
    w = env.edge.wallet
    async with as_user(fan):
        for spec, reason in (
            (tip(other, creator, 10), "NOT_YOUR_ACCOUNT"),
            (tip(fan, creator, 10, debit=ref(fan, EARNINGS)), "NOT_YOUR_ACCOUNT"),
            (tip(fan, other, 10, credit=ref(other, PURCHASED)), "TRANSFER_NOT_ALLOWED"),
            (tip(fan, creator, 10, code=pb.TRANSFER_CODE_PURCHASE), "TRANSFER_NOT_ALLOWED"),
        ):
            await refused(lambda s=spec: w.Transfer(pb.TransferRequest(transfer=s)), DENIED, reason)
        stolen = pb.BatchTransferRequest(
            batch_id=fresh("batch"), mode=pb.BATCH_MODE_LINKED, transfers=[tip(fan, creator, 1), tip(other, creator, 1)]
        )
        await refused(lambda: w.BatchTransfer(stolen), DENIED, "NOT_YOUR_ACCOUNT")
    assert (await spendable(env, other), await spendable(env, fan)) == (50, 100)

    async with as_user(fan):
        paid = await w.Transfer(pb.TransferRequest(transfer=tip(fan, creator, 30, "tip-1")))
    assert paid.transfer.amount == 30
    assert await spendable(env, fan) == 70

    # A user's ids are scoped to that user: another user's "tip-1" is a different transfer.
    async with as_user(other):
        theirs = await w.Transfer(pb.TransferRequest(transfer=tip(other, creator, 20, "tip-1")))
    assert theirs.transfer.amount == 20
    assert await spendable(env, other) == 30


async def test_user_may_not_call_service_only_methods(env, pair):
    fan, creator = pair
    original = (await env.platform.wallet.Transfer(pb.TransferRequest(transfer=tip(fan, creator, 10)))).transfer
    held = await env.platform.wallet.CreateHold(
        pb.CreateHoldRequest(
            hold_id=fresh("hold"),
            account=ref(fan, PURCHASED),
            destination=ref(creator, EARNINGS),
            amount=10,
            code=pb.TRANSFER_CODE_CALL_BLOCK,
            ttl_seconds=600,
        )
    )
    w = env.edge.wallet
    async with as_user(fan):
        for call in (
            lambda: w.CreateHold(
                pb.CreateHoldRequest(
                    hold_id=fresh("hold"),
                    account=ref(fan, PURCHASED),
                    destination=ref(creator, EARNINGS),
                    amount=10,
                    code=pb.TRANSFER_CODE_CALL_BLOCK,
                    ttl_seconds=600,
                )
            ),
            lambda: w.ReverseTransfer(
                pb.ReverseTransferRequest(
                    reversal_id=fresh("rev"), transfer_id=original.transfer_id, code=pb.TRANSFER_CODE_REFUND
                )
            ),
            lambda: w.CaptureHold(pb.CaptureHoldRequest(request_id=fresh("cap"), hold_id=held.hold.hold_id)),
            lambda: w.VoidHold(pb.VoidHoldRequest(request_id=fresh("void"), hold_id=held.hold.hold_id)),
            lambda: w.GetHold(pb.GetHoldRequest(hold_id=held.hold.hold_id)),
        ):
            await refused(call, DENIED, "SERVICE_ONLY")
        for call in (
            lambda: w.Audit(pb.AuditRequest()),
            lambda: w.ExpireHolds(pb.ExpireHoldsRequest()),
            lambda: w.GrantPromotion(pb.GrantPromotionRequest(request_id=fresh("g"), owner_id=fan, amount=5)),
        ):
            await refused(call, DENIED, "ADMIN_ONLY")
    assert await spendable(env, fan) == 90


async def test_adjust_balance_needs_the_admin_role(env, pair):
    fan, _ = pair
    request = pb.AdjustBalanceRequest(
        request_id=fresh("adj"), account=ref(fan, PURCHASED), amount=25, reason="goodwill after outage"
    )
    async with as_user(fan):
        await refused(lambda: env.edge.wallet.AdjustBalance(request), DENIED, "ADMIN_ONLY")
    async with as_user(fan, auth.ROLE_CREATOR):
        await refused(lambda: env.edge.wallet.AdjustBalance(request), DENIED, "ADMIN_ONLY")
    # A service acting as itself is no admin either: an adjustment always names the person behind it.
    await refused(lambda: env.platform.wallet.AdjustBalance(request), DENIED, "ADMIN_ONLY")
    assert await spendable(env, fan) == 100

    async with as_user("ops-1", auth.ROLE_ADMIN):
        adjusted = await env.edge.wallet.AdjustBalance(request)
    assert (adjusted.transfer.amount, adjusted.transfer.code) == (25, pb.TRANSFER_CODE_ADJUSTMENT)
    assert await spendable(env, fan) == 125
    async with env.engine.connect() as conn:
        note = (
            await conn.execute(
                text(
                    "SELECT n.admin_id, n.reason FROM wallet.adjustment_notes n"
                    " JOIN wallet.transfers t ON t.id = n.transfer_id WHERE t.item_id = :k"
                ),
                {"k": request.request_id},
            )
        ).one()
    assert tuple(note) == ("ops-1", "goodwill after outage")


# ---- callers that are not who they say ----------------------------------------------------------------


async def test_unsigned_call_is_refused(env):
    async with grpc.aio.insecure_channel(env.target) as channel:
        w = wallet_grpc.WalletServiceStub(channel)
        await refused(lambda: w.GetBalance(pb.GetBalanceRequest(owner_id="fan")), UNAUTHENTICATED, "UNSIGNED_CALL")
        await refused(lambda: w.Audit(pb.AuditRequest()), UNAUTHENTICATED, "UNSIGNED_CALL")


async def test_internal_service_may_not_act_for_users(env):
    async with as_user("fan-x", auth.ROLE_ADMIN):
        await refused(
            lambda: env.gifts.wallet.GetBalance(pb.GetBalanceRequest(owner_id="fan-x")),
            UNAUTHENTICATED,
            "CALLER_MAY_NOT_ACT_FOR_USERS",
        )


async def test_the_edge_without_a_user_is_an_anonymous_visitor(env):
    # It reads nobody's balance and reaches no service-only RPC.
    await refused(
        lambda: env.edge.wallet.GetBalance(pb.GetBalanceRequest(owner_id="fan-x")),
        DENIED,
        "NOT_YOUR_ACCOUNT",
    )
    await refused(
        lambda: env.edge.wallet.GetHold(pb.GetHoldRequest(hold_id="h-1")),
        DENIED,
        "SERVICE_ONLY",
    )


def _forged(metadata: list[tuple[str, str]], **replace: str) -> list[tuple[str, str]]:
    return [(key, replace.get(key, value)) for key, value in metadata]


@pytest.mark.parametrize(
    ("forge", "reason"),
    [
        pytest.param(lambda s: auth.sign(b"w" * 32, "platform", GET_BALANCE), "BAD_SIGNATURE", id="wrong-key"),
        pytest.param(
            lambda s: auth.sign(s.key_for("platform"), "platform", f"/{SERVICE_NAME}/Audit"),
            "BAD_SIGNATURE",
            id="signed-for-another-method",
        ),
        pytest.param(
            lambda s: _forged(auth.sign(s.key_for("edge"), "edge", GET_BALANCE, user="fan-a"), **{auth.USER: "fan-b"}),
            "BAD_SIGNATURE",
            id="user-swapped",
        ),
        pytest.param(
            lambda s: _forged(
                auth.sign(s.key_for("edge"), "edge", GET_BALANCE, user="fan-a"), **{auth.ROLES: auth.ROLE_ADMIN}
            ),
            "BAD_SIGNATURE",
            id="role-added",
        ),
        pytest.param(
            lambda s: auth.sign(s.key_for("platform"), "platform", GET_BALANCE, now=time.time() - 3600),
            "SIGNATURE_EXPIRED",
            id="expired",
        ),
        pytest.param(lambda s: auth.sign(b"k" * 32, "stranger", GET_BALANCE), "UNKNOWN_CALLER", id="unknown-caller"),
    ],
)
async def test_forged_metadata_is_refused(env, forge, reason):
    metadata = forge(env.settings)
    async with grpc.aio.insecure_channel(env.target) as channel:
        w = wallet_grpc.WalletServiceStub(channel)
        call = lambda: w.GetBalance(pb.GetBalanceRequest(owner_id="fan-b"), metadata=metadata)  # noqa: E731
        await refused(call, UNAUTHENTICATED, reason)


async def test_hand_signed_metadata_verifies(env):
    # The forgeries above are refused for what was forged, not for how the metadata was built.
    metadata = auth.sign(env.settings.key_for("platform"), "platform", GET_BALANCE)
    async with grpc.aio.insecure_channel(env.target) as channel:
        w = wallet_grpc.WalletServiceStub(channel)
        answer = await w.GetBalance(pb.GetBalanceRequest(owner_id="fan-b"), metadata=metadata)
    assert answer.owner_id == "fan-b"


# ---- open services ------------------------------------------------------------------------------------


async def test_health_and_reflection_need_no_signature(env):
    async with grpc.aio.insecure_channel(env.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE_NAME):
            answer = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING

        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
        responses = [response async for response in call]
    names = {s.name for s in responses[0].list_services_response.service}
    assert {SERVICE_NAME, "grpc.health.v1.Health"} <= names
