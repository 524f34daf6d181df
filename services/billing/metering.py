"""The metering engine: charges due call blocks through Wallet (DESIGN.md "Metering").

Every block charge follows the intent pattern, with the call's own row as the intent: (1) one
transaction claims due calls with `FOR UPDATE SKIP LOCKED` and marks each as charging its next
block (`charging_block_no`, the block's start, when the charge began), so a replica never picks a
call another replica is charging and the sweeper can re-drive the charge; (2) one
`Wallet.BatchTransfer` per ≤ 500 blocks, independent items, each block one group (creator leg +
fee leg) whose group id is the block's derived id `call:<call_id>:block:<n>`, so a retry or a
re-drive can never charge twice; (3) one transaction settles the charges still in flight on their
calls (a settle that lost the race to the sweeper changes nothing), advances the calls and appends
their events to the outbox.

What is owed: a block is charged only if, at its nominal start, the call was active, not paused,
and had a heartbeat within the grace. The grace counts from the later of the last heartbeat and
Billing's resumption after an outage (`meter_state.resumed_at`); blocks whose nominal start fell in
the outage are forgiven (skipped, counted in blocks_forgiven). A late tick charges a block under
its nominal id, one block per call per round, rounds repeating until nothing is due.

While its charge is in flight a call keeps the deadline it was claimed at (at most the claim's
time), whatever happens to it meanwhile (heartbeat, pause, resume, end): the sweeper finds charges
left in flight through the due index, and the tick's claim skips them (`charging_block_no`). A
STARTING call's deadline is its start, for the same reason. The settle that releases the charge
sets the next deadline (or none, once the call is over).

Low balance: Wallet answers each transfer with what the payer can still spend right after it
(`debit_available_after`); below `warning_blocks` blocks the fan is warned once, and the next
block's refusal ends the call with INSUFFICIENT_FUNDS at that block's start. No balance reads.

Throughput: a round's writes are one set-based statement per kind (rows as one JSON parameter),
and the settle's usual case (a charged block of an ACTIVE call, no warning due) is one UPDATE …
RETURNING computing the call's next state in SQL, everything else taking the general way through
`_settle_one`; the claim and the settle run on raw psycopg transactions. A round pays through at
most MAX_GROUPS_PER_RPC blocks per BatchTransfer with WALLET_RPCS_IN_FLIGHT at once, and
`billing_rounds_in_flight` rounds run at once in a process, so Billing's database work overlaps
Wallet's. `fanbank bench metering` measures a tick (services/billing/bench.py).

Starts: only the StartCall request (or its replay with the same request id) turns a STARTING call
ACTIVE, because only then is the fan told. If Wallet cannot be reached, StartCall answers
UNAVAILABLE CALL_STARTING and the retry settles the block; a start nobody retried is settled by the
sweeper as START_ABANDONED, and a charge it had is refunded (a reversal intent, `refund_state`).
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared import auth
from shared.clock import NOW_SQL
from shared.config import Settings
from shared.convert import optional_timestamp
from shared.db import RawConn, joined, json_param, raw_transaction
from shared.errors import error_info, reason_of
from shared.gen.fanbank.billing.v1 import billing_service_pb2 as pb
from shared.gen.fanbank.wallet.v1 import wallet_service_pb2 as wpb
from shared.legs import payment_legs
from shared.outbox import MAX_EVENTS_PER_APPEND, Event, append
from shared.presets import fee_amount

log = logging.getLogger(__name__)

SCHEMA = "billing"
MAX_GROUPS_PER_RPC = 500  # two legs each: within Wallet's 1,000 items per batch
MAX_ROUNDS = 10_000
WALLET_DEADLINE_S = 10.0
WALLET_RPCS_IN_FLIGHT = 4
# The most events one claimed call adds to its round's outbox append: an end (the call's, the
# creator's and the node's feeds), or a charge and its low-balance warning (the call's feed; the
# warning the node's too). A claim chunk must keep the append within MAX_EVENTS_PER_APPEND, or
# every settle of the round would fail and its calls stay in flight.
EVENTS_PER_CALL = 3


_CALL_FIELDS = (
    "call_id fan_id creator_id status tokens_per_block block_seconds fee_bps grace_seconds "
    "max_pause_seconds warning_blocks media_node next_block_no next_block_at paused_at "
    "last_heartbeat_at segment_started_at low_balance_warned"
).split()
_CALL_COLUMNS = ", ".join(_CALL_FIELDS)


def block_id(call_id: str, block_no: int) -> str:
    return f"call:{call_id}:block:{block_no}"


# Which feeds carry which events. `call:<id>` (the fan's and creator's WatchCall) carries all of them.
# A creator's feed `creator:<id>` and a media node's `node:<node>` carry the life of each call
# (started, paused, resumed, ended) and, for the node, the low-balance warning that precedes an
# end; per-block charges stay on the call's own channel. At 100,000 calls a tick would otherwise
# append three rows per block, and every round would queue on the few hot `node:` sequence rows.
_LIFE = frozenset(
    {pb.CALL_EVENT_TYPE_STARTED, pb.CALL_EVENT_TYPE_PAUSED, pb.CALL_EVENT_TYPE_RESUMED, pb.CALL_EVENT_TYPE_ENDED}
)
_NODE_FEED = _LIFE | {pb.CALL_EVENT_TYPE_LOW_BALANCE_WARNING}


_EVENT_NAMES = {
    value: pb.CallEventType.Name(value).removeprefix("CALL_EVENT_TYPE_") for value in pb.CallEventType.values()
}


def call_events(row, event_type: int, at: dt.datetime, **fields) -> list[Event]:
    """One CallEvent to each channel that carries it (see _LIFE)."""
    event = pb.CallEvent(
        type=event_type,
        call_id=row.call_id,
        fan_id=row.fan_id,
        creator_id=row.creator_id,
        media_node=row.media_node,
        event_time=optional_timestamp(at),
        **fields,
    )
    payload = event.SerializeToString()
    name = _EVENT_NAMES[event_type]
    channels = [f"call:{row.call_id}"]
    if event_type in _LIFE:
        channels.append(f"creator:{row.creator_id}")
    if row.media_node and event_type in _NODE_FEED:
        channels.append(f"node:{row.media_node}")
    return [Event(channel, name, payload) for channel in channels]


def active_ms_until(row, until: dt.datetime) -> int:
    if row.status not in ("ACTIVE", "STARTING") or row.segment_started_at is None:
        return 0
    return max(0, int((until - row.segment_started_at).total_seconds() * 1000))


def end_params(row, status: str, reason: str, ended_at: dt.datetime, release: bool = False) -> dict:
    """An "ends" row. `release` is for a settle ending the call it settles: it also releases the
    charge in flight; any other end leaves that charge to its settle."""
    return {
        "call_id": row.call_id,
        "status": status,
        "reason": reason,
        "ended_at": ended_at,
        "extra_ms": active_ms_until(row, ended_at),
        "release": release,
    }


def _unnest(columns: dict[str, str]) -> str:
    """`jsonb_to_recordset(:rows) AS u(a text, …)`: one statement writes every row. The rows travel
    as one JSON parameter (shared/db.py json_param; psycopg's per-element array dumping was a fifth
    of the tick's Python time). Statements also name their calls in `:ids` (`c.call_id = ANY(:ids)`): a
    recordset counts as 100 rows to the planner, which may then prefer scanning the whole table."""
    return f"jsonb_to_recordset(CAST(:rows AS jsonb)) AS u({', '.join(f'{n} {k}' for n, k in columns.items())})"


def _ids(call_ids) -> str:
    """Distinct call ids, sorted, as one parameter for `string_to_array(:ids, ' ')`."""
    return joined(sorted(set(call_ids)))


def _rows_param(rows: Sequence[dict], columns: dict[str, str]) -> dict[str, object]:
    return {
        "rows": json_param([{n: row[n] for n in columns} for row in rows]),
        "ids": _ids(row["call_id"] for row in rows),
    }


_CLAIM_COLUMNS = {"call_id": "text", "block_no": "bigint", "block_at": "timestamptz", "forgiven": "bigint"}
_MOVE_COLUMNS = {**_CLAIM_COLUMNS, "deadline": "timestamptz"}
_END_COLUMNS = {
    "call_id": "text",
    "status": "text",
    "reason": "text",
    "ended_at": "timestamptz",
    "extra_ms": "bigint",
    "release": "boolean",
}
_CHARGED_COLUMNS = {
    "call_id": "text",
    "status": "text",
    "block_no": "bigint",
    "next_block_at": "timestamptz",
    "deadline": "timestamptz",
    "carry": "bigint",
    "tokens": "bigint",
    "fee": "bigint",
    "warn": "boolean",
}


def _release_when(condition: str | None = None) -> str:
    """Releases the call's in-flight charge (its intent), when `condition` holds if one is given."""
    return ", ".join(
        f"{column} = CASE WHEN {condition} THEN NULL ELSE c.{column} END" if condition else f"{column} = NULL"
        for column in ("charging_block_no", "charging_block_at", "charging_since")
    )


# The calls a statement writes, named again beside its recordset (see _unnest).
_NAMED = "c.call_id = ANY(string_to_array(:ids, ' '))"
# Set-based writes of a round and a settle: one statement per kind whatever the number of calls.
_ROWS_SQL = {
    "claims": (
        _CLAIM_COLUMNS,
        (
            "UPDATE billing.calls c SET charging_block_no = u.block_no, charging_block_at = u.block_at, "
            f"charging_since = {NOW_SQL}, next_block_no = u.block_no, "
            "next_block_at = u.block_at, blocks_forgiven = c.blocks_forgiven + u.forgiven "
            f"FROM {_unnest(_CLAIM_COLUMNS)} WHERE c.call_id = u.call_id AND {_NAMED}"
        ),
    ),
    "moves": (
        _MOVE_COLUMNS,
        (
            "UPDATE billing.calls c SET next_block_no = u.block_no, next_block_at = u.block_at, "
            "deadline_at = u.deadline, blocks_forgiven = c.blocks_forgiven + u.forgiven "
            f"FROM {_unnest(_MOVE_COLUMNS)} WHERE c.call_id = u.call_id AND {_NAMED}"
        ),
    ),
    "ends": (
        _END_COLUMNS,
        (
            "UPDATE billing.calls c SET status = u.status, end_reason = u.reason, ended_at = u.ended_at, "
            "active_ms = c.active_ms + u.extra_ms, next_block_at = NULL, paused_at = NULL, "
            # A charge still in flight stays claimed, with its deadline, until its settle (or the
            # sweeper's) releases it; `release` is that settle.
            f"{_release_when('u.release')}, "
            "deadline_at = CASE WHEN u.release OR c.charging_block_no IS NULL THEN NULL ELSE c.deadline_at END "
            f"FROM {_unnest(_END_COLUMNS)} WHERE c.call_id = u.call_id AND {_NAMED}"
        ),
    ),
    "releases": (
        {"call_id": "text"},
        f"UPDATE billing.calls c SET {_release_when()}, deadline_at = NULL WHERE {_NAMED}",
    ),
    "abandoned": (
        {"call_id": "text"},
        (
            "UPDATE billing.calls c SET refund_state = 'PENDING' "
            f"FROM {_unnest({'call_id': 'text'})} WHERE c.call_id = u.call_id AND {_NAMED}"
        ),
    ),
    "charged": (
        _CHARGED_COLUMNS,
        (
            "UPDATE billing.calls c SET status = u.status, next_block_no = u.block_no + 1, "
            f"next_block_at = u.next_block_at, deadline_at = u.deadline, {_release_when()}, "
            "carry_ms = COALESCE(u.carry, c.carry_ms), blocks_charged = c.blocks_charged + 1, "
            "tokens_charged = c.tokens_charged + u.tokens, fee_tokens = c.fee_tokens + u.fee, "
            "low_balance_warned = c.low_balance_warned OR u.warn "
            f"FROM {_unnest(_CHARGED_COLUMNS)} WHERE c.call_id = u.call_id AND {_NAMED}"
        ),
    ),
}


# What a call marked by the claim needs to be charged; its other columns come back NULL (each value
# sent is converted to text and back, a timestamp at ~1 µs).
_PLAIN_FIELDS = frozenset({"call_id", "fan_id", "creator_id", "next_block_no", "tokens_per_block", "fee_bps"})
# The claim. The usual case is marked as charging in the same statement (`plain`): an ACTIVE call
# whose next block has begun, within its lease, and did not begin in a Billing outage, so nothing is
# forgiven — exactly what _round would decide and write as a claim. Every other due call comes back
# locked and unmarked, and _round decides it (pause over, lease lost, block forgiven, not due yet).
_CLAIM_SQL = f"""
    WITH due AS MATERIALIZED (
        SELECT {_CALL_COLUMNS}, (
            status = 'ACTIVE' AND next_block_at <= :now
            AND next_block_at <= GREATEST(last_heartbeat_at, CAST(:resumed_at AS timestamptz))
                + make_interval(secs => grace_seconds)
            AND NOT COALESCE(next_block_at >= CAST(:outage_from AS timestamptz)
                             AND next_block_at < CAST(:resumed_at AS timestamptz), false)
        ) AS plain
        FROM billing.calls
        WHERE deadline_at <= :now AND status IN ('ACTIVE', 'PAUSED') AND charging_block_no IS NULL
        ORDER BY deadline_at LIMIT :chunk FOR UPDATE SKIP LOCKED
    ), marked AS (
        UPDATE billing.calls c SET charging_block_no = c.next_block_no, charging_block_at = c.next_block_at,
            charging_since = {NOW_SQL}
        WHERE c.call_id = ANY(ARRAY(SELECT call_id FROM due WHERE plain))
    )
    SELECT plain, {
    ", ".join(f if f in _PLAIN_FIELDS else f"CASE WHEN plain THEN NULL ELSE {f} END AS {f}" for f in _CALL_FIELDS)
}
    FROM due
"""
_SETTLE_LOCK_SQL = (
    "WITH locked AS MATERIALIZED (SELECT call_id FROM billing.calls "
    "WHERE call_id = ANY(string_to_array(:ids, ' ')) ORDER BY call_id FOR UPDATE) "
    f"SELECT count(*) AS locked, {NOW_SQL} AS now FROM locked"
)
# A settle's general way: the calls' rows (locked already) with their charge in flight.
_SETTLE_ROWS_SQL = (
    f"SELECT {_CALL_COLUMNS}, charging_block_no AS block_no, charging_block_at AS block_at "
    "FROM billing.calls WHERE call_id = ANY(string_to_array(:ids, ' '))"
)
# A settle's usual case, as _settle_one would write it: a charged block of an ACTIVE call whose
# low-balance warning does not fire now (warned already, or enough left). The lists travel as
# strings ('N' is an unknown spendable amount, which never takes this way).
_SETTLE_CHARGED_SQL = f"""
    UPDATE billing.calls c SET
        next_block_no = u.block_no + 1,
        next_block_at = c.charging_block_at + make_interval(secs => c.block_seconds),
        deadline_at = LEAST(c.charging_block_at + make_interval(secs => c.block_seconds),
                            c.last_heartbeat_at + make_interval(secs => c.grace_seconds)),
        {_release_when()},
        blocks_charged = c.blocks_charged + 1, tokens_charged = c.tokens_charged + u.tokens,
        fee_tokens = c.fee_tokens + u.fee
    FROM unnest(string_to_array(:ids, ' '), CAST(string_to_array(:blocks, ' ') AS bigint[]),
                CAST(string_to_array(:tokens, ' ') AS bigint[]), CAST(string_to_array(:fees, ' ') AS bigint[]),
                CAST(string_to_array(:spendable, ' ', 'N') AS bigint[])) AS u(call_id, block_no, tokens, fee, spendable)
    WHERE c.call_id = u.call_id AND c.call_id = ANY(string_to_array(:ids, ' '))
        AND c.status = 'ACTIVE' AND c.charging_block_no = u.block_no
        AND (c.low_balance_warned OR c.warning_blocks <= 0 OR u.spendable >= c.tokens_per_block * c.warning_blocks)
    RETURNING c.call_id, c.fan_id, c.creator_id, c.media_node, u.block_no, u.tokens,
        c.next_block_at - make_interval(secs => c.block_seconds) AS block_at
"""


def _charged_params(outcomes: Sequence[Outcome]) -> dict[str, str]:
    return {
        "ids": joined(o.charge.call_id for o in outcomes),
        "blocks": joined(o.charge.block_no for o in outcomes),
        "tokens": joined(o.charge.tokens for o in outcomes),
        "fees": joined(o.charge.fee for o in outcomes),
        "spendable": joined("N" if o.spendable_after is None else o.spendable_after for o in outcomes),
    }


_ROWS_TEXT = {kind: text(statement) for kind, (_, statement) in _ROWS_SQL.items()}


async def write_rows(conn: AsyncConnection | RawConn, kind: str, rows: Sequence[dict]) -> None:
    """One set-based statement writing `rows` of `kind` (see _ROWS_SQL) in the caller's transaction
    (SQLAlchemy's, or a `raw_transaction`); nothing when empty."""
    if rows:
        columns, statement = _ROWS_SQL[kind]
        params = _rows_param(rows, columns)
        if isinstance(conn, RawConn):
            await conn.execute(statement, params)
        else:
            await conn.execute(_ROWS_TEXT[kind], params)


@dataclass(frozen=True, slots=True)
class Charge:
    call_id: str
    fan_id: str
    creator_id: str
    block_no: int
    tokens: int
    fee: int
    fee_bps: int


@dataclass(frozen=True, slots=True)
class Outcome:
    charge: Charge
    charged: bool
    reason: str  # Wallet's ErrorInfo reason when not charged
    spendable_after: int | None = None


def _in_flight(row) -> Charge:
    """The charge a call has in flight, as its claim made it: the call's fixed price and fee rate."""
    tokens = row.tokens_per_block
    return Charge(
        row.call_id, row.fan_id, row.creator_id, row.block_no, tokens, fee_amount(tokens, row.fee_bps), row.fee_bps
    )


def transfer_legs(charge: Charge) -> list[dict]:
    """The block's legs (shared/legs.py) as TransferSpec fields, grouped under the block's derived id."""
    return payment_legs(
        block_id(charge.call_id, charge.block_no),
        fan_id=charge.fan_id,
        creator_id=charge.creator_id,
        amount=charge.tokens,
        fee=charge.fee,
        code=wpb.TRANSFER_CODE_CALL_BLOCK,
        context_type="call",
        context_id=charge.call_id,
        fee_bps=charge.fee_bps,
        grouped=True,
    )


class Metering:
    def __init__(self, engine: AsyncEngine, wallet, settings: Settings, notify: Callable[[], None] = lambda: None):
        self.engine = engine
        self.wallet = wallet  # a WalletServiceStub signed as "billing"
        self.notify = notify
        self.claim_chunk = settings.billing_claim_chunk
        if self.claim_chunk * EVENTS_PER_CALL > MAX_EVENTS_PER_APPEND:
            raise ValueError(
                f"a claim chunk of {self.claim_chunk} calls could append more events than one append takes"
            )
        self.rounds_in_flight = settings.billing_rounds_in_flight
        self.outage_after = dt.timedelta(seconds=settings.billing_outage_after_seconds)
        self.sweep_after = dt.timedelta(seconds=settings.sweep_after_seconds)
        # Seconds spent per step (claim, pay, settle), summed over rounds: what a tick is made of.
        self.seconds: collections.Counter[str] = collections.Counter()
        self._started = False
        self._start_lock = asyncio.Lock()

    async def ensure_started(self) -> None:
        async with self._start_lock:
            if not self._started:
                await self.mark_started()
                self._started = True

    # ---- Wallet ---------------------------------------------------------------------------------

    async def spendable(self, fan_id: str) -> int:
        request = wpb.GetBalanceRequest(owner_id=fan_id, asset=wpb.ASSET_TOKEN)
        response = await auth.as_itself(lambda: self.wallet.GetBalance(request, timeout=WALLET_DEADLINE_S))
        return response.spendable_available

    async def pay(self, charges: Sequence[Charge]) -> list[Outcome]:
        """Charges the blocks through Wallet, up to MAX_GROUPS_PER_RPC blocks per BatchTransfer and
        WALLET_RPCS_IN_FLIGHT of those at once; raises if Wallet could not be reached (the charges
        stay in flight for the sweeper). Each charged block's outcome carries what the fan can still
        spend (Wallet's `debit_available_after` of the block's last leg) for the low-balance check."""
        parts = [charges[i : i + MAX_GROUPS_PER_RPC] for i in range(0, len(charges), MAX_GROUPS_PER_RPC)]
        gate = asyncio.Semaphore(WALLET_RPCS_IN_FLIGHT)

        async def pay_part(part: Sequence[Charge]) -> list[Outcome]:
            specs = [transfer_legs(charge) for charge in part]
            request = wpb.BatchTransferRequest(
                mode=wpb.BATCH_MODE_INDEPENDENT, transfers=[leg for legs in specs for leg in legs]
            )
            async with gate:
                response = await auth.as_itself(lambda: self.wallet.BatchTransfer(request, timeout=WALLET_DEADLINE_S))
            by_id = {result.transfer_id: result for result in response.results}
            outcomes = []
            for charge, group in zip(part, specs, strict=True):
                results = [by_id[leg["transfer_id"]] for leg in group]
                failed = next((r.error for r in results if r.HasField("error")), None)
                if failed is not None:
                    info = error_info(failed)
                    outcomes.append(Outcome(charge, False, info.reason if info else "UNKNOWN"))
                else:
                    outcomes.append(Outcome(charge, True, "", results[-1].transfer.debit_available_after))
            return outcomes

        done = await asyncio.gather(*(pay_part(part) for part in parts))
        return [outcome for part in done for outcome in part]

    # ---- settling -------------------------------------------------------------------------------

    async def settle(self, outcomes: Sequence[Outcome], confirming: str | None = None) -> tuple[int, int]:
        """Applies the outcomes whose charge is still in flight on its call; answers (charges
        settled, blocks charged) by this call. `confirming`
        is the call whose StartCall (or its replay) is settling the first block and will answer the
        fan: only then does a STARTING call become ACTIVE. Any other settle of a STARTING call (the
        sweeper, after the fan's request gave up) abandons it and refunds what was charged."""
        if not outcomes:
            return 0, 0
        async with raw_transaction(self.engine) as conn:
            # The calls' rows are the intents: a charge is still to settle while its call says it is
            # in flight (charging_block_no), whatever the call's status meanwhile. Every call is
            # locked first, in id order, as everyone who locks several calls does.
            ids = _ids(o.charge.call_id for o in outcomes)
            now = (await conn.execute(_SETTLE_LOCK_SQL, {"ids": ids}))[0].now  # business time
            events: list[Event] = []
            # The usual case in one statement: a charged block of a call still ACTIVE that needs no
            # warning. What it does not settle takes the general way below, row by row in Python.
            charged = [o for o in outcomes if o.charged]
            fast = await conn.execute(_SETTLE_CHARGED_SQL, _charged_params(charged)) if charged else []
            for row in fast:
                events += call_events(
                    row, pb.CALL_EVENT_TYPE_BLOCK_CHARGED, row.block_at, block_no=row.block_no, tokens=row.tokens
                )
            settled = {(row.call_id, row.block_no) for row in fast}
            rest = [o for o in outcomes if (o.charge.call_id, o.charge.block_no) not in settled]
            batches: dict[str, list[dict]] = {"ends": [], "releases": [], "charged": [], "abandoned": []}
            rows = await conn.execute(_SETTLE_ROWS_SQL, {"ids": _ids(o.charge.call_id for o in rest)}) if rest else []
            pending = {(r.call_id, r.block_no): r for r in rows if r.block_no is not None}
            for outcome in rest:
                row = pending.pop((outcome.charge.call_id, outcome.charge.block_no), None)
                if row is None:
                    continue  # settled already (sweeper or another replica)
                settled.add((row.call_id, row.block_no))
                events += self._settle_one(row, outcome, now, batches, confirming)
            # One statement per kind of write, in a fixed order.
            for kind, writes in batches.items():
                await write_rows(conn, kind, writes)
            await append(conn, SCHEMA, events)
        self.notify()
        if batches["abandoned"]:
            await self.refund([r["call_id"] for r in batches["abandoned"]])
        return len(settled), len(fast) + len(batches["charged"])

    def _settle_one(
        self, row, outcome: Outcome, now: dt.datetime, batches: dict[str, list[dict]], confirming: str | None
    ) -> list[Event]:
        """Adds this outcome's writes to `batches` (executed set-wise by settle); answers its events."""
        charge = outcome.charge
        if row.status == "STARTING" and row.call_id != confirming:
            # Nobody is waiting for this start any more: the fan saw an error. Never start it.
            log.warning("abandoning a call start nobody confirmed", extra={"call_id": row.call_id})
            batches["ends"].append(end_params(row, "FAILED", "START_ABANDONED", now, release=True))
            if outcome.charged:
                batches["abandoned"].append({"call_id": row.call_id})
            return []
        if not outcome.charged:
            if row.status == "STARTING":
                batches["ends"].append(end_params(row, "FAILED", "START_FAILED", now, release=True))
                return []
            if row.status in ("ENDED", "FAILED"):
                batches["releases"].append({"call_id": row.call_id})
                return []
            reason = "INSUFFICIENT_FUNDS" if outcome.reason == "INSUFFICIENT_FUNDS" else "CHARGE_FAILED"
            if reason == "CHARGE_FAILED":
                log.error("wallet refused a call block", extra={"call_id": row.call_id, "reason": outcome.reason})
            ended_at = min(row.block_at, now)
            batches["ends"].append(end_params(row, "ENDED", reason, ended_at, release=True))
            return call_events(
                row, pb.CALL_EVENT_TYPE_ENDED, ended_at, end_reason=pb.EndReason.Value(f"END_REASON_{reason}")
            )
        next_at = row.block_at + dt.timedelta(seconds=row.block_seconds)
        warn = (
            outcome.spendable_after is not None
            and not row.low_balance_warned
            and row.warning_blocks > 0
            and outcome.spendable_after < row.tokens_per_block * row.warning_blocks
        )
        events: list[Event] = []
        carry = None  # unchanged
        if row.status == "STARTING":
            events += call_events(row, pb.CALL_EVENT_TYPE_STARTED, row.block_at)
        if row.status in ("ACTIVE", "STARTING"):
            lease_end = row.last_heartbeat_at + dt.timedelta(seconds=row.grace_seconds)
            next_block_at, deadline = next_at, min(next_at, lease_end)
        elif row.status == "PAUSED":
            # Paused while this block was in flight: its unused part waits for the resume.
            next_block_at, deadline = None, row.paused_at + dt.timedelta(seconds=row.max_pause_seconds)
            carry = max(0, int((next_at - row.paused_at).total_seconds() * 1000))
        else:  # ended meanwhile: the block began before the end and stays paid
            next_block_at, deadline = None, None
        batches["charged"].append(
            {
                "status": "ACTIVE" if row.status == "STARTING" else row.status,
                "block_no": charge.block_no,
                "next_block_at": next_block_at,
                "deadline": deadline,
                "carry": carry,
                "tokens": charge.tokens,
                "fee": charge.fee,
                "warn": warn,
                "call_id": row.call_id,
            }
        )
        events += call_events(
            row, pb.CALL_EVENT_TYPE_BLOCK_CHARGED, row.block_at, block_no=charge.block_no, tokens=charge.tokens
        )
        if warn:
            events += call_events(row, pb.CALL_EVENT_TYPE_LOW_BALANCE_WARNING, now, tokens=outcome.spendable_after)
        return events

    # ---- liveness -------------------------------------------------------------------------------

    async def mark_started(self) -> None:
        """Records this process's start; after a silence of every replica, records the outage."""
        async with self.engine.begin() as conn:
            await conn.execute(
                text(
                    f"""
                    UPDATE billing.meter_state SET
                        outage_from = CASE WHEN last_alive_at < {NOW_SQL} - CAST(:gap AS interval)
                                           THEN last_alive_at ELSE outage_from END,
                        resumed_at = CASE WHEN last_alive_at < {NOW_SQL} - CAST(:gap AS interval)
                                          THEN {NOW_SQL} ELSE resumed_at END,
                        last_alive_at = {NOW_SQL}
                    """
                ),
                {"gap": self.outage_after},
            )

    async def _alive(self) -> tuple[dt.datetime, dt.datetime | None, dt.datetime | None]:
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    text(
                        f"UPDATE billing.meter_state SET last_alive_at = {NOW_SQL} "
                        f"RETURNING {NOW_SQL} AS now, outage_from, resumed_at"
                    )
                )
            ).one()
        return row.now, row.outage_from, row.resumed_at

    # ---- the tick -------------------------------------------------------------------------------

    async def tick(self) -> int:
        """Charges every due block and ends the calls that must end; answers blocks charged."""
        await self.ensure_started()
        charged = [0] * self.rounds_in_flight

        async def worker(index: int) -> None:
            for _ in range(MAX_ROUNDS):
                claimed, blocks = await self._round()
                charged[index] += blocks
                if not claimed:
                    break

        # Rounds in flight at once: while one waits for Wallet, another claims or settles. They
        # claim disjoint calls (SKIP LOCKED, then charging_block_no), exactly as replicas do.
        # A failing round stops the others (TaskGroup) and the tick raises its error.
        try:
            async with asyncio.TaskGroup() as group:
                for index in range(self.rounds_in_flight):
                    group.create_task(worker(index))
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None
        return sum(charged)

    async def _round(self) -> tuple[int, int]:
        """One claim → pay → settle; answers (calls claimed, blocks charged)."""
        started = time.perf_counter()
        now, outage_from, resumed_at = await self._alive()
        charges: list[Charge] = []
        async with raw_transaction(self.engine) as conn:
            rows = await conn.execute(
                _CLAIM_SQL,
                {"now": now, "chunk": self.claim_chunk, "outage_from": outage_from, "resumed_at": resumed_at},
            )
            if not rows:
                return 0, 0
            events: list[Event] = []
            claims, ends, moves = [], [], []
            for row in rows:
                if row.plain:  # marked by the claim itself
                    fee = fee_amount(row.tokens_per_block, row.fee_bps)
                    charges.append(
                        Charge(
                            row.call_id,
                            row.fan_id,
                            row.creator_id,
                            row.next_block_no,
                            row.tokens_per_block,
                            fee,
                            row.fee_bps,
                        )
                    )
                    continue
                if row.status == "PAUSED":
                    ended_at = row.paused_at + dt.timedelta(seconds=row.max_pause_seconds)
                    ends.append(end_params(row, "ENDED", "PAUSE_TOO_LONG", ended_at))
                    events += call_events(
                        row, pb.CALL_EVENT_TYPE_ENDED, ended_at, end_reason=pb.END_REASON_PAUSE_TOO_LONG
                    )
                    continue
                block = dt.timedelta(seconds=row.block_seconds)
                block_no, block_at = row.next_block_no, row.next_block_at
                if outage_from is not None and resumed_at is not None and outage_from <= block_at < resumed_at:
                    skipped = -(-(resumed_at - block_at) // block)
                    block_no, block_at = block_no + skipped, block_at + skipped * block
                alive_from = max(row.last_heartbeat_at, resumed_at) if resumed_at else row.last_heartbeat_at
                alive_until = alive_from + dt.timedelta(seconds=row.grace_seconds)
                if block_at <= now and block_at <= alive_until:
                    fee = fee_amount(row.tokens_per_block, row.fee_bps)
                    charges.append(
                        Charge(
                            row.call_id, row.fan_id, row.creator_id, block_no, row.tokens_per_block, fee, row.fee_bps
                        )
                    )
                    claims.append(
                        {
                            "call_id": row.call_id,
                            "block_no": block_no,
                            "block_at": block_at,
                            "forgiven": block_no - row.next_block_no,
                        }
                    )
                elif alive_until < now:
                    ends.append(end_params(row, "ENDED", "HEARTBEAT_LOST", alive_until))
                    events += call_events(
                        row, pb.CALL_EVENT_TYPE_ENDED, alive_until, end_reason=pb.END_REASON_HEARTBEAT_LOST
                    )
                else:
                    moves.append(
                        {
                            "call_id": row.call_id,
                            "block_no": block_no,
                            "block_at": block_at,
                            "forgiven": block_no - row.next_block_no,
                            "deadline": min(block_at, alive_until),
                        }
                    )
            await write_rows(conn, "claims", claims)
            await write_rows(conn, "moves", moves)
            await write_rows(conn, "ends", ends)
            await append(conn, SCHEMA, events)
        if events:
            self.notify()
        claimed = time.perf_counter()
        self.seconds["claim"] += claimed - started
        if charges:
            try:
                outcomes = await self.pay(charges)
            except grpc.aio.AioRpcError:
                log.warning("wallet unreachable; the sweeper will re-drive these blocks", exc_info=True)
                return len(rows), 0
            paid = time.perf_counter()
            self.seconds["pay"] += paid - claimed
            _, blocks = await self.settle(outcomes)
            self.seconds["settle"] += time.perf_counter() - paid
            return len(rows), blocks
        return len(rows), 0

    # ---- the sweeper ----------------------------------------------------------------------------

    async def sweep(self, older_than: dt.timedelta | None = None, limit: int | None = None) -> int:
        """Re-drives charges left in flight (a crash between Wallet and the settle): same derived
        ids, so Wallet answers the original result; then finishes refunds left PENDING. Answers the
        charges settled now."""
        older_than = self.sweep_after if older_than is None else older_than
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        # In flight, a call keeps the deadline it was claimed at (at most the claim's
                        # time), so the due index finds the charges that began `age` ago or more.
                        "SELECT call_id, charging_block_no AS block_no, tokens_per_block, fan_id, creator_id, fee_bps "
                        f"FROM billing.calls WHERE deadline_at <= {NOW_SQL} - CAST(:age AS interval) "
                        f"AND charging_since <= {NOW_SQL} - CAST(:age AS interval) "
                        "ORDER BY deadline_at LIMIT :limit"
                    ),
                    {"age": older_than, "limit": limit or self.claim_chunk},
                )
            ).all()
            refunds = (
                (
                    await conn.execute(
                        text("SELECT call_id FROM billing.calls WHERE refund_state = 'PENDING' LIMIT :limit"),
                        {"limit": limit or self.claim_chunk},
                    )
                )
                .scalars()
                .all()
            )
        charges = [_in_flight(r) for r in rows]
        settled = (await self.settle(await self.pay(charges)))[0] if charges else 0
        if refunds:
            await self.refund(list(refunds))
        return settled

    async def finish_start(self, call_id: str) -> None:
        """StartCall's replay: settles the first block of a call still STARTING, confirming it (the
        fan is waiting for this answer). Raises if Wallet cannot be reached."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT call_id, charging_block_no AS block_no, tokens_per_block, fan_id, creator_id, fee_bps "
                        "FROM billing.calls WHERE call_id = :id AND status = 'STARTING' AND charging_block_no = 0"
                    ),
                    {"id": call_id},
                )
            ).one_or_none()
        if row is not None:
            await self.settle(await self.pay([_in_flight(row)]), confirming=call_id)

    async def refund(self, call_ids: Sequence[str]) -> None:
        """Gives back the first block of abandoned starts: one Wallet reversal of every leg of the
        block's group (the fee too), under an id derived from the block, then marks it DONE. Wallet
        unreachable: the refund stays PENDING for the sweeper."""
        done = []
        for call_id in call_ids:
            group = block_id(call_id, 0)
            request = wpb.ReverseTransferRequest(
                reversal_id=f"{group}:refund", batch_id=group, code=wpb.TRANSFER_CODE_REFUND
            )
            try:
                await auth.as_itself(
                    lambda request=request: self.wallet.ReverseTransfer(request, timeout=WALLET_DEADLINE_S)
                )
            except grpc.aio.AioRpcError as error:
                if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    log.warning("wallet unreachable; the refund stays pending", extra={"call_id": call_id})
                    continue
                # Already fully reversed (a refund of ours that succeeded before a crash) is done;
                # anything else is a bug to look at, and the refund stays pending.
                if reason_of(error) != "NOTHING_LEFT_TO_REVERSE":
                    log.error("wallet refused a refund", extra={"call_id": call_id, "code": error.code().name})
                    continue
            done.append(call_id)
        if done:
            async with self.engine.begin() as conn:
                await conn.execute(
                    text("UPDATE billing.calls SET refund_state = 'DONE' WHERE call_id = ANY(CAST(:ids AS text[]))"),
                    {"ids": done},
                )
