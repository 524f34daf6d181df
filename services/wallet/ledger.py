"""The ledger engine: every mutating Wallet request is an `Op`, applied exactly once per
(scope, kind, key) by a group committer.

Concurrent requests queue up; a collector forms batches of up to `batch_max` of them, and a
committer applies each batch in one PostgreSQL transaction with a constant number of statements
whatever its size (up to `committers` batches at once, a second only when it is full; see
`_collector`):

1. read the idempotency rows the batch's ops already have (those answer with the stored response,
   or are refused as a reused id) and reserve operation and transfer ids from their sequences;
2. lock holds and original transfers the batch resolves or reverses (only when it has such ops);
3. lock every account the batch touches, in ascending id order, and read the one clock;
4. apply each op in Python against the locked balances (all-or-nothing per op);
5. write the idempotency rows with their answers (in sorted order), transfers, entries, balances
   and holds in one statement, then commit.

An idempotency row is written once, complete with its answer. If another process wrote one of the
batch's keys between steps 1 and 5 (the same id sent to two Wallet processes at once), the insert
waits for that transaction to end and then violates the key (a plain insert: ON CONFLICT's
speculative insertion cost every row ~3 µs for a race that almost never happens), and the whole
batch is rolled back and retried, when step 1 sees the other answer.

Lock order is the same everywhere — holds/transfers, then accounts by id, then idempotency keys in
sorted order — so batches from several processes never deadlock; a deadlock or serialization
failure anyway (e.g. a server restarted mid-flight) retries the whole batch, which idempotency
makes safe.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import functools
import logging
import struct
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import grpc
import psycopg
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import status_pb2
from psycopg import errors as pg_errors
from sqlalchemy.ext.asyncio import AsyncEngine

from services.wallet import model
from services.wallet.model import Adjustment, HoldSpec, Item, Op, Ref, Resolution, Reversal
from shared.clock import NOW_SQL
from shared.convert import timestamp
from shared.db import RawConn, joined, json_param, raw_transaction
from shared.errors import DomainError, already_exists, not_found, precondition
from shared.gen.fanbank.wallet.v1 import wallet_service_pb2 as pb

log = logging.getLogger(__name__)

# A unique violation in the write can only be a key another process wrote after this batch looked
# (an idempotency key, or a hold's (scope, key) written beside one): the retry finds that op's answer.
_RETRYABLE = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure, pg_errors.UniqueViolation)
_MAX_ATTEMPTS = 5
NOTIFY_CHANNEL = "wallet_balance"
# Sends the `notify_payloads` given as :notify (a text[]) on NOTIFY_CHANNEL; a scalar subquery, so
# it fits a statement's select list. Every transaction that changes balances ends with it.
NOTIFY_BALANCES_SQL = f"(SELECT count(pg_notify('{NOTIFY_CHANNEL}', p)) FROM unnest(CAST(:notify AS text[])) AS p)"
# Balance hashes per notification: 4 bytes each, 5,184 bytes, 6,912 characters of base64 (NOTIFY
# takes fewer than 8,000 bytes).
_HASHES_PER_NOTIFICATION = 1296


def balance_hash(owner_id: str, asset: str) -> int:
    """What a balance notification names a balance (owner, asset) by: CRC-32 of `owner|asset`, the
    same in every process (Python's own hash is seeded per process). Two balances sharing one only
    wake each other's watchers for a re-read."""
    return zlib.crc32(f"{owner_id}|{asset}".encode())


def notify_payloads(touched: Iterable[tuple[str, str]]) -> list[str]:
    """The balances a transaction changed, as NOTIFY payloads: their `balance_hash`es, 4 bytes each
    (little-endian), base64, as many payloads as NOTIFY's size limit takes, so a watcher is woken
    only by its own balance's change. Hashes rather than `owner|asset` text: a 7 KB notification
    costs PostgreSQL ~0.4 ms, and a metering batch's names fit one payload instead of five
    (docs/ARCHITECTURE.md, "Reads and watches")."""
    hashes = [balance_hash(owner_id, asset) for owner_id, asset in touched]
    step = _HASHES_PER_NOTIFICATION
    return [
        base64.b64encode(struct.pack(f"<{len(part)}I", *part)).decode()
        for part in (hashes[i : i + step] for i in range(0, len(hashes), step))
    ]


def balances_named(payload: str) -> tuple[int, ...]:
    """The balance hashes of a `notify_payloads` payload; ValueError if it is not one."""
    raw = base64.b64decode(payload, validate=True)
    if len(raw) % 4:
        raise ValueError("a balance notification holds 4 bytes per balance")
    return struct.unpack(f"<{len(raw) // 4}I", raw)


# The order in which a reused id's fields are compared, so the reason names the first that differs.
_FIELD_ORDER = (
    "transfer_id", "debit", "credit", "account", "destination", "amount", "code", "context_type",
    "context_id", "counterparty_id", "fee_bps", "mode", "items", "target_kind", "target", "legs",
    "ttl_seconds", "hold_id", "capture", "reason", "owner_id", "campaign_id",
)  # fmt: skip


@dataclass
class _Account:
    id: int
    ref: Ref
    posted: int
    pending: int

    @property
    def available(self) -> int:
        return self.posted - self.pending


@dataclass
class _Hold:
    id: int
    key: str
    account_id: int
    destination_id: int
    amount: int
    captured: int
    status: str
    code: str
    context_type: str
    context_id: str
    expires_at: dt.datetime
    created_at: dt.datetime
    resolved_at: dt.datetime | None
    capture_transfer_id: int | None
    dirty: bool = False


@dataclass
class _Posting:
    """A ledger transfer row: one debit, one credit."""

    id: int
    op_row: int
    leg: int
    item_id: str
    funding: str
    code: str
    debit: int
    credit: int
    amount: int
    context_type: str
    context_id: str
    counterparty_id: str
    fee_bps: int
    reverses: int | None = None
    overdraw: bool = False


@dataclass
class _Original:
    """A posting being reversed, with what is left of it."""

    id: int
    leg: int
    item_id: str
    funding: str
    code: str
    debit: int
    credit: int
    amount: int
    reversed: int
    context_type: str
    context_id: str
    counterparty_id: str
    fee_bps: int


@dataclass
class _Waiter:
    op: Op
    future: asyncio.Future


# An op's outcome: (applied?, the response message or stored bytes — a Status when refused) or a
# refusal that is not remembered.
_Result = tuple[bool, Message | bytes] | DomainError


class _Race(Exception):
    """Another process created an account this batch meant to create, or wrote an idempotency row
    this batch meant to write; the batch is retried."""


class _Refused(Exception):
    """An op refused during apply; `record` says whether a retry must get the same answer."""

    def __init__(self, error: DomainError, record: bool = True):
        self.error = error
        self.record = record


@dataclass
class _Batch:
    """Mutable state of one transaction: locked accounts and everything to write."""

    now: dt.datetime
    accounts: dict[int, _Account]
    transfer_ids: list[int]
    holds: dict[tuple[str, str], _Hold] = field(default_factory=dict)
    originals: dict[tuple[str, str, str], list[_Original]] = field(default_factory=dict)
    postings: list[_Posting] = field(default_factory=list)
    entries: list[tuple[int, int, int, int]] = field(default_factory=list)
    new_holds: list[tuple] = field(default_factory=list)
    reversed: dict[int, int] = field(default_factory=dict)
    notes: list[tuple[int, str, str]] = field(default_factory=list)
    touched: set[tuple[str, str]] = field(default_factory=set)
    # Natural key → id for every account the batch may touch; new accounts have provisional
    # negative ids until `renumber`.
    ids: dict[Ref, int] = field(default_factory=dict)
    used_new: set[int] = field(default_factory=set)
    created: list[_Account] = field(default_factory=list)

    @functools.cached_property
    def create_time(self) -> Timestamp:
        """`now` as the create_time of what the batch makes (copied into each message)."""
        return timestamp(self.now)

    def next_transfer_id(self) -> int:
        return self.transfer_ids.pop()

    def add_new_account(self, provisional_id: int, ref: Ref) -> None:
        assert provisional_id < 0
        self.accounts[provisional_id] = _Account(provisional_id, ref, 0, 0)
        self.ids[ref] = provisional_id

    def use(self, account_id: int) -> None:
        if account_id < 0:
            self.used_new.add(account_id)

    def renumber(self, real: dict[int, int]) -> None:
        """Replaces provisional account ids by the ids the database gave the new accounts."""
        for posting in self.postings:
            posting.debit = real.get(posting.debit, posting.debit)
            posting.credit = real.get(posting.credit, posting.credit)
        self.entries = [(t, real.get(a, a), amount, after) for t, a, amount, after in self.entries]
        self.new_holds = [(*h[:3], real.get(h[3], h[3]), real.get(h[4], h[4]), *h[5:]) for h in self.new_holds]
        for provisional, account_id in real.items():
            account = self.accounts.pop(provisional)
            account.id = account_id
            self.accounts[account_id] = account
            self.created.append(account)
        for account_id in [i for i in self.accounts if i < 0]:
            del self.accounts[account_id]


class _Scratch:
    """One op's tentative balance changes; merged into the batch only if the whole op succeeds."""

    def __init__(self, batch: _Batch):
        self.batch = batch
        self.delta_posted: dict[int, int] = defaultdict(int)
        self.delta_pending: dict[int, int] = defaultdict(int)
        self.postings: list[_Posting] = []
        self.reversed: dict[int, tuple[_Original, int]] = {}
        self.used: set[int] = set()

    def reversed_of(self, original: _Original) -> int:
        return self.reversed.get(original.id, (original, original.reversed))[1]

    def available(self, account_id: int) -> int:
        account = self.batch.accounts[account_id]
        return account.posted + self.delta_posted[account_id] - account.pending - self.delta_pending[account_id]

    def post(self, posting: _Posting) -> None:
        debit = self.batch.accounts[posting.debit]
        if debit.ref.must_not_go_negative and not posting.overdraw:
            if self.available(posting.debit) < posting.amount:
                raise _Refused(
                    precondition(
                        "INSUFFICIENT_FUNDS",
                        f"account {debit.ref.code} of {debit.ref.owner_id} cannot pay {posting.amount}",
                        account=debit.ref.code,
                        needed=str(posting.amount),
                    )
                )
        self.delta_posted[posting.debit] -= posting.amount
        self.delta_posted[posting.credit] += posting.amount
        self.postings.append(posting)

    def reserve(self, account_id: int, amount: int) -> None:
        self.delta_pending[account_id] += amount

    def commit(self) -> None:
        batch = self.batch
        for posting in self.postings:
            for account_id, signed in ((posting.debit, -posting.amount), (posting.credit, posting.amount)):
                batch.use(account_id)
                account = batch.accounts[account_id]
                account.posted += signed
                batch.entries.append((posting.id, account_id, signed, account.posted))
                batch.touched.add((account.ref.owner_id, account.ref.asset))
            batch.postings.append(posting)
        for original, reversed_amount in self.reversed.values():
            original.reversed = reversed_amount
            batch.reversed[original.id] = reversed_amount
        for account_id in self.used:
            batch.use(account_id)
        for account_id, delta in self.delta_pending.items():
            batch.use(account_id)
            account = batch.accounts[account_id]
            account.pending += delta
            assert account.pending >= 0, f"pending below zero on account {account_id}"
            batch.touched.add((account.ref.owner_id, account.ref.asset))


class Ledger:
    def __init__(self, engine: AsyncEngine, batch_max: int = 500, committers: int = 2):
        assert batch_max >= 1 and committers >= 1
        self.engine = engine
        self.batch_max = batch_max
        self.committers = committers
        # Bounded: when every committer is busy and the queue is full, callers wait here instead of
        # piling unbounded work into memory.
        self._queue: asyncio.Queue[_Waiter] = asyncio.Queue(maxsize=batch_max * committers * 4)
        self._ids: dict[Ref, int] = {}
        self._tasks: set[asyncio.Task] = set()
        self._slots = asyncio.Semaphore(committers)
        self._running = 0  # batches in flight
        self._changed = asyncio.Event()  # a batch ended, or the queue can fill a batch
        self._collected = 0  # ops the collector holds for its next batch
        self.statements_in_last_batch = 0
        # Op kind → its `_apply_<kind>` method.
        self._handlers: dict[str, Callable] = {
            kind: getattr(self, f"_apply_{kind.lower()}")
            for kind in ("TRANSFER", "BATCH", "REVERSAL", "HOLD", "CAPTURE", "VOID", "ADJUST", "GRANT")
        }

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = {asyncio.create_task(self._collector(), name="wallet-collector")}

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = set()

    async def submit(self, op: Op) -> Message | bytes:
        """Applies `op` (or finds its earlier answer); answers the response — the message when it was
        made now, its stored bytes when it is a replay — or raises the refusal."""
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Waiter(op, future))
        self._queued()
        return await future

    async def submit_many(self, ops: Sequence[Op]) -> list[Message | bytes | BaseException]:
        """submit() for each op, without a task per op; answers each op's response or refusal."""
        loop = asyncio.get_running_loop()
        futures = []
        for op in ops:
            future = loop.create_future()
            await self._queue.put(_Waiter(op, future))
            futures.append(future)
        self._queued()
        return await asyncio.gather(*futures, return_exceptions=True)

    def _queued(self) -> None:
        if self._running and self._collected + self._queue.qsize() >= self.batch_max:
            self._changed.set()

    async def _collector(self) -> None:
        """Forms batches and starts each in a committer. A batch starts at once when no other is in
        flight; beside one in flight only when it is full. Batches in flight at once then only happen
        under a backlog (a metering tick's thousands of blocks), where each is a whole batch;
        requests that arrive a few hundred at a time — a hot creator's tips, which would all queue
        on that creator's account row — make one batch at a time, as large as they come."""
        while True:
            waiters = [await self._queue.get()]
            while True:
                while len(waiters) < self.batch_max and not self._queue.empty():
                    waiters.append(self._queue.get_nowait())
                if len(waiters) >= self.batch_max or not self._running:
                    break
                self._collected = len(waiters)
                self._changed.clear()
                await self._changed.wait()
            self._collected = 0
            await self._slots.acquire()
            while len(waiters) < self.batch_max and not self._queue.empty():
                waiters.append(self._queue.get_nowait())
            self._running += 1
            task = asyncio.create_task(self._committer(waiters), name="wallet-committer")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _committer(self, waiters: list[_Waiter]) -> None:
        try:
            try:
                await self._run(waiters)
            except Exception as exc:
                log.exception("wallet batch failed")
                # A database that cannot be reached is UNAVAILABLE (callers retry with the same ids);
                # anything else is a bug, and retrying it would only repeat it.
                code, reason = (
                    (grpc.StatusCode.UNAVAILABLE, "LEDGER_UNAVAILABLE")
                    if isinstance(exc, psycopg.Error | OSError)
                    else (grpc.StatusCode.INTERNAL, "INTERNAL")
                )
                for waiter in waiters:
                    if not waiter.future.done():
                        waiter.future.set_exception(DomainError(code, reason, "the ledger could not apply this batch"))
        finally:
            self._running -= 1
            self._slots.release()
            self._changed.set()

    def _connection(self):
        """The ledger's transaction on one pooled connection, through psycopg directly (see
        shared/db.py `raw_transaction`)."""
        return raw_transaction(self.engine)

    # ---- accounts ----------------------------------------------------------------------------

    def _remember(self, account_id: int, ref: Ref) -> None:
        self._ids[ref] = account_id

    async def create_accounts(self, refs: set[Ref]) -> None:
        """Creates accounts outright (CreateAccount): the request's whole purpose is the account."""
        ordered = sorted(refs)
        async with self._connection() as conn:
            await conn.execute(
                "INSERT INTO wallet.accounts (owner_id, asset, code, must_not_go_negative, created_at)"
                f" SELECT o, a, c, n, {NOW_SQL} FROM unnest(CAST(:o AS text[]), CAST(:a AS text[]),"
                " CAST(:c AS text[]), CAST(:n AS boolean[])) AS u(o, a, c, n) ORDER BY o, a, c"
                " ON CONFLICT (owner_id, asset, code) DO NOTHING",
                {
                    "o": [r.owner_id for r in ordered],
                    "a": [r.asset for r in ordered],
                    "c": [r.code for r in ordered],
                    "n": [r.must_not_go_negative for r in ordered],
                },
            )

    # ---- the batch ---------------------------------------------------------------------------

    async def _run(self, waiters: list[_Waiter]) -> None:
        leaders: dict[tuple[str, str, str], _Waiter] = {}
        followers: list[tuple[_Waiter, _Waiter]] = []
        for waiter in waiters:
            leader = leaders.get(waiter.op.identity)
            if leader is None:
                leaders[waiter.op.identity] = waiter
            else:
                followers.append((waiter, leader))
        ready = list(leaders.values())
        for attempt in range(1, _MAX_ATTEMPTS + 1):
            try:
                results = await self._transaction(ready)
                break
            except (psycopg.Error, _Race) as exc:
                if not isinstance(exc, (*_RETRYABLE, _Race)) or attempt == _MAX_ATTEMPTS:
                    raise
                log.warning("wallet batch retried", extra={"attempt": attempt, "error": type(exc).__name__})
        else:  # pragma: no cover - the loop either breaks or raises
            raise AssertionError("unreachable")
        for waiter in ready:
            _settle(waiter.future, results[waiter.op.identity])
        for waiter, leader in followers:
            _settle(waiter.future, _replay(waiter.op, leader.op, leader.future))

    async def _transaction(self, waiters: list[_Waiter]) -> dict[tuple, _Result]:
        results: dict[tuple, _Result] = {}
        if not waiters:
            return results
        statements = 0
        async with self._connection() as conn:
            # Ops are applied in the order they arrived, so an independent batch's items are tried in
            # request order; their idempotency rows are written in one global order (see _write).
            arrival = [w.op for w in waiters]
            stored, op_ids, transfer_ids = await self._lookup(conn, arrival)
            statements += 1
            todo = []
            for op in arrival:
                if op.identity in stored:
                    results[op.identity] = _replay_stored(op, stored[op.identity])
                else:
                    todo.append(op)
            rows = dict(zip((op.identity for op in todo), op_ids, strict=False))
            holds, originals = {}, {}
            if any(op.kind in ("CAPTURE", "VOID") for op in todo):
                holds = await self._lock_holds(conn, todo)
                statements += 1
            if any(op.kind == "REVERSAL" for op in todo):
                originals = await self._lock_originals(conn, todo)
                needed = sum(len(postings) for postings in originals.values())
                transfer_ids += await self._reserve_transfer_ids(conn, needed)
                statements += 2
            named = [_refs_of(op) for op in todo]
            account_ids, unknown_refs = self._accounts_named(named, holds, originals)
            accounts, now = await self._lock_accounts(conn, account_ids, unknown_refs)
            statements += 1
            batch = _Batch(now, accounts, transfer_ids, holds, originals)
            batch.ids = {account.ref: account.id for account in accounts.values()}
            answers: list[tuple[Op, int, bool, bytes]] = []
            for op, refs in zip(todo, named, strict=True):
                row_id = rows[op.identity]
                try:
                    self._check_accounts(batch, op, refs)
                    response = self._apply(batch, op, row_id)
                    answers.append((op, row_id, True, response.SerializeToString()))
                    results[op.identity] = (True, response)
                except _Refused as refused:
                    if refused.record:
                        status = refused.error.to_status().SerializeToString()
                        answers.append((op, row_id, False, status))
                        results[op.identity] = (False, status)
                    else:
                        results[op.identity] = refused.error
            if batch.used_new:
                await self._insert_new_accounts(conn, batch)
                statements += 1
            if await self._write(conn, batch, answers) != len(answers):
                raise _Race()
            statements += 3  # the write, BEGIN and COMMIT
        for account in batch.created:
            self._remember(account.id, account.ref)
        self.statements_in_last_batch = statements
        return results

    async def _insert_new_accounts(self, conn: RawConn, batch: _Batch) -> None:
        """Writes the batch's new accounts that a successful op used, with their final balances,
        and renumbers them from their provisional ids. If another process created one of them
        meanwhile, its balance is unknown here: the batch is rolled back and retried."""
        new = sorted((batch.accounts[i] for i in batch.used_new), key=lambda a: a.ref)
        result = await conn.execute(
            "INSERT INTO wallet.accounts (owner_id, asset, code, must_not_go_negative, posted, pending, created_at)"
            " SELECT o, a, c, n, p, q, CAST(:now AS timestamptz) FROM unnest(CAST(:o AS text[]),"
            " CAST(:a AS text[]), CAST(:c AS text[]), CAST(:n AS boolean[]), CAST(:p AS bigint[]),"
            " CAST(:q AS bigint[])) AS u(o, a, c, n, p, q) ORDER BY o, a, c"
            " ON CONFLICT (owner_id, asset, code) DO NOTHING RETURNING id, owner_id, asset, code",
            {
                "now": batch.now,
                "o": [a.ref.owner_id for a in new],
                "a": [a.ref.asset for a in new],
                "c": [a.ref.code for a in new],
                "n": [a.ref.must_not_go_negative for a in new],
                "p": [a.posted for a in new],
                "q": [a.pending for a in new],
            },
        )
        real = {Ref(r.owner_id, r.asset, r.code): r.id for r in result}
        if len(real) != len(new):
            raise _Race()
        batch.renumber({account.id: real[account.ref] for account in new})

    async def _lookup(self, conn: RawConn, ops: list[Op]) -> tuple[dict[tuple, tuple], list[int], list[int]]:
        """The stored (request, ok, response) of the ops that already have an idempotency row, and
        ids reserved for the others' rows and postings, in one statement."""
        postings_bound = sum(_postings_bound(op) for op in ops)
        result = await conn.execute(
            "SELECT o.scope, o.kind, o.key, o.request, o.ok, o.response, NULL::bigint[] AS ids"
            " FROM wallet.operations o JOIN jsonb_array_elements(CAST(:keys AS jsonb)) AS e"
            " ON o.scope = e->>0 AND o.kind = e->>1 AND o.key = e->>2"
            " UNION ALL SELECT 'op', NULL, NULL, NULL, NULL, NULL,"
            " ARRAY(SELECT nextval('wallet.operations_id_seq') FROM generate_series(1, :n_ops))"
            " UNION ALL SELECT 'transfer', NULL, NULL, NULL, NULL, NULL,"
            " ARRAY(SELECT nextval('wallet.transfer_ids') FROM generate_series(1, :n_postings))",
            {"keys": json_param([op.identity for op in ops]), "n_ops": len(ops), "n_postings": postings_bound},
        )
        stored: dict[tuple, tuple] = {}
        op_ids: list[int] = []
        transfer_ids: list[int] = []
        for row in result:
            if row.ids is not None:
                if row.scope == "op":
                    op_ids = list(row.ids)
                else:
                    transfer_ids = list(reversed(row.ids))
            else:
                stored[(row.scope, row.kind, row.key)] = (row.request, row.ok, bytes(row.response))
        return stored, op_ids, transfer_ids

    async def _reserve_transfer_ids(self, conn: RawConn, count: int) -> list[int]:
        result = await conn.execute(
            "SELECT ARRAY(SELECT nextval('wallet.transfer_ids') FROM generate_series(1, :n))", {"n": count}
        )
        return list(result[0][0])

    async def _lock_holds(self, conn: RawConn, ops: list[Op]) -> dict[tuple[str, str], _Hold]:
        keys = sorted({(op.scope, op.payload.hold_id) for op in ops if op.kind in ("CAPTURE", "VOID")})
        result = await conn.execute(
            "SELECT h.* FROM wallet.holds h JOIN unnest(CAST(:s AS text[]), CAST(:k AS text[])) AS u(s, k)"
            " ON h.scope = u.s AND h.key = u.k ORDER BY h.id FOR UPDATE OF h",
            {"s": [k[0] for k in keys], "k": [k[1] for k in keys]},
        )
        return {
            (r.scope, r.key): _Hold(
                r.id,
                r.key,
                r.account_id,
                r.destination_account_id,
                r.amount,
                r.captured_amount,
                r.status,
                r.code,
                r.context_type,
                r.context_id,
                r.expires_at,
                r.created_at,
                r.resolved_at,
                r.capture_transfer_id,
            )  # fmt: skip
            for r in result
        }

    async def _lock_originals(self, conn: RawConn, ops: list[Op]) -> dict[tuple, list[_Original]]:
        targets = sorted(
            {(op.scope, op.payload.target_kind, op.payload.target_key) for op in ops if op.kind == "REVERSAL"}
        )
        result = await conn.execute(
            "SELECT o.scope, o.kind, o.key, t.* FROM wallet.transfers t"
            " JOIN wallet.operations o ON o.id = t.operation_id"
            " JOIN unnest(CAST(:s AS text[]), CAST(:k AS text[]), CAST(:y AS text[])) AS u(s, k, y)"
            " ON o.scope = u.s AND o.kind = u.k AND o.key = u.y"
            " WHERE t.reverses_transfer_id IS NULL ORDER BY t.id FOR UPDATE OF t",
            {"s": [t[0] for t in targets], "k": [t[1] for t in targets], "y": [t[2] for t in targets]},
        )
        originals: dict[tuple, list[_Original]] = defaultdict(list)
        for r in result:
            originals[(r.scope, r.kind, r.key)].append(
                _Original(
                    r.id,
                    r.leg,
                    r.item_id,
                    r.funding,
                    r.code,
                    r.debit_account_id,
                    r.credit_account_id,
                    r.amount,
                    r.reversed_amount,
                    r.context_type,
                    r.context_id,
                    r.counterparty_id,
                    r.fee_bps,
                )  # fmt: skip
            )
        return originals

    def _accounts_named(
        self, named: list[list[tuple[Ref, bool]]], holds: dict, originals: dict
    ) -> tuple[set[int], set[Ref]]:
        """The ids of the accounts a batch touches (`named`: each op's `_refs_of`, plus its holds
        and originals) that this process knows, and the natural keys of those it does not (looked
        up, and locked, by the same statement)."""
        ids: set[int] = set()
        unknown: set[Ref] = set()
        for refs in named:
            for ref, _ in refs:
                account_id = self._ids.get(ref)
                if account_id is None:
                    unknown.add(ref)
                else:
                    ids.add(account_id)
        for hold in holds.values():
            ids.update((hold.account_id, hold.destination_id))
        for postings in originals.values():
            for posting in postings:
                ids.update((posting.debit, posting.credit))
        return ids, unknown

    def _check_accounts(self, batch: _Batch, op: Op, refs: list[tuple[Ref, bool]]) -> None:
        """A missing account an op may create (a credit, a system account) becomes a new account of
        the batch, written only if an op that uses it succeeds; an op whose debit account does not
        exist is refused and changes nothing. An account that an item of the same linked batch
        credits counts as existing for the others (funding then spending in one batch). `refs` is
        `_refs_of(op)`."""
        credited = {ref for ref, creatable in refs if creatable}
        unknown = [ref for ref, creatable in refs if not creatable and ref not in batch.ids and ref not in credited]
        if op.kind in ("TRANSFER", "BATCH"):
            unknown = _wallet_halves_ok(unknown, lambda ref: ref in batch.ids or ref in credited)
        if unknown:
            ref = unknown[0]
            raise _Refused(
                not_found(
                    "ACCOUNT_NOT_FOUND",
                    f"no {ref.code} account in {ref.asset} for {ref.owner_id or 'the platform'}",
                    owner_id=ref.owner_id,
                    code=ref.code,
                    asset=ref.asset,
                ),
                record=False,
            )
        for ref, creatable in refs:
            if creatable and ref not in batch.ids:
                batch.add_new_account(-(len(batch.ids) + 1), ref)

    async def _lock_accounts(
        self, conn: RawConn, ids: set[int], refs: set[Ref]
    ) -> tuple[dict[int, _Account], dt.datetime]:
        """Locks the accounts named by id or by natural key, in id order, and reads the clock."""
        # The clock comes back once, in a row of its own (its id NULL), not beside every account.
        result = await conn.tuples(
            f"SELECT {NOW_SQL} AS now, NULL::bigint, NULL, NULL, NULL, NULL::bigint, NULL::bigint UNION ALL"
            " SELECT NULL, a.id, a.owner_id, a.asset, a.code, a.posted, a.pending"
            " FROM (SELECT * FROM wallet.accounts WHERE id IN ("
            " SELECT unnest(CAST(string_to_array(:ids, ' ') AS bigint[])) UNION SELECT x.id FROM wallet.accounts x"
            " JOIN (SELECT split_part(r, '|', 1) AS o, split_part(r, '|', 2) AS s, split_part(r, '|', 3) AS c"
            " FROM unnest(string_to_array(:refs, ' ')) AS r) u ON x.owner_id = u.o AND x.asset = u.s AND x.code = u.c)"
            " ORDER BY id FOR UPDATE) a",
            # Each natural key as `owner|asset|code` (never empty: the asset and code are always
            # there; ids hold neither a space nor a `|`), all of them in one text.
            {"ids": joined(sorted(ids)), "refs": joined("|".join(ref) for ref in sorted(refs))},
        )
        accounts: dict[int, _Account] = {}
        now = None
        for at, account_id, owner_id, asset, code, posted, pending in result:
            if account_id is None:
                now = at
                continue
            ref = Ref(owner_id, asset, code)
            if account_id not in ids:
                self._remember(account_id, ref)
            accounts[account_id] = _Account(account_id, ref, posted, pending)
        assert now is not None
        return accounts, now

    async def _write(self, conn: RawConn, batch: _Batch, answers: list[tuple[Op, int, bool, bytes]]) -> int:
        """Writes the batch in one statement; answers how many idempotency rows it wrote."""
        parts: list[str] = []
        params: dict[str, object] = {"now": batch.now}
        if batch.postings:
            p = batch.postings
            parts.append(
                "t AS (INSERT INTO wallet.transfers (id, operation_id, leg, item_id, funding, code, asset,"
                " debit_account_id, credit_account_id, amount, context_type, context_id, counterparty_id,"
                " fee_bps, reverses_transfer_id, created_at)"
                " SELECT (r->>0)::bigint, (r->>1)::bigint, (r->>2)::int, r->>3, r->>4, r->>5, r->>6, (r->>7)::bigint,"
                " (r->>8)::bigint, (r->>9)::bigint, r->>10, r->>11, r->>12, (r->>13)::int, (r->>14)::bigint,"
                " CAST(:now AS timestamptz) FROM jsonb_array_elements(CAST(:t AS jsonb)) AS r)"
            )
            params["t"] = json_param(
                [
                    [x.id, x.op_row, x.leg, x.item_id, x.funding, x.code, batch.accounts[x.debit].ref.asset,
                     x.debit, x.credit, x.amount, x.context_type, x.context_id, x.counterparty_id, x.fee_bps,
                     x.reverses]
                    for x in p
                ]
            )  # fmt: skip
            e = batch.entries
            parts.append(
                "e AS (INSERT INTO wallet.entries (transfer_id, account_id, amount, balance_after, created_at)"
                " SELECT (r->>0)::bigint, (r->>1)::bigint, (r->>2)::bigint, (r->>3)::bigint,"
                " CAST(:now AS timestamptz) FROM jsonb_array_elements(CAST(:e AS jsonb)) AS r)"
            )
            params["e"] = json_param(e)
        created = {account.id for account in batch.created}
        accounts = sorted((a for a in batch.accounts.values() if a.id not in created), key=lambda a: a.id)
        if accounts:
            parts.append(
                "a AS (UPDATE wallet.accounts x SET posted = u.p, pending = u.q FROM unnest("
                "CAST(string_to_array(:a_id, ' ') AS bigint[]), CAST(string_to_array(:a_p, ' ') AS bigint[]),"
                " CAST(string_to_array(:a_q, ' ') AS bigint[])) AS u(id, p, q)"
                " WHERE x.id = u.id AND (x.posted <> u.p OR x.pending <> u.q))"
            )
            params.update(
                a_id=joined(a.id for a in accounts),
                a_p=joined(a.posted for a in accounts),
                a_q=joined(a.pending for a in accounts),
            )
        if batch.reversed:
            parts.append(
                "r AS (UPDATE wallet.transfers x SET reversed_amount = u.r FROM unnest(CAST(:r_id AS bigint[]),"
                " CAST(:r_amt AS bigint[])) AS u(id, r) WHERE x.id = u.id)"
            )
            params.update(r_id=list(batch.reversed), r_amt=list(batch.reversed.values()))
        if batch.new_holds:
            h = batch.new_holds
            parts.append(
                "hn AS (INSERT INTO wallet.holds (operation_id, scope, key, account_id, destination_account_id,"
                " asset, amount, status, code, context_type, context_id, expires_at, created_at)"
                " SELECT u.op, u.s, u.k, u.a, u.d, u.asset, u.amt, 'OPEN', u.code, u.ct, u.ci, u.exp,"
                " CAST(:now AS timestamptz) FROM unnest(CAST(:h_op AS bigint[]), CAST(:h_s AS text[]),"
                " CAST(:h_k AS text[]), CAST(:h_a AS bigint[]), CAST(:h_d AS bigint[]), CAST(:h_asset AS text[]),"
                " CAST(:h_amt AS bigint[]), CAST(:h_code AS text[]), CAST(:h_ct AS text[]),"
                " CAST(:h_ci AS text[]), CAST(:h_exp AS timestamptz[]))"
                " AS u(op, s, k, a, d, asset, amt, code, ct, ci, exp))"
            )
            cols = list(zip(*h, strict=True))
            for name, values in zip(
                ("h_op", "h_s", "h_k", "h_a", "h_d", "h_asset", "h_amt", "h_code", "h_ct", "h_ci", "h_exp"),
                cols,
                strict=True,
            ):
                params[name] = list(values)
        changed = [hold for hold in batch.holds.values() if hold.dirty]
        if changed:
            parts.append(
                "hu AS (UPDATE wallet.holds x SET status = u.st, captured_amount = u.c, resolved_at = u.at,"
                " capture_transfer_id = u.t FROM unnest(CAST(:hu_id AS bigint[]), CAST(:hu_st AS text[]),"
                " CAST(:hu_c AS bigint[]), CAST(:hu_at AS timestamptz[]), CAST(:hu_t AS bigint[]))"
                " AS u(id, st, c, at, t) WHERE x.id = u.id)"
            )
            params.update(
                hu_id=[x.id for x in changed], hu_st=[x.status for x in changed], hu_c=[x.captured for x in changed],
                hu_at=[x.resolved_at for x in changed], hu_t=[x.capture_transfer_id for x in changed],
            )  # fmt: skip
        if batch.notes:
            parts.append(
                "nt AS (INSERT INTO wallet.adjustment_notes (transfer_id, admin_id, reason)"
                " SELECT * FROM unnest(CAST(:n_t AS bigint[]), CAST(:n_a AS text[]), CAST(:n_r AS text[])))"
            )
            params.update(
                n_t=[x[0] for x in batch.notes], n_a=[x[1] for x in batch.notes], n_r=[x[2] for x in batch.notes]
            )
        if answers:
            # The idempotency rows, complete with their answers, in one global order (see the module
            # docstring): a key another process wrote meanwhile violates the key, and the batch retries.
            parts.append(
                "o AS (INSERT INTO wallet.operations (id, scope, kind, key, request, ok, response, created_at)"
                " SELECT (r->>0)::bigint, r->>1, r->>2, r->>3, r->4, (r->>5)::boolean,"
                " substring(CAST(:answers AS bytea) FROM (r->>6)::int FOR (r->>7)::int),"
                " CAST(:now AS timestamptz) FROM jsonb_array_elements(CAST(:o AS jsonb)) AS r"
                " ORDER BY r->>1, r->>2, r->>3 RETURNING 1)"
            )
            # The answers travel as one bytea, each row naming its slice: escaping them as JSON text
            # cost as much as encoding the rest of the row.
            rows, blob, start = [], [], 1
            for op, row_id, ok, response in sorted(answers, key=lambda a: a[0].identity):
                rows.append([row_id, op.scope, op.kind, op.key, op.fields, ok, start, len(response)])
                blob.append(response)
                start += len(response)
            params["o"], params["answers"] = json_param(rows), b"".join(blob)
        select = "SELECT (SELECT count(*) FROM o) AS written" if answers else "SELECT 0 AS written"
        if batch.touched:
            select += f", {NOTIFY_BALANCES_SQL} AS notified"
            params["notify"] = notify_payloads(batch.touched)
        sql = ("WITH " + ", ".join(parts) + " " if parts else "") + select
        return (await conn.execute(sql, params))[0][0]

    # ---- applying one op ------------------------------------------------------------------------

    def _apply(self, batch: _Batch, op: Op, row_id: int) -> Message:
        handler = self._handlers[op.kind]
        scratch = _Scratch(batch)
        response = handler(batch, scratch, op, row_id)
        scratch.commit()
        return response

    def _spend(self, batch: _Batch, scratch: _Scratch, item: Item, row_id: int, leg: int) -> dict:
        """Posts one item; a USER_WALLET debit draws promotional tokens first, then purchased. Answers
        the item's `pb.Transfer` as its fields (see `_transfer_fields`)."""
        credit = batch.ids[item.credit]
        common = dict(
            op_row=row_id, leg=leg, item_id=item.transfer_id, code=item.code, credit=credit,
            context_type=item.context_type, context_id=item.context_id,
            counterparty_id=item.counterparty_id, fee_bps=item.fee_bps,
        )  # fmt: skip
        postings: list[_Posting] = []
        if item.debit.code == model.WALLET:
            promo = batch.ids.get(Ref(item.debit.owner_id, item.debit.asset, model.PROMOTIONAL))
            purchased = batch.ids.get(Ref(item.debit.owner_id, item.debit.asset, model.PURCHASED))
            from_promo = min(item.amount, max(scratch.available(promo), 0)) if promo else 0
            if from_promo:
                postings.append(
                    _Posting(batch.next_transfer_id(), funding="PROMOTIONAL", debit=promo, amount=from_promo, **common)
                )
            rest = item.amount - from_promo
            if rest:
                if purchased is None:
                    raise _Refused(precondition("INSUFFICIENT_FUNDS", f"{item.debit.owner_id} cannot pay {item.amount}",
                                                account=model.WALLET, needed=str(item.amount)))  # fmt: skip
                postings.append(
                    _Posting(batch.next_transfer_id(), funding="PURCHASED", debit=purchased, amount=rest, **common)
                )
        else:
            funding = (
                item.debit.code.removeprefix("USER_")
                if item.debit.code in (model.PROMOTIONAL, model.PURCHASED)
                else "NONE"
            )
            postings.append(
                _Posting(
                    batch.next_transfer_id(), funding=funding, debit=batch.ids[item.debit], amount=item.amount, **common
                )
            )
        for posting in postings:
            scratch.post(posting)
        transfer = self._transfer_fields(batch, item.transfer_id, item.debit, item.credit, item.amount, item.code,
                                         item.context_type, item.context_id, item.counterparty_id, item.fee_bps,
                                         postings)  # fmt: skip
        if item.debit.code == model.WALLET:
            transfer["debit_available_after"] = sum(scratch.available(i) for i in (promo, purchased) if i is not None)
        else:
            transfer["debit_available_after"] = scratch.available(postings[0].debit)
        return transfer

    def _transfer_fields(self, batch, transfer_id, debit, credit, amount, code, ctype, cid, cp, fee, postings) -> dict:
        """A `pb.Transfer`'s fields. Messages are made from nested dicts in one constructor call: a
        nested message passed in (or added later) is copied, which cost a block a tenth of its
        Wallet time."""
        return {
            "transfer_id": transfer_id, "debit": _ref_fields(debit), "credit": _ref_fields(credit), "amount": amount,
            "code": model.TRANSFER_CODE_ENUM[code], "context_type": ctype, "context_id": cid, "counterparty_id": cp,
            "fee_bps": fee, "create_time": batch.create_time,
            "postings": [
                {
                    "debit": _ref_fields(batch.accounts[posting.debit].ref),
                    "credit": _ref_fields(batch.accounts[posting.credit].ref),
                    "amount": posting.amount,
                    "funding": model.FUNDING_ENUM[posting.funding],
                }
                for posting in postings
            ],
        }  # fmt: skip

    def _transfer_pb(self, batch, *fields) -> pb.Transfer:
        return pb.Transfer(**self._transfer_fields(batch, *fields))

    def _apply_transfer(self, batch: _Batch, scratch: _Scratch, op: Op, row_id: int) -> pb.Transfer:
        return pb.Transfer(**self._spend(batch, scratch, op.payload, row_id, 0))

    def _apply_batch(self, batch: _Batch, scratch: _Scratch, op: Op, row_id: int) -> pb.BatchTransferResponse:
        results = []
        for leg, item in enumerate(op.payload):
            try:
                transfer = self._spend(batch, scratch, item, row_id, leg)
            except _Refused as refused:
                refused.error.metadata.update(failed_transfer_id=item.transfer_id, failed_index=str(leg))
                refused.error.message = (
                    f"linked batch failed at item {leg} ({item.transfer_id}): {refused.error.message}"
                )
                raise
            results.append({"transfer_id": item.transfer_id, "transfer": transfer})
        return pb.BatchTransferResponse(batch_id=op.key, results=results)

    def _apply_reversal(self, batch: _Batch, scratch: _Scratch, op: Op, row_id: int) -> pb.ReverseTransferResponse:
        reversal: Reversal = op.payload
        originals = batch.originals.get((op.scope, reversal.target_kind, reversal.target_key))
        if not originals:
            raise _Refused(
                not_found("TRANSFER_NOT_FOUND", f"no {reversal.target_kind.lower()} {reversal.target_key!r}"),
                record=False,
            )
        by_leg: dict[int, list[_Original]] = defaultdict(list)
        for original in originals:
            by_leg[original.leg].append(original)
        left_of = {leg: sum(o.amount - scratch.reversed_of(o) for o in posts) for leg, posts in by_leg.items()}
        wanted = reversal.legs or left_of
        unknown = sorted(set(wanted) - set(by_leg))
        if unknown:
            raise _Refused(precondition("UNKNOWN_LEG", f"the original has no leg {unknown[0]}", leg=str(unknown[0])))
        if not any(wanted.values()):
            raise _Refused(precondition("NOTHING_LEFT_TO_REVERSE", "the original is already fully reversed"))
        response = pb.ReverseTransferResponse(reversal_id=op.key)
        for leg in sorted(wanted):
            amount = wanted[leg]
            posts = by_leg[leg]
            left = left_of[leg]
            if amount > left:
                raise _Refused(precondition("REVERSAL_EXCEEDS_REMAINING",
                                            f"leg {leg} has {left} left to reverse, asked {amount}",
                                            leg=str(leg), remaining=str(left)))  # fmt: skip
            if amount == 0:
                continue
            # Purchased before promotional: the last tokens drawn are the first given back.
            order = sorted(posts, key=lambda o: (o.funding == "PROMOTIONAL", o.id))
            postings = []
            remaining = amount
            for original in order:
                done = scratch.reversed_of(original)
                take = min(remaining, original.amount - done)
                if take <= 0:
                    continue
                remaining -= take
                scratch.reversed[original.id] = (original, done + take)
                posting = _Posting(
                    batch.next_transfer_id(), op_row=row_id, leg=leg, item_id=op.key, funding=original.funding,
                    code=reversal.code, debit=original.credit, credit=original.debit, amount=take,
                    context_type=original.context_type, context_id=original.context_id,
                    counterparty_id=original.counterparty_id, fee_bps=original.fee_bps,
                    reverses=original.id, overdraw=reversal.code == "CLAWBACK",
                )  # fmt: skip
                scratch.post(posting)
                postings.append(posting)
            first = posts[0]
            debit_ref = batch.accounts[first.credit].ref
            credit_ref = batch.accounts[first.debit].ref
            response.transfers.append(
                self._transfer_pb(batch, first.item_id, debit_ref, credit_ref, amount, reversal.code,
                                  first.context_type, first.context_id, first.counterparty_id, first.fee_bps, postings)
            )  # fmt: skip
        return response

    def _apply_hold(self, batch: _Batch, scratch: _Scratch, op: Op, row_id: int) -> pb.Hold:
        spec: HoldSpec = op.payload
        account_id = batch.ids[spec.account]
        destination_id = batch.ids[spec.destination]
        scratch.used.add(destination_id)
        if spec.account.must_not_go_negative and scratch.available(account_id) < spec.amount:
            raise _Refused(precondition("HOLD_EXCEEDS_AVAILABLE",
                                        f"cannot hold {spec.amount}: only {scratch.available(account_id)} available",
                                        available=str(scratch.available(account_id))))  # fmt: skip
        scratch.reserve(account_id, spec.amount)
        expires_at = batch.now + dt.timedelta(seconds=spec.ttl_seconds)
        batch.new_holds.append((row_id, op.scope, spec.hold_id, account_id, destination_id, spec.account.asset,
                                spec.amount, spec.code, spec.context_type, spec.context_id, expires_at))  # fmt: skip
        return pb.Hold(
            hold_id=spec.hold_id, account=spec.account.to_pb(), destination=spec.destination.to_pb(),
            amount=spec.amount, status=pb.HOLD_STATUS_OPEN, code=model.TRANSFER_CODE_ENUM[spec.code],
            context_type=spec.context_type, context_id=spec.context_id, expire_time=timestamp(expires_at),
            create_time=timestamp(batch.now),
        )  # fmt: skip

    def _hold_pb(self, batch: _Batch, hold: _Hold) -> pb.Hold:
        message = pb.Hold(
            hold_id=hold.key, account=batch.accounts[hold.account_id].ref.to_pb(),
            destination=batch.accounts[hold.destination_id].ref.to_pb(), amount=hold.amount,
            captured_amount=hold.captured, status=pb.HoldStatus.Value(f"HOLD_STATUS_{hold.status}"),
            code=model.TRANSFER_CODE_ENUM[hold.code], context_type=hold.context_type, context_id=hold.context_id,
            expire_time=timestamp(hold.expires_at), create_time=timestamp(hold.created_at),
        )  # fmt: skip
        if hold.resolved_at is not None:
            message.resolve_time.CopyFrom(timestamp(hold.resolved_at))
        return message

    def _resolve_hold(self, batch: _Batch, scratch: _Scratch, op: Op) -> _Hold:
        resolution: Resolution = op.payload
        hold = batch.holds.get((op.scope, resolution.hold_id))
        if hold is None:
            raise _Refused(not_found("HOLD_NOT_FOUND", f"no hold {resolution.hold_id!r}"), record=False)
        if hold.status == "OPEN" and hold.expires_at <= batch.now:
            # Expired by database time but not yet swept: expire it now, in this transaction.
            hold.status, hold.resolved_at, hold.dirty = "EXPIRED", batch.now, True
            batch.accounts[hold.account_id].pending -= hold.amount
            batch.touched.add((batch.accounts[hold.account_id].ref.owner_id, batch.accounts[hold.account_id].ref.asset))
        if hold.status == "EXPIRED":
            raise _Refused(precondition("HOLD_EXPIRED", f"hold {hold.key!r} expired", status=hold.status))
        if hold.status != "OPEN":
            raise _Refused(precondition(f"HOLD_ALREADY_{hold.status}", f"hold {hold.key!r} is already {hold.status.lower()}",
                                        status=hold.status))  # fmt: skip
        return hold

    def _apply_capture(self, batch: _Batch, scratch: _Scratch, op: Op, row_id: int) -> pb.CaptureHoldResponse:
        hold = self._resolve_hold(batch, scratch, op)
        amount = op.payload.amount or hold.amount
        if amount > hold.amount:
            raise _Refused(precondition("CAPTURE_EXCEEDS_HOLD", f"hold {hold.key!r} reserves {hold.amount}, asked {amount}",
                                        held=str(hold.amount)))  # fmt: skip
        scratch.reserve(hold.account_id, -hold.amount)
        posting = _Posting(
            batch.next_transfer_id(), op_row=row_id, leg=0, item_id=hold.key, funding=_funding_of(batch.accounts[hold.account_id].ref),
            code=hold.code, debit=hold.account_id, credit=hold.destination_id, amount=amount,
            context_type=hold.context_type, context_id=hold.context_id, counterparty_id="", fee_bps=0,
        )  # fmt: skip
        scratch.post(posting)
        hold.status, hold.captured, hold.resolved_at, hold.dirty = "CAPTURED", amount, batch.now, True
        hold.capture_transfer_id = posting.id
        transfer = self._transfer_pb(batch, hold.key, batch.accounts[hold.account_id].ref, batch.accounts[hold.destination_id].ref, amount,
                                     hold.code, hold.context_type, hold.context_id, "", 0, [posting])  # fmt: skip
        return pb.CaptureHoldResponse(hold=self._hold_pb(batch, hold), transfer=transfer)

    def _apply_void(self, batch: _Batch, scratch: _Scratch, op: Op, row_id: int) -> pb.VoidHoldResponse:
        hold = self._resolve_hold(batch, scratch, op)
        scratch.reserve(hold.account_id, -hold.amount)
        hold.status, hold.resolved_at, hold.dirty = "VOIDED", batch.now, True
        return pb.VoidHoldResponse(hold=self._hold_pb(batch, hold))

    def _apply_adjust(self, batch: _Batch, scratch: _Scratch, op: Op, row_id: int) -> pb.Transfer:
        adjustment: Adjustment = op.payload
        account, counter = adjustment.account, adjustment.counter
        debit, credit = (counter, account) if adjustment.amount > 0 else (account, counter)
        item = Item(op.key, debit, credit, abs(adjustment.amount), adjustment.code, adjustment.context_type,
                    adjustment.context_id, "", 0)  # fmt: skip
        transfer = pb.Transfer(**self._spend(batch, scratch, item, row_id, 0))
        if adjustment.reason:
            batch.notes.append((scratch.postings[-1].id, adjustment.admin_id, adjustment.reason))
        return transfer

    _apply_grant = _apply_adjust


