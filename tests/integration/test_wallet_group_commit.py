"""Group commit: a batch of concurrent transfers costs the same number of SQL statements whatever its
size (DESIGN.md "Hot accounts": one transaction per batch, set-based statements, no per-item loop).

The ledger is driven directly, without gRPC, so that every transfer submitted at once lands in one
batch: one committer, a batch limit above the largest batch, and submissions gathered in one go.
"""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from sqlalchemy import text

from services.wallet import model, queries
from services.wallet.ledger import Ledger
from services.wallet.model import HoldSpec, Item, Op, Ref
from shared.gen.fanbank.wallet.v1 import wallet_service_pb2 as pb
from tests.harness import migrated_engine, settings_for

SCOPE = "service:test"
CREATOR = "hot-creator"
SIZES = (1, 10, 100, 500)
PURCHASED_PER_FAN = 10
PROMOTIONAL_PER_FAN = 2
TIP = 3  # more than the promotional tokens: every tip is two postings (promotional, purchased)


class StatementLog:
    """Statements per database transaction, seen at the driver (the ledger drives psycopg directly):
    every cursor execute, grouped by connection until that connection commits or rolls back."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.transactions: list[list[str]] = []
        self._open: dict[int, list[str]] = {}
        execute, commit, rollback = (
            psycopg.AsyncCursor.execute,
            psycopg.AsyncConnection.commit,
            psycopg.AsyncConnection.rollback,
        )
        log = self

        async def logged_execute(cursor, query, *args, **kwargs):
            log._open.setdefault(id(cursor.connection), []).append(str(query))
            return await execute(cursor, query, *args, **kwargs)

        def ending(original):
            async def end(connection):
                statements = log._open.pop(id(connection), None)
                if statements is not None:
                    log.transactions.append(statements)
                return await original(connection)

            return end

        monkeypatch.setattr(psycopg.AsyncCursor, "execute", logged_execute)
        monkeypatch.setattr(psycopg.AsyncConnection, "commit", ending(commit))
        monkeypatch.setattr(psycopg.AsyncConnection, "rollback", ending(rollback))

    def clear(self) -> None:
        self.transactions.clear()
        self._open.clear()


@pytest.fixture(scope="module")
async def ledger(database_url):
    engine = await migrated_engine(settings_for(database_url))
    ledger = Ledger(engine, batch_max=1000, committers=1)
    ledger.start()
    yield ledger
    await ledger.stop()
    await engine.dispose()


def transfer_op(key: str, debit: Ref, credit: Ref, amount: int, code: str) -> Op:
    item = Item(key, debit, credit, amount, code, "stream", "s-1", CREATOR if code == "TIP" else "", 0)
    return Op(SCOPE, "TRANSFER", key, item.fields(), item)


def tip_op(fan: str) -> Op:
    return transfer_op(f"tip-{fan}", Ref(fan, "TOKEN", model.WALLET), Ref(CREATOR, "TOKEN", model.EARNINGS), TIP, "TIP")


def hold_op(fan: str) -> Op:
    account = Ref(fan, "TOKEN", model.PURCHASED)
    spec = HoldSpec(f"hold-{fan}", account, Ref(CREATOR, "TOKEN", model.EARNINGS), 1, "CALL_BLOCK", "call", "c-1", 60)
    fields = {"account": account.as_list(), "amount": 1, "ttl_seconds": 60}
    return Op(SCOPE, "HOLD", spec.hold_id, fields, spec)


async def submit_all(ledger: Ledger, ops: list[Op]) -> list[pb.Transfer]:
    answers = await asyncio.gather(*(ledger.submit(op) for op in ops))
    return [answer if isinstance(answer, pb.Transfer) else pb.Transfer.FromString(answer) for answer in answers]


async def fund(ledger: Ledger, fans: list[str]) -> None:
    """Gives each fan purchased and promotional tokens; the first batch naming an account creates it."""
    ops = []
    for fan in fans:
        ops.append(
            transfer_op(
                f"buy-{fan}",
                Ref("", "TOKEN", "PROVIDER_CLEARING"),
                Ref(fan, "TOKEN", model.PURCHASED),
                PURCHASED_PER_FAN,
                "PURCHASE",
            )
        )
        ops.append(
            transfer_op(
                f"bonus-{fan}",
                Ref("", "TOKEN", model.PROMOTIONS),
                Ref(fan, "TOKEN", model.PROMOTIONAL),
                PROMOTIONAL_PER_FAN,
                "BONUS",
            )
        )
    await submit_all(ledger, ops)


async def test_statements_per_batch_do_not_grow_with_its_size(ledger, monkeypatch):
    warm_fan = "fan-warm"
    await fund(ledger, [warm_fan])
    await submit_all(ledger, [tip_op(warm_fan)])  # creates the creator's earnings account

    log = StatementLog(monkeypatch)
    statements: dict[int, int] = {}
    reported: dict[int, int] = {}  # the ledger's own count, as a cross-check of the listener
    try:
        for size in SIZES:
            fans = [f"fan-{size}-{i}" for i in range(size)]
            await fund(ledger, fans)
            log.clear()
            transfers = await submit_all(ledger, [tip_op(fan) for fan in fans])

            batches = [t for t in log.transactions if any("INSERT INTO wallet.operations" in s for s in t)]
            assert len(batches) == 1, f"{size} concurrent transfers did not coalesce into one batch"
            assert log.transactions == batches, "accounts are resolved before, not per item"
            statements[size] = len(batches[0])
            reported[size] = ledger.statements_in_last_batch
            assert [t.amount for t in transfers] == [TIP] * size
            assert all(
                [(p.funding, p.amount) for p in t.postings]
                == [(pb.FUNDING_PROMOTIONAL, PROMOTIONAL_PER_FAN), (pb.FUNDING_PURCHASED, TIP - PROMOTIONAL_PER_FAN)]
                for t in transfers
            )
    finally:
        monkeypatch.undo()

    assert len(set(statements.values())) == 1, f"statements per batch by size: {statements}"
    assert len(set(reported.values())) == 1, f"statements the ledger counted by size: {reported}"

    tips = 1 + sum(SIZES)
    async with ledger.engine.connect() as conn:
        earned = await conn.scalar(
            text("SELECT posted FROM wallet.accounts WHERE owner_id = :o AND code = 'CREATOR_EARNINGS'"),
            {"o": CREATOR},
        )
        tip_postings = await conn.scalar(text("SELECT count(*) FROM wallet.transfers WHERE code = 'TIP'"))
    assert earned == TIP * tips
    assert tip_postings == 2 * tips
    audit = await queries.audit(ledger.engine)
    assert audit.ok, audit.violations


async def test_two_processes_writing_the_same_ids_at_once_apply_each_once(ledger, monkeypatch):
    """Two ledgers (as in two Wallet processes) both find the same ids unused and apply them: the
    second to write its idempotency rows (or its holds) finds the first's, rolls its batch back and
    answers the first's result. Each tip is charged once, each hold made once, and both callers get
    byte-identical answers."""
    other = Ledger(ledger.engine, batch_max=1000, committers=1)
    fans = [f"fan-race-{i}" for i in range(20)]
    await fund(ledger, fans)
    both_looked = asyncio.Barrier(2)
    lookups = {"n": 0}
    original = Ledger._lookup

    async def lookup_together(self, conn, ops):
        found = await original(self, conn, ops)
        lookups["n"] += 1
        if lookups["n"] <= 2:  # the first lookup of each ledger: neither has written yet
            await both_looked.wait()
        return found

    monkeypatch.setattr(Ledger, "_lookup", lookup_together)
    other.start()
    try:
        ops = [tip_op(fan) for fan in fans] + [hold_op(fan) for fan in fans[:5]]
        first, second = await asyncio.wait_for(
            asyncio.gather(
                asyncio.gather(*(ledger.submit(op) for op in ops)),
                asyncio.gather(*(other.submit(op) for op in ops)),
            ),
            30,
        )
    finally:
        await other.stop()
        monkeypatch.undo()
    assert lookups["n"] >= 3, "the losing batch was retried and looked its ids up again"
    as_bytes = [[a if isinstance(a, bytes) else a.SerializeToString() for a in answers] for answers in (first, second)]
    assert as_bytes[0] == as_bytes[1]
    async with ledger.engine.connect() as conn:
        rows = await conn.scalar(
            text("SELECT count(*) FROM wallet.operations WHERE key = ANY(:keys)"), {"keys": [op.key for op in ops]}
        )
        spent = await conn.scalar(
            text(
                "SELECT count(*) FROM wallet.transfers t JOIN wallet.operations o ON o.id = t.operation_id"
                " WHERE o.key = ANY(:keys)"
            ),
            {"keys": [op.key for op in ops]},
        )
        holds = await conn.scalar(
            text("SELECT count(*) FROM wallet.holds WHERE key = ANY(:keys)"), {"keys": [op.key for op in ops]}
        )
    assert rows == len(ops)
    assert spent == 2 * len(fans)  # promotional + purchased posting per tip, once
    assert holds == 5
    audit = await queries.audit(ledger.engine)
    assert audit.ok, audit.violations


async def test_a_second_batch_runs_beside_the_first_only_when_it_is_full():
    """Two committers: requests that arrive while a batch is in flight wait for it unless they fill
    a whole batch (a backlog, where a second transaction overlaps the first); a few at a time they
    make one batch at a time, as large as they come (a hot account's requests would only queue on
    its row lock)."""
    ledger = Ledger(engine=None, batch_max=4, committers=2)
    running: list[list[str]] = []  # the batches in flight, by key
    overlaps, sizes = [], []
    release = asyncio.Event()

    async def run(waiters):
        keys = [w.op.key for w in waiters]
        sizes.append(len(keys))
        running.append(keys)
        overlaps.append(len(running))
        await release.wait()
        running.remove(keys)
        for waiter in waiters:
            waiter.future.set_result(waiter.op.key)

    ledger._run = run
    ledger.start()
    try:

        def submit(*keys):
            ops = [Op(SCOPE, "TRANSFER", key, {}, None) for key in keys]
            return [asyncio.ensure_future(ledger.submit(op)) for op in ops]

        first = submit("a")
        await asyncio.sleep(0.01)
        assert sizes == [1]  # nothing in flight: starts at once
        partial = submit("b", "c")
        await asyncio.sleep(0.01)
        assert sizes == [1]  # two waiting beside a batch in flight: they wait
        full = submit("d", "e")
        await asyncio.sleep(0.01)
        assert sizes == [1, 4] and overlaps == [1, 2]  # b, c, d, e fill a batch: it runs beside
        rest = submit("f")
        await asyncio.sleep(0.01)
        assert sizes == [1, 4]
        release.set()
        assert await asyncio.gather(*first, *partial, *full, *rest) == list("abcdef")
        assert sizes == [1, 4, 1]
    finally:
        await ledger.stop()
