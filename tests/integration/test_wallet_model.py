"""The Wallet against a simple in-memory model of the ledger (CONVENTIONS.md "Tests").

Hypothesis drives random sequences of transfers, linked and independent batches, holds, clock moves,
reversals and retries (the same request again, a reused id with other fields, the same request
twice at once) through the real gRPC service on a real PostgreSQL. Every answer must be the one the
model expects; after every step every user's balances must equal the model's and the audit must
prove the ledger balances; at the end of a run system accounts, holds and histories are compared
too. The model follows DESIGN.md "The ledger" and the API's documented answers; it imports nothing
from services/.

Hypothesis runs synchronously. The service lives in the session event loop (an async fixture), and
each step drives that loop with `run_until_complete`, so the server only runs while a step waits
for it: no threads, and the hold sweeper cannot race the model (it is also set to sleep an hour).
Each run has its own users; the database is shared by the module's runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as dt
import itertools
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import pytest
from google.protobuf.message import Message
from google.rpc import status_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from shared.clock import ControlledClock
from shared.errors import error_info
from shared.gen.fanbank.wallet.v1 import wallet_service_pb2 as pb
from shared.gen.fanbank.wallet.v1 import wallet_service_pb2_grpc as pb_grpc
from tests.harness import Caller, as_user, migrated_engine, running, settings_for

OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
REFUSED = grpc.StatusCode.FAILED_PRECONDITION
EXISTS = grpc.StatusCode.ALREADY_EXISTS

WALLET = "USER_WALLET"
PURCHASED = "USER_PURCHASED"
PROMOTIONAL = "USER_PROMOTIONAL"
EARNINGS = "CREATOR_EARNINGS"
USER_CODES = frozenset({PURCHASED, PROMOTIONAL, EARNINGS})
SYSTEM_CODES = ("PROVIDER_CLEARING", "PLATFORM_REVENUE", "PROMOTIONS", "PAYOUT_CLEARING", "ISSUANCE")
FUNDING_OF = {PURCHASED: "PURCHASED", PROMOTIONAL: "PROMOTIONAL"}
REVERSAL_CODES = ("REFUND", "CLAWBACK", "REVERSAL")

# Small pools, so that accounts collide (hot creators, empty wallets) in most sequences.
FANS = 3
CREATORS = 2
# Far beyond anything a sequence can accumulate: an item that must fail.
UNPAYABLE = 10**6
# Every hold lives at most this long; a run starts by moving the clock past it (see `_start`).
TTLS = (30, 60, 300)
# How far a clock move goes: relative to the next open hold's expiry (just before it, exactly to
# it, just past it), or a long way.
ADVANCES = ("before", "at", "past", "far")
ADMIN = "model-admin"
# Where a run starts on the shared clock: past every hold an earlier run left open.
RUN_CLOCK_GAP = dt.timedelta(days=1)

_RUNS = itertools.count()

Ref = tuple[str, str]  # (owner_id, account code); every account here holds TOKEN


class Refused(Exception):
    """What the model expects the service to refuse; `recorded` failures are replayed on retry."""

    def __init__(self, code: grpc.StatusCode, reason: str, recorded: bool = True):
        super().__init__(f"{code.name} {reason}")
        self.code = code
        self.reason = reason
        self.recorded = recorded


def insufficient() -> Refused:
    return Refused(REFUSED, "INSUFFICIENT_FUNDS")


@dataclass
class Posting:
    funding: str
    debit: Ref
    credit: Ref
    amount: int
    reversed: int = 0

    def view(self) -> tuple:
        return (self.debit, self.credit, self.amount, self.funding)


@dataclass
class Hold:
    account: Ref
    destination: Ref
    amount: int
    expires_at: int
    status: str = "OPEN"
    captured: int = 0


@dataclass
class Model:
    """The ledger as the design states it, in memory: balances, holds, reversible originals."""

    balances: dict[Ref, list[int]] = field(default_factory=dict)  # ref → [posted, pending]
    holds: dict[str, Hold] = field(default_factory=dict)
    originals: dict[tuple[str, str], list[list[Posting]]] = field(default_factory=dict)  # legs
    now: int = 0  # seconds since the run started

    def available(self, ref: Ref) -> int:
        posted, pending = self.balances[ref]
        return posted - pending

    def atomic(self, apply: Callable):
        """All or nothing: a refused operation leaves no trace."""
        saved = copy.deepcopy((self.balances, self.holds, self.originals))
        try:
            return apply()
        except Refused:
            self.balances, self.holds, self.originals = saved
            raise

    def find(self, refs: list[tuple[Ref, bool]]) -> None:
        """The accounts an operation may not create (a user's debit) must exist before it; a
        wallet needs one of its two halves."""
        for ref, creatable in refs:
            if creatable:
                continue
            if ref[1] == WALLET:
                if (ref[0], PROMOTIONAL) not in self.balances and (ref[0], PURCHASED) not in self.balances:
                    raise Refused(NOT_FOUND, "ACCOUNT_NOT_FOUND", recorded=False)
            elif ref not in self.balances:
                raise Refused(NOT_FOUND, "ACCOUNT_NOT_FOUND", recorded=False)

    def open(self, refs: list[tuple[Ref, bool]]) -> None:
        """Credits and system accounts come into being with the operation; inside `atomic`, so a
        refused operation creates none."""
        for ref, creatable in refs:
            if creatable:
                self.balances.setdefault(ref, [0, 0])

    def post(self, debit: Ref, credit: Ref, amount: int, overdraw: bool = False) -> None:
        if debit[1] in USER_CODES and not overdraw and self.available(debit) < amount:
            raise insufficient()
        self.balances[debit][0] -= amount
        self.balances[credit][0] += amount

    # ---- transfers ---------------------------------------------------------------------------

    @staticmethod
    def validate(debit: Ref, credit: Ref) -> None:
        same_wallet = debit[1] == WALLET and credit[0] == debit[0] and credit[1] in (PURCHASED, PROMOTIONAL)
        if debit == credit or same_wallet:
            raise Refused(INVALID, "SAME_ACCOUNT", recorded=False)

    @staticmethod
    def refs_of(items: list[tuple[Ref, Ref, int]]) -> list[tuple[Ref, bool]]:
        refs = []
        for debit, credit, _ in items:
            refs += [(debit, debit[1] not in USER_CODES and debit[1] != WALLET), (credit, True)]
        return refs

    def _item(self, debit: Ref, credit: Ref, amount: int) -> list[Posting]:
        if debit[1] == WALLET:
            promo, purchased = (debit[0], PROMOTIONAL), (debit[0], PURCHASED)
            # Promotional first; an account in debt (after a clawback) gives nothing.
            from_promo = min(amount, max(self.available(promo), 0)) if promo in self.balances else 0
            parts = [(promo, from_promo, "PROMOTIONAL"), (purchased, amount - from_promo, "PURCHASED")]
        else:
            parts = [(debit, amount, FUNDING_OF.get(debit[1], "NONE"))]
        postings = []
        for account, part, funding in parts:
            if not part:
                continue
            if account not in self.balances:
                raise insufficient()
            self.post(account, credit, part)
            postings.append(Posting(funding, account, credit, part))
        return postings

    def transfer(self, kind: str, key: str, items: list[tuple[Ref, Ref, int]]) -> list[list[tuple]]:
        """A single transfer (one item) or a linked batch: every item commits or none does."""
        for debit, credit, _ in items:
            self.validate(debit, credit)
        refs = self.refs_of(items)
        self.find(refs)

        def apply():
            self.open(refs)
            return [self._item(*item) for item in items]

        legs = self.atomic(apply)
        self.originals[(kind, key)] = legs
        return [[p.view() for p in leg] for leg in legs]

    def reverse(self, kind: str, key: str, code: str, legs: dict[int, int]) -> list[tuple[int, list[tuple]]]:
        original = self.originals.get((kind, key))
        if original is None:
            raise Refused(NOT_FOUND, "TRANSFER_NOT_FOUND", recorded=False)

        def apply():
            left = {i: sum(p.amount - p.reversed for p in leg) for i, leg in enumerate(original)}
            wanted = legs or left
            if set(wanted) - set(left):
                raise Refused(REFUSED, "UNKNOWN_LEG")
            if not any(wanted.values()):
                raise Refused(REFUSED, "NOTHING_LEFT_TO_REVERSE")
            reversals = []
            for i in sorted(wanted):
                if wanted[i] > left[i]:
                    raise Refused(REFUSED, "REVERSAL_EXCEEDS_REMAINING")
                if not wanted[i]:
                    continue
                remaining, postings = wanted[i], []
                # The last tokens drawn (purchased) are the first given back.
                for p in sorted(original[i], key=lambda p: p.funding == "PROMOTIONAL"):
                    take = min(remaining, p.amount - p.reversed)
                    if take <= 0:
                        continue
                    remaining -= take
                    p.reversed += take
                    self.post(p.credit, p.debit, take, overdraw=code == "CLAWBACK")
                    postings.append((p.credit, p.debit, take, p.funding))
                reversals.append((wanted[i], postings))
            return reversals

        return self.atomic(apply)

    def grant(self, owner: str, amount: int) -> list[tuple]:
        promo, pool = (owner, PROMOTIONAL), ("", "PROMOTIONS")
        self.open([(promo, True), (pool, True)])
        self.post(pool, promo, amount)
        return [(pool, promo, amount, "NONE")]

    def adjust(self, account: Ref, amount: int) -> list[tuple]:
        issuance = ("", "ISSUANCE")
        refs = [(account, amount > 0), (issuance, True)]
        self.find(refs)
        debit, credit = (issuance, account) if amount > 0 else (account, issuance)

        def apply():
            self.open(refs)
            self.post(debit, credit, abs(amount))

        self.atomic(apply)
        return [(debit, credit, abs(amount), FUNDING_OF.get(debit[1], "NONE"))]

    # ---- holds -------------------------------------------------------------------------------

    def create_hold(self, hold_id: str, account: Ref, destination: Ref, amount: int, ttl: int) -> None:
        if account == destination:
            raise Refused(INVALID, "SAME_ACCOUNT", recorded=False)
        refs = [(account, account[1] not in USER_CODES), (destination, True)]
        self.find(refs)

        def apply():
            self.open(refs)
            if account[1] in USER_CODES and self.available(account) < amount:
                raise Refused(REFUSED, "HOLD_EXCEEDS_AVAILABLE")
            self.balances[account][1] += amount
            self.holds[hold_id] = Hold(account, destination, amount, self.now + ttl)

        self.atomic(apply)

    def _expire(self, hold: Hold) -> None:
        hold.status = "EXPIRED"
        self.balances[hold.account][1] -= hold.amount

    def _open_hold(self, hold_id: str) -> Hold:
        hold = self.holds.get(hold_id)
        if hold is None:
            raise Refused(NOT_FOUND, "HOLD_NOT_FOUND", recorded=False)
        if hold.status == "OPEN" and hold.expires_at <= self.now:
            # Expiry is by time, not by the sweeper: the refusal itself resolves the hold.
            self._expire(hold)
        if hold.status == "EXPIRED":
            raise Refused(REFUSED, "HOLD_EXPIRED")
        if hold.status != "OPEN":
            raise Refused(REFUSED, f"HOLD_ALREADY_{hold.status}")
        return hold

    def capture(self, hold_id: str, amount: int) -> tuple:
        self._open_hold(hold_id)

        def apply():
            hold = self.holds[hold_id]
            taken = amount or hold.amount
            if taken > hold.amount:
                raise Refused(REFUSED, "CAPTURE_EXCEEDS_HOLD")
            self.balances[hold.account][1] -= hold.amount
            self.post(hold.account, hold.destination, taken)
            hold.status, hold.captured = "CAPTURED", taken
            return (hold.account, hold.destination, taken, FUNDING_OF.get(hold.account[1], "NONE"))

        return self.atomic(apply)

    def void(self, hold_id: str) -> None:
        hold = self._open_hold(hold_id)
        hold.status = "VOIDED"
        self.balances[hold.account][1] -= hold.amount

    def expire_due(self) -> list[str]:
        due = [key for key, hold in self.holds.items() if hold.status == "OPEN" and hold.expires_at <= self.now]
        for key in due:
            self._expire(self.holds[key])
        return due


# ---- the wire ----------------------------------------------------------------------------------


@dataclass
class Answer:
    response: Message | None = None
    code: grpc.StatusCode = OK
    status: status_pb2.Status | None = None

    @property
    def reason(self) -> str:
        info = error_info(self.status) if self.status is not None else None
        return info.reason if info else ""


@dataclass
class Recorded:
    """A request whose answer the service must give again for the same id."""

    method: str
    request: Message
    answer: Answer
    admin: bool = False


@dataclass
class Env:
    loop: asyncio.AbstractEventLoop
    wallet: pb_grpc.WalletServiceStub
    clock: ControlledClock

    def run(self, coroutine):
        return self.loop.run_until_complete(coroutine)


def account(ref: Ref) -> pb.AccountRef:
    return pb.AccountRef(owner_id=ref[0], code=pb.AccountCode.Value(f"ACCOUNT_CODE_{ref[1]}"), asset=pb.ASSET_TOKEN)


def ref_of(message: pb.AccountRef) -> Ref:
    return (message.owner_id, pb.AccountCode.Name(message.code).removeprefix("ACCOUNT_CODE_"))


def postings_of(transfer: pb.Transfer) -> list[tuple]:
    return [
        (ref_of(p.debit), ref_of(p.credit), p.amount, pb.Funding.Name(p.funding).removeprefix("FUNDING_"))
        for p in transfer.postings
    ]


def transfer_code(name: str) -> int:
    return pb.TransferCode.Value(f"TRANSFER_CODE_{name}")


def spec(transfer_id: str, debit: Ref, credit: Ref, amount: int, code: str) -> pb.TransferSpec:
    return pb.TransferSpec(
        transfer_id=transfer_id,
        debit=account(debit),
        credit=account(credit),
        amount=amount,
        code=transfer_code(code),
        context_type="model",
        context_id=transfer_id,
    )


def status_reason(status: status_pb2.Status) -> tuple[int, str]:
    info = error_info(status)
    return status.code, info.reason if info else ""


def attempt(apply: Callable):
    try:
        return apply()
    except Refused as refused:
        return refused


def changed(method: str, request: Message) -> tuple[Message, str]:
    """The same id with one field changed, and the reason the refusal must name."""
    request = type(request).FromString(request.SerializeToString())
    if method == "Transfer":
        request.transfer.amount += 1
        return request, "ID_REUSED_AMOUNT"
    if method == "BatchTransfer":
        request.transfers[0].amount += 1
        return request, "ID_REUSED_ITEMS"
    if method == "CreateHold":
        request.ttl_seconds += 1
        return request, "ID_REUSED_TTL_SECONDS"
    if method == "CaptureHold":
        request.amount += 1
        return request, "ID_REUSED_AMOUNT"
    if method == "VoidHold":
        request.hold_id += "-other"
        return request, "ID_REUSED_HOLD_ID"
    if method == "ReverseTransfer":
        name = pb.TransferCode.Name(request.code).removeprefix("TRANSFER_CODE_")
        request.code = transfer_code(REVERSAL_CODES[(REVERSAL_CODES.index(name) + 1) % len(REVERSAL_CODES)])
        return request, "ID_REUSED_CODE"
    if method == "GrantPromotion":
        request.amount += 1
        return request, "ID_REUSED_AMOUNT"
    if method == "AdjustBalance":
        request.amount *= 2
        return request, "ID_REUSED_AMOUNT"
    raise AssertionError(method)


# ---- strategies ------------------------------------------------------------------------------

FAN = st.integers(0, FANS - 1)
CREATOR = st.integers(0, CREATORS - 1)
# Mostly amounts a wallet can pay, about one in ten that no wallet here can; or an amount sized on
# what the paying account has available now (see `sized`), to hit the boundaries: all of it, one
# more, and for a wallet the promotional part alone or one more.
RELATIVE = ("half", "all", "one more", "promotional", "promotional + 1")
AMOUNT = st.one_of(st.integers(1, 66).map(lambda n: UNPAYABLE if n > 60 else n), st.sampled_from(RELATIVE))
PICK = st.integers(0, 10**6)
# Mostly something that exists (a hold that was made, a transfer that committed), sometimes anything
# tried so far, failures included.
EXISTING = st.integers(0, 4).map(bool)
DUP = st.booleans()
# Concrete accounts, by kind: ("fan", i, code), ("creator", j, code), ("system", 0, code).
CONCRETE = st.one_of(
    st.tuples(st.just("fan"), FAN, st.sampled_from([PURCHASED, PROMOTIONAL])),
    st.tuples(st.just("creator"), CREATOR, st.just(EARNINGS)),
    st.tuples(st.just("system"), st.just(0), st.sampled_from(["PLATFORM_REVENUE", "PAYOUT_CLEARING"])),
)
PAYEE = st.one_of(CREATOR, st.just(-1))  # -1: the platform's revenue
# Where holds reserve from: mostly fans' funded accounts.
HOLD_SOURCE = st.one_of(
    st.tuples(st.just("fan"), FAN, st.just(PURCHASED)),
    st.tuples(st.just("fan"), FAN, st.just(PROMOTIONAL)),
    st.tuples(st.just("creator"), CREATOR, st.just(EARNINGS)),
    st.tuples(st.just("system"), st.just(0), st.just("PLATFORM_REVENUE")),
)
SOMETIMES = st.integers(0, 3).map(lambda n: n == 0)
# Linked-batch item kinds: a gift, a fee, a creator's payout, a purchase.
BATCH_ITEM = st.tuples(st.sampled_from(["gift", "fee", "payout", "purchase"]), FAN, CREATOR, AMOUNT)
# A full reversal (None), or amounts on some legs: a leg pick of UNKNOWN_LEG names a leg one past
# the original's last, any other pick one of its legs.
UNKNOWN_LEG = 7
LEGS = st.one_of(
    st.none(), st.lists(st.tuples(st.integers(0, UNKNOWN_LEG), st.integers(1, 30)), min_size=1, max_size=3)
)


class WalletMachine(RuleBasedStateMachine):
    env: Env  # set by the test before Hypothesis builds machines

    def __init__(self):
        super().__init__()
        self.prefix = f"m{next(_RUNS)}"
        self.seq = itertools.count()
        self.model = Model()
        self.recorded: list[Recorded] = []
        self.targets: list[tuple[str, str]] = []  # what a reversal may name: (kind, key)
        self.hold_ids: list[str] = []
        self.env.run(self._start())

    async def _start(self) -> None:
        """A run owns fresh users; the system accounts are shared, so start from their figures."""
        await self.env.clock.advance(RUN_CLOCK_GAP)
        for _ in range(100):  # the holds earlier runs left open; bounded, each call expires ≤ 1000
            if (await self.env.wallet.ExpireHolds(pb.ExpireHoldsRequest())).expired_count < 1000:
                break
        for code in SYSTEM_CODES:
            answer = await self._call("GetAccount", pb.GetAccountRequest(account=account(("", code))))
            if answer.response is not None:
                self.model.balances[("", code)] = [answer.response.account.posted, answer.response.account.pending]

    # ---- names -------------------------------------------------------------------------------

    def new_id(self, kind: str) -> str:
        # Zero-padded so that ids sort in the order they were made.
        return f"{self.prefix}-{kind}{next(self.seq):05d}"

    def fan(self, i: int) -> str:
        return f"{self.prefix}-fan{i}"

    def creator(self, j: int) -> str:
        return f"{self.prefix}-creator{j}"

    def owners(self) -> list[str]:
        return [self.fan(i) for i in range(FANS)] + [self.creator(j) for j in range(CREATORS)]

    def concrete(self, choice: tuple[str, int, str]) -> Ref:
        kind, index, code = choice
        owner = {"fan": self.fan, "creator": self.creator}.get(kind, lambda _: "")(index)
        return (owner, code)

    def payee(self, j: int) -> Ref:
        return (self.creator(j), EARNINGS) if j >= 0 else ("", "PLATFORM_REVENUE")

    def sized(self, amount: int | str, debit: Ref) -> int:
        if isinstance(amount, int):
            return amount
        balances = self.model.balances
        parts = [(debit[0], PROMOTIONAL), (debit[0], PURCHASED)] if debit[1] == WALLET else [debit]
        have = [max(self.model.available(ref), 0) if ref in balances else 0 for ref in parts]
        promotional = have[0] if debit[1] == WALLET else sum(have)
        wanted = {
            "half": sum(have) // 2,
            "all": sum(have),
            "one more": sum(have) + 1,
            "promotional": promotional,
            "promotional + 1": promotional + 1,
        }[amount]
        return max(wanted, 1)

    # ---- calls -------------------------------------------------------------------------------

    async def _call(self, method: str, request: Message) -> Answer:
        try:
            return Answer(response=await getattr(self.env.wallet, method)(request))
        except grpc.aio.AioRpcError as error:
            return Answer(code=error.code(), status=rpc_status.from_call(error))

    def send(self, method: str, request: Message, dup: bool = False, admin: bool = False) -> Answer:
        """One call, or the same call twice at once: both must get the same answer."""

        async def go():
            async with as_user(ADMIN, "admin") if admin else contextlib.nullcontext():
                if not dup:
                    return await self._call(method, request)
                first, second = await asyncio.gather(self._call(method, request), self._call(method, request))
            assert first == second, f"concurrent duplicates of {method} answered differently:\n{first}\n{second}"
            return first

        return self.env.run(go())

    def expect(self, answer: Answer, outcome, what: str) -> None:
        if isinstance(outcome, Refused):
            assert (answer.code, answer.reason) == (outcome.code, outcome.reason), (
                f"{what}: expected {outcome}, got {answer.code.name} {answer.reason}"
            )
        else:
            assert answer.response is not None, f"{what}: expected success, got {answer.code.name} {answer.reason}"

    def submit(
        self,
        method: str,
        request: Message,
        outcome,
        dup: bool,
        check: Callable[[Message, object], None] | None = None,
        admin: bool = False,
    ) -> Answer:
        answer = self.send(method, request, dup, admin)
        self.expect(answer, outcome, method)
        if not isinstance(outcome, Refused) and check is not None:
            check(answer.response, outcome)
        if not isinstance(outcome, Refused) or outcome.recorded:
            self.recorded.append(Recorded(method, request, answer, admin))
        return answer

    def choose(self, tried: list, existing: list, pick: int, prefer_existing: bool):
        pool = existing if prefer_existing and existing else tried
        return pool[pick % len(pool)]

    # ---- transfers ---------------------------------------------------------------------------

    @initialize(
        purchases=st.lists(st.integers(0, 100), min_size=FANS, max_size=FANS),
        grants=st.lists(st.integers(0, 40), min_size=FANS, max_size=FANS),
        spender=FAN,
        reserved=st.integers(1, 10),
        payee=PAYEE,
        chargeback=st.booleans(),
        holds=st.lists(
            st.tuples(FAN, st.sampled_from([PURCHASED, PROMOTIONAL]), PAYEE, st.integers(1, 40), st.sampled_from(TTLS)),
            max_size=2,
        ),
    )
    def start(self, purchases, grants, spender, reserved, payee, chargeback, holds):
        """Every run starts from the same shape, drawn afresh, because Hypothesis enables only some
        rules in each run: fans with money (a 0 leaves that account missing: ACCOUNT_NOT_FOUND); a
        hold on one fan's promotional tokens, and one for a token more than is left; that fan
        spending the promotional tokens the hold leaves and one more, which must come from
        purchased; perhaps a chargeback of the fan's purchase, which the spend may have turned into
        debt; a short hold that a capture finds expired at the very second it expires; more holds."""
        bought_by = {}
        for fan, (bought, granted) in enumerate(zip(purchases, grants, strict=True)):
            if bought:
                bought_by[fan] = self._transfer(
                    ("", "PROVIDER_CLEARING"), (self.fan(fan), PURCHASED), bought, "PURCHASE", dup=False
                )
            if granted:
                self.fund_fan(fan, grant=True, amount=granted, dup=False)
        self.create_hold(("fan", spender, PROMOTIONAL), payee, reserved, max(TTLS), dup=False)
        self.create_hold(("fan", spender, PROMOTIONAL), payee, "one more", max(TTLS), dup=False)
        wallet = (self.fan(spender), WALLET)
        self._transfer(wallet, self.payee(payee), self.sized("promotional + 1", wallet), "GIFT", dup=False)
        if chargeback and spender in bought_by:
            self._reverse("TRANSFER", bought_by[spender], "CLAWBACK", {}, dup=False)
        self.create_hold(("system", 0, "PLATFORM_REVENUE"), payee, 1, min(TTLS), dup=False)
        self.advance_clock("at", observe="CaptureHold")
        for fan, code, payee, amount, ttl in holds:
            self.create_hold(("fan", fan, code), payee, amount, ttl, dup=False)

    def _transfer(self, debit: Ref, credit: Ref, amount: int, code: str, dup: bool) -> str:
        transfer_id = self.new_id("t")
        request = pb.TransferRequest(transfer=spec(transfer_id, debit, credit, amount, code))
        outcome = attempt(lambda: self.model.transfer("TRANSFER", transfer_id, [(debit, credit, amount)]))
        self.targets.append(("TRANSFER", transfer_id))

        def check(response: pb.TransferResponse, legs):
            t = response.transfer
            assert (t.transfer_id, ref_of(t.debit), ref_of(t.credit), t.amount) == (transfer_id, debit, credit, amount)
            assert postings_of(t) == legs[0], (postings_of(t), legs[0])

        self.submit("Transfer", request, outcome, dup, check)
        return transfer_id

    @rule(fan=FAN, grant=st.booleans(), amount=st.integers(1, 100), dup=DUP)
    def fund_fan(self, fan, grant, amount, dup):
        """Tokens enter: bought through the payment provider, or granted as a promotion."""
        if not grant:
            self._transfer(("", "PROVIDER_CLEARING"), (self.fan(fan), PURCHASED), amount, "PURCHASE", dup)
            return
        request = pb.GrantPromotionRequest(
            request_id=self.new_id("g"), owner_id=self.fan(fan), amount=amount, campaign_id="model"
        )
        outcome = attempt(lambda: self.model.grant(self.fan(fan), amount))

        def check(response: pb.GrantPromotionResponse, legs):
            assert postings_of(response.transfer) == legs, (postings_of(response.transfer), legs)

        self.submit("GrantPromotion", request, outcome, dup, check)

    @rule(
        debit=st.one_of(st.tuples(st.just("fan"), FAN, st.just(WALLET)), CONCRETE),
        credit=CONCRETE,
        amount=AMOUNT,
        dup=DUP,
    )
    def transfer(self, debit, credit, amount, dup):
        """A fan's wallet pays (promotional first, then purchased), or one account pays another."""
        debit = self.concrete(debit)
        code = "TIP" if debit[1] == WALLET else "SETTLEMENT"
        self._transfer(debit, self.concrete(credit), self.sized(amount, debit), code, dup)

    @rule(target_account=CONCRETE, amount=st.integers(-60, 60).filter(bool), dup=DUP)
    def adjust_balance(self, target_account, amount, dup):
        ref = self.concrete(target_account)
        if ref[1] not in USER_CODES:
            ref = (self.fan(0), PURCHASED)
        request = pb.AdjustBalanceRequest(
            request_id=self.new_id("a"), account=account(ref), amount=amount, reason="model correction"
        )
        outcome = attempt(lambda: self.model.adjust(ref, amount))

        def check(response: pb.AdjustBalanceResponse, legs):
            assert postings_of(response.transfer) == legs, (postings_of(response.transfer), legs)

        self.submit("AdjustBalance", request, outcome, dup, check, admin=True)

    # ---- batches -----------------------------------------------------------------------------

    def _batch_item(self, kind: str, fan: int, creator: int, amount: int | str) -> tuple[Ref, Ref, int, str]:
        wallet, earnings = (self.fan(fan), WALLET), (self.creator(creator), EARNINGS)
        # A creator with no earnings account yet would refuse most batches as ACCOUNT_NOT_FOUND
        # (an account a batch credits is not there for its own later items): pay the platform's.
        payer = earnings if earnings in self.model.balances else ("", "PLATFORM_REVENUE")
        debit, credit, code = {
            "gift": (wallet, earnings, "GIFT"),
            "fee": (wallet, ("", "PLATFORM_REVENUE"), "GIFT"),
            "payout": (payer, ("", "PAYOUT_CLEARING"), "PAYOUT"),
            "purchase": (("", "PROVIDER_CLEARING"), (self.fan(fan), PURCHASED), "PURCHASE"),
        }[kind]
        return debit, credit, self.sized(amount, debit), code

    @rule(items=st.lists(BATCH_ITEM, min_size=1, max_size=3), failing=SOMETIMES, dup=DUP)
    def linked_batch(self, items, failing, dup):
        items = [self._batch_item(*item) for item in items]
        if failing:
            items.append(self._batch_item("gift", 0, 0, UNPAYABLE))
        batch_id = self.new_id("b")
        ids = [f"{batch_id}-{i}" for i in range(len(items))]
        request = pb.BatchTransferRequest(
            batch_id=batch_id,
            mode=pb.BATCH_MODE_LINKED,
            transfers=[spec(tid, d, c, a, code) for tid, (d, c, a, code) in zip(ids, items, strict=True)],
        )
        outcome = attempt(lambda: self.model.transfer("BATCH", batch_id, [(d, c, a) for d, c, a, _ in items]))
        self.targets.append(("BATCH", batch_id))

        def check(response: pb.BatchTransferResponse, legs):
            assert [r.transfer_id for r in response.results] == ids
            assert [postings_of(r.transfer) for r in response.results] == legs

        self.submit("BatchTransfer", request, outcome, dup, check)

    @rule(
        payments=st.lists(st.tuples(FAN, PAYEE, AMOUNT), min_size=1, max_size=FANS, unique_by=lambda p: p[0]),
        failing=SOMETIMES,
        dup=DUP,
    )
    def independent_batch(self, payments, failing, dup):
        # One debit account per item: the items' outcomes then do not depend on the order the
        # ledger applies them in.
        if failing and len(payments) > 1:
            payments[0] = (payments[0][0], payments[0][1], UNPAYABLE)
        items = [
            ((self.fan(fan), WALLET), self.payee(payee), self.sized(amount, (self.fan(fan), WALLET)))
            for fan, payee, amount in payments
        ]
        ids = [self.new_id("i") for _ in items]
        request = pb.BatchTransferRequest(
            batch_id=self.new_id("ib"),
            mode=pb.BATCH_MODE_INDEPENDENT,
            transfers=[spec(tid, d, c, a, "TIP") for tid, (d, c, a) in zip(ids, items, strict=True)],
        )
        outcomes = [attempt(lambda tid=tid, item=item: self.model.transfer("TRANSFER", tid, [item])) for tid, item in zip(ids, items, strict=True)]  # fmt: skip
        self.targets += [("TRANSFER", tid) for tid in ids]
        answer = self.send("BatchTransfer", request, dup)
        assert answer.response is not None, f"independent batch refused: {answer.code.name} {answer.reason}"
        results = answer.response.results
        assert [r.transfer_id for r in results] == ids
        for result, outcome in zip(results, outcomes, strict=True):
            if isinstance(outcome, Refused):
                assert not result.HasField("transfer")
                assert status_reason(result.error) == (outcome.code.value[0], outcome.reason), (result, outcome)
            else:
                assert not result.HasField("error"), result.error
                assert postings_of(result.transfer) == outcome[0]
        if all(not isinstance(o, Refused) or o.recorded for o in outcomes):
            self.recorded.append(Recorded("BatchTransfer", request, answer))

    # ---- holds -------------------------------------------------------------------------------

    @rule(
        source=HOLD_SOURCE,
        destination=PAYEE,
        amount=st.one_of(st.integers(1, 40), st.sampled_from(RELATIVE)),
        ttl=st.sampled_from(TTLS),
        dup=DUP,
    )
    def create_hold(self, source, destination, amount, ttl, dup):
        hold_id = self.new_id("h")
        source = self.concrete(source)
        amount = self.sized(amount, source)
        # A fan's hold pays a creator or the platform, a creator's pays out, the platform's pays a
        # creator; the odd same-account hold is left to validation.
        destination = {
            PURCHASED: self.payee(destination),
            PROMOTIONAL: self.payee(destination),
            EARNINGS: ("", "PAYOUT_CLEARING") if destination else source,
            "PLATFORM_REVENUE": (self.creator(max(destination, 0)), EARNINGS),
        }[source[1]]
        request = pb.CreateHoldRequest(
            hold_id=hold_id,
            account=account(source),
            destination=account(destination),
            amount=amount,
            code=transfer_code("CALL_BLOCK"),
            context_type="model",
            context_id=hold_id,
            ttl_seconds=ttl,
        )
        outcome = attempt(lambda: self.model.create_hold(hold_id, source, destination, amount, ttl))
        self.hold_ids.append(hold_id)

        def check(response: pb.CreateHoldResponse, _):
            hold = response.hold
            assert (hold.status, hold.amount, hold.captured_amount) == (pb.HOLD_STATUS_OPEN, amount, 0)
            lifetime = hold.expire_time.ToDatetime() - hold.create_time.ToDatetime()
            assert lifetime == dt.timedelta(seconds=ttl), lifetime

        self.submit("CreateHold", request, outcome, dup, check)

    @precondition(lambda self: self.hold_ids)
    @rule(
        pick=PICK,
        existing=EXISTING,
        capture=st.sampled_from(["whole", "all", "part", "more", None]),  # None voids
        again=st.booleans(),
        dup=DUP,
    )
    def resolve_hold(self, pick, existing, capture, again, dup):
        """Capture (whole, part, or more than held) or void; `again` then tries the other way
        under a new request id: a hold resolves once."""
        holds = self.model.holds
        open_holds = [key for key, hold in holds.items() if hold.status == "OPEN"]
        hold_id = self.choose(self.hold_ids, open_holds or list(holds), pick, existing)
        if capture:
            held = holds[hold_id].amount if hold_id in holds else 1
            # "whole" sends 0 (the whole hold), "all" names the held amount itself.
            amount = {"whole": 0, "all": held, "part": max(held // 2, 1), "more": held + 1}[capture]
            self._capture(hold_id, amount, dup)
        else:
            self._void(hold_id, dup)
        if again and capture:
            self._void(hold_id, dup=False)
        elif again:
            self._capture(hold_id, 0, dup=False)

    def _capture(self, hold_id: str, amount: int, dup: bool) -> None:
        request = pb.CaptureHoldRequest(request_id=self.new_id("c"), hold_id=hold_id, amount=amount)
        outcome = attempt(lambda: self.model.capture(hold_id, amount))

        def check(response: pb.CaptureHoldResponse, posting):
            assert response.hold.status == pb.HOLD_STATUS_CAPTURED
            assert response.hold.captured_amount == posting[2] == response.transfer.amount
            assert postings_of(response.transfer) == [posting]

        self.submit("CaptureHold", request, outcome, dup, check)

    def _void(self, hold_id: str, dup: bool) -> None:
        request = pb.VoidHoldRequest(request_id=self.new_id("v"), hold_id=hold_id)
        outcome = attempt(lambda: self.model.void(hold_id))

        def check(response: pb.VoidHoldResponse, _):
            assert (response.hold.status, response.hold.captured_amount) == (pb.HOLD_STATUS_VOIDED, 0)

        self.submit("VoidHold", request, outcome, dup, check)

    @rule(to=st.sampled_from(ADVANCES), observe=st.sampled_from(["ExpireHolds", "CaptureHold", None]))
    def advance_clock(self, to, observe):
        """Time moves only here. Holds past their time expire when swept (ExpireHolds) or when
        someone tries to resolve one; until then they still reserve their amount."""
        model = self.model
        pending = [
            h.expires_at - model.now for h in model.holds.values() if h.status == "OPEN" and h.expires_at > model.now
        ]
        until = min(pending, default=max(TTLS))
        seconds = {"before": max(until - 1, 1), "at": until, "past": until + 1, "far": 2 * max(TTLS)}[to]
        self.env.run(self.env.clock.advance(dt.timedelta(seconds=seconds)))
        self.model.now += seconds
        if observe == "ExpireHolds":
            self._expire_holds()
        elif observe == "CaptureHold":
            due = [
                key
                for key, hold in self.model.holds.items()
                if hold.status == "OPEN" and hold.expires_at <= self.model.now
            ]
            if due:
                self._capture(due[0], 0, dup=False)

    def _expire_holds(self) -> None:
        due = self.model.expire_due()
        answer = self.send("ExpireHolds", pb.ExpireHoldsRequest())
        assert answer.response is not None and answer.response.expired_count == len(due), (answer, due)

    # ---- reversals -----------------------------------------------------------------------------

    @precondition(lambda self: self.targets)
    @rule(
        pick=PICK,
        existing=EXISTING,
        split=st.booleans(),
        code=st.sampled_from(REVERSAL_CODES),
        legs=LEGS,
        dup=DUP,
    )
    def reverse(self, pick, existing, split, code, legs, dup):
        originals = self.model.originals
        committed = list(originals)
        if code == "CLAWBACK":
            # A chargeback: take back a purchase, whose tokens the fan may have spent since.
            bought = ("", "PROVIDER_CLEARING")
            committed = [k for k, legs in originals.items() if legs[0][0].debit == bought] or committed
        elif split:
            # A wallet spend that drew on both accounts: what comes back, and in which order, matters.
            committed = [k for k, legs in originals.items() if any(len(leg) > 1 for leg in legs)] or committed
        kind, key = self.choose(self.targets, committed, pick, existing)
        count = len(self.model.originals.get((kind, key), [()]))
        wanted = {count if leg == UNKNOWN_LEG else leg % count: amount for leg, amount in legs or []}
        self._reverse(kind, key, code, wanted, dup)

    def _reverse(self, kind: str, key: str, code: str, wanted: dict[int, int], dup: bool) -> None:
        request = pb.ReverseTransferRequest(
            reversal_id=self.new_id("r"),
            code=transfer_code(code),
            legs=[pb.LegAmount(leg=leg, amount=amount) for leg, amount in sorted(wanted.items())],
            **{"transfer_id" if kind == "TRANSFER" else "batch_id": key},
        )
        outcome = attempt(lambda: self.model.reverse(kind, key, code, wanted))

        def check(response: pb.ReverseTransferResponse, reversals):
            got = [(t.amount, postings_of(t)) for t in response.transfers]
            assert got == reversals, (got, reversals)
            assert all(t.code == transfer_code(code) for t in response.transfers)

        self.submit("ReverseTransfer", request, outcome, dup, check)

    # ---- retries -----------------------------------------------------------------------------

    @precondition(lambda self: self.recorded)
    @rule(pick=PICK, failed=st.booleans(), top_up=st.booleans(), change=st.booleans(), dup=DUP)
    def retry(self, pick, failed, top_up, change, dup):
        """An earlier request with the same id: the same fields get the same answer, other fields
        ALREADY_EXISTS naming the first that differs."""
        # Recorded failures are few beside successes: pick among them on purpose.
        failures = [r for r in self.recorded if r.answer.code != OK]
        recorded = self.choose(self.recorded, failures, pick, failed)
        if top_up:
            # Now most refused payments would succeed if the ledger tried them again rather than
            # answering what it answered the first time.
            for fan in range(FANS):
                self.fund_fan(fan, grant=False, amount=200, dup=False)
        if change:
            self._retry_changed(recorded, pick)
        else:
            self._retry_same(recorded, dup)

    def _retry_same(self, recorded: Recorded, dup: bool) -> None:
        """Same id, same fields: the first answer again (a failure too), whatever changed since."""
        answer = self.send(recorded.method, recorded.request, dup, recorded.admin)
        assert answer == recorded.answer, f"{recorded.method} retry answered\n{answer}\nnot\n{recorded.answer}"

    def _retry_changed(self, recorded: Recorded, pick: int) -> None:
        if recorded.method == "BatchTransfer" and recorded.request.mode == pb.BATCH_MODE_INDEPENDENT:
            # Each item is its own idempotent transfer: only the changed item is refused.
            request = type(recorded.request).FromString(recorded.request.SerializeToString())
            which = pick % len(request.transfers)
            request.transfers[which].amount += 1
            answer = self.send("BatchTransfer", request)
            assert answer.response is not None
            for i, (got, before) in enumerate(zip(answer.response.results, recorded.answer.response.results, strict=True)):  # fmt: skip
                if i == which:
                    assert status_reason(got.error) == (EXISTS.value[0], "ID_REUSED_AMOUNT"), got
                else:
                    assert got == before, (got, before)
            return
        request, reason = changed(recorded.method, recorded.request)
        answer = self.send(recorded.method, request, admin=recorded.admin)
        assert (answer.code, answer.reason) == (EXISTS, reason), (recorded.method, answer.code, answer.reason)

    # ---- what must hold after every step -------------------------------------------------------

    @invariant()
    def ledger_equals_model(self):
        self.env.run(self._compare())

    async def _compare(self) -> None:
        owners = self.owners()
        # One round of concurrent reads: nothing writes while a step is being checked. System
        # accounts are read at teardown only: when every user account matches and each asset sums
        # to 0, the system accounts together match too.
        audit, *balances = await asyncio.gather(
            self.env.wallet.Audit(pb.AuditRequest()),
            *(self.env.wallet.GetBalance(pb.GetBalanceRequest(owner_id=o, asset=pb.ASSET_TOKEN)) for o in owners),
        )
        model = self.model.balances
        for owner, balance in zip(owners, balances, strict=True):
            got = {ref_of(a.ref): (a.posted, a.pending, a.available) for a in balance.accounts}
            want = {ref: (p, q, p - q) for ref, (p, q) in model.items() if ref[0] == owner}
            assert got == want, f"{owner}: ledger {got} != model {want}"
            spendable = [want.get((owner, code), (0, 0, 0)) for code in (PURCHASED, PROMOTIONAL)]
            assert balance.spendable_posted == sum(s[0] for s in spendable)
            assert balance.spendable_available == sum(s[2] for s in spendable)
        assert audit.ok, audit.violations
        for totals in audit.totals:  # none before the first account exists
            assert totals.posted_sum == 0, totals
            assert totals.pending_sum == totals.open_holds_sum, totals
        debts = {ref_of(d.account): d.amount for d in audit.debts if d.account.owner_id.startswith(f"{self.prefix}-")}
        owed = {ref: -p for ref, (p, _) in model.items() if ref[0] and p < 0}
        assert debts == owed, (debts, owed)

    def teardown(self):
        # Hypothesis tears a failed run down too, while its failure propagates: report that failure
        # alone, not the differences that follow from it.
        if sys.exc_info()[0] is None:
            self.env.run(self._final_checks())

    async def _final_checks(self) -> None:
        """System accounts, holds and histories, once per run (too many calls for every step)."""
        for code in SYSTEM_CODES:
            answer = await self._call("GetAccount", pb.GetAccountRequest(account=account(("", code))))
            got = (answer.response.account.posted, answer.response.account.pending) if answer.response else None
            want = tuple(self.model.balances[("", code)]) if ("", code) in self.model.balances else None
            assert got == want, f"{code}: ledger {got} != model {want}"
        for hold_id in self.hold_ids:
            answer = await self._call("GetHold", pb.GetHoldRequest(hold_id=hold_id))
            hold = self.model.holds.get(hold_id)
            if hold is None:
                assert (answer.code, answer.reason) == (NOT_FOUND, "HOLD_NOT_FOUND"), answer
                continue
            got = answer.response.hold
            status = pb.HoldStatus.Name(got.status).removeprefix("HOLD_STATUS_")
            assert (status, got.captured_amount) == (hold.status, hold.captured), (hold_id, got, hold)
        for owner in self.owners():
            entries = []
            token = ""
            for _ in range(100):  # bounded: a run writes far fewer than 100 pages
                page = await self.env.wallet.ListEntries(
                    pb.ListEntriesRequest(owner_id=owner, asset=pb.ASSET_TOKEN, page_size=500, page_token=token)
                )
                entries += page.entries
                token = page.next_page_token
                if not token:
                    break
            for ref, (posted, _) in self.model.balances.items():
                if ref[0] != owner:
                    continue
                mine = [e for e in entries if ref_of(e.account) == ref]  # newest first
                assert sum(e.amount for e in mine) == posted, (ref, posted)
                assert (mine[0].balance_after if mine else 0) == posted, (ref, posted)


MODEL_SETTINGS = settings(
    # Many short runs rather than a few long ones: each run enables only some rules (Hypothesis's
    # swarm testing), so more runs mix more of them.
    max_examples=60,
    stateful_step_count=12,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.fixture(scope="module")
async def wallet_env(database_url):
    # The sweeper would expire holds whenever the loop runs; the model expires them only when the
    # test asks (ExpireHolds, or resolving a hold past its time).
    config = settings_for(database_url, wallet_hold_sweep_ms=3_600_000)
    # Room for a step's concurrent reads (five balances and the audit) at once.
    engine = await migrated_engine(config, pool_size=8)
    async with running("wallet", config, engine) as (target, _):
        caller = Caller(config, target)
        yield Env(asyncio.get_running_loop(), caller.wallet, ControlledClock(engine))
        await caller.close()
    await engine.dispose()


def test_wallet_matches_model(wallet_env):
    WalletMachine.env = wallet_env
    run_state_machine_as_test(WalletMachine, settings=MODEL_SETTINGS)