# ---- helpers ------------------------------------------------------------------------------------


def _funding_of(ref: Ref) -> str:
    return ref.code.removeprefix("USER_") if ref.code in (model.PROMOTIONAL, model.PURCHASED) else "NONE"


def _ref_fields(ref: Ref) -> dict:
    """An `AccountRef`'s fields, for a message made from a dict (see `_transfer_fields`)."""
    return {"owner_id": ref.owner_id, "code": model.ACCOUNT_CODE_ENUM[ref.code], "asset": model.ASSET_ENUM[ref.asset]}


def _refs_of(op: Op) -> list[tuple[Ref, bool]]:
    """The accounts an op names, each with whether naming it may create it (credits may)."""
    if op.kind == "TRANSFER":
        items = [op.payload]
    elif op.kind == "BATCH":
        items = list(op.payload)
    elif op.kind in ("ADJUST", "GRANT"):
        a: Adjustment = op.payload
        return [(a.account, a.amount > 0), (a.counter, True)]
    elif op.kind == "HOLD":
        h: HoldSpec = op.payload
        return [(h.account, not h.account.must_not_go_negative), (h.destination, True)]
    else:
        return []
    refs: list[tuple[Ref, bool]] = []
    for item in items:
        if item.debit.code == model.WALLET:
            refs.append((Ref(item.debit.owner_id, item.debit.asset, model.PROMOTIONAL), False))
            refs.append((Ref(item.debit.owner_id, item.debit.asset, model.PURCHASED), False))
        else:
            refs.append((item.debit, not item.debit.must_not_go_negative))
        refs.append((item.credit, True))
    return refs


