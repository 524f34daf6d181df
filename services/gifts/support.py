"""The money path of a tip, gift or like-tip (DESIGN.md "A money operation that spans two services").

Each support follows the intent pattern, in batches (group commit), so that one hot creator
receiving thousands of tips a second costs a few transactions per batch rather than per tip:

1. `lookup`: one read of business time (`fanbank_shared.now()`) and of the rows the batch's request
   ids (and like targets) already have. A replayed request is answered from its row; a PENDING row is
   re-driven with the same derived ids; a like on a target this fan already paid for is answered
   with that like-tip and charges nothing.
2. The sender's rate limit (Redis token bucket, `RateLimiter`) for the new supports only, with the
   time read in step 1: a retry is never refused for rate.
3. One transaction inserts the new intents (PENDING) with ON CONFLICT DO NOTHING on both unique
   keys (the request id, and one like per (fan, target)); a lost race is answered like step 1.
4. One `Wallet.BatchTransfer` (independent mode) in which each support is one linked group,
   `group_id = tip:<id>` (`gift:`/`like:`): the creator leg `tip:<id>:creator` and, when the fee
   is above 0, the fee leg `tip:<id>:fee`. A group commits or fails whole; one fan's empty wallet
   fails only that fan's support. Gifts calls Wallet as itself ("gifts"), so the ids are scoped to
   Gifts and never collide with a user's.
5. `settle`: one transaction marks the intents still PENDING as COMPLETED or FAILED, adds the
   completed ones to the leaderboards, daily totals and goals, and appends their GiftEvents to the
   outbox (`alerts:<creator>`, and `stream_gifts:<stream>` for a stream). A settle that lost the
   race to the sweeper or a replay finds nothing PENDING and writes nothing: one charge, one alert.

Unknown outcomes: if Wallet cannot be reached (after gRPC's own retries of UNAVAILABLE) or Gifts
fails after the Wallet call, the intents stay PENDING and the fan is answered UNAVAILABLE with
`TIP_OUTCOME_UNKNOWN` and a RetryInfo delay. Retrying the same request id re-drives the intent
under the same ids and answers the final outcome; the sweeper (`sweep`) re-drives whatever stays
PENDING longer than the sweep lease (`FANBANK_SWEEP_AFTER_SECONDS`), so the tip completes (one charge, one alert) or fails (nothing
charged) even if the fan never retries, and `ListTips` shows which.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc
import psycopg
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.gifts import rules
from shared import auth
from shared.buckets import Bucket, Buckets
from shared.clock import NOW_SQL
from shared.convert import optional_timestamp
from shared.db import json_param, raw_transaction
from shared.errors import DomainError, already_exists, error_info, precondition
from shared.gen.fanbank.gifts.v1 import gift_events_pb2 as epb
from shared.gen.fanbank.wallet.v1 import wallet_service_pb2 as wpb
from shared.legs import payment_legs
from shared.outbox import Event, append

log = logging.getLogger(__name__)

SCHEMA = "gifts"
WALLET_DEADLINE_S = 10.0
# Supports per batch: one BatchTransfer of at most 2 × 250 legs (Wallet takes 1,000 items).
MAX_BATCH = 250
MAX_GROUPS_PER_RPC = 500
# Batches waiting between two pipeline stages, and batches a stage merges into one step.
STAGE_DEPTH = 1
MAX_MERGED_BATCHES = 8
# Requests waiting for a batch; beyond this the service answers UNAVAILABLE at once.
MAX_QUEUED = 20_000
SWEEP_CHUNK = 1_000
RETRY_DELAY_MS = 1_000
SETTLE_ATTEMPTS = 3

_EVENT_TYPES = {"TIP": epb.GIFT_EVENT_TYPE_TIP, "GIFT": epb.GIFT_EVENT_TYPE_GIFT, "LIKE": epb.GIFT_EVENT_TYPE_LIKE_TIP}


def outcome_unknown() -> DomainError:
    return DomainError(
        grpc.StatusCode.UNAVAILABLE,
        "TIP_OUTCOME_UNKNOWN",
        "the payment's outcome is not known yet; retry with the same request_id for the final answer",
        retry_delay_ms=RETRY_DELAY_MS,
    )


@dataclass(frozen=True, slots=True)
class SoldGift:
    gift_id: str
    name: str
    quantity: int
    unit_price_tokens: int
    image_url: str
    animation_url: str


@dataclass(frozen=True, slots=True)
class Draft:
    """A validated request for a new support; amounts already follow the preset."""

    kind: str  # TIP, GIFT or LIKE
    scope: str
    request_id: str
    sender_id: str
    creator_id: str
    display_name: str
    amount_tokens: int
    fee_bps: int
    message: str
    context_type: str
    context_id: str
    gift: SoldGift | None = None

    @property
    def fee_tokens(self) -> int:
        return rules.split(self.amount_tokens, self.fee_bps)[0]

    def fields(self) -> dict:
        """What a replay of the same request id must repeat, in the order a difference is named."""
        gift = self.gift
        return {
            "kind": self.kind,
            "sender_id": self.sender_id,
            "creator_id": self.creator_id,
            "amount_tokens": self.amount_tokens,
            "gift_id": gift.gift_id if gift else None,
            "quantity": gift.quantity if gift else None,
            "context_type": self.context_type,
            "context_id": self.context_id,
            "message": self.message,
            "sender_display_name": self.display_name,
        }


def stored_fields(row) -> dict:
    return {
        "kind": row.kind,
        "sender_id": row.sender_id,
        "creator_id": row.creator_id,
        "amount_tokens": row.amount_tokens,
        "gift_id": row.gift_id,
        "quantity": row.quantity,
        "context_type": row.context_type,
        "context_id": row.context_id,
        "message": row.message,
        "sender_display_name": row.sender_display_name,
    }


@dataclass(frozen=True, slots=True)
class Answer:
    row: object  # the gifts.tips row
    already_paid: bool = False


@dataclass(frozen=True, slots=True)
class Charge:
    """What Wallet is asked for one support (from a draft or a stored row)."""

    tip_id: str
    kind: str
    sender_id: str
    creator_id: str
    amount_tokens: int
    fee_tokens: int
    fee_bps: int
    context_type: str
    context_id: str

    @classmethod
    def of_row(cls, row) -> Charge:
        return cls(
            row.tip_id,
            row.kind,
            row.sender_id,
            row.creator_id,
            row.amount_tokens,
            row.fee_tokens,
            row.fee_bps,
            row.context_type,
            row.context_id,
        )


@dataclass(frozen=True, slots=True)
class Outcome:
    charge: Charge
    charged: bool
    reason: str  # Wallet's ErrorInfo reason when refused


# Per-item statuses that say nothing about the money (Wallet busy, a retried conflict, a fault):
# such an item is not settled; its intent stays PENDING for the replay or the sweeper.
_TRANSIENT_CODES = frozenset(
    c.value[0]
    for c in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
    )
)

_CODES = {"TIP": wpb.TRANSFER_CODE_TIP, "GIFT": wpb.TRANSFER_CODE_GIFT, "LIKE": wpb.TRANSFER_CODE_LIKE}


def transfer_specs(charge: Charge) -> list[wpb.TransferSpec]:
    """The support's linked group (shared/legs.py): creator leg, and the fee leg only when the fee is
    above 0."""
    legs = payment_legs(
        rules.group_id(charge.kind, charge.tip_id),
        fan_id=charge.sender_id,
        creator_id=charge.creator_id,
        amount=charge.amount_tokens,
        fee=charge.fee_tokens,
        code=_CODES[charge.kind],
        context_type=charge.context_type,
        context_id=charge.context_id,
        fee_bps=charge.fee_bps,
        grouped=True,
    )
    return [wpb.TransferSpec(**leg) for leg in legs]


# ---- the rate limit --------------------------------------------------------------------------------

MAX_KEYS_PER_CALL = MAX_BATCH


class RateLimiter:
    """Per-sender token bucket in Redis (shared/buckets.py): `rate` supports a second, bursts of
    `burst`, on business time passed in (tests move it with the clock)."""

    def __init__(self, redis: Redis, rate_per_second: int, burst: int):
        # Kept a minute at least, so a test clock that stands still does not see buckets vanish.
        self.bucket = Bucket.of(rate_per_second, burst, min_ttl_ms=60_000)
        self.buckets = Buckets(redis)

    async def admit(self, senders: Sequence[str], now: dt.datetime) -> list[int]:
        """Per sender, in order (one may appear more than once): 0 if admitted, else the delay in ms
        before it would be."""
        now_ms = int(now.timestamp() * 1000)
        answers: list[int] = []
        for start in range(0, len(senders), MAX_KEYS_PER_CALL):
            part = senders[start : start + MAX_KEYS_PER_CALL]
            answers += await self.buckets.take([[(f"fanbank:gifts:rate:{s}", self.bucket)] for s in part], now_ms)
        return answers


# ---- the batch engine --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Item:
    draft: Draft
    future: asyncio.Future
    tip_id: str | None = None
    already_paid: bool = False
    row: object = None  # the latest stored row known for tip_id

    def resolve(self, result: Answer | BaseException) -> None:
        if self.future.done():
            return  # the caller went away; the outcome is stored all the same
        if isinstance(result, BaseException):
            self.future.set_exception(result)
        else:
            self.future.set_result(result)


def _fail(items: Sequence[_Item], error: BaseException | None = None) -> None:
    """Answers items a stage could not finish: once an intent exists its outcome is unknown to the
    caller, not an error (the replay of the request id or the sweeper finishes it)."""
    for item in items:
        item.resolve(outcome_unknown() if item.tip_id or error is None else error)


class _RateLimiterDown(Exception):
    """Rolls back a batch's new intents: without the limiter nothing new is taken."""


