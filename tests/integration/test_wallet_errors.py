"""Every error a caller can reach on the Wallet, with its code and reason, and proof that the refusal
changed nothing; plus the happy paths those refusals lean on (reversals, holds, paging, watching).

"Changing nothing" is checked on a snapshot taken before and after each refusal: the Audit totals
(posted, pending, open holds, account/transfer/entry counts and debt per asset), every account's
posted and pending, the number of ledger entries, the number of applied operations, and the
balances of the owners involved.

Design decision the snapshot encodes: a state-dependent refusal (INSUFFICIENT_FUNDS,
HOLD_EXCEEDS_AVAILABLE, CAPTURE_EXCEEDS_HOLD …) is memoized as a wallet.operations row with
ok = false, so that a retry with the same id answers the same failure even after the state changed.
That row is the answer, not an effect: the idempotency records counted here are the applied ones
(ok = true). Validation refusals (INVALID_ARGUMENT, NOT_FOUND) are not remembered at all.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import uuid
from collections import defaultdict
from contextlib import asynccontextmanager

import grpc
import pytest
from grpc_status import rpc_status
from sqlalchemy import text

from shared.clock import ControlledClock
from shared.errors import error_info
from shared.gen.fanbank.wallet.v1 import wallet_service_pb2 as pb
from tests.harness import Caller, as_user, migrated_engine, reason_of, running, settings_for

CAP = 10**12
TOKEN = pb.ASSET_TOKEN
USD = pb.ASSET_USD
WALLET = pb.ACCOUNT_CODE_USER_WALLET
PURCHASED = pb.ACCOUNT_CODE_USER_PURCHASED
PROMOTIONAL = pb.ACCOUNT_CODE_USER_PROMOTIONAL
EARNINGS = pb.ACCOUNT_CODE_CREATOR_EARNINGS
REVENUE = pb.ACCOUNT_CODE_PLATFORM_REVENUE
CLEARING = pb.ACCOUNT_CODE_PROVIDER_CLEARING
PAYOUT_CLEARING = pb.ACCOUNT_CODE_PAYOUT_CLEARING

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
EXISTS = grpc.StatusCode.ALREADY_EXISTS

LONG_TTL = 30 * 24 * 3600  # outlives every clock advance in this module
GHOST = "ghost-never-seen"  # an owner no test ever creates


# ---- helpers --------------------------------------------------------------------------------------


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def ref(owner: str, code: int, asset: int = TOKEN) -> pb.AccountRef:
    return pb.AccountRef(owner_id=owner, code=code, asset=asset)


def system(code: int, asset: int = TOKEN) -> pb.AccountRef:
    return ref("", code, asset)


def tip(fan: str, creator: str, amount: int, transfer_id: str | None = None, **fields) -> pb.TransferSpec:
    base = dict(
        transfer_id=fresh("tip") if transfer_id is None else transfer_id,
        debit=ref(fan, WALLET),
        credit=ref(creator, EARNINGS),
        amount=amount,
        code=pb.TRANSFER_CODE_TIP,
    )
    return pb.TransferSpec(**(base | fields))


def info_of(error: grpc.aio.AioRpcError):
    return error_info(rpc_status.from_call(error))


@dataclasses.dataclass
class Env:
    engine: object
    w: object  # WalletService stub signed as "platform"
    gifts: object  # WalletService stub signed as "gifts", another internal service
    clock: ControlledClock


@pytest.fixture(scope="module")
async def env(database_url):
    # The background sweeper would expire holds between a test's two snapshots; here expiry happens
    # only when a test moves the clock and asks for it (ExpireHolds, or a capture of a due hold).
    settings = settings_for(database_url, wallet_hold_sweep_ms=3_600_000)
    engine = await migrated_engine(settings)
    clock = ControlledClock(engine)
    await clock.set(dt.datetime(2031, 1, 1, tzinfo=dt.UTC))
    async with running("wallet", settings, engine) as (target, _service):
        platform = Caller(settings, target)
        gifts = Caller(settings, target, identity="gifts")
        yield Env(engine, platform.wallet, gifts.wallet, clock)
        await gifts.close()
        await platform.close()
    await engine.dispose()


async def buy(env: Env, owner: str, amount: int) -> pb.Transfer:
    spec = pb.TransferSpec(
        transfer_id=fresh("buy"),
        debit=system(CLEARING),
        credit=ref(owner, PURCHASED),
        amount=amount,
        code=pb.TRANSFER_CODE_PURCHASE,
    )
    return (await env.w.Transfer(pb.TransferRequest(transfer=spec))).transfer


async def grant(env: Env, owner: str, amount: int) -> None:
    await env.w.GrantPromotion(
        pb.GrantPromotionRequest(request_id=fresh("grant"), owner_id=owner, amount=amount, campaign_id="welcome")
    )


async def open_earnings(env: Env, owner: str) -> None:
    await env.w.CreateAccount(pb.CreateAccountRequest(request_id=fresh("acct"), account=ref(owner, EARNINGS)))


async def funded_fan_and_creator(env: Env, amount: int) -> tuple[str, str]:
    fan, creator = fresh("fan"), fresh("creator")
    await buy(env, fan, amount)
    await open_earnings(env, creator)
    return fan, creator


async def hold(env: Env, fan: str, creator: str, amount: int, ttl: int = LONG_TTL, hold_id: str | None = None):
    request = pb.CreateHoldRequest(
        hold_id=hold_id or fresh("hold"),
        account=ref(fan, PURCHASED),
        destination=ref(creator, EARNINGS),
        amount=amount,
        code=pb.TRANSFER_CODE_CALL_BLOCK,
        ttl_seconds=ttl,
    )
    return (await env.w.CreateHold(request)).hold


async def balance(env: Env, owner: str) -> pb.GetBalanceResponse:
    return await env.w.GetBalance(pb.GetBalanceRequest(owner_id=owner))


def account_of(bal: pb.GetBalanceResponse, code: int) -> pb.Account:
    return next(a for a in bal.accounts if a.ref.code == code)


async def system_posted(env: Env, code: int) -> int:
    try:
        return (await env.w.GetAccount(pb.GetAccountRequest(account=system(code)))).account.posted
    except grpc.aio.AioRpcError as error:
        if error.code() != NOT_FOUND:
            raise
        return 0  # system accounts are created on first use


async def snapshot(env: Env, owners) -> tuple:
    audit = await env.w.Audit(pb.AuditRequest())
    async with env.engine.connect() as conn:
        entries = await conn.scalar(text("SELECT count(*) FROM wallet.entries"))
        applied = await conn.scalar(text("SELECT count(*) FROM wallet.operations WHERE ok"))
        accounts = (await conn.execute(text("SELECT id, posted, pending FROM wallet.accounts ORDER BY id"))).all()
    balances = [await balance(env, owner) for owner in owners]
    return list(audit.totals), entries, applied, [tuple(a) for a in accounts], balances


@asynccontextmanager
async def unchanged(env: Env, owners=()):
    before = await snapshot(env, owners)
    yield
    after = await snapshot(env, owners)
    assert after == before, "the ledger changed"


async def refused(env: Env, call, code: grpc.StatusCode, reason: str, owners=()) -> grpc.aio.AioRpcError:
    """Runs `call()`, asserts it fails with `code` and `reason`, and that it changed nothing."""
    async with unchanged(env, owners):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call()
    error = caught.value
    assert (error.code(), reason_of(error)) == (code, reason), error.details()
    return error


async def audit_ok(env: Env) -> pb.AuditResponse:
    audit = await env.w.Audit(pb.AuditRequest())
    assert audit.ok, audit.violations
    return audit


# ---- validation: refused before the ledger, never remembered ----------------------------------------


@dataclasses.dataclass
class People:
    fan: str
    creator: str
    tip_id: str
    hold_id: str


@pytest.fixture(scope="module")
async def people(env):
    fan, creator = await funded_fan_and_creator(env, 1000)
    tipped = await env.w.Transfer(pb.TransferRequest(transfer=tip(fan, creator, 10)))
    held = await hold(env, fan, creator, 10)
    return People(fan, creator, tipped.transfer.transfer_id, held.hold_id)


def xfer(p: People, **fields) -> tuple[str, pb.TransferRequest]:
    return "Transfer", pb.TransferRequest(transfer=tip(p.fan, p.creator, **({"amount": 10} | fields)))


def batch(p: People, specs, mode=pb.BATCH_MODE_LINKED, batch_id: str | None = None):
    return "BatchTransfer", pb.BatchTransferRequest(
        batch_id=fresh("batch") if batch_id is None else batch_id, mode=mode, transfers=specs
    )


def reverse(p: People, **fields):
    original = {} if "batch_id" in fields else {"transfer_id": p.tip_id}
    base = dict(reversal_id=fresh("rev"), code=pb.TRANSFER_CODE_REFUND, **original)
    return "ReverseTransfer", pb.ReverseTransferRequest(**(base | fields))


def create_hold(p: People, **fields):
    base = dict(
        hold_id=fresh("hold"),
        account=ref(p.fan, PURCHASED),
        destination=ref(p.creator, EARNINGS),
        amount=10,
        code=pb.TRANSFER_CODE_CALL_BLOCK,
        ttl_seconds=60,
    )
    return "CreateHold", pb.CreateHoldRequest(**(base | fields))


def capture(p: People, **fields):
    return "CaptureHold", pb.CaptureHoldRequest(**({"request_id": fresh("cap"), "hold_id": p.hold_id} | fields))


def adjust(p: People, **fields):
    base = dict(request_id=fresh("adj"), account=ref(p.fan, PURCHASED), amount=5, reason="support ticket 42")
    return "AdjustBalance", pb.AdjustBalanceRequest(**(base | fields))


def grant_req(p: People, **fields):
    base = dict(request_id=fresh("grant"), owner_id=p.fan, amount=5, campaign_id="spring")
    return "GrantPromotion", pb.GrantPromotionRequest(**(base | fields))


def entries_req(p: People, **fields):
    return "ListEntries", pb.ListEntriesRequest(**({"owner_id": p.fan} | fields))


def case(name, build, code, reason, admin=False):
    return pytest.param(build, code, reason, admin, id=name)


VALIDATION = [
    # Transfer
    case("transfer-amount-zero", lambda p: xfer(p, amount=0), INVALID, "AMOUNT_NOT_POSITIVE"),
    case("transfer-amount-negative", lambda p: xfer(p, amount=-5), INVALID, "AMOUNT_NOT_POSITIVE"),
    case("transfer-amount-above-cap", lambda p: xfer(p, amount=CAP + 1), INVALID, "AMOUNT_TOO_LARGE"),
    case("transfer-unknown-wallet", lambda p: xfer(p, debit=ref(GHOST, WALLET)), NOT_FOUND, "ACCOUNT_NOT_FOUND"),
    case("transfer-unknown-purchased", lambda p: xfer(p, debit=ref(GHOST, PURCHASED)), NOT_FOUND, "ACCOUNT_NOT_FOUND"),
    case("transfer-asset-mismatch", lambda p: xfer(p, credit=ref(p.creator, EARNINGS, USD)), INVALID, "ASSET_MISMATCH"),
    case(
        "transfer-same-account",
        lambda p: xfer(p, debit=ref(p.fan, PURCHASED), credit=ref(p.fan, PURCHASED)),
        INVALID,
        "SAME_ACCOUNT",
    ),
    case("transfer-wallet-to-own-half", lambda p: xfer(p, credit=ref(p.fan, PURCHASED)), INVALID, "SAME_ACCOUNT"),
    case("transfer-missing-id", lambda p: xfer(p, transfer_id=""), INVALID, "MISSING_ID"),
    case("transfer-id-with-space", lambda p: xfer(p, transfer_id="tip 1"), INVALID, "INVALID_ID"),
    case("transfer-id-too-long", lambda p: xfer(p, transfer_id="t" * 129), INVALID, "INVALID_ID"),
    case("transfer-code-unspecified", lambda p: xfer(p, code=0), INVALID, "INVALID_TRANSFER_CODE"),
    case("transfer-code-unknown", lambda p: xfer(p, code=999), INVALID, "INVALID_TRANSFER_CODE"),
    case("transfer-code-refund", lambda p: xfer(p, code=pb.TRANSFER_CODE_REFUND), INVALID, "USE_REVERSE_TRANSFER"),
    case("transfer-account-code-unspecified", lambda p: xfer(p, debit=ref(p.fan, 0)), INVALID, "INVALID_ACCOUNT_CODE"),
    case(
        "transfer-account-code-unknown", lambda p: xfer(p, credit=ref(p.creator, 99)), INVALID, "INVALID_ACCOUNT_CODE"
    ),
    case("transfer-asset-unspecified", lambda p: xfer(p, debit=ref(p.fan, WALLET, 0)), INVALID, "INVALID_ASSET"),
    case(
        "transfer-system-account-with-owner",
        lambda p: xfer(p, debit=ref("someone", CLEARING)),
        INVALID,
        "SYSTEM_ACCOUNT_HAS_NO_OWNER",
    ),
    case("transfer-user-account-without-owner", lambda p: xfer(p, credit=ref("", EARNINGS)), INVALID, "MISSING_ID"),
    case("transfer-credit-wallet", lambda p: xfer(p, credit=ref(p.creator, WALLET)), INVALID, "WALLET_NOT_CREDITABLE"),
    case(
        "transfer-context-type-too-long",
        lambda p: xfer(p, context_type="s" * 33, context_id="s1"),
        INVALID,
        "CONTEXT_TOO_LARGE",
    ),
    case(
        "transfer-context-id-too-long",
        lambda p: xfer(p, context_type="stream", context_id="s" * 129),
        INVALID,
        "CONTEXT_TOO_LARGE",
    ),
    case("transfer-counterparty-too-long", lambda p: xfer(p, counterparty_id="c" * 129), INVALID, "CONTEXT_TOO_LARGE"),
    case(
        "transfer-user-text-in-context",
        lambda p: xfer(p, context_type="stream", context_id="great show!! ❤"),
        INVALID,
        "INVALID_CONTEXT",
    ),
    case("transfer-user-text-counterparty", lambda p: xfer(p, counterparty_id="Dear you"), INVALID, "INVALID_CONTEXT"),
    case("transfer-context-type-alone", lambda p: xfer(p, context_type="stream"), INVALID, "INVALID_CONTEXT"),
    case("transfer-fee-above-100pc", lambda p: xfer(p, fee_bps=10_001), INVALID, "INVALID_FEE_BPS"),
    case("transfer-fee-negative", lambda p: xfer(p, fee_bps=-1), INVALID, "INVALID_FEE_BPS"),
    # BatchTransfer
    case("batch-empty", lambda p: batch(p, []), INVALID, "EMPTY_BATCH"),
    case(
        "batch-1001-items",
        lambda p: batch(p, [tip(p.fan, p.creator, 1) for _ in range(1001)], pb.BATCH_MODE_INDEPENDENT),
        INVALID,
        "BATCH_TOO_LARGE",
    ),
    case(
        "batch-duplicate-ids",
        lambda p: batch(p, [tip(p.fan, p.creator, 1, "same"), tip(p.fan, p.creator, 2, "same")]),
        INVALID,
        "DUPLICATE_TRANSFER_ID",
    ),
    case(
        "batch-item-amount-zero",
        lambda p: batch(p, [tip(p.fan, p.creator, 1), tip(p.fan, p.creator, 0)]),
        INVALID,
        "AMOUNT_NOT_POSITIVE",
    ),
    case(
        "batch-item-amount-above-cap",
        lambda p: batch(p, [tip(p.fan, p.creator, CAP + 1)], pb.BATCH_MODE_INDEPENDENT),
        INVALID,
        "AMOUNT_TOO_LARGE",
    ),
    case("batch-linked-missing-id", lambda p: batch(p, [tip(p.fan, p.creator, 1)], batch_id=""), INVALID, "MISSING_ID"),
    case(
        "batch-mode-unspecified",
        lambda p: batch(p, [tip(p.fan, p.creator, 1)], pb.BATCH_MODE_UNSPECIFIED),
        INVALID,
        "INVALID_BATCH_MODE",
    ),
    case(
        "batch-unknown-debit",
        lambda p: batch(p, [tip(p.fan, p.creator, 1), tip(GHOST, p.creator, 1)]),
        NOT_FOUND,
        "ACCOUNT_NOT_FOUND",
    ),
    # ReverseTransfer
    case("reverse-missing-id", lambda p: reverse(p, reversal_id=""), INVALID, "MISSING_ID"),
    case(
        "reverse-no-original",
        lambda p: ("ReverseTransfer", pb.ReverseTransferRequest(reversal_id="r1", code=pb.TRANSFER_CODE_REFUND)),
        INVALID,
        "MISSING_ORIGINAL",
    ),
    case("reverse-code-tip", lambda p: reverse(p, code=pb.TRANSFER_CODE_TIP), INVALID, "INVALID_REVERSAL_CODE"),
    case("reverse-code-unspecified", lambda p: reverse(p, code=0), INVALID, "INVALID_TRANSFER_CODE"),
    case(
        "reverse-leg-amount-zero",
        lambda p: reverse(p, legs=[pb.LegAmount(leg=0, amount=0)]),
        INVALID,
        "AMOUNT_NOT_POSITIVE",
    ),
    case(
        "reverse-leg-amount-above-cap",
        lambda p: reverse(p, legs=[pb.LegAmount(leg=0, amount=CAP + 1)]),
        INVALID,
        "AMOUNT_TOO_LARGE",
    ),
    case("reverse-leg-negative", lambda p: reverse(p, legs=[pb.LegAmount(leg=-1, amount=1)]), INVALID, "INVALID_LEG"),
    case(
        "reverse-leg-repeated",
        lambda p: reverse(p, legs=[pb.LegAmount(leg=0, amount=1), pb.LegAmount(leg=0, amount=1)]),
        INVALID,
        "INVALID_LEG",
    ),
    case("reverse-unknown-transfer", lambda p: reverse(p, transfer_id="never-made"), NOT_FOUND, "TRANSFER_NOT_FOUND"),
    case("reverse-unknown-batch", lambda p: reverse(p, batch_id="never-made"), NOT_FOUND, "TRANSFER_NOT_FOUND"),
    # CreateHold
    case("hold-amount-zero", lambda p: create_hold(p, amount=0), INVALID, "AMOUNT_NOT_POSITIVE"),
    case("hold-amount-negative", lambda p: create_hold(p, amount=-1), INVALID, "AMOUNT_NOT_POSITIVE"),
    case("hold-amount-above-cap", lambda p: create_hold(p, amount=CAP + 1), INVALID, "AMOUNT_TOO_LARGE"),
    case("hold-ttl-zero", lambda p: create_hold(p, ttl_seconds=0), INVALID, "INVALID_TTL"),
    case("hold-ttl-above-90-days", lambda p: create_hold(p, ttl_seconds=90 * 86400 + 1), INVALID, "INVALID_TTL"),
    case("hold-on-wallet", lambda p: create_hold(p, account=ref(p.fan, WALLET)), INVALID, "WALLET_IS_VIRTUAL"),
    case(
        "hold-asset-mismatch",
        lambda p: create_hold(p, destination=ref(p.creator, EARNINGS, USD)),
        INVALID,
        "ASSET_MISMATCH",
    ),
    case("hold-same-account", lambda p: create_hold(p, destination=ref(p.fan, PURCHASED)), INVALID, "SAME_ACCOUNT"),
    case("hold-missing-id", lambda p: create_hold(p, hold_id=""), INVALID, "MISSING_ID"),
    case("hold-code-unspecified", lambda p: create_hold(p, code=0), INVALID, "INVALID_TRANSFER_CODE"),
    case(
        "hold-context-too-large",
        lambda p: create_hold(p, context_type="call", context_id="c" * 129),
        INVALID,
        "CONTEXT_TOO_LARGE",
    ),
    case(
        "hold-user-text-in-context",
        lambda p: create_hold(p, context_type="call", context_id="call me maybe"),
        INVALID,
        "INVALID_CONTEXT",
    ),
    case(
        "hold-unknown-account", lambda p: create_hold(p, account=ref(GHOST, PURCHASED)), NOT_FOUND, "ACCOUNT_NOT_FOUND"
    ),
    # CaptureHold, VoidHold, GetHold, ExpireHolds
    case("capture-amount-negative", lambda p: capture(p, amount=-1), INVALID, "AMOUNT_NOT_POSITIVE"),
    case("capture-amount-above-cap", lambda p: capture(p, amount=CAP + 1), INVALID, "AMOUNT_TOO_LARGE"),
    case("capture-missing-request-id", lambda p: capture(p, request_id=""), INVALID, "MISSING_ID"),
    case("capture-missing-hold-id", lambda p: capture(p, hold_id=""), INVALID, "MISSING_ID"),
    case("capture-unknown-hold", lambda p: capture(p, hold_id="never-held"), NOT_FOUND, "HOLD_NOT_FOUND"),
    case(
        "void-unknown-hold",
        lambda p: ("VoidHold", pb.VoidHoldRequest(request_id=fresh("void"), hold_id="never-held")),
        NOT_FOUND,
        "HOLD_NOT_FOUND",
    ),
    case(
        "void-invalid-request-id",
        lambda p: ("VoidHold", pb.VoidHoldRequest(request_id="void me", hold_id=p.hold_id)),
        INVALID,
        "INVALID_ID",
    ),
    case(
        "get-hold-unknown",
        lambda p: ("GetHold", pb.GetHoldRequest(hold_id="never-held")),
        NOT_FOUND,
        "HOLD_NOT_FOUND",
    ),
    case(
        "expire-holds-negative-limit",
        lambda p: ("ExpireHolds", pb.ExpireHoldsRequest(limit=-1)),
        INVALID,
        "INVALID_LIMIT",
    ),
    case(
        "expire-holds-limit-too-large",
        lambda p: ("ExpireHolds", pb.ExpireHoldsRequest(limit=10_001)),
        INVALID,
        "INVALID_LIMIT",
    ),
    # Reads and accounts
    case(
        "balance-missing-owner",
        lambda p: ("GetBalance", pb.GetBalanceRequest(owner_id="")),
        INVALID,
        "MISSING_ID",
    ),
    case(
        "balance-unknown-asset",
        lambda p: ("GetBalance", pb.GetBalanceRequest(owner_id=p.fan, asset=99)),
        INVALID,
        "INVALID_ASSET",
    ),
    case(
        "entries-invalid-page-token",
        lambda p: entries_req(p, page_token="bm90LWEtdG9rZW4"),
        INVALID,
        "INVALID_PAGE_TOKEN",
    ),
    case("entries-garbage-page-token", lambda p: entries_req(p, page_token="%%%"), INVALID, "INVALID_PAGE_TOKEN"),
    case("entries-page-size-too-large", lambda p: entries_req(p, page_size=501), INVALID, "INVALID_PAGE_SIZE"),
    case("entries-page-size-negative", lambda p: entries_req(p, page_size=-1), INVALID, "INVALID_PAGE_SIZE"),
    case("entries-unknown-account-code", lambda p: entries_req(p, code=99), INVALID, "INVALID_ACCOUNT_CODE"),
    case(
        "get-account-unknown",
        lambda p: ("GetAccount", pb.GetAccountRequest(account=ref(GHOST, PURCHASED))),
        NOT_FOUND,
        "ACCOUNT_NOT_FOUND",
    ),
    case(
        "create-account-wallet",
        lambda p: ("CreateAccount", pb.CreateAccountRequest(request_id="a1", account=ref(p.fan, WALLET))),
        INVALID,
        "WALLET_IS_VIRTUAL",
    ),
    # AdjustBalance (as an admin) and GrantPromotion
    case("adjust-zero", lambda p: adjust(p, amount=0), INVALID, "AMOUNT_ZERO", admin=True),
    case("adjust-above-cap", lambda p: adjust(p, amount=CAP + 1), INVALID, "AMOUNT_TOO_LARGE", admin=True),
    case("adjust-below-minus-cap", lambda p: adjust(p, amount=-CAP - 1), INVALID, "AMOUNT_TOO_LARGE", admin=True),
    case("adjust-without-reason", lambda p: adjust(p, reason=""), INVALID, "REASON_REQUIRED", admin=True),
    case("adjust-blank-reason", lambda p: adjust(p, reason="   "), INVALID, "REASON_REQUIRED", admin=True),
    case("adjust-reason-too-long", lambda p: adjust(p, reason="r" * 501), INVALID, "REASON_TOO_LONG", admin=True),
    case(
        "adjust-system-account",
        lambda p: adjust(p, account=system(REVENUE)),
        INVALID,
        "NOT_A_USER_ACCOUNT",
        admin=True,
    ),
    case("adjust-missing-request-id", lambda p: adjust(p, request_id=""), INVALID, "MISSING_ID", admin=True),
    case("grant-zero", lambda p: grant_req(p, amount=0), INVALID, "AMOUNT_NOT_POSITIVE"),
    case("grant-negative", lambda p: grant_req(p, amount=-3), INVALID, "AMOUNT_NOT_POSITIVE"),
    case("grant-above-cap", lambda p: grant_req(p, amount=CAP + 1), INVALID, "AMOUNT_TOO_LARGE"),
    case("grant-missing-owner", lambda p: grant_req(p, owner_id=""), INVALID, "MISSING_ID"),
    case("grant-missing-request-id", lambda p: grant_req(p, request_id=""), INVALID, "MISSING_ID"),
    case("grant-campaign-user-text", lambda p: grant_req(p, campaign_id="spring sale!"), INVALID, "INVALID_CONTEXT"),
    case("grant-campaign-too-long", lambda p: grant_req(p, campaign_id="c" * 129), INVALID, "CONTEXT_TOO_LARGE"),
]


@pytest.mark.parametrize(("build", "code", "reason", "admin"), VALIDATION)
async def test_refused_request_changes_nothing(env, people, build, code, reason, admin):
    method, request = build(people)

    async def call():
        if admin:
            async with as_user("ops-1", "admin"):
                return await getattr(env.w, method)(request)
        return await getattr(env.w, method)(request)

    await refused(env, call, code, reason, (people.fan, people.creator))
    # Not remembered: the same request refused again, for the same reason.
    await refused(env, call, code, reason, (people.fan, people.creator))


# ---- state-dependent refusals ---------------------------------------------------------------------


async def test_insufficient_funds_is_remembered_across_a_top_up(env):
    fan, creator = await funded_fan_and_creator(env, 50)
    request = pb.TransferRequest(transfer=tip(fan, creator, 80))
    first = await refused(env, lambda: env.w.Transfer(request), PRECONDITION, "INSUFFICIENT_FUNDS", (fan, creator))
    async with env.engine.connect() as conn:
        ok = await conn.scalar(
            text(
                "SELECT ok FROM wallet.operations WHERE scope = 'service:platform' AND kind = 'TRANSFER' AND key = :k"
            ),
            {"k": request.transfer.transfer_id},
        )
    assert ok is False, "the refusal is memoized as an operation with ok = false"

    await buy(env, fan, 100)
    again = await refused(env, lambda: env.w.Transfer(request), PRECONDITION, "INSUFFICIENT_FUNDS", (fan, creator))
    assert info_of(again) == info_of(first)
    assert (await balance(env, fan)).spendable_available == 150


@pytest.mark.parametrize("debit_owner", ["poor", "ghost"])
async def test_refusal_creates_no_account_for_an_unseen_creator(env, debit_owner):
    # A refused request must not leave rows behind either: otherwise a caller with no money (or no
    # account) could create any number of empty earnings accounts by sending refused tips.
    fan = fresh("fan")
    if debit_owner == "poor":
        await buy(env, fan, 10)
        code, reason = PRECONDITION, "INSUFFICIENT_FUNDS"
    else:
        code, reason = NOT_FOUND, "ACCOUNT_NOT_FOUND"
    creator = fresh("unseen-creator")
    request = pb.TransferRequest(transfer=tip(fan, creator, 80))
    await refused(env, lambda: env.w.Transfer(request), code, reason, (fan, creator))


async def test_hold_exceeding_available_and_held_amount_counts_against_spending(env):
    fan, creator = await funded_fan_and_creator(env, 100)
    await hold(env, fan, creator, 70)
    owners = (fan, creator)
    error = await refused(env, lambda: hold(env, fan, creator, 40), PRECONDITION, "HOLD_EXCEEDS_AVAILABLE", owners)
    assert info_of(error).metadata["available"] == "30"
    spend = pb.TransferRequest(transfer=tip(fan, creator, 40))
    await refused(env, lambda: env.w.Transfer(spend), PRECONDITION, "INSUFFICIENT_FUNDS", owners)


async def test_capture_above_the_hold(env):
    fan, creator = await funded_fan_and_creator(env, 100)
    held = await hold(env, fan, creator, 50)
    request = pb.CaptureHoldRequest(request_id=fresh("cap"), hold_id=held.hold_id, amount=51)
    for _ in range(2):  # the retry answers the same
        error = await refused(env, lambda: env.w.CaptureHold(request), PRECONDITION, "CAPTURE_EXCEEDS_HOLD", (fan,))
        assert info_of(error).metadata["held"] == "50"
    still = (await env.w.GetHold(pb.GetHoldRequest(hold_id=held.hold_id))).hold
    assert still.status == pb.HOLD_STATUS_OPEN


@pytest.mark.parametrize(("first", "reason"), [("capture", "HOLD_ALREADY_CAPTURED"), ("void", "HOLD_ALREADY_VOIDED")])
async def test_a_hold_resolves_once(env, first, reason):
    fan, creator = await funded_fan_and_creator(env, 100)
    held = await hold(env, fan, creator, 40)

    def capture_call(request_id):
        return lambda: env.w.CaptureHold(pb.CaptureHoldRequest(request_id=request_id, hold_id=held.hold_id))

    def void_call(request_id):
        return lambda: env.w.VoidHold(pb.VoidHoldRequest(request_id=request_id, hold_id=held.hold_id))

    original = (capture_call if first == "capture" else void_call)("first-resolution-" + held.hold_id)
    answer = await original()
    owners = (fan, creator)
    await refused(env, capture_call(fresh("cap")), PRECONDITION, reason, owners)
    await refused(env, void_call(fresh("void")), PRECONDITION, reason, owners)
    async with unchanged(env, owners):
        assert await original() == answer


async def test_capturing_an_expired_hold_refuses_and_releases_the_reservation(env):
    fan, creator = await funded_fan_and_creator(env, 100)
    held = await hold(env, fan, creator, 60, ttl=60)
    assert account_of(await balance(env, fan), PURCHASED).pending == 60
    await env.clock.advance(dt.timedelta(seconds=61))

    before = await snapshot(env, (fan, creator))
    capture = pb.CaptureHoldRequest(request_id=fresh("cap"), hold_id=held.hold_id)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await env.w.CaptureHold(capture)
    # The reason follows the HOLD_ALREADY_<STATUS> family: the capture finds the hold expired.
    assert (caught.value.code(), reason_of(caught.value)) == (PRECONDITION, "HOLD_EXPIRED")
    after = await snapshot(env, (fan, creator))
    # Only the reservation moved: no entry, no applied operation, no posted balance changed.
    assert after[1:3] == before[1:3]
    purchased = account_of(await balance(env, fan), PURCHASED)
    assert (purchased.posted, purchased.pending, purchased.available) == (100, 0, 100)
    got = (await env.w.GetHold(pb.GetHoldRequest(hold_id=held.hold_id))).hold
    assert (got.status, got.captured_amount) == (pb.HOLD_STATUS_EXPIRED, 0)
    await audit_ok(env)

    void = pb.VoidHoldRequest(request_id=fresh("void"), hold_id=held.hold_id)
    await refused(env, lambda: env.w.VoidHold(void), PRECONDITION, "HOLD_EXPIRED", (fan, creator))
    await refused(env, lambda: env.w.CaptureHold(capture), PRECONDITION, "HOLD_EXPIRED", (fan, creator))


async def test_reversal_refusals(env):
    fan, creator = await funded_fan_and_creator(env, 100)
    original = (await env.w.Transfer(pb.TransferRequest(transfer=tip(fan, creator, 60)))).transfer
    owners = (fan, creator)

    def reversal(*legs: tuple[int, int], code=pb.TRANSFER_CODE_REFUND, reversal_id=None):
        request = pb.ReverseTransferRequest(
            reversal_id=reversal_id or fresh("rev"),
            transfer_id=original.transfer_id,
            code=code,
            legs=[pb.LegAmount(leg=leg, amount=amount) for leg, amount in legs],
        )
        return lambda: env.w.ReverseTransfer(request)

    error = await refused(env, reversal((0, 61)), PRECONDITION, "REVERSAL_EXCEEDS_REMAINING", owners)
    assert info_of(error).metadata["remaining"] == "60"
    await refused(env, reversal((1, 5)), PRECONDITION, "UNKNOWN_LEG", owners)
    await reversal((0, 20))()
    error = await refused(env, reversal((0, 41)), PRECONDITION, "REVERSAL_EXCEEDS_REMAINING", owners)
    assert info_of(error).metadata["remaining"] == "40"
    await reversal()()
    await refused(env, reversal(), PRECONDITION, "NOTHING_LEFT_TO_REVERSE", owners)
    await refused(env, reversal((0, 1)), PRECONDITION, "REVERSAL_EXCEEDS_REMAINING", owners)
    assert (await balance(env, fan)).spendable_posted == 100
    await audit_ok(env)


async def test_refund_after_the_creator_was_paid_out(env):
    fan, creator = await funded_fan_and_creator(env, 100)
    original = (await env.w.Transfer(pb.TransferRequest(transfer=tip(fan, creator, 60)))).transfer
    payout = pb.TransferSpec(
        transfer_id=fresh("payout"),
        debit=ref(creator, EARNINGS),
        credit=system(PAYOUT_CLEARING),
        amount=50,
        code=pb.TRANSFER_CODE_PAYOUT,
    )
    await env.w.Transfer(pb.TransferRequest(transfer=payout))
    refund = pb.ReverseTransferRequest(
        reversal_id=fresh("rev"), transfer_id=original.transfer_id, code=pb.TRANSFER_CODE_REFUND
    )
    for _ in range(2):
        await refused(env, lambda: env.w.ReverseTransfer(refund), PRECONDITION, "INSUFFICIENT_FUNDS", (fan, creator))


async def test_adjustment_debit_beyond_the_balance(env):
    fan = fresh("fan")
    await buy(env, fan, 100)

    async def adjust_by(amount):
        async with as_user("ops-1", "admin"):
            return await env.w.AdjustBalance(
                pb.AdjustBalanceRequest(
                    request_id=f"adj-{amount}-{fan}", account=ref(fan, PURCHASED), amount=amount, reason="ticket 7"
                )
            )

    # A credit first, so the issuance account exists before the refusal (see the test above on
    # accounts created by refusals).
    await adjust_by(5)
    await refused(env, lambda: adjust_by(-106), PRECONDITION, "INSUFFICIENT_FUNDS", (fan,))


async def test_linked_batch_fails_whole_at_item_k(env):
    fan, creator = await funded_fan_and_creator(env, 100)
    specs = [tip(fan, creator, 40, f"item-{i}-{fan}") for i in range(3)]
    request = pb.BatchTransferRequest(batch_id=fresh("batch"), mode=pb.BATCH_MODE_LINKED, transfers=specs)
    owners = (fan, creator)
    first = await refused(env, lambda: env.w.BatchTransfer(request), PRECONDITION, "INSUFFICIENT_FUNDS", owners)
    info = info_of(first)
    assert (info.metadata["failed_index"], info.metadata["failed_transfer_id"]) == ("2", specs[2].transfer_id)
    again = await refused(env, lambda: env.w.BatchTransfer(request), PRECONDITION, "INSUFFICIENT_FUNDS", owners)
    assert info_of(again) == info

    # The same items as an independent batch: each stands alone. Which one finds the wallet empty
    # is not promised (the ledger applies concurrent ops in id order, not request order).
    independent = pb.BatchTransferRequest(
        mode=pb.BATCH_MODE_INDEPENDENT, transfers=[tip(fan, creator, 40) for _ in range(3)]
    )
    results = (await env.w.BatchTransfer(independent)).results
    assert [r.transfer_id for r in results] == [s.transfer_id for s in independent.transfers]
    assert sorted(r.HasField("transfer") for r in results) == [False, True, True]
    assert [error_info(r.error).reason for r in results if r.HasField("error")] == ["INSUFFICIENT_FUNDS"]
    assert (await balance(env, fan)).spendable_posted == 20


async def test_page_token_of_another_listing(env):
    fan, other = fresh("fan"), fresh("fan")
    for owner in (fan, other):
        await buy(env, owner, 10)
        await buy(env, owner, 20)
    token = (await env.w.ListEntries(pb.ListEntriesRequest(owner_id=fan, page_size=1))).next_page_token
    assert token
    for request in (
        pb.ListEntriesRequest(owner_id=other, page_size=1, page_token=token),
        pb.ListEntriesRequest(owner_id=fan, page_size=1, page_token=token, code=PURCHASED),
    ):
        await refused(env, lambda r=request: env.w.ListEntries(r), INVALID, "INVALID_PAGE_TOKEN", (fan, other))


async def test_ids_are_scoped_to_the_calling_service(env):
    fan, creator = await funded_fan_and_creator(env, 100)
    held = await hold(env, fan, creator, 30)
    tipped = (await env.w.Transfer(pb.TransferRequest(transfer=tip(fan, creator, 10)))).transfer
    owners = (fan, creator)
    capture = pb.CaptureHoldRequest(request_id=fresh("cap"), hold_id=held.hold_id)
    void = pb.VoidHoldRequest(request_id=fresh("void"), hold_id=held.hold_id)
    reverse_req = pb.ReverseTransferRequest(
        reversal_id=fresh("rev"), transfer_id=tipped.transfer_id, code=pb.TRANSFER_CODE_REFUND
    )
    await refused(env, lambda: env.gifts.CaptureHold(capture), NOT_FOUND, "HOLD_NOT_FOUND", owners)
    await refused(env, lambda: env.gifts.VoidHold(void), NOT_FOUND, "HOLD_NOT_FOUND", owners)
    await refused(
        env, lambda: env.gifts.GetHold(pb.GetHoldRequest(hold_id=held.hold_id)), NOT_FOUND, "HOLD_NOT_FOUND", owners
    )
    await refused(env, lambda: env.gifts.ReverseTransfer(reverse_req), NOT_FOUND, "TRANSFER_NOT_FOUND", owners)

    # The same ids mean different things to another service: both apply.
    theirs = await env.gifts.Transfer(pb.TransferRequest(transfer=tip(fan, creator, 5, tipped.transfer_id)))
    assert theirs.transfer.amount == 5
    own = await env.gifts.CreateHold(
        pb.CreateHoldRequest(
            hold_id=held.hold_id,
            account=ref(fan, PURCHASED),
            destination=ref(creator, EARNINGS),
            amount=7,
            code=pb.TRANSFER_CODE_CALL_BLOCK,
            ttl_seconds=LONG_TTL,
        )
    )
    assert own.hold.amount == 7
    assert (await env.w.GetHold(pb.GetHoldRequest(hold_id=held.hold_id))).hold.amount == 30
    assert account_of(await balance(env, fan), PURCHASED).pending == 37


# ---- an id reused with other fields -----------------------------------------------------------------


async def _reuse_transfer(env, field):
    fan, creator = await funded_fan_and_creator(env, 100)
    other = fresh("creator")
    await open_earnings(env, other)
    spec = tip(fan, creator, 10)
    await env.w.Transfer(pb.TransferRequest(transfer=spec))
    changed = {
        "amount": dict(amount=11),
        "credit": dict(credit=ref(other, EARNINGS)),
        "debit": dict(debit=ref(fan, PURCHASED)),
        "code": dict(code=pb.TRANSFER_CODE_GIFT),
        "context_id": dict(context_type="stream", context_id="s-1"),
    }[field]
    reused = tip(fan, creator, **({"amount": 10, "transfer_id": spec.transfer_id} | changed))
    return (lambda: env.w.Transfer(pb.TransferRequest(transfer=reused))), (fan, creator, other)


async def _reuse_refused_transfer(env, field):
    # A memoized failure guards its id exactly like a success.
    fan, creator = await funded_fan_and_creator(env, 10)
    spec = tip(fan, creator, 50)
    with pytest.raises(grpc.aio.AioRpcError):
        await env.w.Transfer(pb.TransferRequest(transfer=spec))
    reused = tip(fan, creator, 5, spec.transfer_id)
    return (lambda: env.w.Transfer(pb.TransferRequest(transfer=reused))), (fan, creator)


async def _reuse_batch(env, field):
    fan, creator = await funded_fan_and_creator(env, 100)
    batch_id = fresh("batch")
    specs = [tip(fan, creator, 10), tip(fan, creator, 5)]
    await env.w.BatchTransfer(pb.BatchTransferRequest(batch_id=batch_id, mode=pb.BATCH_MODE_LINKED, transfers=specs))
    specs[1].amount = 6
    reused = pb.BatchTransferRequest(batch_id=batch_id, mode=pb.BATCH_MODE_LINKED, transfers=specs)
    return (lambda: env.w.BatchTransfer(reused)), (fan, creator)


async def _reuse_hold(env, field):
    fan, creator = await funded_fan_and_creator(env, 100)
    held = await hold(env, fan, creator, 10)
    amount, ttl = (11, LONG_TTL) if field == "amount" else (10, LONG_TTL - 1)
    return (lambda: hold(env, fan, creator, amount, ttl=ttl, hold_id=held.hold_id)), (fan, creator)


async def _reuse_capture(env, field):
    fan, creator = await funded_fan_and_creator(env, 100)
    held = await hold(env, fan, creator, 10)
    other = await hold(env, fan, creator, 10)
    request_id = fresh("cap")
    await env.w.CaptureHold(pb.CaptureHoldRequest(request_id=request_id, hold_id=held.hold_id, amount=4))
    reused = (
        pb.CaptureHoldRequest(request_id=request_id, hold_id=held.hold_id, amount=5)
        if field == "amount"
        else pb.CaptureHoldRequest(request_id=request_id, hold_id=other.hold_id, amount=4)
    )
    return (lambda: env.w.CaptureHold(reused)), (fan, creator)


async def _reuse_reversal(env, field):
    fan, creator = await funded_fan_and_creator(env, 100)
    tipped = (await env.w.Transfer(pb.TransferRequest(transfer=tip(fan, creator, 10)))).transfer
    reversal_id = fresh("rev")

    def request(amount):
        return pb.ReverseTransferRequest(
            reversal_id=reversal_id,
            transfer_id=tipped.transfer_id,
            code=pb.TRANSFER_CODE_REFUND,
            legs=[pb.LegAmount(leg=0, amount=amount)],
        )

    await env.w.ReverseTransfer(request(3))
    return (lambda: env.w.ReverseTransfer(request(4))), (fan, creator)


async def _reuse_grant(env, field):
    fan = fresh("fan")
    request_id = fresh("grant")
    await env.w.GrantPromotion(pb.GrantPromotionRequest(request_id=request_id, owner_id=fan, amount=5))
    reused = pb.GrantPromotionRequest(request_id=request_id, owner_id=fan, amount=6)
    return (lambda: env.w.GrantPromotion(reused)), (fan,)


async def _reuse_adjustment(env, field):
    fan = fresh("fan")
    request_id = fresh("adj")

    async def adjust_with(reason):
        async with as_user("ops-1", "admin"):
            return await env.w.AdjustBalance(
                pb.AdjustBalanceRequest(request_id=request_id, account=ref(fan, PURCHASED), amount=5, reason=reason)
            )

    await adjust_with("goodwill credit")
    return (lambda: adjust_with("another reason")), (fan,)


@pytest.mark.parametrize(
    ("setup", "field", "reason"),
    [
        pytest.param(_reuse_transfer, "amount", "ID_REUSED_AMOUNT", id="transfer-amount"),
        pytest.param(_reuse_transfer, "credit", "ID_REUSED_CREDIT", id="transfer-credit"),
        pytest.param(_reuse_transfer, "debit", "ID_REUSED_DEBIT", id="transfer-debit"),
        pytest.param(_reuse_transfer, "code", "ID_REUSED_CODE", id="transfer-code"),
        pytest.param(_reuse_transfer, "context_id", "ID_REUSED_CONTEXT_TYPE", id="transfer-context"),
        pytest.param(_reuse_refused_transfer, "amount", "ID_REUSED_AMOUNT", id="refused-transfer-amount"),
        pytest.param(_reuse_batch, "items", "ID_REUSED_ITEMS", id="linked-batch-items"),
        pytest.param(_reuse_hold, "amount", "ID_REUSED_AMOUNT", id="hold-amount"),
        pytest.param(_reuse_hold, "ttl", "ID_REUSED_TTL_SECONDS", id="hold-ttl"),
        pytest.param(_reuse_capture, "amount", "ID_REUSED_AMOUNT", id="capture-amount"),
        pytest.param(_reuse_capture, "hold", "ID_REUSED_HOLD_ID", id="capture-hold"),
        pytest.param(_reuse_reversal, "legs", "ID_REUSED_LEGS", id="reversal-legs"),
        pytest.param(_reuse_grant, "amount", "ID_REUSED_AMOUNT", id="grant-amount"),
        pytest.param(_reuse_adjustment, "reason", "ID_REUSED_REASON", id="adjustment-reason"),
    ],
)
async def test_id_reused_with_other_fields(env, setup, field, reason):
    call, owners = await setup(env, field)
    await refused(env, call, EXISTS, reason, owners)


# ---- happy paths the refusals rely on -----------------------------------------------------------------


async def test_amount_cap_is_inclusive(env):
    fan = fresh("fan")
    assert (await buy(env, fan, CAP)).amount == CAP
    assert (await balance(env, fan)).spendable_posted == CAP


async def test_linked_gift_reversed_in_parts_then_fully_with_its_fee(env):
    fan, creator = await funded_fan_and_creator(env, 100)
    revenue_before = await system_posted(env, REVENUE)
    batch_id = fresh("gift")
    gift = dict(debit=ref(fan, WALLET), code=pb.TRANSFER_CODE_GIFT, fee_bps=2500, context_type="gift", context_id="g1")
    legs = [
        pb.TransferSpec(transfer_id=f"{batch_id}-creator", credit=ref(creator, EARNINGS), amount=75, **gift),
        pb.TransferSpec(transfer_id=f"{batch_id}-fee", credit=system(REVENUE), amount=25, **gift),
    ]
    await env.w.BatchTransfer(pb.BatchTransferRequest(batch_id=batch_id, mode=pb.BATCH_MODE_LINKED, transfers=legs))
    assert (await balance(env, fan)).spendable_posted == 0

    partial = pb.ReverseTransferRequest(
        reversal_id=fresh("rev"),
        batch_id=batch_id,
        code=pb.TRANSFER_CODE_REFUND,
        legs=[pb.LegAmount(leg=0, amount=30), pb.LegAmount(leg=1, amount=10)],
    )
    first = await env.w.ReverseTransfer(partial)
    assert [(t.transfer_id, t.amount, t.code) for t in first.transfers] == [
        (legs[0].transfer_id, 30, pb.TRANSFER_CODE_REFUND),
        (legs[1].transfer_id, 10, pb.TRANSFER_CODE_REFUND),
    ]
    assert [(t.debit, t.credit) for t in first.transfers] == [
        (ref(creator, EARNINGS), ref(fan, PURCHASED)),
        (system(REVENUE), ref(fan, PURCHASED)),
    ]
    assert (await balance(env, fan)).spendable_posted == 40
    assert account_of(await balance(env, creator), EARNINGS).posted == 45
    assert await system_posted(env, REVENUE) == revenue_before + 15
    async with unchanged(env, (fan, creator)):
        assert await env.w.ReverseTransfer(partial) == first

    rest = await env.w.ReverseTransfer(
        pb.ReverseTransferRequest(reversal_id=fresh("rev"), batch_id=batch_id, code=pb.TRANSFER_CODE_REFUND)
    )
    assert [t.amount for t in rest.transfers] == [45, 15]
    assert (await balance(env, fan)).spendable_posted == 100
    assert account_of(await balance(env, creator), EARNINGS).posted == 0
    assert await system_posted(env, REVENUE) == revenue_before
    nothing = pb.ReverseTransferRequest(reversal_id=fresh("rev"), batch_id=batch_id, code=pb.TRANSFER_CODE_REFUND)
    await refused(env, lambda: env.w.ReverseTransfer(nothing), PRECONDITION, "NOTHING_LEFT_TO_REVERSE", (fan,))
    await audit_ok(env)


async def test_spend_draws_promotional_first_and_refunds_give_each_back(env):
    fan, creator = await funded_fan_and_creator(env, 100)
    await grant(env, fan, 30)
    spent = (await env.w.Transfer(pb.TransferRequest(transfer=tip(fan, creator, 50)))).transfer
    assert [(p.amount, p.funding) for p in spent.postings] == [
        (30, pb.FUNDING_PROMOTIONAL),
        (20, pb.FUNDING_PURCHASED),
    ]

    async def refund(amount=0):
        legs = [pb.LegAmount(leg=0, amount=amount)] if amount else []
        request = pb.ReverseTransferRequest(
            reversal_id=fresh("rev"), transfer_id=spent.transfer_id, code=pb.TRANSFER_CODE_REFUND, legs=legs
        )
        (reversal,) = (await env.w.ReverseTransfer(request)).transfers
        return [(p.amount, p.funding, p.credit.code) for p in reversal.postings]

    # The last tokens drawn are the first given back, each to the account it came from.
    assert await refund(10) == [(10, pb.FUNDING_PURCHASED, PURCHASED)]
    assert await refund(25) == [(10, pb.FUNDING_PURCHASED, PURCHASED), (15, pb.FUNDING_PROMOTIONAL, PROMOTIONAL)]
    assert await refund() == [(15, pb.FUNDING_PROMOTIONAL, PROMOTIONAL)]
    after = await balance(env, fan)
    assert (account_of(after, PROMOTIONAL).posted, account_of(after, PURCHASED).posted) == (30, 100)
    await audit_ok(env)


async def test_clawback_may_overdraw_into_debt(env):
    fan, creator = fresh("fan"), fresh("creator")
    purchase = await buy(env, fan, 100)
    await open_earnings(env, creator)
    await env.w.Transfer(pb.TransferRequest(transfer=tip(fan, creator, 80)))

    def reversal(code):
        request = pb.ReverseTransferRequest(reversal_id=fresh("rev"), transfer_id=purchase.transfer_id, code=code)
        return lambda: env.w.ReverseTransfer(request)

    await refused(env, reversal(pb.TRANSFER_CODE_REFUND), PRECONDITION, "INSUFFICIENT_FUNDS", (fan,))
    clawed = await reversal(pb.TRANSFER_CODE_CLAWBACK)()
    assert [t.amount for t in clawed.transfers] == [100]
    assert account_of(await balance(env, fan), PURCHASED).posted == -80

    audit = await audit_ok(env)
    assert pb.Debt(account=ref(fan, PURCHASED), amount=80) in audit.debts
    assert audit.totals[0].debt_sum >= 80
    # Debt is not spendable: the overdrawn wallet refuses the next tip.
    spend = pb.TransferRequest(transfer=tip(fan, creator, 1))
    await refused(env, lambda: env.w.Transfer(spend), PRECONDITION, "INSUFFICIENT_FUNDS", (fan, creator))


async def test_partial_capture_releases_the_rest(env):
    fan, creator = await funded_fan_and_creator(env, 100)
    held = await hold(env, fan, creator, 60)
    purchased = account_of(await balance(env, fan), PURCHASED)
    assert (purchased.posted, purchased.pending, purchased.available) == (100, 60, 40)

    captured = await env.w.CaptureHold(pb.CaptureHoldRequest(request_id=fresh("cap"), hold_id=held.hold_id, amount=25))
    assert (captured.hold.status, captured.hold.captured_amount) == (pb.HOLD_STATUS_CAPTURED, 25)
    assert captured.transfer.amount == 25
    purchased = account_of(await balance(env, fan), PURCHASED)
    assert (purchased.posted, purchased.pending, purchased.available) == (75, 0, 75)
    assert account_of(await balance(env, creator), EARNINGS).posted == 25
    audit = await audit_ok(env)
    assert all(t.pending_sum == t.open_holds_sum for t in audit.totals)


async def test_expire_holds_expires_only_due_holds(env):
    fan, creator = await funded_fan_and_creator(env, 100)
    soon = await hold(env, fan, creator, 10, ttl=60)
    later = await hold(env, fan, creator, 20, ttl=120)
    kept = await hold(env, fan, creator, 30)
    await env.clock.advance(dt.timedelta(seconds=121))

    assert (await env.w.ExpireHolds(pb.ExpireHoldsRequest())).expired_count == 2
    statuses = [(await env.w.GetHold(pb.GetHoldRequest(hold_id=h.hold_id))).hold.status for h in (soon, later, kept)]
    assert statuses == [pb.HOLD_STATUS_EXPIRED, pb.HOLD_STATUS_EXPIRED, pb.HOLD_STATUS_OPEN]
    purchased = account_of(await balance(env, fan), PURCHASED)
    assert (purchased.posted, purchased.pending) == (100, 30)
    assert (await env.w.ExpireHolds(pb.ExpireHoldsRequest())).expired_count == 0
    await audit_ok(env)


async def test_expiring_the_holds_of_hundreds_of_fans_at_once_notifies_every_balance(env):
    """One expiry pass over 400 fans' holds: the balance notification names 400 balances, far more
    than one NOTIFY payload holds as text (the pass used to fail with PostgreSQL's "payload string
    too long")."""
    fans = [fresh("fan") for _ in range(400)]
    creator = fresh("creator")
    await open_earnings(env, creator)
    await asyncio.gather(*(buy(env, fan, 10) for fan in fans))
    holds = await asyncio.gather(*(hold(env, fan, creator, 10, ttl=60) for fan in fans))
    await env.clock.advance(dt.timedelta(seconds=61))

    assert (await env.w.ExpireHolds(pb.ExpireHoldsRequest())).expired_count >= 400
    for held in holds[::80]:
        assert (await env.w.GetHold(pb.GetHoldRequest(hold_id=held.hold_id))).hold.status == pb.HOLD_STATUS_EXPIRED
    assert account_of(await balance(env, fans[-1]), PURCHASED).pending == 0
    await audit_ok(env)


async def test_list_entries_pages_newest_first(env):
    fan, creator = await funded_fan_and_creator(env, 100)
    await grant(env, fan, 20)
    for _ in range(5):
        await env.w.Transfer(pb.TransferRequest(transfer=tip(fan, creator, 7)))

    pages, token = [], ""
    for _ in range(10):  # bounded: 8 entries at 3 a page
        page = await env.w.ListEntries(pb.ListEntriesRequest(owner_id=fan, page_size=3, page_token=token))
        pages.append(list(page.entries))
        token = page.next_page_token
        if not token:
            break
    assert [len(p) for p in pages] == [3, 3, 2]
    listed = [e for page in pages for e in page]
    ids = [e.entry_id for e in listed]
    assert ids == sorted(set(ids), reverse=True), "newest first, no duplicates"
    whole = await env.w.ListEntries(pb.ListEntriesRequest(owner_id=fan, page_size=500))
    assert [e.entry_id for e in whole.entries] == ids, "no gaps"

    by_account = defaultdict(list)
    for entry in reversed(listed):
        by_account[entry.account.code].append(entry)
    for code, entries in by_account.items():
        running_total = 0
        for entry in entries:
            running_total += entry.amount
            assert entry.balance_after == running_total
        assert account_of(await balance(env, fan), code).posted == running_total
    assert listed[0].code == pb.TRANSFER_CODE_TIP and listed[0].amount == -7


async def test_watch_balance_streams_current_then_changes(env):
    fan = fresh("fan")
    await buy(env, fan, 100)
    call = env.w.WatchBalance(pb.WatchBalanceRequest(owner_id=fan))
    try:
        first = await asyncio.wait_for(call.read(), timeout=10)
        assert first.balance.spendable_posted == 100
        await buy(env, fan, 5)
        second = await asyncio.wait_for(call.read(), timeout=10)
        assert second.balance.spendable_posted == 105
    finally:
        call.cancel()
