"""Ticket payments and refunds through Wallet (DESIGN.md "A money operation that spans two services").

Purchase, in three steps:
1. PurchaseTicket's intent transaction locks the stream row (`FOR UPDATE`), checks status, price,
   invitation and cap, reserves a seat (`seats_taken + 1`, which a CHECK keeps ≤ the cap) and
   writes the ticket PENDING with the price and fee it will charge. Concurrent buyers queue on the
   stream row, so the cap holds exactly: a buyer who finds no seat is refused before Wallet is
   called and is charged nothing.
2. One LINKED `Wallet.BatchTransfer`, signed as Streams itself: batch id `ticket:<ticket_id>`,
   legs `ticket:<ticket_id>:creator` (fan → creator's earnings, price − fee) and
   `ticket:<ticket_id>:fee` (fan → platform revenue; left out when the fee is 0). Every id derives
   from the ticket id, never from anything the user sent, so a re-drive answers the original result.
3. `settle` commits the outcome in one transaction: VALID plus the TICKET_SOLD event in the outbox,
   or FAILED with Wallet's reason and the seat given back. Only a PENDING ticket is settled, so the
   request, a retry and the sweeper may race to settle and exactly one of them writes.

An unknown outcome (Wallet unreachable, deadline passed; gRPC has already retried UNAVAILABLE) leaves
the ticket PENDING: PurchaseTicket answers UNAVAILABLE `TICKET_PENDING` (retryable), never a
refusal, and a retry with the same request id re-drives the same batch and answers the final
outcome. The sweeper re-drives PENDING tickets older than FANBANK_SWEEP_AFTER_SECONDS (business time) for a
fan who never retries;
either way the fan is charged once and is finally told what happened.

Wallet's definite refusals (FAILED_PRECONDITION such as INSUFFICIENT_FUNDS, NOT_FOUND, …) are final:
Wallet stores a state-dependent refusal under the batch id and answers it again, so a FAILED ticket
is never re-driven; a new purchase is a new ticket with new ids.

Refund: a stream cancelled before it starts moves its VALID tickets to REFUND_PENDING in the same
transaction as the cancellation; each is then reversed with `Wallet.ReverseTransfer` of the whole
batch (every leg, the platform's fee too), reversal id `ticket:<ticket_id>:refund`, code REFUND,
and marked REFUNDED. The reversal id is fixed, so a repeated cancel, a retry or the sweeper cannot
refund twice. A ticket whose purchase settles after the cancellation goes straight to
REFUND_PENDING. Wallet refusing the refund (e.g. the creator's earnings were already withdrawn) is
REFUND_FAILED with the reason, logged as an error for an operator: Streams does not overdraw a
creator on its own.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import grpc
from grpc_status import rpc_status
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared import auth
from shared.clock import NOW_SQL
from shared.convert import timestamp
from shared.errors import error_info
from shared.gen.fanbank.streams.v1 import streams_service_pb2 as pb
from shared.gen.fanbank.wallet.v1 import wallet_service_pb2 as wpb
from shared.legs import payment_legs
from shared.outbox import Event, append

log = logging.getLogger(__name__)

SCHEMA = "streams"
WALLET_DEADLINE_S = 5.0
SWEEP_LIMIT = 500
# Wallet calls one sweep or one cancellation keeps in flight.
WALLET_IN_FLIGHT = 16

# Wallet answers that are a decision, not a failure to decide.
_DEFINITE = frozenset(
    {
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)


def batch_id(ticket_id: str) -> str:
    return f"ticket:{ticket_id}"


def refund_id(ticket_id: str) -> str:
    return f"ticket:{ticket_id}:refund"


@dataclass(frozen=True, slots=True)
class Charge:
    ticket_id: str
    stream_id: str
    fan_id: str
    creator_id: str
    price_tokens: int
    fee_tokens: int
    fee_bps: int

    @classmethod
    def of(cls, row) -> Charge:
        """From a ticket row joined with its stream's creator_id."""
        return cls(
            row.ticket_id, row.stream_id, row.fan_id, row.creator_id, row.price_tokens, row.fee_tokens, row.fee_bps
        )


@dataclass(frozen=True, slots=True)
class Outcome:
    charge: Charge
    charged: bool
    reason: str  # Wallet's ErrorInfo reason when refused


def transfer_specs(charge: Charge) -> list[wpb.TransferSpec]:
    """The ticket's legs (shared/legs.py): creator's share and the platform's fee (left out when 0),
    sent as one LINKED batch."""
    legs = payment_legs(
        batch_id(charge.ticket_id),
        fan_id=charge.fan_id,
        creator_id=charge.creator_id,
        amount=charge.price_tokens,
        fee=charge.fee_tokens,
        code=wpb.TRANSFER_CODE_TICKET,
        context_type="stream",
        context_id=charge.stream_id,
        fee_bps=charge.fee_bps,
        grouped=False,
    )
    return [wpb.TransferSpec(**leg) for leg in legs]