_INSERT_SQL = f"""
    INSERT INTO gifts.tips (tip_id, kind, status, request_scope, request_id, sender_id, creator_id,
        sender_display_name, amount_tokens, fee_bps, fee_tokens, message, context_type, context_id,
        gift_id, gift_name, quantity, unit_price_tokens, image_url, animation_url, created_at)
    SELECT r.tip_id, r.kind, 'PENDING', r.request_scope, r.request_id, r.sender_id, r.creator_id,
        r.sender_display_name, r.amount_tokens, r.fee_bps, r.fee_tokens, r.message, r.context_type,
        r.context_id, r.gift_id, r.gift_name, r.quantity, r.unit_price_tokens, r.image_url,
        r.animation_url, {NOW_SQL}
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(tip_id text, kind text, request_scope text,
        request_id text, sender_id text, creator_id text, sender_display_name text, amount_tokens bigint,
        fee_bps integer, fee_tokens bigint, message text, context_type text, context_id text, gift_id text,
        gift_name text, quantity bigint, unit_price_tokens bigint, image_url text, animation_url text)
    ORDER BY r.tip_id
    ON CONFLICT DO NOTHING
    RETURNING tip_id, created_at
    """

_LOOKUP_SQL = text(
    """
    SELECT 'key' AS found_by, t.*
    FROM gifts.tips t
    JOIN unnest(CAST(:scopes AS text[]), CAST(:rids AS text[])) AS k(scope, rid)
      ON t.request_scope = k.scope AND t.request_id = k.rid
    UNION ALL
    SELECT 'like', t.*
    FROM gifts.tips t
    JOIN unnest(CAST(:senders AS text[]), CAST(:ctypes AS text[]), CAST(:cids AS text[])) AS l(s, ct, ci)
      ON t.sender_id = l.s AND t.context_type = l.ct AND t.context_id = l.ci
    WHERE t.kind = 'LIKE' AND t.status <> 'FAILED'
    """
)

