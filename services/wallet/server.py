"""WalletService: validation and authorization of each RPC, then the ledger (writes) or queries
(reads). Who may do what:

- an internal service acting as itself may touch any account (its ids are scoped to it);
- a user (signed by a caller allowed to act for users) reads only their own balances and history
  and spends only from their own spendable accounts, to a creator's earnings;
- the admin role may read anyone, audit, adjust balances and grant promotions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc
import psycopg
from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncEngine

from services.wallet import model, queries
from services.wallet.ledger import NOTIFY_CHANNEL, Ledger, balance_hash, balances_named
from services.wallet.model import Adjustment, HoldSpec, Op, Ref, Resolution, Reversal
from shared import auth
from shared.auth import Principal
from shared.config import Settings
from shared.errors import DomainError, denied, invalid, not_found
from shared.gen.fanbank.wallet.v1 import wallet_service_pb2 as pb
from shared.gen.fanbank.wallet.v1 import wallet_service_pb2_grpc as pb_grpc
from shared.host import run_every
from shared.server import Registration

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["WalletService"].full_name
MAX_WATCHERS = 10_000
# What a user may pay for from their own wallet.
USER_SPEND_CODES = frozenset({"TIP", "GIFT", "TICKET", "CALL_BLOCK", "LIKE"})


def _require_reader(principal: Principal, owner_id: str) -> None:
    if not principal.is_privileged and principal.user != owner_id:
        raise denied("NOT_YOUR_ACCOUNT", "a user reads only their own accounts")


def _check_user_spend(principal: Principal, item: model.Item) -> None:
    if principal.is_service:
        return
    if item.debit.owner_id != principal.user or item.debit.code not in model.SPENDABLE_CODES:
        raise denied("NOT_YOUR_ACCOUNT", "a user spends only from their own wallet")
    if item.credit.code != model.EARNINGS or item.code not in USER_SPEND_CODES:
        raise denied("TRANSFER_NOT_ALLOWED", "a user pays creators only")


def _asset(value: int) -> str:
    if value == pb.ASSET_UNSPECIFIED:
        return "TOKEN"
    asset = model.ASSETS.get(value)
    if asset is None:
        raise invalid("INVALID_ASSET", "unknown asset", field="asset")
    return asset


def _owner(owner_id: str) -> str:
    return model.check_id("owner_id", owner_id)


class BalanceWatchers:
    """One LISTEN connection per process; each watcher is woken (coalesced) when its owner's
    balance may have changed, then re-reads it. Notifications are sent by the committing
    transaction itself, so a watcher never sees a change that did not commit. They name balances
    by `balance_hash` (services/wallet/ledger.py), and so are the watchers kept here."""

    def __init__(self, database_url: str):
        self.database_url = database_url.replace("postgresql+psycopg://", "postgresql://")
        self._events: dict[int, set[asyncio.Event]] = {}
        self._task: asyncio.Task | None = None
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return sum(len(s) for s in self._events.values())

    async def subscribe(self, owner_id: str, asset: str) -> asyncio.Event:
        if len(self) >= MAX_WATCHERS:
            raise DomainError(grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_WATCHERS", "too many balance watchers")
        if self._task is None or self._task.done():
            self._ready.clear()
            self._task = asyncio.create_task(self._listen(), name="wallet-balance-listener")
        await self._ready.wait()
        event = asyncio.Event()
        self._events.setdefault(balance_hash(owner_id, asset), set()).add(event)
        return event

    def unsubscribe(self, owner_id: str, asset: str, event: asyncio.Event) -> None:
        key = balance_hash(owner_id, asset)
        events = self._events.get(key)
        if events is not None:
            events.discard(event)
            if not events:
                del self._events[key]

    async def _listen(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.database_url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self._ready.set()
                    self._wake_all()  # anything may have changed while we were not listening
                    async for notice in conn.notifies():
                        self._wake(notice.payload)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("balance listener lost its connection; reconnecting")
                await asyncio.sleep(1)

    def _wake(self, payload: str) -> None:
        try:
            named = balances_named(payload)
        except ValueError:
            log.error("unreadable balance notification; waking every watcher", extra={"payload": payload[:80]})
            self._wake_all()
            return
        for key in named:
            for event in self._events.get(key, ()):
                event.set()

    def _wake_all(self) -> None:
        for events in self._events.values():
            for event in events:
                event.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class WalletServicer(pb_grpc.WalletServiceServicer):
    def __init__(self, engine: AsyncEngine, ledger: Ledger, watchers: BalanceWatchers):
        self.engine = engine
        self.ledger = ledger
        self.watchers = watchers

    async def _submit(self, op: Op, response_type: type[Message]) -> Message:
        response = await self.ledger.submit(op)
        return response if isinstance(response, Message) else response_type.FromString(response)

    # ---- accounts -----------------------------------------------------------------------------

    async def CreateAccount(self, request: pb.CreateAccountRequest, context) -> pb.CreateAccountResponse:
        ref = model.ref_from_pb(request.account, "account")
        if ref.code == model.WALLET:
            raise invalid("WALLET_IS_VIRTUAL", "USER_WALLET is the pair of purchased and promotional accounts")
        _require_reader(auth.principal(), ref.owner_id)
        await self.ledger.create_accounts({ref})
        row = await queries.get_account(self.engine, ref)
        assert row is not None
        return pb.CreateAccountResponse(account=row.to_pb())

    async def GetAccount(self, request: pb.GetAccountRequest, context) -> pb.GetAccountResponse:
        ref = model.ref_from_pb(request.account, "account")
        _require_reader(auth.principal(), ref.owner_id)
        row = await queries.get_account(self.engine, ref)
        if row is None:
            raise not_found("ACCOUNT_NOT_FOUND", "no such account", code=ref.code, owner_id=ref.owner_id)
        return pb.GetAccountResponse(account=row.to_pb())

    # ---- transfers ----------------------------------------------------------------------------

    async def Transfer(self, request: pb.TransferRequest, context) -> pb.TransferResponse:
        principal = auth.principal()
        item = model.item_from_pb(request.transfer)
        if request.transfer.group_id:
            raise invalid("GROUP_ID_NOT_ALLOWED", "group_id is for items of an INDEPENDENT batch", field="group_id")
        _check_user_spend(principal, item)
        op = Op(principal.scope, "TRANSFER", item.transfer_id, item.fields(), item)
        return pb.TransferResponse(transfer=await self._submit(op, pb.Transfer))

    async def BatchTransfer(self, request: pb.BatchTransferRequest, context) -> pb.BatchTransferResponse:
        principal = auth.principal()
        if not request.transfers:
            raise invalid("EMPTY_BATCH", "a batch needs at least one transfer", field="transfers")
        if len(request.transfers) > model.MAX_BATCH_ITEMS:
            raise invalid("BATCH_TOO_LARGE", f"a batch holds at most {model.MAX_BATCH_ITEMS} transfers")
        items = [model.item_from_pb(spec, f"transfers[{i}]") for i, spec in enumerate(request.transfers)]
        for item in items:
            _check_user_spend(principal, item)
        if len({item.transfer_id for item in items}) != len(items):
            raise invalid("DUPLICATE_TRANSFER_ID", "transfer ids within a batch must differ", field="transfers")
        scope = principal.scope
        if request.mode != pb.BATCH_MODE_INDEPENDENT and any(spec.group_id for spec in request.transfers):
            raise invalid("GROUP_ID_NOT_ALLOWED", "group_id is for items of an INDEPENDENT batch", field="transfers")
        if request.mode == pb.BATCH_MODE_LINKED:
            model.check_id("batch_id", request.batch_id)
            fields = {"mode": "LINKED", "items": [item.fields() for item in items]}
            return await self._submit(
                Op(scope, "BATCH", request.batch_id, fields, tuple(items)), pb.BatchTransferResponse
            )
        if request.mode != pb.BATCH_MODE_INDEPENDENT:
            raise invalid("INVALID_BATCH_MODE", "mode must be LINKED or INDEPENDENT", field="mode")
        if request.batch_id:
            model.check_id("batch_id", request.batch_id)
        # Items sharing a group_id are one linked op (idempotent on the group id); the rest stand alone.
        units: dict[str, list[tuple[int, model.Item]]] = {}
        for index, (spec, item) in enumerate(zip(request.transfers, items, strict=True)):
            key = model.check_id(f"transfers[{index}].group_id", spec.group_id) if spec.group_id else f"#{index}"
            units.setdefault(key, []).append((index, item))
        ops = []
        for key, members in units.items():
            if key.startswith("#"):
                item = members[0][1]
                ops.append(Op(scope, "TRANSFER", item.transfer_id, item.fields(), item))
            else:
                group = tuple(item for _, item in members)
                fields = {"mode": "LINKED", "items": [item.fields() for item in group]}
                ops.append(Op(scope, "BATCH", key, fields, group))
        outcomes = await self.ledger.submit_many(ops)
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, DomainError):
                raise outcome
        # Each unit's results, put at its items' places (a group's items may be interleaved with
        # others), then appended in one call: a group's stored results go in as they are.
        results: list[pb.BatchTransferResult | None] = [None] * len(items)
        for (key, members), outcome in zip(units.items(), outcomes, strict=True):
            if isinstance(outcome, DomainError):
                status = outcome.to_status()
                unit = [pb.BatchTransferResult(transfer_id=item.transfer_id, error=status) for _, item in members]
            elif key.startswith("#"):
                transfer = outcome if isinstance(outcome, Message) else pb.Transfer.FromString(outcome)
                unit = [pb.BatchTransferResult(transfer_id=members[0][1].transfer_id, transfer=transfer)]
            else:
                group = outcome if isinstance(outcome, Message) else pb.BatchTransferResponse.FromString(outcome)
                unit = group.results
            for (index, _), result in zip(members, unit, strict=True):
                results[index] = result
        response = pb.BatchTransferResponse(batch_id=request.batch_id)
        response.results.extend(results)
        return response

    async def ReverseTransfer(self, request: pb.ReverseTransferRequest, context) -> pb.ReverseTransferResponse:
        principal = auth.principal()
        auth.require_service(principal, "ReverseTransfer")
        model.check_id("reversal_id", request.reversal_id)
        which = request.WhichOneof("original")
        if which is None:
            raise invalid("MISSING_ORIGINAL", "name the transfer_id or batch_id to reverse", field="original")
        target = model.check_id(which, getattr(request, which))
        code = model.transfer_code(request.code)
        if code not in model.REVERSAL_CODES:
            raise invalid("INVALID_REVERSAL_CODE", "code must be REFUND, CLAWBACK or REVERSAL", field="code")
        legs: dict[int, int] = {}
        for leg in request.legs:
            if leg.leg < 0 or leg.leg >= model.MAX_BATCH_ITEMS or leg.leg in legs:
                raise invalid("INVALID_LEG", f"leg {leg.leg} is out of range or repeated", field="legs")
            legs[leg.leg] = model.check_amount(leg.amount, f"legs[{leg.leg}].amount")
        target_kind = "TRANSFER" if which == "transfer_id" else "BATCH"
        reversal = Reversal(target_kind, target, code, legs)
        fields = {"target_kind": target_kind, "target": target, "code": code, "legs": sorted(legs.items())}
        fields["legs"] = [list(pair) for pair in fields["legs"]]
        op = Op(principal.scope, "REVERSAL", request.reversal_id, fields, reversal)
        return await self._submit(op, pb.ReverseTransferResponse)

    # ---- holds --------------------------------------------------------------------------------

    async def CreateHold(self, request: pb.CreateHoldRequest, context) -> pb.CreateHoldResponse:
        principal = auth.principal()
        auth.require_service(principal, "CreateHold")
        model.check_id("hold_id", request.hold_id)
        account = model.ref_from_pb(request.account, "account")
        destination = model.ref_from_pb(request.destination, "destination")
        if model.WALLET in (account.code, destination.code):
            raise invalid("WALLET_IS_VIRTUAL", "a hold names concrete accounts, not USER_WALLET", field="account")
        if account.asset != destination.asset:
            raise invalid("ASSET_MISMATCH", "account and destination must hold the same asset", field="destination")
        if account == destination:
            raise invalid("SAME_ACCOUNT", "account and destination must differ", field="destination")
        model.check_amount(request.amount)
        code = model.transfer_code(request.code)
        model.check_context(request.context_type, request.context_id)
        if not 1 <= request.ttl_seconds <= model.MAX_HOLD_TTL_SECONDS:
            raise invalid("INVALID_TTL", f"ttl_seconds must be 1..{model.MAX_HOLD_TTL_SECONDS}", field="ttl_seconds")
        spec = HoldSpec(
            request.hold_id,
            account,
            destination,
            request.amount,
            code,
            request.context_type,
            request.context_id,
            request.ttl_seconds,
        )
        fields = {
            "account": account.as_list(),
            "destination": destination.as_list(),
            "amount": request.amount,
            "code": code,
            "context_type": request.context_type,
            "context_id": request.context_id,
            "ttl_seconds": request.ttl_seconds,
        }
        hold = await self._submit(Op(principal.scope, "HOLD", request.hold_id, fields, spec), pb.Hold)
        return pb.CreateHoldResponse(hold=hold)

    def _resolution(self, request, capture: bool) -> Op:
        principal = auth.principal()
        auth.require_service(principal, "resolving a hold")
        model.check_id("request_id", request.request_id)
        model.check_id("hold_id", request.hold_id)
        amount = request.amount if capture else 0
        if capture and amount:
            model.check_amount(amount)
        elif capture and amount < 0:
            raise invalid("AMOUNT_NOT_POSITIVE", "amount must be positive (or 0 for the whole hold)", field="amount")
        fields = {"hold_id": request.hold_id, "capture": capture, "amount": amount}
        kind = "CAPTURE" if capture else "VOID"
        return Op(principal.scope, kind, request.request_id, fields, Resolution(request.hold_id, capture, amount))

    async def CaptureHold(self, request: pb.CaptureHoldRequest, context) -> pb.CaptureHoldResponse:
        return await self._submit(self._resolution(request, capture=True), pb.CaptureHoldResponse)

    async def VoidHold(self, request: pb.VoidHoldRequest, context) -> pb.VoidHoldResponse:
        return await self._submit(self._resolution(request, capture=False), pb.VoidHoldResponse)

    async def GetHold(self, request: pb.GetHoldRequest, context) -> pb.GetHoldResponse:
        principal = auth.principal()
        auth.require_service(principal, "GetHold")
        model.check_id("hold_id", request.hold_id)
        hold = await queries.get_hold(self.engine, principal.scope, request.hold_id)
        if hold is None:
            raise not_found("HOLD_NOT_FOUND", f"no hold {request.hold_id!r}")
        return pb.GetHoldResponse(hold=hold)

    async def ExpireHolds(self, request: pb.ExpireHoldsRequest, context) -> pb.ExpireHoldsResponse:
        auth.require_privileged(auth.principal(), "ExpireHolds")
        if not 0 <= request.limit <= 10_000:
            raise invalid("INVALID_LIMIT", "limit must be 0..10000", field="limit")
        return pb.ExpireHoldsResponse(expired_count=await queries.expire_holds(self.engine, request.limit or 1000))

    # ---- reads --------------------------------------------------------------------------------

    async def GetBalance(self, request: pb.GetBalanceRequest, context) -> pb.GetBalanceResponse:
        owner_id = _owner(request.owner_id)
        _require_reader(auth.principal(), owner_id)
        return await queries.balance(self.engine, owner_id, _asset(request.asset))

    async def ListEntries(self, request: pb.ListEntriesRequest, context) -> pb.ListEntriesResponse:
        owner_id = _owner(request.owner_id)
        _require_reader(auth.principal(), owner_id)
        code = None
        if request.code != pb.ACCOUNT_CODE_UNSPECIFIED:
            code = model.ACCOUNT_CODES.get(request.code)
            if code is None:
                raise invalid("INVALID_ACCOUNT_CODE", "unknown account code", field="code")
        asset = _asset(request.asset)
        return await queries.entries(self.engine, owner_id, asset, code, request.page_size, request.page_token)

    async def WatchBalance(self, request: pb.WatchBalanceRequest, context):
        owner_id = _owner(request.owner_id)
        _require_reader(auth.principal(), owner_id)
        asset = _asset(request.asset)
        event = await self.watchers.subscribe(owner_id, asset)
        try:
            last = None
            while True:
                current = await queries.balance(self.engine, owner_id, asset)
                if current != last:
                    last = current
                    yield pb.WatchBalanceResponse(balance=current)
                await event.wait()
                event.clear()
        finally:
            self.watchers.unsubscribe(owner_id, asset, event)

    async def Audit(self, request: pb.AuditRequest, context) -> pb.AuditResponse:
        auth.require_privileged(auth.principal(), "Audit")
        return await queries.audit(self.engine)

    # ---- admin --------------------------------------------------------------------------------

    async def AdjustBalance(self, request: pb.AdjustBalanceRequest, context) -> pb.AdjustBalanceResponse:
        principal = auth.principal()
        if not principal.is_admin:
            raise denied("ADMIN_ONLY", "AdjustBalance needs the admin role")
        model.check_id("request_id", request.request_id)
        account = model.ref_from_pb(request.account, "account")
        if account.code not in model.USER_CODES:
            raise invalid("NOT_A_USER_ACCOUNT", "adjust a user's purchased, promotional or earnings account")
        if request.amount == 0:
            raise invalid("AMOUNT_ZERO", "amount must not be zero", field="amount")
        model.check_amount(abs(request.amount))
        reason = request.reason.strip()
        if not reason:
            raise invalid("REASON_REQUIRED", "an adjustment needs a reason", field="reason")
        if len(reason) > model.MAX_REASON_CHARS:
            raise invalid("REASON_TOO_LONG", f"reason is at most {model.MAX_REASON_CHARS} characters", field="reason")
        counter = Ref("", account.asset, model.ISSUANCE)
        adjustment = Adjustment(account, request.amount, reason, principal.user or "", "ADJUSTMENT", counter, "", "")
        fields = {"account": account.as_list(), "amount": request.amount, "reason": reason}
        transfer = await self._submit(
            Op(principal.scope, "ADJUST", request.request_id, fields, adjustment), pb.Transfer
        )
        return pb.AdjustBalanceResponse(transfer=transfer)

    async def GrantPromotion(self, request: pb.GrantPromotionRequest, context) -> pb.GrantPromotionResponse:
        principal = auth.principal()
        auth.require_privileged(principal, "GrantPromotion")
        model.check_id("request_id", request.request_id)
        owner_id = _owner(request.owner_id)
        model.check_amount(request.amount)
        model.check_context("campaign", request.campaign_id or "none")
        account = Ref(owner_id, "TOKEN", model.PROMOTIONAL)
        counter = Ref("", "TOKEN", model.PROMOTIONS)
        campaign = request.campaign_id or "none"
        adjustment = Adjustment(
            account, request.amount, "", principal.user or "", "BONUS", counter, "campaign", campaign
        )
        fields = {"owner_id": owner_id, "amount": request.amount, "campaign_id": request.campaign_id}
        transfer = await self._submit(Op(principal.scope, "GRANT", request.request_id, fields, adjustment), pb.Transfer)
        return pb.GrantPromotionResponse(transfer=transfer)


class Wallet:
    """The Wallet service in one process: ledger committers, hold sweeper, balance watchers."""

    def __init__(self, settings: Settings, engine: AsyncEngine, database_url: str):
        self.settings = settings
        self.engine = engine
        self.ledger = Ledger(engine, settings.wallet_batch_max, settings.wallet_committers)
        self.watchers = BalanceWatchers(database_url)
        self.servicer = WalletServicer(engine, self.ledger, self.watchers)
        self._sweeper: asyncio.Task | None = None

    def registration(self) -> Registration:
        return Registration(SERVICE_NAME, self.servicer, pb_grpc.add_WalletServiceServicer_to_server)

    def start(self) -> None:
        self.ledger.start()
        self._sweeper = asyncio.create_task(self._sweep(), name="wallet-hold-sweeper")

    async def _sweep(self) -> None:
        async def expire_due() -> None:
            while await queries.expire_holds(self.engine, 1000) == 1000:
                pass

        await run_every(self.settings.wallet_hold_sweep_ms / 1000, expire_due, "hold sweep")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await self.watchers.close()
        await self.ledger.stop()
