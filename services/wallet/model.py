"""Wallet's vocabulary: assets, account and transfer codes, limits, and the validated form of every
request the ledger applies. Pure: no database, no gRPC server — the servicer validates into these
and the ledger applies them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from shared.errors import invalid
from shared.gen.fanbank.wallet.v1 import wallet_service_pb2 as pb
from shared.validate import IDENT, MAX_ID_CHARS, check_id

MAX_AMOUNT = 10**12
MAX_BATCH_ITEMS = 1000
MAX_CONTEXT_TYPE_CHARS = 32
MAX_CONTEXT_ID_CHARS = 128
MAX_REASON_CHARS = 500
MAX_HOLD_TTL_SECONDS = 90 * 24 * 3600

ASSETS = {pb.ASSET_TOKEN: "TOKEN", pb.ASSET_USD: "USD", pb.ASSET_INR: "INR"}
ASSET_ENUM = {v: k for k, v in ASSETS.items()}
ASSET_SCALE = {"TOKEN": 0, "USD": 2, "INR": 2}

WALLET = "USER_WALLET"
PURCHASED = "USER_PURCHASED"
PROMOTIONAL = "USER_PROMOTIONAL"
EARNINGS = "CREATOR_EARNINGS"
PLATFORM_REVENUE = "PLATFORM_REVENUE"
ISSUANCE = "ISSUANCE"
PROMOTIONS = "PROMOTIONS"

ACCOUNT_CODES = {
    value: pb.AccountCode.Name(value).removeprefix("ACCOUNT_CODE_")
    for value in pb.AccountCode.values()
    if value != pb.ACCOUNT_CODE_UNSPECIFIED
}
ACCOUNT_CODE_ENUM = {v: k for k, v in ACCOUNT_CODES.items()}
USER_CODES = frozenset({PURCHASED, PROMOTIONAL, EARNINGS})
SPENDABLE_CODES = frozenset({WALLET, PURCHASED, PROMOTIONAL})
SYSTEM_CODES = frozenset(set(ACCOUNT_CODES.values()) - USER_CODES - {WALLET})

TRANSFER_CODES = {
    value: pb.TransferCode.Name(value).removeprefix("TRANSFER_CODE_")
    for value in pb.TransferCode.values()
    if value != pb.TRANSFER_CODE_UNSPECIFIED
}
TRANSFER_CODE_ENUM = {v: k for k, v in TRANSFER_CODES.items()}
REVERSAL_CODES = frozenset({"REFUND", "CLAWBACK", "REVERSAL"})
FUNDING_ENUM = {"NONE": pb.FUNDING_NONE, "PROMOTIONAL": pb.FUNDING_PROMOTIONAL, "PURCHASED": pb.FUNDING_PURCHASED}


class Ref(NamedTuple):
    """An account's natural key, in the ledger's text form. A named tuple rather than a frozen
    dataclass: a batch makes and hashes a few per item, and a tuple's are C (a third of the cost)."""

    owner_id: str
    asset: str
    code: str

    @property
    def must_not_go_negative(self) -> bool:
        return self.code in USER_CODES

    def to_pb(self) -> pb.AccountRef:
        return pb.AccountRef(owner_id=self.owner_id, code=ACCOUNT_CODE_ENUM[self.code], asset=ASSET_ENUM[self.asset])

    def as_list(self) -> list[str]:
        return [self.owner_id, self.asset, self.code]


class Item(NamedTuple):
    """One validated transfer of a request (a single Transfer, or one item of a batch)."""

    transfer_id: str
    debit: Ref
    credit: Ref
    amount: int
    code: str
    context_type: str
    context_id: str
    counterparty_id: str
    fee_bps: int

    def fields(self) -> dict:
        return {
            "transfer_id": self.transfer_id,
            "debit": self.debit.as_list(),
            "credit": self.credit.as_list(),
            "amount": self.amount,
            "code": self.code,
            "context_type": self.context_type,
            "context_id": self.context_id,
            "counterparty_id": self.counterparty_id,
            "fee_bps": self.fee_bps,
        }


@dataclass(frozen=True, slots=True)
class Op:
    """A request the ledger applies exactly once per (scope, kind, key): its `identity`, made once
    (a batch looks each op up by it several times)."""

    scope: str
    kind: str
    key: str
    fields: dict
    payload: object = field(compare=False)
    identity: tuple[str, str, str] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "identity", (self.scope, self.kind, self.key))


@dataclass(frozen=True, slots=True)
class Reversal:
    target_kind: str  # TRANSFER or BATCH
    target_key: str
    code: str
    legs: dict[int, int]  # leg → amount; empty means everything left