def wallet_reason(error: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(error)
    info = error_info(status) if status else None
    return info.reason if info else error.code().name


def is_definite(error: grpc.aio.AioRpcError) -> bool:
    return error.code() in _DEFINITE


def stream_event(stream_id: str, creator_id: str, event_type: int, at: dt.datetime, **fields) -> Event:
    event = pb.StreamEvent(
        type=event_type, stream_id=stream_id, creator_id=creator_id, event_time=timestamp(at), **fields
    )
    name = pb.StreamEventType.Name(event_type).removeprefix("STREAM_EVENT_TYPE_")
    return Event(f"stream:{stream_id}", name, event.SerializeToString())


_TICKET_WITH_CREATOR = "SELECT t.*, s.creator_id FROM streams.tickets t JOIN streams.streams s USING (stream_id) "


class Tickets:
    def __init__(
        self, engine: AsyncEngine, wallet, sweep_after: dt.timedelta, notify: Callable[[], None] = lambda: None
    ):
        self.engine = engine
        # A PENDING ticket (or REFUND_PENDING) older than this by business time is re-driven.
        self.sweep_after = sweep_after
        self.wallet = wallet  # a WalletServiceStub signed as "streams"
        self.notify = notify

    # ---- purchase -------------------------------------------------------------------------------

    async def pay(self, charge: Charge) -> Outcome:
        """Step 2; raises AioRpcError when Wallet's answer is unknown (the ticket stays PENDING)."""
        request = wpb.BatchTransferRequest(
            batch_id=batch_id(charge.ticket_id), mode=wpb.BATCH_MODE_LINKED, transfers=transfer_specs(charge)
        )
        try:
            await auth.as_itself(lambda: self.wallet.BatchTransfer(request, timeout=WALLET_DEADLINE_S))
        except grpc.aio.AioRpcError as error:
            if not is_definite(error):
                raise
            reason = wallet_reason(error)
            # A fan who never had tokens has no wallet account yet: to them that is no funds.
            if reason == "ACCOUNT_NOT_FOUND":
                reason = "INSUFFICIENT_FUNDS"
            if reason != "INSUFFICIENT_FUNDS":
                log.error("wallet refused a ticket", extra={"ticket_id": charge.ticket_id, "reason": reason})
            return Outcome(charge, False, reason)
        return Outcome(charge, True, "")

    async def settle(self, outcome: Outcome) -> str:
        """Step 3: applies the outcome if the ticket is still PENDING; answers its status after."""
        charge = outcome.charge
        async with self.engine.begin() as conn:
            # Stream first, then ticket: the order every writer of both uses.
            stream = (
                await conn.execute(
                    text(
                        f"SELECT status, creator_id, {NOW_SQL} AS now FROM streams.streams "
                        "WHERE stream_id = :s FOR UPDATE"
                    ),
                    {"s": charge.stream_id},
                )
            ).one()
            status = await conn.scalar(
                text("SELECT status FROM streams.tickets WHERE ticket_id = :t FOR UPDATE"), {"t": charge.ticket_id}
            )
            if status != "PENDING":
                return status  # settled already (the request, a retry or the sweeper)
            if not outcome.charged:
                await conn.execute(
                    text(
                        f"UPDATE streams.tickets SET status = 'FAILED', failure_reason = :r, settled_at = {NOW_SQL} "
                        "WHERE ticket_id = :t"
                    ),
                    {"t": charge.ticket_id, "r": outcome.reason},
                )
                await conn.execute(
                    text("UPDATE streams.streams SET seats_taken = seats_taken - 1 WHERE stream_id = :s"),
                    {"s": charge.stream_id},
                )
                return "FAILED"
            sold = await conn.scalar(
                text(
                    "UPDATE streams.streams SET tickets_sold = tickets_sold + 1 WHERE stream_id = :s "
                    "RETURNING tickets_sold"
                ),
                {"s": charge.stream_id},
            )
            if stream.status == "CANCELLED":
                # Paid after the stream was cancelled: refunded like every other ticket of it.
                new_status = "REFUND_PENDING"
                await conn.execute(
                    text(
                        f"UPDATE streams.tickets SET status = 'REFUND_PENDING', settled_at = {NOW_SQL}, "
                        f"refund_requested_at = {NOW_SQL} WHERE ticket_id = :t"
                    ),
                    {"t": charge.ticket_id},
                )
            else:
                new_status = "VALID"
                await conn.execute(
                    text(f"UPDATE streams.tickets SET status = 'VALID', settled_at = {NOW_SQL} WHERE ticket_id = :t"),
                    {"t": charge.ticket_id},
                )
                event = stream_event(
                    charge.stream_id,
                    charge.creator_id,
                    pb.STREAM_EVENT_TYPE_TICKET_SOLD,
                    stream.now,
                    fan_id=charge.fan_id,
                    ticket_id=charge.ticket_id,
                    tickets_sold=sold,
                )
                await append(conn, SCHEMA, [event])
        self.notify()
        return new_status

    async def drive(self, charge: Charge) -> str:
        """Pays and settles one PENDING ticket; answers its status ("PENDING" if Wallet's answer
        is unknown). A refund it makes due (a cancelled stream) is made too."""
        try:
            outcome = await self.pay(charge)
        except grpc.aio.AioRpcError:
            log.warning("wallet unreachable; ticket left pending", extra={"ticket_id": charge.ticket_id}, exc_info=True)
            return "PENDING"
        status = await self.settle(outcome)
        if status == "REFUND_PENDING":
            await self.refund([charge])
        return status

    async def _pending(self, where: str, params: dict) -> list[Charge]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(text(f"{_TICKET_WITH_CREATOR} WHERE {where} LIMIT :limit"), params)).all()
        return [Charge.of(r) for r in rows]

    async def _gathered(self, work: Sequence[Awaitable]) -> list:
        gate = asyncio.Semaphore(WALLET_IN_FLIGHT)

        async def one(awaitable: Awaitable):
            async with gate:
                return await awaitable

        return list(await asyncio.gather(*(one(w) for w in work)))

    async def sweep(self, older_than: dt.timedelta | None = None, limit: int = SWEEP_LIMIT) -> int:
        """Re-drives PENDING purchases (a crash or an outage between the intent and the outcome)
        and REFUND_PENDING refunds older than `older_than` (default: the sweep lease); answers how
        many were settled."""
        older_than = self.sweep_after if older_than is None else older_than
        purchases = await self._pending(
            f"t.status = 'PENDING' AND t.created_at <= {NOW_SQL} - CAST(:age AS interval) ORDER BY t.created_at",
            {"age": older_than, "limit": limit},
        )
        statuses = await self._gathered([self.drive(c) for c in purchases])
        refunds = await self._pending(
            f"t.status = 'REFUND_PENDING' AND t.refund_requested_at <= {NOW_SQL} - CAST(:age AS interval) "
            "ORDER BY t.refund_requested_at",
            {"age": older_than, "limit": limit},
        )
        refunded = await self.refund(refunds)
        return sum(s != "PENDING" for s in statuses) + refunded

    # ---- refunds --------------------------------------------------------------------------------

    async def settle_stream(self, stream_id: str) -> None:
        """For a cancelled stream: settles its purchases in flight, then makes every refund due."""
        for _ in range(1_000):  # bounded: SWEEP_LIMIT tickets per round
            purchases = await self._pending(
                "t.stream_id = :s AND t.status = 'PENDING' ORDER BY t.created_at",
                {"s": stream_id, "limit": SWEEP_LIMIT},
            )
            statuses = await self._gathered([self.drive(c) for c in purchases])
            refunds = await self._pending(
                "t.stream_id = :s AND t.status = 'REFUND_PENDING' ORDER BY t.refund_requested_at",
                {"s": stream_id, "limit": SWEEP_LIMIT},
            )
            done = await self.refund(refunds)
            progressed = sum(s != "PENDING" for s in statuses) + done
            if progressed == 0 or len(purchases) + len(refunds) < SWEEP_LIMIT:
                return

    async def refund(self, charges: Sequence[Charge]) -> int:
        """Reverses each ticket's whole batch; answers how many were settled (refunded or refused)."""
        if not charges:
            return 0

        async def reverse(charge: Charge) -> tuple[Charge, str | None]:
            request = wpb.ReverseTransferRequest(
                reversal_id=refund_id(charge.ticket_id),
                batch_id=batch_id(charge.ticket_id),
                code=wpb.TRANSFER_CODE_REFUND,
            )
            try:
                await auth.as_itself(lambda: self.wallet.ReverseTransfer(request, timeout=WALLET_DEADLINE_S))
            except grpc.aio.AioRpcError as error:
                if not is_definite(error):
                    log.warning("wallet unreachable; refund left pending", extra={"ticket_id": charge.ticket_id})
                    return charge, None
                reason = wallet_reason(error)
                log.error("wallet refused a ticket refund", extra={"ticket_id": charge.ticket_id, "reason": reason})
                return charge, reason
            return charge, ""

        results = [r for r in await self._gathered([reverse(c) for c in charges]) if r[1] is not None]
        results.sort(key=lambda r: r[0].ticket_id)  # one lock order for concurrent settlers
        if not results:
            return 0
        async with self.engine.begin() as conn:
            await conn.execute(
                text(
                    f"""
                    UPDATE streams.tickets t SET
                        status = CASE WHEN r.reason = '' THEN 'REFUNDED' ELSE 'REFUND_FAILED' END,
                        failure_reason = NULLIF(r.reason, ''),
                        refunded_at = CASE WHEN r.reason = '' THEN {NOW_SQL} END
                    FROM unnest(CAST(:ids AS text[]), CAST(:reasons AS text[])) AS r(ticket_id, reason)
                    WHERE t.ticket_id = r.ticket_id AND t.status = 'REFUND_PENDING'
                    """
                ),
                {"ids": [c.ticket_id for c, _ in results], "reasons": [reason for _, reason in results]},
            )
        return len(results)