_BY_IDS_SQL = text("SELECT * FROM gifts.tips WHERE tip_id = ANY(CAST(:ids AS text[]))")

# The settle, one statement: claims the intents still PENDING (locked in id order, so two settlers
# of overlapping sets cannot deadlock) and writes their outcome; for the completed ones adds to the
# leaderboards (the creator's, and the stream's for a support in a stream; UTC day, ISO week and all
# time; rows in key order) and the daily totals, and moves each touched goal. It answers the settled
# rows, each completed one in a stream with its goal as it is after the batch. (Three statements
# and the boards' rows built in Python before; one round trip now, BEGIN included.)
# The ids come twice, also as an array: a recordset counts as 100 rows to the planner, which then
# preferred scanning every tip for the PENDING ones over 100 primary-key reads.
# Wallet is the truth about money: a charge also claims an intent recorded FAILED. That happens only
# after a refusal Wallet does not record (ACCOUNT_NOT_FOUND: the fan had never held tokens) when a
# re-drive of the same ids, racing the first, found the fan funded: the tip then did happen.
_SETTLE_SQL = f"""
    WITH outcome AS (
        SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(tip_id text, status text, reason text)
    ), claimed AS (
        SELECT t.tip_id FROM gifts.tips t JOIN outcome o USING (tip_id)
        WHERE t.tip_id = ANY(CAST(:ids AS text[]))
          AND (t.status = 'PENDING' OR (t.status = 'FAILED' AND o.status = 'COMPLETED'))
        ORDER BY t.tip_id FOR UPDATE OF t
    ), settled AS (
        UPDATE gifts.tips t SET status = o.status, failure_reason = o.reason, completed_at = {NOW_SQL}
        FROM claimed c JOIN outcome o USING (tip_id)
        WHERE t.tip_id = c.tip_id
        RETURNING t.*
    ), done AS (
        SELECT tip_id, kind, creator_id, sender_id, sender_display_name, amount_tokens, fee_tokens,
               context_type, context_id, created_at, (created_at AT TIME ZONE 'UTC')::date AS day
        FROM settled WHERE status = 'COMPLETED'
    ), scored AS (
        SELECT d.creator_id, b.stream_id, p.period, p.period_start, d.sender_id, d.sender_display_name,
               d.amount_tokens, d.created_at, d.tip_id
        FROM done d
        CROSS JOIN LATERAL (VALUES (''), (CASE WHEN d.context_type = 'stream' THEN d.context_id END)) AS b(stream_id)
        CROSS JOIN LATERAL (VALUES ('DAY', d.day), ('WEEK', d.day - (CAST(EXTRACT(ISODOW FROM d.day) AS integer) - 1)),
                                   ('ALL', CAST(:all_time AS date))) AS p(period, period_start)
        WHERE b.stream_id IS NOT NULL
    ), boards AS (
        INSERT INTO gifts.leaderboard AS b (creator_id, stream_id, period, period_start, sender_id,
            sender_display_name, amount_tokens, tip_count)
        SELECT creator_id, stream_id, period, period_start, sender_id,
               (array_agg(sender_display_name ORDER BY created_at DESC, tip_id DESC))[1],
               sum(amount_tokens), count(*)
        FROM scored
        GROUP BY creator_id, stream_id, period, period_start, sender_id
        ORDER BY creator_id, stream_id, period, period_start, sender_id
        ON CONFLICT (creator_id, stream_id, period, period_start, sender_id) DO UPDATE SET
            amount_tokens = b.amount_tokens + excluded.amount_tokens,
            tip_count = b.tip_count + excluded.tip_count,
            sender_display_name = CASE WHEN excluded.sender_display_name = '' THEN b.sender_display_name
                                       ELSE excluded.sender_display_name END
    ), totals AS (
        INSERT INTO gifts.daily_totals AS t (creator_id, day, kind, context_type, tip_count, gross_tokens,
            fee_tokens)
        SELECT creator_id, day, kind, context_type, count(*), sum(amount_tokens), sum(fee_tokens)
        FROM done
        GROUP BY creator_id, day, kind, context_type
        ORDER BY creator_id, day, kind, context_type
        ON CONFLICT (creator_id, day, kind, context_type) DO UPDATE SET
            tip_count = t.tip_count + excluded.tip_count,
            gross_tokens = t.gross_tokens + excluded.gross_tokens,
            fee_tokens = t.fee_tokens + excluded.fee_tokens
    ), goals AS (
        UPDATE gifts.goals g SET progress_tokens = g.progress_tokens + d.delta,
            reached_at = CASE WHEN g.reached_at IS NULL AND g.progress_tokens + d.delta >= g.target_tokens
                              THEN {NOW_SQL} ELSE g.reached_at END
        FROM (SELECT creator_id, context_id, CAST(sum(amount_tokens) AS bigint) AS delta FROM done
              WHERE context_type = 'stream' GROUP BY creator_id, context_id) d
        WHERE g.active AND g.creator_id = d.creator_id AND g.stream_id = d.context_id
        RETURNING g.goal_id, g.creator_id, g.stream_id, g.progress_tokens, g.target_tokens, d.delta
    )
    SELECT s.*, g.goal_id AS goal_ref, g.progress_tokens AS goal_after, g.target_tokens AS goal_target,
           g.delta AS goal_delta
    FROM settled s
    LEFT JOIN goals g ON s.status = 'COMPLETED' AND s.context_type = 'stream'
        AND g.creator_id = s.creator_id AND g.stream_id = s.context_id
    """