def _wallet_halves_ok(unknown: list[Ref], exists: Callable[[Ref], bool]) -> list[Ref]:
    """A USER_WALLET debit needs only one of its two accounts to exist."""
    remaining = []
    for ref in unknown:
        if ref.code in (model.PROMOTIONAL, model.PURCHASED):
            other = Ref(
                ref.owner_id, ref.asset, model.PURCHASED if ref.code == model.PROMOTIONAL else model.PROMOTIONAL
            )
            if exists(other):
                continue
        remaining.append(ref)
    return remaining


def _postings_bound(op: Op) -> int:
    if op.kind == "TRANSFER":
        return 2
    if op.kind == "BATCH":
        return 2 * len(op.payload)
    if op.kind == "REVERSAL":
        return 0  # known only once the originals are loaded; see _lock_originals
    return 2


def _mismatch(op: Op, stored_fields: dict) -> DomainError | None:
    if stored_fields == op.fields:
        return None
    keys = set(stored_fields) | set(op.fields)
    ordered = [k for k in _FIELD_ORDER if k in keys] + sorted(keys - set(_FIELD_ORDER))
    for key in ordered:
        if stored_fields.get(key) != op.fields.get(key):
            return already_exists(
                f"ID_REUSED_{key.upper()}",
                f"id {op.key!r} was already used with a different {key}",
                field=key,
                id=op.key,
            )
    raise AssertionError("fields differ but no key differs")


def _replay_stored(op: Op, stored: tuple) -> _Result:
    fields, ok, response = stored
    assert response, f"operation {op.identity} has no stored answer"
    return _mismatch(op, fields) or (ok, response)


def _replay(op: Op, leader: Op, leader_future: asyncio.Future) -> _Result:
    """A duplicate within one batch gets the leader's answer (or the reused-id refusal)."""
    mismatch = _mismatch(op, leader.fields)
    if mismatch:
        return mismatch
    exc = leader_future.exception()
    if exc is not None:
        return exc
    return True, leader_future.result()


def _settle(future: asyncio.Future, result: _Result) -> None:
    if future.done():
        return
    if isinstance(result, DomainError):
        future.set_exception(result)
        return
    ok, response = result
    if ok:
        future.set_result(response)
    else:
        future.set_exception(DomainError.from_status(status_pb2.Status.FromString(response)))