@dataclass(frozen=True, slots=True)
class HoldSpec:
    hold_id: str
    account: Ref
    destination: Ref
    amount: int
    code: str
    context_type: str
    context_id: str
    ttl_seconds: int


@dataclass(frozen=True, slots=True)
class Resolution:
    hold_id: str
    capture: bool
    amount: int  # 0 = the whole hold (capture only)


@dataclass(frozen=True, slots=True)
class Adjustment:
    account: Ref
    amount: int  # signed
    reason: str
    admin_id: str
    code: str  # ADJUSTMENT or BONUS
    counter: Ref  # the system account on the other side
    context_type: str
    context_id: str


def check_amount(amount: int, name: str = "amount") -> int:
    if amount <= 0:
        raise invalid("AMOUNT_NOT_POSITIVE", f"{name} must be positive", field=name)
    if amount > MAX_AMOUNT:
        raise invalid("AMOUNT_TOO_LARGE", f"{name} must be at most {MAX_AMOUNT}", field=name)
    return amount


def check_context(context_type: str, context_id: str, counterparty_id: str = "") -> None:
    for name, value, limit in (
        ("context_type", context_type, MAX_CONTEXT_TYPE_CHARS),
        ("context_id", context_id, MAX_CONTEXT_ID_CHARS),
        ("counterparty_id", counterparty_id, MAX_ID_CHARS),
    ):
        if len(value) > limit:
            raise invalid("CONTEXT_TOO_LARGE", f"{name} must be at most {limit} characters", field=name)
        if value and not IDENT.fullmatch(value):
            raise invalid("INVALID_CONTEXT", f"{name} must be an identifier, not text", field=name)
    if bool(context_type) != bool(context_id):
        raise invalid("INVALID_CONTEXT", "context_type and context_id go together", field="context_id")


def ref_from_pb(ref: pb.AccountRef, name: str) -> Ref:
    asset = ASSETS.get(ref.asset)
    if asset is None:
        raise invalid("INVALID_ASSET", f"{name}.asset is required", field=f"{name}.asset")
    code = ACCOUNT_CODES.get(ref.code)
    if code is None:
        raise invalid("INVALID_ACCOUNT_CODE", f"{name}.code is required", field=f"{name}.code")
    if code in SYSTEM_CODES:
        if ref.owner_id:
            raise invalid("SYSTEM_ACCOUNT_HAS_NO_OWNER", f"{name}: system accounts have no owner_id")
    else:
        check_id(f"{name}.owner_id", ref.owner_id)
    return Ref(ref.owner_id, asset, code)


def transfer_code(value: int, name: str = "code") -> str:
    code = TRANSFER_CODES.get(value)
    if code is None:
        raise invalid("INVALID_TRANSFER_CODE", f"{name} is required", field=name)
    return code


def item_from_pb(spec: pb.TransferSpec, name: str = "transfer") -> Item:
    check_id(f"{name}.transfer_id", spec.transfer_id)
    debit = ref_from_pb(spec.debit, f"{name}.debit")
    credit = ref_from_pb(spec.credit, f"{name}.credit")
    if credit.code == WALLET:
        raise invalid("WALLET_NOT_CREDITABLE", "credit a concrete account, not USER_WALLET", field=f"{name}.credit")
    if debit.asset != credit.asset:
        raise invalid("ASSET_MISMATCH", "debit and credit must hold the same asset", field=f"{name}.credit.asset")
    same = debit == credit or (
        debit.code == WALLET and credit.owner_id == debit.owner_id and credit.code in SPENDABLE_CODES
    )
    if same:
        raise invalid("SAME_ACCOUNT", "debit and credit must differ", field=f"{name}.credit")
    check_amount(spec.amount, f"{name}.amount")
    code = transfer_code(spec.code, f"{name}.code")
    if code in REVERSAL_CODES:
        raise invalid("USE_REVERSE_TRANSFER", f"{code} transfers are made by ReverseTransfer", field=f"{name}.code")
    check_context(spec.context_type, spec.context_id, spec.counterparty_id)
    if not 0 <= spec.fee_bps <= 10_000:
        raise invalid("INVALID_FEE_BPS", "fee_bps must be between 0 and 10000", field=f"{name}.fee_bps")
    return Item(
        spec.transfer_id,
        debit,
        credit,
        spec.amount,
        code,
        spec.context_type,
        spec.context_id,
        spec.counterparty_id,
        spec.fee_bps,
    )