@dataclass(slots=True)
class _Batch:
    """Supports on their way through the pipeline: the items and the charges they need."""

    items: list[_Item]
    drive: dict[str, Charge]


class Payments:
    """Drafts in, final answers out: the intent → Wallet → outcome pipeline, in three stages that
    run concurrently, each on whatever the stage before has handed it meanwhile (group commit at
    every stage): intake (intents + rate limit, one transaction), payer (one Wallet call), settler
    (one transaction for outcomes, boards and events, then the answers). One task per stage: the
    settle of a hot creator's batches serializes on its rows anyway, so one settler at a time does
    the same work in fewer, larger transactions."""

    def __init__(
        self,
        engine: AsyncEngine,
        wallet,
        limiter: RateLimiter,
        notify: Callable[[], None] = lambda: None,
        sweep_after: dt.timedelta = dt.timedelta(seconds=60),
    ):
        self.engine = engine
        self.wallet = wallet  # a WalletServiceStub signed as "gifts"
        self.limiter = limiter
        self.notify = notify
        # A PENDING intent older than this is re-driven by the sweeper: longer than an in-flight
        # request takes (Wallet's deadline), though re-driving one still in flight would be harmless.
        self.sweep_after = sweep_after
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=MAX_QUEUED)
        # Bounded hand-offs: a slow later stage holds the earlier ones back instead of piling up.
        self._paying: asyncio.Queue[_Batch] = asyncio.Queue(maxsize=STAGE_DEPTH)
        self._settling: asyncio.Queue[tuple[list[_Batch], list[Outcome]]] = asyncio.Queue(maxsize=STAGE_DEPTH)
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._intake(), name="gifts-intake"),
                asyncio.create_task(self._payer(), name="gifts-payer"),
                asyncio.create_task(self._settler(), name="gifts-settler"),
            ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        shutting_down = DomainError(grpc.StatusCode.UNAVAILABLE, "SHUTTING_DOWN", "this server is shutting down; retry")
        while not self._queue.empty():
            self._queue.get_nowait().resolve(shutting_down)
        while not self._paying.empty():
            _fail(self._paying.get_nowait().items)
        while not self._settling.empty():
            for batch in self._settling.get_nowait()[0]:
                _fail(batch.items)

    async def submit(self, draft: Draft) -> Answer:
        if not self._tasks:
            raise DomainError(grpc.StatusCode.UNAVAILABLE, "SHUTTING_DOWN", "this server is not taking payments")
        item = _Item(draft, asyncio.get_running_loop().create_future())
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            raise DomainError(
                grpc.StatusCode.UNAVAILABLE, "OVERLOADED", "too many payments in flight; retry", retry_delay_ms=200
            ) from None
        # Shielded: a caller that goes away must not cancel a batch other callers share.
        return await asyncio.shield(item.future)

    # ---- the three stages ---------------------------------------------------------------------------

    async def _intake(self) -> None:
        while True:
            items = [await self._queue.get()]
            while len(items) < MAX_BATCH and not self._queue.empty():
                items.append(self._queue.get_nowait())
            batch = _Batch(items, {})
            try:
                await self._record(items, batch.drive)
                await self._paying.put(batch)
            except asyncio.CancelledError:
                _fail(items)
                raise
            except Exception as error:
                log.exception("recording payments failed", extra={"supports": len(items)})
                _fail(items, error)

    async def _payer(self) -> None:
        while True:
            batches = [await self._paying.get()]
            while len(batches) < MAX_MERGED_BATCHES and not self._paying.empty():
                batches.append(self._paying.get_nowait())
            charges = {tip_id: c for batch in batches for tip_id, c in batch.drive.items()}
            try:
                outcomes = await self.pay(list(charges.values())) if charges else []
            except asyncio.CancelledError:
                for batch in batches:
                    _fail(batch.items)
                raise
            except grpc.aio.AioRpcError as error:
                log.warning("wallet unreachable; the intents stay pending", extra={"code": error.code().name})
                outcomes = []
            except Exception:
                log.exception("paying failed; the intents stay pending", extra={"supports": len(charges)})
                outcomes = []
            try:
                await self._settling.put((batches, outcomes))
            except asyncio.CancelledError:
                for batch in batches:
                    _fail(batch.items)
                raise

    async def _settler(self) -> None:
        while True:
            handed = [await self._settling.get()]
            while len(handed) < MAX_MERGED_BATCHES and not self._settling.empty():
                handed.append(self._settling.get_nowait())
            items = [item for batches, _ in handed for batch in batches for item in batch.items]
            outcomes = [outcome for _, part in handed for outcome in part]
            try:
                if outcomes:
                    try:
                        settled = await self.settle(outcomes)
                    except Exception:
                        # The answers below read the intents as stored: PENDING → outcome unknown.
                        log.exception("settling failed; the sweeper will finish", extra={"supports": len(outcomes)})
                        settled = {}
                    for item in items:
                        if item.tip_id in settled:
                            item.row = settled[item.tip_id]
                await self._answer(items)
            except asyncio.CancelledError:
                _fail(items)
                raise
            except Exception:
                log.exception("answering payments failed", extra={"supports": len(items)})
                _fail(items)

    # ---- one batch ---------------------------------------------------------------------------------

    async def _record(self, batch: list[_Item], drive: dict[str, Charge]) -> None:
        """Inserts the new intents and applies the senders' rate limit in one transaction (a refused
        intent is deleted before the commit: nobody ever sees it); requests that collide with an
        existing row (a replay, a like already paid) are answered from that row."""
        ids = {id(item): uuid.uuid4().hex for item in batch}
        rows = [_intent_row(item.draft, ids[id(item)]) for item in batch]
        delays: dict[str, int] = {}
        try:
            async with raw_transaction(self.engine) as conn:
                async with conn.pipeline():  # BEGIN travels with the statement
                    inserted = {r.tip_id: r for r in await conn.fetch(_INSERT_SQL, {"rows": json_param(rows)})}
                new = [item for item in batch if ids[id(item)] in inserted]
                if new:
                    now = inserted[ids[id(new[0])]].created_at
                    try:
                        answers = await self.limiter.admit([item.draft.sender_id for item in new], now)
                    except RedisError as error:
                        raise _RateLimiterDown from error
                    delays = {ids[id(item)]: delay for item, delay in zip(new, answers, strict=True) if delay}
                    if delays:
                        await conn.execute(
                            "DELETE FROM gifts.tips WHERE tip_id = ANY(CAST(:ids AS text[]))", {"ids": sorted(delays)}
                        )
        except _RateLimiterDown:
            log.exception("rate limiter unavailable; refusing new payments")
            for item in batch:
                item.resolve(
                    DomainError(
                        grpc.StatusCode.UNAVAILABLE,
                        "RATE_LIMIT_UNAVAILABLE",
                        "payments are paused for a moment; retry",
                        retry_delay_ms=RETRY_DELAY_MS,
                    )
                )
            return
        lost = []
        for item in batch:
            tip_id = ids[id(item)]
            if tip_id not in inserted:
                lost.append(item)
            elif tip_id in delays:
                item.resolve(
                    DomainError(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        "RATE_LIMITED",
                        "too many tips and gifts from this sender; slow down",
                        {"retry_after_ms": str(delays[tip_id])},
                        retry_delay_ms=delays[tip_id],
                    )
                )
            else:
                item.tip_id = tip_id
                drive[tip_id] = Charge(tip_id, **_charge_fields(item.draft))
        if lost:
            await self._classify(lost, drive)
            for item in lost:
                if item.tip_id is None:
                    # The row it collided with is gone from view (a like refused meanwhile): the
                    # client's retry makes a new attempt.
                    item.resolve(outcome_unknown())

    async def _classify(self, items: Sequence[_Item], drive: dict[str, Charge]) -> None:
        """Answers replays and already-paid likes from their rows; PENDING ones join `drive`."""
        likes = [i.draft for i in items if i.draft.kind == "LIKE"]
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    _LOOKUP_SQL,
                    {
                        "scopes": [i.draft.scope for i in items],
                        "rids": [i.draft.request_id for i in items],
                        "senders": [d.sender_id for d in likes],
                        "ctypes": [d.context_type for d in likes],
                        "cids": [d.context_id for d in likes],
                    },
                )
            ).all()
        by_key = {(r.request_scope, r.request_id): r for r in rows if r.found_by == "key"}
        by_like = {(r.sender_id, r.context_type, r.context_id): r for r in rows if r.found_by == "like"}
        for item in items:
            draft = item.draft
            row = by_key.get((draft.scope, draft.request_id))
            if row is not None:
                changed = rules.first_difference(stored_fields(row), draft.fields())
                if changed is not None:
                    item.resolve(
                        already_exists(
                            f"ID_REUSED_{changed.upper()}",
                            f"request_id was used for another request ({changed} differs)",
                            field=changed,
                        )
                    )
                    continue
            elif draft.kind == "LIKE":
                row = by_like.get((draft.sender_id, draft.context_type, draft.context_id))
                item.already_paid = row is not None
            if row is None:
                continue
            item.tip_id, item.row = row.tip_id, row
            if row.status == "PENDING":
                drive[row.tip_id] = Charge.of_row(row)

    async def _answer(self, batch: list[_Item]) -> None:
        waiting = [item for item in batch if not item.future.done() and item.tip_id is not None]
        stale = [item for item in waiting if item.row is None or item.row.status == "PENDING"]
        if stale:
            # Settled by someone else meanwhile, or still unknown: read what is stored now.
            async with self.engine.connect() as conn:
                rows = (await conn.execute(_BY_IDS_SQL, {"ids": [i.tip_id for i in stale]})).all()
            by_id = {r.tip_id: r for r in rows}
            for item in stale:
                item.row = by_id[item.tip_id]
        for item in waiting:
            try:
                item.resolve(answer_of(item.row, item.already_paid))
            except DomainError as refusal:
                item.resolve(refusal)

    # ---- Wallet ---------------------------------------------------------------------------------

    async def pay(self, charges: Sequence[Charge]) -> list[Outcome]:
        """Charges through Wallet; raises AioRpcError if it could not be reached (nothing settled)."""
        outcomes: list[Outcome] = []
        for start in range(0, len(charges), MAX_GROUPS_PER_RPC):
            part = charges[start : start + MAX_GROUPS_PER_RPC]
            request = wpb.BatchTransferRequest(mode=wpb.BATCH_MODE_INDEPENDENT)
            specs = {charge.tip_id: transfer_specs(charge) for charge in part}
            for charge in part:
                request.transfers.extend(specs[charge.tip_id])
            response = await auth.as_itself(
                lambda request=request: self.wallet.BatchTransfer(request, timeout=WALLET_DEADLINE_S)
            )
            by_id = {result.transfer_id: result for result in response.results}
            for charge in part:
                errors = [
                    by_id[spec.transfer_id].error
                    for spec in specs[charge.tip_id]
                    if by_id[spec.transfer_id].HasField("error")
                ]
                if errors and errors[0].code in _TRANSIENT_CODES:
                    continue  # not an answer about the money: the intent stays PENDING (re-driven later)
                if errors:
                    info = error_info(errors[0])
                    outcomes.append(Outcome(charge, False, info.reason if info else "UNKNOWN"))
                else:
                    outcomes.append(Outcome(charge, True, ""))
        return outcomes

    # ---- settling -------------------------------------------------------------------------------

    async def settle(self, outcomes: Sequence[Outcome]) -> dict[str, object]:
        """Applies the outcomes whose intent is still PENDING, with their events, in one transaction;
        answers the rows settled here (by tip id). An intent settled already is left alone."""
        for attempt in range(SETTLE_ATTEMPTS):
            try:
                settled = await self._settle_once(outcomes)
            except psycopg.Error as error:
                code = error.sqlstate
                if code not in ("40P01", "40001") or attempt == SETTLE_ATTEMPTS - 1:
                    raise
                log.warning("settle retried", extra={"sqlstate": code})
                continue
            if settled:
                self.notify()
            return settled
        raise AssertionError("unreachable")

    async def _settle_once(self, outcomes: Sequence[Outcome]) -> dict[str, object]:
        results = [
            {
                "tip_id": o.charge.tip_id,
                "status": "COMPLETED" if o.charged else "FAILED",
                "reason": None if o.charged else _failure_reason(o.reason),
            }
            for o in {o.charge.tip_id: o for o in outcomes}.values()
        ]
        params = {
            "rows": json_param(results),
            "ids": sorted(r["tip_id"] for r in results),
            "all_time": rules.ALL_TIME_START,
        }
        async with raw_transaction(self.engine) as conn:
            async with conn.pipeline():  # BEGIN travels with the statement
                rows = await conn.fetch(_SETTLE_SQL, params)
            if not rows:
                return {}
            order = {o.charge.tip_id: i for i, o in enumerate(outcomes)}
            rows.sort(key=lambda r: order[r.tip_id])  # events in the order the supports arrived
            for row in rows:
                if row.status == "FAILED" and row.failure_reason != "INSUFFICIENT_FUNDS":
                    log.error("wallet refused a support", extra={"tip_id": row.tip_id, "reason": row.failure_reason})
            completed = [row for row in rows if row.status == "COMPLETED"]
            if completed:
                await append(conn, SCHEMA, completed_events(completed))
        return {row.tip_id: row for row in rows}

    # ---- the sweeper ----------------------------------------------------------------------------

    async def sweep(self, older_than: dt.timedelta | None = None, limit: int = SWEEP_CHUNK) -> int:
        """Re-drives intents left PENDING (Wallet unreachable, or a crash between Wallet and the
        settle) under the same derived ids, so Wallet answers the original result; answers how many
        were settled now."""
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        f"SELECT * FROM gifts.tips WHERE status = 'PENDING' "
                        f"AND created_at <= {NOW_SQL} - CAST(:age AS interval) ORDER BY created_at LIMIT :limit"
                    ),
                    {"age": self.sweep_after if older_than is None else older_than, "limit": limit},
                )
            ).all()
        if not rows:
            return 0
        return len(await self.settle(await self.pay([Charge.of_row(r) for r in rows])))

    async def replayed(self, draft: Draft) -> Answer | None:
        """The answer of an earlier request with the draft's id, or None if there was none. Outside
        the batches: for a request the catalog would now refuse (its first answer still stands)."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    text("SELECT * FROM gifts.tips WHERE request_scope = :s AND request_id = :r"),
                    {"s": draft.scope, "r": draft.request_id},
                )
            ).one_or_none()
        if row is None:
            return None
        changed = rules.first_difference(stored_fields(row), draft.fields())
        if changed is not None:
            raise already_exists(
                f"ID_REUSED_{changed.upper()}",
                f"request_id was used for another request ({changed} differs)",
                field=changed,
            )
        if row.status == "PENDING":
            try:
                settled = await self.settle(await self.pay([Charge.of_row(row)]))
            except grpc.aio.AioRpcError:
                raise outcome_unknown() from None
            if row.tip_id in settled:
                row = settled[row.tip_id]
            else:
                async with self.engine.connect() as conn:
                    row = (await conn.execute(_BY_IDS_SQL, {"ids": [row.tip_id]})).one()
        return answer_of(row)


def completed_events(rows: list) -> list[Event]:
    """The events of settled COMPLETED supports (rows from _SETTLE_SQL, in arrival order): each
    support's own event and, in a stream with a goal, its progress (and the goal reached). The
    goal's progress before the batch is after − the batch's share; replayed tip by tip. Progress
    only grows, so "reached before this batch" is "progress before ≥ target"."""
    progress = {row.goal_ref: row.goal_after - row.goal_delta for row in rows if row.goal_ref is not None}
    events: list[Event] = []
    for row in rows:
        events += _to_channels(row, _EVENT_TYPES[row.kind], support_event(row))
        if row.goal_ref is None:
            continue
        before = progress[row.goal_ref]
        after = before + row.amount_tokens
        progress[row.goal_ref] = after
        update = _gift_event(
            row,
            epb.GIFT_EVENT_TYPE_GOAL_PROGRESS,
            sender_display_name=row.sender_display_name,
            amount_tokens=row.amount_tokens,
            goal_id=row.goal_ref,
            goal_progress_tokens=after,
            goal_target_tokens=row.goal_target,
        )
        events += _to_channels(row, epb.GIFT_EVENT_TYPE_GOAL_PROGRESS, update)
        if before < row.goal_target <= after:
            update.type = epb.GIFT_EVENT_TYPE_GOAL_REACHED
            events += _to_channels(row, epb.GIFT_EVENT_TYPE_GOAL_REACHED, update)
    return events


def _charge_fields(draft: Draft) -> dict:
    return {
        "kind": draft.kind,
        "sender_id": draft.sender_id,
        "creator_id": draft.creator_id,
        "amount_tokens": draft.amount_tokens,
        "fee_tokens": draft.fee_tokens,
        "fee_bps": draft.fee_bps,
        "context_type": draft.context_type,
        "context_id": draft.context_id,
    }


def _intent_row(draft: Draft, tip_id: str) -> dict:
    gift = draft.gift
    return {
        "tip_id": tip_id,
        "kind": draft.kind,
        "request_scope": draft.scope,
        "request_id": draft.request_id,
        "sender_id": draft.sender_id,
        "creator_id": draft.creator_id,
        "sender_display_name": draft.display_name,
        "amount_tokens": draft.amount_tokens,
        "fee_bps": draft.fee_bps,
        "fee_tokens": draft.fee_tokens,
        "message": draft.message,
        "context_type": draft.context_type,
        "context_id": draft.context_id,
        "gift_id": gift.gift_id if gift else None,
        "gift_name": gift.name if gift else None,
        "quantity": gift.quantity if gift else None,
        "unit_price_tokens": gift.unit_price_tokens if gift else None,
        "image_url": gift.image_url if gift else None,
        "animation_url": gift.animation_url if gift else None,
    }


def _failure_reason(wallet_reason: str) -> str:
    # A fan with no wallet account at all simply has no tokens.
    return "INSUFFICIENT_FUNDS" if wallet_reason == "ACCOUNT_NOT_FOUND" else wallet_reason


def answer_of(row, already_paid: bool = False) -> Answer:
    """The final answer a stored row gives (raises for a refusal or an unknown outcome)."""
    if row.status == "COMPLETED":
        return Answer(row, already_paid)
    if row.status == "PENDING":
        raise outcome_unknown()
    if row.failure_reason == "INSUFFICIENT_FUNDS":
        raise precondition("INSUFFICIENT_FUNDS", "the fan's balance is too low; nothing was charged", tip_id=row.tip_id)
    raise precondition(
        "PAYMENT_REFUSED",
        "the payment was refused; nothing was charged",
        tip_id=row.tip_id,
        wallet_reason=row.failure_reason,
    )


def _gift_event(row, event_type: int, **fields) -> epb.GiftEvent:
    """A GiftEvent about the support in `row`: what every event type names of it, plus `fields`."""
    return epb.GiftEvent(
        type=event_type,
        support_id=row.tip_id,
        creator_id=row.creator_id,
        sender_id=row.sender_id,
        context_type=row.context_type,
        context_id=row.context_id,
        event_time=optional_timestamp(row.created_at),
        **fields,
    )


def support_event(row) -> epb.GiftEvent:
    return _gift_event(
        row,
        _EVENT_TYPES[row.kind],
        sender_display_name=row.sender_display_name,
        amount_tokens=row.amount_tokens,
        message="" if row.message_hidden else row.message,
        gift_id=row.gift_id or "",
        gift_name=row.gift_name or "",
        quantity=row.quantity or 0,
        image_url=row.image_url or "",
        animation_url=row.animation_url or "",
    )


def hidden_message_events(row) -> list[Event]:
    """MESSAGE_HIDDEN for a completed support whose message an admin hid: on every channel its alert
    went to, so clients that showed or hold the alert drop the message."""
    event = _gift_event(row, epb.GIFT_EVENT_TYPE_MESSAGE_HIDDEN)
    return _to_channels(row, epb.GIFT_EVENT_TYPE_MESSAGE_HIDDEN, event)


def _to_channels(row, event_type: int, event: epb.GiftEvent) -> list[Event]:
    """One event on the creator's alerts channel and, for a stream, on the stream's gift channel.
    (`creator:` belongs to Billing and `stream:` to Streams: a channel has exactly one writer schema.)"""
    payload = event.SerializeToString()
    name = epb.GiftEventType.Name(event_type).removeprefix("GIFT_EVENT_TYPE_")
    channels = [f"alerts:{row.creator_id}"]
    if row.context_type == "stream":
        channels.append(f"stream_gifts:{row.context_id}")
    return [Event(channel, name, payload) for channel in channels]
