"""Crash-safety storm: two Wallet OS processes on one database, one of them killed mid-storm.

Fifty clients send 20,000 tips — a third of them to one hot creator — through unary Transfer and
independent BatchTransfer calls, alternating between the two processes, and mix in re-sends of ids
already sent (some still in flight elsewhere). A quarter of the way in, one process gets SIGKILL
and is restarted on its port. A request whose outcome is unknown is re-sent with the same id until
its answer is definite, so afterwards the ledger must hold exactly what the clients saw
acknowledged: nothing lost, nothing applied twice, every re-send answered identically.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from google.rpc import status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from sqlalchemy import text

from services.wallet import model
from services.wallet.ledger import Ledger
from services.wallet.model import Op
from shared import client
from shared.config import REPO
from shared.errors import error_info
from shared.gen.fanbank.wallet.v1 import wallet_service_pb2 as pb
from shared.gen.fanbank.wallet.v1 import wallet_service_pb2_grpc as wallet_grpc
from tests.harness import free_port, migrated_engine, settings_for

pytestmark = pytest.mark.slow

CLIENTS = 50
TRANSFERS = 20_000
HOT = "creator-hot"
CREATORS = [f"creator-{i:02d}" for i in range(20)]
FANS = [f"fan-{i:03d}" for i in range(300)]
# About 30% of the transfers go through independent batches, the rest through unary Transfer.
BATCH_ITEMS = 6
BATCH_SHARE = 0.06
RESEND_SHARE = 0.1
# Late enough that both processes are busy, early enough that the restarted one serves a long tail.
KILL_AFTER_ANSWERS = TRANSFERS // 4
MAX_SENDS_PER_REQUEST = 50
CALL_DEADLINE_SECONDS = 10.0
STORM_LIMIT_SECONDS = 300
STOP_LIMIT_SECONDS = 30
UNKNOWN_OUTCOME = frozenset({grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})
UNKNOWN_CODES = frozenset(code.value[0] for code in UNKNOWN_OUTCOME)
REFUSED = (grpc.StatusCode.FAILED_PRECONDITION.value[0], "INSUFFICIENT_FUNDS")


def ref(owner: str, code: int) -> pb.AccountRef:
    return pb.AccountRef(owner_id=owner, code=code, asset=pb.ASSET_TOKEN)


def funding_plan() -> dict[str, tuple[int, int]]:
    """fan → (purchased, promotional). Every sixth fan is underfunded, so refusals are common; half
    of those hold only promotional tokens (their USER_PURCHASED account never exists)."""
    plan = {}
    for i, fan in enumerate(FANS):
        if i % 12 == 0:
            plan[fan] = (0, 25)
        elif i % 6 == 0:
            plan[fan] = (30, 0)
        else:
            plan[fan] = (1500, 500 if i % 2 else 0)
    return plan


class WalletProcess:
    """`python -m shared.cli serve wallet` on a fixed port, as a deployment runs it."""

    def __init__(self, database_url: str, port: int, log_path: Path):
        self.port = port
        self.target = f"127.0.0.1:{port}"
        self.log_path = log_path
        self.env = {**os.environ, "FANBANK_DATABASE_URL": database_url, "FANBANK_LOG_LEVEL": "WARNING"}
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "shared.cli", "serve", "wallet", "--port", str(self.port),
                env=self.env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        await self._until_serving()

    async def _until_serving(self) -> None:
        options = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 200)]
        async with grpc.aio.insecure_channel(self.target, options=options) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for _ in range(120):
                assert self.proc.returncode is None, f"wallet on {self.target} exited early:\n{self.log_tail()}"
                try:
                    reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=0.5, wait_for_ready=True)
                except grpc.aio.AioRpcError as error:
                    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED, error
                    continue
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
        raise AssertionError(f"wallet on {self.target} never became SERVING:\n{self.log_tail()}")

    async def kill(self) -> int:
        self.proc.kill()
        return await asyncio.wait_for(self.proc.wait(), STOP_LIMIT_SECONDS)

    async def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), STOP_LIMIT_SECONDS)

    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


# A refusal as (code, message, reason, domain, metadata): an ErrorInfo's metadata is a map, whose
# serialized order — and so the packed Any's bytes — may differ between two sends of one answer.
Refusal = tuple[int, str, str, str, tuple[tuple[str, str], ...]]
Answer = pb.Transfer | Refusal


@dataclass(repr=False)
class Book:
    """What the clients sent and were told; the ledger must end up agreeing with it."""

    specs: dict[str, pb.TransferSpec] = field(default_factory=dict)
    sent: list[str] = field(default_factory=list)
    answers: dict[str, Answer] = field(default_factory=dict)
    earned: Counter = field(default_factory=Counter)
    spent: Counter = field(default_factory=Counter)
    acknowledged: int = 0
    refused: int = 0
    postings: int = 0
    resends: int = 0
    repeated_answers: int = 0
    unknown: int = 0
    # Unknown outcomes the server itself declared (an ErrorInfo, e.g. LEDGER_UNAVAILABLE), as opposed
    # to the transport losing a call: nothing in this storm justifies one.
    declared_unavailable: Counter = field(default_factory=Counter)
    calls: int = 0
    served_by_restarted: int = 0
    restarted: bool = False
    kill_now: asyncio.Event = field(default_factory=asyncio.Event)

    def new_spec(self, rng: random.Random) -> pb.TransferSpec:
        number = len(self.specs)
        creator = HOT if number % 3 == 0 else rng.choice(CREATORS)
        spec = pb.TransferSpec(
            transfer_id=f"tip-{number:05d}", debit=ref(rng.choice(FANS), pb.ACCOUNT_CODE_USER_WALLET),
            credit=ref(creator, pb.ACCOUNT_CODE_CREATOR_EARNINGS), amount=rng.randint(1, 25),
            code=pb.TRANSFER_CODE_TIP, context_type="stream", context_id=f"live-{creator}", counterparty_id=creator,
        )  # fmt: skip
        self.specs[spec.transfer_id] = spec
        self.sent.append(spec.transfer_id)
        return spec

    def unknown_outcome(self, status: status_pb2.Status | None) -> None:
        self.unknown += 1
        info = error_info(status) if status is not None else None
        if info is not None:
            self.declared_unavailable[info.reason] += 1

    def settle(self, transfer_id: str, answer: Answer) -> None:
        first = self.answers.setdefault(transfer_id, answer)
        if first is not answer:
            assert first == answer, f"{transfer_id} answered differently:\nfirst {first}\nthen {answer}"
            self.repeated_answers += 1
            return
        spec = self.specs[transfer_id]
        if isinstance(answer, pb.Transfer):
            assert sum(p.amount for p in answer.postings) == spec.amount, answer
            self.acknowledged += 1
            self.postings += len(answer.postings)
            self.earned[spec.credit.owner_id] += spec.amount
            self.spent[spec.debit.owner_id] += spec.amount
        else:
            self.refused += 1
        if len(self.answers) >= KILL_AFTER_ANSWERS:
            self.kill_now.set()


def refusal(status: status_pb2.Status) -> Refusal:
    """The only definite refusal this storm can earn; anything else is a bug worth failing on."""
    info = error_info(status)
    assert info is not None and (status.code, info.reason) == REFUSED, f"unexpected answer: {status}"
    return status.code, status.message, info.reason, info.domain, tuple(sorted(info.metadata.items()))


class StormClient:
    """One caller with a channel to each process; consecutive sends go to alternate processes, so a
    re-send after an unknown outcome lands on the other one."""

    def __init__(self, index: int, settings, targets: list[str], book: Book):
        self.channels = [
            client.channel(settings, target, identity="platform", deadline_seconds=CALL_DEADLINE_SECONDS)
            for target in targets
        ]
        self.stubs = [wallet_grpc.WalletServiceStub(channel) for channel in self.channels]
        self.turn = index % 2
        self.rng = random.Random(index)
        self.book = book

    def next_stub(self) -> tuple[int, wallet_grpc.WalletServiceStub]:
        which = self.turn
        self.turn ^= 1
        self.book.calls += 1
        return which, self.stubs[which]

    def _served(self, which: int) -> None:
        if which == 1 and self.book.restarted:
            self.book.served_by_restarted += 1

    async def transfer(self, spec: pb.TransferSpec) -> None:
        for _ in range(MAX_SENDS_PER_REQUEST):
            which, stub = self.next_stub()
            try:
                reply = await stub.Transfer(pb.TransferRequest(transfer=spec))
            except grpc.aio.AioRpcError as error:
                if error.code() in UNKNOWN_OUTCOME:
                    self.book.unknown_outcome(rpc_status.from_call(error))
                    continue
                status = rpc_status.from_call(error) or status_pb2.Status(
                    code=error.code().value[0], message=error.details()
                )
                self.book.settle(spec.transfer_id, refusal(status))
                return
            self._served(which)
            self.book.settle(spec.transfer_id, reply.transfer)
            return
        raise AssertionError(f"{spec.transfer_id}: no definite answer after {MAX_SENDS_PER_REQUEST} sends")

    async def batch(self, batch_id: str, specs: list[pb.TransferSpec]) -> None:
        pending = specs
        for _ in range(MAX_SENDS_PER_REQUEST):
            which, stub = self.next_stub()
            request = pb.BatchTransferRequest(batch_id=batch_id, mode=pb.BATCH_MODE_INDEPENDENT, transfers=pending)
            try:
                reply = await stub.BatchTransfer(request)
            except grpc.aio.AioRpcError as error:
                assert error.code() in UNKNOWN_OUTCOME, f"{batch_id}: {error.code()} {error.details()}"
                self.book.unknown_outcome(rpc_status.from_call(error))
                continue
            self._served(which)
            assert [r.transfer_id for r in reply.results] == [s.transfer_id for s in pending], reply
            unsettled = []
            for spec, result in zip(pending, reply.results, strict=True):
                if result.HasField("transfer"):
                    self.book.settle(spec.transfer_id, result.transfer)
                elif result.error.code in UNKNOWN_CODES:
                    self.book.unknown_outcome(result.error)
                    unsettled.append(spec)
                else:
                    self.book.settle(spec.transfer_id, refusal(result.error))
            pending = unsettled
            if not pending:
                return
        raise AssertionError(f"{batch_id}: no definite answer for {len(pending)} items")

    def _resend_pick(self) -> pb.TransferSpec:
        self.book.resends += 1
        return self.book.specs[self.rng.choice(self.book.sent)]

    async def run(self, index: int, quota: int) -> None:
        made = batches = 0
        while made < quota:
            roll = self.rng.random()
            if roll < RESEND_SHARE and self.book.sent:
                await self.transfer(self._resend_pick())
            elif roll < RESEND_SHARE + BATCH_SHARE:
                resend = self._resend_pick() if self.book.sent else None
                specs = [self.book.new_spec(self.rng) for _ in range(min(BATCH_ITEMS, quota - made))]
                made += len(specs)
                if resend is not None:
                    specs.insert(self.rng.randrange(len(specs) + 1), resend)
                batches += 1
                await self.batch(f"batch-{index:02d}-{batches:03d}", specs)
            else:
                await self.transfer(self.book.new_spec(self.rng))
                made += 1

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()


async def settle_funding(caller: StormClient, fan: str, purchased: int, promotional: int) -> int:
    """Funds one fan through either process, re-sending until the outcome is definite."""
    requests = []
    if purchased:
        buy = pb.TransferSpec(
            transfer_id=f"buy-{fan}", debit=ref("", pb.ACCOUNT_CODE_PROVIDER_CLEARING),
            credit=ref(fan, pb.ACCOUNT_CODE_USER_PURCHASED), amount=purchased, code=pb.TRANSFER_CODE_PURCHASE,
        )  # fmt: skip
        requests.append(("Transfer", pb.TransferRequest(transfer=buy)))
    if promotional:
        grant = pb.GrantPromotionRequest(
            request_id=f"promo-{fan}", owner_id=fan, amount=promotional, campaign_id="storm"
        )
        requests.append(("GrantPromotion", grant))
    for method, request in requests:
        for _ in range(MAX_SENDS_PER_REQUEST):
            _, stub = caller.next_stub()
            try:
                await getattr(stub, method)(request)
                break
            except grpc.aio.AioRpcError as error:
                assert error.code() in UNKNOWN_OUTCOME, f"funding {fan}: {error.code()} {error.details()}"
        else:
            raise AssertionError(f"funding {fan}: no definite answer")
    return purchased + promotional


async def chaos(book: Book, victim: WalletProcess) -> None:
    await book.kill_now.wait()
    assert await victim.kill() == -signal.SIGKILL
    await victim.start()
    book.restarted = True


async def check_ledger(engine, callers: list[StormClient], book: Book, funded: dict[str, int]) -> None:
    for stub in callers[0].stubs:
        audit = await stub.Audit(pb.AuditRequest())
        assert audit.ok, audit
        assert [(t.asset, t.posted_sum) for t in audit.totals] == [(pb.ASSET_TOKEN, 0)], audit

    owners = [HOT, *CREATORS, *FANS]
    balances = await asyncio.gather(
        *(
            callers[i % len(callers)].stubs[i % 2].GetBalance(pb.GetBalanceRequest(owner_id=o))
            for i, o in enumerate(owners)
        )
    )
    for owner, balance in zip(owners, balances, strict=True):
        if owner in funded:
            expected = funded[owner] - book.spent[owner]
            assert (balance.spendable_posted, balance.spendable_available) == (expected, expected), balance
        else:
            earnings = sum(a.posted for a in balance.accounts if a.ref.code == pb.ACCOUNT_CODE_CREATOR_EARNINGS)
            assert earnings == book.earned[owner], (owner, earnings, book.earned[owner])

    async with engine.connect() as conn:
        duplicates = (
            await conn.execute(
                text("SELECT scope, kind, key, count(*) FROM wallet.operations GROUP BY 1, 2, 3 HAVING count(*) > 1")
            )
        ).all()
        assert duplicates == []
        tip_rows = await conn.scalar(text("SELECT count(*) FROM wallet.transfers WHERE code = 'TIP'"))
        assert tip_rows == book.postings
        # Every tip id has exactly one stored answer, and it agrees with what the clients were told.
        outcomes = dict(
            (
                await conn.execute(
                    text(
                        "SELECT ok, count(*) FROM wallet.operations"
                        " WHERE scope = 'service:platform' AND kind = 'TRANSFER' AND key LIKE 'tip-%' GROUP BY ok"
                    )
                )
            ).all()
        )
        assert outcomes == {True: book.acknowledged, False: book.refused}
        applied = await conn.scalar(
            text(
                "SELECT count(DISTINCT (t.operation_id, t.leg)) FROM wallet.transfers t"
                " JOIN wallet.operations o ON o.id = t.operation_id WHERE t.code = 'TIP'"
            )
        )
        assert applied == book.acknowledged


@pytest.fixture(scope="module")
async def engine(database_url):
    """Migrates the module's database (shared.db.migrate) and serves the tests' own SQL checks."""
    engine = await migrated_engine(settings_for(database_url), pool_size=2)
    yield engine
    await engine.dispose()


async def test_storm_survives_a_killed_process(database_url, engine, tmp_path):
    settings = settings_for(database_url)
    plan = funding_plan()
    processes = [WalletProcess(database_url, free_port(), tmp_path / f"wallet-{i}.log") for i in range(2)]
    book = Book()
    callers: list[StormClient] = []
    try:
        await asyncio.gather(*(p.start() for p in processes))
        targets = [p.target for p in processes]
        callers = [StormClient(i, settings, targets, book) for i in range(CLIENTS)]

        funded_amounts = await asyncio.gather(
            *(settle_funding(callers[i % CLIENTS], fan, *plan[fan]) for i, fan in enumerate(FANS))
        )
        funded = dict(zip(FANS, funded_amounts, strict=True))

        quotas = [TRANSFERS // CLIENTS + (i < TRANSFERS % CLIENTS) for i in range(CLIENTS)]
        started = time.perf_counter()
        # A task group, so the first failure stops every other client instead of leaving them retrying.
        async with asyncio.timeout(STORM_LIMIT_SECONDS), asyncio.TaskGroup() as storm:
            storm.create_task(chaos(book, processes[1]))
            for i, (caller, quota) in enumerate(zip(callers, quotas, strict=True)):
                storm.create_task(caller.run(i, quota))
        storm_seconds = time.perf_counter() - started
        served_by_restarted = book.served_by_restarted
        print(
            f"\nwallet storm: {TRANSFERS} transfers in {storm_seconds:.1f} s ({TRANSFERS / storm_seconds:.0f}/s),"
            f" {book.calls} calls, {book.acknowledged} acknowledged, {book.refused} refused, {book.resends} re-sends,"
            f" {book.unknown} unknown outcomes re-sent, {served_by_restarted} answered by the restarted process"
        )

        assert len(book.specs) == TRANSFERS
        assert len(book.answers) == TRANSFERS, "every id sent has a definite answer"
        assert book.acknowledged + book.refused == TRANSFERS
        assert book.refused > 0 and book.acknowledged > 0
        assert book.repeated_answers > 0
        assert book.unknown > 0, "the kill left some outcomes unknown"

        # Both processes, the restarted one included, answer old ids exactly as the storm was answered.
        sample = random.Random(0).sample(sorted(book.specs), 400)
        resend = StormClient(0, settings, targets, book)
        callers.append(resend)
        before = book.repeated_answers
        await asyncio.gather(*(resend.transfer(book.specs[tid]) for tid in sample))
        assert book.repeated_answers - before == len(sample)

        await check_ledger(engine, callers, book, funded)

        for caller in callers:
            await caller.close()
        callers = []
        for process in processes:
            assert await process.terminate() == 0, process.log_tail()
        declared = dict(book.declared_unavailable)
        assert not declared, (
            f"the servers declared outcomes unknown {declared} though nothing failed;"
            f" their logs:\n{processes[0].log_tail(1500)}\n{processes[1].log_tail(1500)}"
        )
    finally:
        for caller in callers:
            await caller.close()
        for process in processes:
            if process.running():
                await process.kill()


async def test_resend_in_the_same_commit_batch_gets_the_same_answer(engine):
    """A re-send that races its original into one group-commit batch is answered from the original
    (a follower of the batch's leader) — with the original's answer, not LEDGER_UNAVAILABLE."""
    ledger = Ledger(engine, batch_max=10, committers=1)
    spec = pb.TransferSpec(
        transfer_id="same-batch-1", debit=ref("", pb.ACCOUNT_CODE_PROVIDER_CLEARING),
        credit=ref("same-batch-fan", pb.ACCOUNT_CODE_USER_PURCHASED), amount=7, code=pb.TRANSFER_CODE_PURCHASE,
    )  # fmt: skip
    item = model.item_from_pb(spec)
    op = Op("service:platform", "TRANSFER", item.transfer_id, item.fields(), item)
    sends = [asyncio.create_task(ledger.submit(op)) for _ in range(3)]
    # Started after the sends were scheduled, the one committer finds all three queued together.
    ledger.start()
    try:
        answers = await asyncio.wait_for(asyncio.gather(*sends, return_exceptions=True), STOP_LIMIT_SECONDS)
    finally:
        await ledger.stop()
    assert not [a for a in answers if isinstance(a, BaseException)], answers
    assert answers[0] == answers[1] == answers[2]
    first = answers[0] if isinstance(answers[0], pb.Transfer) else pb.Transfer.FromString(answers[0])
    assert first.amount == 7
