"""BillingService: pay-per-minute calls (DESIGN.md "Metering"). Who may do what:

- a fan starts their own calls; a creator sets their own call settings and reads their own stats;
- a call's fan or creator pauses, resumes, ends, reads and watches it; anyone else gets
  PERMISSION_DENIED (admins and internal services may act on any call);
- Heartbeat, HeartbeatCalls and WatchNodeCalls are for internal services (the media server) only;
  an EndCall by an internal service is the media server's.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid

import grpc
from google.protobuf import json_format
from livekit import api as livekit
from livekit.protocol import webhook as livekit_webhook
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.billing import metering
from services.billing.metering import Charge, Metering, call_events, end_params, write_rows
from shared import auth, client, paging
from shared.auth import Principal
from shared.clock import NOW_SQL
from shared.config import DEV_LIVEKIT_API_SECRET, Settings
from shared.convert import optional_timestamp
from shared.errors import DomainError, denied, invalid, not_found, precondition, unauthenticated
from shared.gen.fanbank.billing.v1 import billing_service_pb2 as pb
from shared.gen.fanbank.billing.v1 import billing_service_pb2_grpc as pb_grpc
from shared.gen.fanbank.wallet.v1 import wallet_service_pb2_grpc as wallet_grpc
from shared.host import run_every, stop_background
from shared.live import LiveEvents
from shared.outbox import Event, append
from shared.presets import Preset, fee_amount, load_preset
from shared.server import Registration
from shared.validate import IDENT, MAX_ID_CHARS, check_id
from shared.watch import Hub

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["BillingService"].full_name
SCHEMA = metering.SCHEMA
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20
MAX_HEARTBEAT_CALLS = 1000
MAX_WEBHOOK_BYTES = 64 * 1024
# A call's media room is named after it; LiveKit's webhooks name the room.
MEDIA_CHANNEL_PREFIX = "call-"
# LiveKit events after which a 1:1 call cannot go on: one side left, or the room is gone.
ROOM_CLOSED_EVENTS = frozenset({"participant_left", "room_finished"})

_STATUS = {
    "STARTING": pb.CALL_STATUS_ACTIVE,
    "ACTIVE": pb.CALL_STATUS_ACTIVE,
    "PAUSED": pb.CALL_STATUS_PAUSED,
    "ENDED": pb.CALL_STATUS_ENDED,
    "FAILED": pb.CALL_STATUS_FAILED,
}


def _require_self(principal: Principal, user_id: str, reason: str = "NOT_YOURS") -> None:
    if not principal.is_privileged and principal.user != user_id:
        raise denied(reason, "a user acts only for themselves")


def _require_party(principal: Principal, row) -> None:
    if not principal.is_privileged and principal.user not in (row.fan_id, row.creator_id):
        raise denied("NOT_YOUR_CALL", "only the call's fan or creator may do this")


def _starting(call_id: str) -> DomainError:
    return DomainError(
        grpc.StatusCode.UNAVAILABLE,
        "CALL_STARTING",
        "the first block's charge has no answer yet; retry with the same request_id",
        {"call_id": call_id},
        retry_delay_ms=1000,
    )


def _raise_start_failed(row) -> None:
    if row.end_reason == "START_ABANDONED":
        raise DomainError(
            grpc.StatusCode.ABORTED,
            "CALL_START_ABANDONED",
            "the start was not confirmed in time; the call was cancelled and any charge refunded",
            {"call_id": row.call_id},
        )
    raise precondition("INSUFFICIENT_FUNDS", "the first block could not be paid", call_id=row.call_id)


def call_pb(row) -> pb.Call:
    ended = row.status in ("ENDED", "FAILED")
    active_ms = row.active_ms
    if row.status == "ACTIVE" and row.segment_started_at is not None and row.now is not None:
        active_ms += max(0, int((row.now - row.segment_started_at).total_seconds() * 1000))
    return pb.Call(
        call_id=row.call_id,
        fan_id=row.fan_id,
        creator_id=row.creator_id,
        status=_STATUS[row.status],
        rate_tokens_per_minute=row.rate_tokens_per_minute,
        tokens_per_block=row.tokens_per_block,
        block_seconds=row.block_seconds,
        fee_bps=row.fee_bps,
        media_channel=row.media_channel,
        media_node=row.media_node,
        blocks_charged=row.blocks_charged,
        tokens_charged=row.tokens_charged,
        fee_tokens=row.fee_tokens,
        billed_seconds=active_ms // 1000,
        end_reason=pb.EndReason.Value(f"END_REASON_{row.end_reason}") if row.end_reason else 0,
        start_time=optional_timestamp(row.started_at),
        end_time=optional_timestamp(row.ended_at) if ended else None,
        next_block_time=optional_timestamp(row.next_block_at) if row.status == "ACTIVE" else None,
    )


_SELECT_CALL = f"SELECT c.*, {NOW_SQL} AS now FROM billing.calls c"


class BillingServicer(pb_grpc.BillingServiceServicer):
    def __init__(
        self, engine: AsyncEngine, preset: Preset, meter: Metering, hub: Hub | None, notify, settings: Settings
    ):
        self.engine = engine
        self.webhooks = livekit.WebhookReceiver(
            livekit.TokenVerifier(settings.livekit_api_key, settings.livekit_api_secret)
        )
        self.preset = preset
        self.meter = meter
        self.hub = hub
        self.notify = notify

    async def _call(self, call_id: str, conn=None, lock: bool = False):
        check_id("call_id", call_id)
        sql = text(f"{_SELECT_CALL} WHERE call_id = :id" + (" FOR UPDATE" if lock else ""))
        if conn is None:
            async with self.engine.connect() as own:
                row = (await own.execute(sql, {"id": call_id})).one_or_none()
        else:
            row = (await conn.execute(sql, {"id": call_id})).one_or_none()
        if row is None:
            raise not_found("CALL_NOT_FOUND", f"no call {call_id!r}")
        return row

    def _check_rate(self, rate: int) -> int:
        calls = self.preset.calls
        if not calls.enabled:
            raise precondition("CALLS_DISABLED", "this platform does not offer calls")
        if rate <= 0 or rate > calls.max_rate_tokens_per_minute or rate < calls.min_rate_tokens_per_minute:
            raise invalid(
                "INVALID_RATE",
                f"rate must be {calls.min_rate_tokens_per_minute}..{calls.max_rate_tokens_per_minute} tokens/min",
                field="rate_tokens_per_minute",
            )
        tokens = calls.tokens_per_block(rate)
        if tokens is None:
            raise invalid(
                "RATE_NOT_DIVISIBLE",
                f"the rate must give a whole number of tokens per {calls.block_seconds} s block",
                field="rate_tokens_per_minute",
            )
        return tokens

    # ---- settings -------------------------------------------------------------------------------

    async def SetCallSettings(self, request, context):
        creator_id = check_id("creator_id", request.creator_id)
        _require_self(auth.principal(), creator_id)
        self._check_rate(request.rate_tokens_per_minute)
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    text(
                        "INSERT INTO billing.call_settings (creator_id, rate_tokens_per_minute, available) "
                        f"VALUES (:c, :r, :a) ON CONFLICT (creator_id) DO UPDATE SET "
                        f"rate_tokens_per_minute = excluded.rate_tokens_per_minute, available = excluded.available, "
                        f"updated_at = {NOW_SQL} RETURNING *"
                    ),
                    {"c": creator_id, "r": request.rate_tokens_per_minute, "a": request.available},
                )
            ).one()
        return pb.SetCallSettingsResponse(settings=self._settings_pb(row))

    @staticmethod
    def _settings_pb(row) -> pb.CallSettings:
        return pb.CallSettings(
            creator_id=row.creator_id,
            rate_tokens_per_minute=row.rate_tokens_per_minute,
            available=row.available,
            update_time=optional_timestamp(row.updated_at),
        )

    async def _settings(self, creator_id: str):
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(text("SELECT * FROM billing.call_settings WHERE creator_id = :c"), {"c": creator_id})
            ).one_or_none()
        if row is None:
            raise not_found("CALL_SETTINGS_NOT_FOUND", "this creator does not take calls", creator_id=creator_id)
        return row

    async def GetCallSettings(self, request, context):
        creator_id = check_id("creator_id", request.creator_id)
        return pb.GetCallSettingsResponse(settings=self._settings_pb(await self._settings(creator_id)))

    # ---- StartCall ------------------------------------------------------------------------------

    async def _replayed(self, scope: str, request, settle_pending: bool = True) -> pb.StartCallResponse | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    text(f"{_SELECT_CALL} WHERE request_scope = :s AND request_id = :r"),
                    {"s": scope, "r": request.request_id},
                )
            ).one_or_none()
        if row is None:
            return None
        if (row.fan_id, row.creator_id, row.rate_tokens_per_minute) != (
            request.fan_id,
            request.creator_id,
            request.rate_tokens_per_minute,
        ):
            raise DomainError(grpc.StatusCode.ALREADY_EXISTS, "ID_REUSED", "request_id was used for another call")
        if row.status == "FAILED":
            _raise_start_failed(row)
        if row.status == "STARTING":
            if settle_pending:
                # The first block's outcome is unknown (Wallet was unreachable, or the original
                # request is still running): finish it now. The derived id makes this safe.
                try:
                    await self.meter.finish_start(row.call_id)
                except grpc.aio.AioRpcError:
                    raise _starting(row.call_id) from None
                return await self._replayed(scope, request, settle_pending=False)
            raise _starting(row.call_id)
        return pb.StartCallResponse(call=call_pb(row))

    async def StartCall(self, request, context):
        principal = auth.principal()
        check_id("request_id", request.request_id)
        fan_id = check_id("fan_id", request.fan_id)
        creator_id = check_id("creator_id", request.creator_id)
        if request.media_node:
            check_id("media_node", request.media_node)
        _require_self(principal, fan_id)
        scope = principal.scope
        replay = await self._replayed(scope, request)
        if replay is not None:
            return replay
        tokens = self._check_rate(request.rate_tokens_per_minute)
        if fan_id == creator_id:
            raise invalid("SELF_CALL", "a fan cannot call themselves", field="creator_id")
        settings = await self._settings(creator_id)
        if not settings.available:
            raise precondition("CREATOR_UNAVAILABLE", "the creator does not take calls right now")
        if settings.rate_tokens_per_minute != request.rate_tokens_per_minute:
            raise precondition(
                "PRICE_CHANGED",
                "the creator's rate changed; show the new rate",
                rate_tokens_per_minute=str(settings.rate_tokens_per_minute),
            )
        calls = self.preset.calls
        async with self.engine.connect() as conn:
            busy = await conn.scalar(
                text(
                    "SELECT call_id FROM billing.calls WHERE fan_id = :f AND status IN ('STARTING','ACTIVE','PAUSED')"
                ),
                {"f": fan_id},
            )
        if busy:
            raise precondition("FAN_ALREADY_IN_CALL", "the fan already has an active call", call_id=busy)
        if await self.meter.spendable(fan_id) < tokens * calls.start_min_blocks:
            raise precondition("INSUFFICIENT_FUNDS", "the fan's balance is below one block")
        call_id = uuid.uuid4().hex
        fee = fee_amount(tokens, self.preset.fees.call_bps)
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    text(
                        f"""
                        INSERT INTO billing.calls (call_id, request_scope, request_id, fan_id, creator_id, status,
                            rate_tokens_per_minute, tokens_per_block, block_seconds, fee_bps, grace_seconds,
                            max_pause_seconds, warning_blocks, media_channel, media_node, started_at,
                            next_block_no, next_block_at, charging_block_no, charging_block_at, charging_since,
                            deadline_at, last_heartbeat_at, segment_started_at)
                        VALUES (:call_id, :scope, :rid, :fan, :creator, 'STARTING', :rate, :tokens, :block, :bps,
                            :grace, :pause, :warn, :channel, :node, {NOW_SQL}, 0, {NOW_SQL}, 0, {NOW_SQL}, {NOW_SQL},
                            {NOW_SQL}, {NOW_SQL}, {NOW_SQL})
                        """
                    ),
                    {
                        "call_id": call_id,
                        "scope": scope,
                        "rid": request.request_id,
                        "fan": fan_id,
                        "creator": creator_id,
                        "rate": request.rate_tokens_per_minute,
                        "tokens": tokens,
                        "block": calls.block_seconds,
                        "bps": self.preset.fees.call_bps,
                        "grace": calls.heartbeat_grace_seconds,
                        "pause": calls.max_pause_seconds,
                        "warn": calls.low_balance_warning_blocks,
                        "channel": f"{MEDIA_CHANNEL_PREFIX}{call_id}",
                        "node": request.media_node,
                    },
                )
        except IntegrityError as exc:
            if "calls_one_live_per_fan" in str(exc):
                raise precondition("FAN_ALREADY_IN_CALL", "the fan already has an active call") from None
            replay = await self._replayed(scope, request)
            if replay is not None:
                return replay
            raise
        charge = Charge(call_id, fan_id, creator_id, 0, tokens, fee, self.preset.fees.call_bps)
        try:
            outcomes = await self.meter.pay([charge])
        except grpc.aio.AioRpcError:
            # Unknown outcome: Wallet may or may not have charged. The call stays STARTING; a retry
            # with the same request_id settles it (and answers the call); without one the sweeper
            # abandons it and refunds a charge, so the fan never pays for a call they were not given.
            log.warning("wallet unreachable during StartCall", extra={"call_id": call_id}, exc_info=True)
            raise _starting(call_id) from None
        await self.meter.settle(outcomes, confirming=call_id)
        row = await self._call(call_id)
        if row.status == "FAILED":
            _raise_start_failed(row)
        if row.status == "STARTING":  # settled meanwhile by a replay of this request
            return await self._replayed(scope, request, settle_pending=False)
        return pb.StartCallResponse(call=call_pb(row))

    # ---- media server ---------------------------------------------------------------------------

    async def _renew(self, call_ids: list[str], node: str) -> dict[str, str]:
        """Renews the lease of the live calls among `call_ids` (locked in id order, as settle locks
        them); answers every known call's status."""
        async with self.engine.begin() as conn:
            renewed = (
                await conn.execute(
                    text(
                        f"""
                        WITH live AS (
                            SELECT call_id FROM billing.calls WHERE call_id = ANY(CAST(:ids AS text[]))
                                AND status IN ('STARTING', 'ACTIVE', 'PAUSED') ORDER BY call_id FOR UPDATE)
                        UPDATE billing.calls c SET last_heartbeat_at = {NOW_SQL},
                            media_node = CASE WHEN c.media_node = '' THEN :node ELSE c.media_node END,
                            deadline_at = CASE WHEN c.status = 'ACTIVE' AND c.charging_block_no IS NULL
                                THEN LEAST(c.next_block_at, {NOW_SQL} + make_interval(secs => c.grace_seconds))
                                ELSE c.deadline_at END
                        FROM live WHERE c.call_id = live.call_id RETURNING c.call_id, c.status
                        """
                    ),
                    {"ids": call_ids, "node": node},
                )
            ).all()
            statuses = {r.call_id: r.status for r in renewed}
            missing = [i for i in call_ids if i not in statuses]
            if missing:
                rows = await conn.execute(
                    text("SELECT call_id, status FROM billing.calls WHERE call_id = ANY(CAST(:ids AS text[]))"),
                    {"ids": missing},
                )
                statuses.update((r.call_id, r.status) for r in rows)
        return statuses

    async def Heartbeat(self, request, context):
        auth.require_service(auth.principal(), "Heartbeat")
        call_id = check_id("call_id", request.call_id)
        if request.media_node:
            check_id("media_node", request.media_node)
        status = (await self._renew([call_id], request.media_node)).get(call_id)
        if status is None:
            raise not_found("CALL_NOT_FOUND", f"no call {call_id!r}")
        if status not in ("ACTIVE", "PAUSED", "STARTING"):
            raise precondition("CALL_ENDED", "the call has ended; cut it", call_id=call_id)
        return pb.HeartbeatResponse(status=_STATUS[status])

    async def HeartbeatCalls(self, request, context):
        auth.require_service(auth.principal(), "HeartbeatCalls")
        if request.media_node:
            check_id("media_node", request.media_node)
        if not request.call_ids:
            raise invalid("NO_CALLS", "name at least one call", field="call_ids")
        if len(request.call_ids) > MAX_HEARTBEAT_CALLS:
            raise invalid("TOO_MANY_CALLS", f"at most {MAX_HEARTBEAT_CALLS} calls per heartbeat", field="call_ids")
        ids = [check_id(f"call_ids[{i}]", call_id) for i, call_id in enumerate(request.call_ids)]
        if len(set(ids)) != len(ids):
            raise invalid("DUPLICATE_CALL_ID", "each call at most once", field="call_ids")
        statuses = await self._renew(ids, request.media_node)
        return pb.HeartbeatCallsResponse(
            leases=[
                pb.CallLease(call_id=i, status=_STATUS[statuses[i]] if i in statuses else pb.CALL_STATUS_UNSPECIFIED)
                for i in ids
            ]
        )

    # ---- pause / resume / end -------------------------------------------------------------------

    async def PauseCall(self, request, context):
        principal = auth.principal()
        check_id("request_id", request.request_id)
        events: list[Event] = []
        async with self.engine.begin() as conn:
            row = await self._call(request.call_id, conn, lock=True)
            _require_party(principal, row)
            if row.status == "PAUSED":
                return pb.PauseCallResponse(call=call_pb(row))  # idempotent
            if row.status != "ACTIVE":
                raise precondition("CALL_NOT_ACTIVE", "only an active call can be paused")
            # While a block is in flight next_block_at is its start; the settle adds its unused part.
            await conn.execute(
                text(
                    f"""
                    UPDATE billing.calls SET status = 'PAUSED', paused_at = {NOW_SQL},
                        carry_ms = GREATEST(0, CAST(EXTRACT(EPOCH FROM (next_block_at - {NOW_SQL})) * 1000 AS bigint)),
                        active_ms = active_ms + :extra,
                        segment_started_at = NULL,
                        deadline_at = CASE WHEN charging_block_no IS NULL
                            THEN {NOW_SQL} + make_interval(secs => max_pause_seconds) ELSE deadline_at END
                    WHERE call_id = :id
                    """
                ),
                {"id": row.call_id, "extra": metering.active_ms_until(row, row.now)},
            )
            events = call_events(row, pb.CALL_EVENT_TYPE_PAUSED, row.now)
            await append(conn, SCHEMA, events)
        self.notify()
        return pb.PauseCallResponse(call=call_pb(await self._call(row.call_id)))

    async def ResumeCall(self, request, context):
        principal = auth.principal()
        check_id("request_id", request.request_id)
        async with self.engine.begin() as conn:
            row = await self._call(request.call_id, conn, lock=True)
            _require_party(principal, row)
            if row.status != "PAUSED":
                raise precondition("CALL_NOT_PAUSED", "only a paused call can be resumed")
            limit = row.paused_at + dt.timedelta(seconds=row.max_pause_seconds)
            if row.now >= limit:
                await write_rows(conn, "ends", [end_params(row, "ENDED", "PAUSE_TOO_LONG", limit)])
                await append(
                    conn,
                    SCHEMA,
                    call_events(row, pb.CALL_EVENT_TYPE_ENDED, limit, end_reason=pb.END_REASON_PAUSE_TOO_LONG),
                )
                ended = True
            else:
                await conn.execute(
                    text(
                        f"""
                        UPDATE billing.calls SET status = 'ACTIVE', paused_at = NULL, last_heartbeat_at = {NOW_SQL},
                            segment_started_at = {NOW_SQL},
                            next_block_at = {NOW_SQL} + make_interval(secs => carry_ms / 1000.0),
                            deadline_at = CASE WHEN charging_block_no IS NULL THEN
                                {NOW_SQL} + make_interval(secs => LEAST(carry_ms / 1000.0, grace_seconds))
                                ELSE deadline_at END,
                            carry_ms = 0
                        WHERE call_id = :id
                        """
                    ),
                    {"id": row.call_id},
                )
                await append(conn, SCHEMA, call_events(row, pb.CALL_EVENT_TYPE_RESUMED, row.now))
                ended = False
        self.notify()
        if ended:
            raise precondition("PAUSE_TOO_LONG", "the pause lasted too long; the call has ended")
        return pb.ResumeCallResponse(call=call_pb(await self._call(row.call_id)))

    async def EndCall(self, request, context):
        principal = auth.principal()
        check_id("request_id", request.request_id)
        async with self.engine.begin() as conn:
            row = await self._call(request.call_id, conn, lock=True)
            _require_party(principal, row)
            if row.status in ("ENDED", "FAILED"):
                return pb.EndCallResponse(call=call_pb(row))  # idempotent
            if principal.is_service:
                reason = "MEDIA_SERVER_ENDED"
            elif principal.user == row.fan_id:
                reason = "FAN_ENDED"
            elif principal.user == row.creator_id:
                reason = "CREATOR_ENDED"
            else:
                reason = "ADMIN_ENDED"
            await write_rows(conn, "ends", [end_params(row, "ENDED", reason, row.now)])
            await append(
                conn,
                SCHEMA,
                call_events(
                    row, pb.CALL_EVENT_TYPE_ENDED, row.now, end_reason=pb.EndReason.Value(f"END_REASON_{reason}")
                ),
            )
        self.notify()
        return pb.EndCallResponse(call=call_pb(await self._call(row.call_id)))

    # ---- the media server's webhooks -------------------------------------------------------------

    def _verified_webhook(self, request) -> livekit_webhook.WebhookEvent:
        token = request.authorization.removeprefix("Bearer ").strip()
        if not token:
            raise unauthenticated("WEBHOOK_UNSIGNED", "the webhook carries no Authorization token")
        try:
            body = request.body.decode("utf-8")
        except UnicodeDecodeError:
            raise invalid("WEBHOOK_BODY_INVALID", "the webhook body is not UTF-8 JSON", field="body") from None
        try:
            return self.webhooks.receive(body, token)
        except json_format.ParseError:
            raise invalid("WEBHOOK_BODY_INVALID", "the webhook body is not a LiveKit event", field="body") from None
        except Exception:  # livekit-api raises plain Exception / PyJWT errors for any bad token or hash
            raise unauthenticated(
                "WEBHOOK_SIGNATURE_INVALID", "the webhook's token or body hash does not verify"
            ) from None

    async def ReceiveMediaWebhook(self, request, context):
        auth.require_service_or_anonymous(auth.principal(), "ReceiveMediaWebhook")
        if len(request.body) > MAX_WEBHOOK_BYTES:
            raise invalid("WEBHOOK_TOO_LARGE", f"a webhook body is at most {MAX_WEBHOOK_BYTES} bytes", field="body")
        event = self._verified_webhook(request)
        event_id = check_id("event.id", event.id)
        room = event.room.name
        call_id = room.removeprefix(MEDIA_CHANNEL_PREFIX) if room.startswith(MEDIA_CHANNEL_PREFIX) else None
        ended = False
        async with self.engine.begin() as conn:
            inserted = await conn.scalar(
                text(
                    "INSERT INTO billing.media_webhooks (event_id, event, room) VALUES (:id, :event, :room) "
                    "ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
                ),
                {"id": event_id, "event": event.event[:64], "room": room[:200]},
            )
            if inserted is None:
                seen = (
                    await conn.execute(
                        text("SELECT call_id, call_ended FROM billing.media_webhooks WHERE event_id = :id"),
                        {"id": event_id},
                    )
                ).one()
                return pb.ReceiveMediaWebhookResponse(
                    event_id=event_id,
                    event=event.event,
                    duplicate=True,
                    call_id=seen.call_id or "",
                    call_ended=seen.call_ended,
                )
            row = None
            if call_id and IDENT.fullmatch(call_id) and len(call_id) <= MAX_ID_CHARS:
                row = (
                    await conn.execute(text(f"{_SELECT_CALL} WHERE call_id = :id FOR UPDATE"), {"id": call_id})
                ).one_or_none()
            if row is not None and row.media_channel != room:
                row = None
            if row is not None and event.event in ROOM_CLOSED_EVENTS and row.status in ("ACTIVE", "PAUSED"):
                await write_rows(conn, "ends", [end_params(row, "ENDED", "ROOM_CLOSED", row.now)])
                await append(
                    conn,
                    SCHEMA,
                    call_events(row, pb.CALL_EVENT_TYPE_ENDED, row.now, end_reason=pb.END_REASON_ROOM_CLOSED),
                )
                ended = True
            if row is not None:
                await conn.execute(
                    text("UPDATE billing.media_webhooks SET call_id = :c, call_ended = :e WHERE event_id = :id"),
                    {"c": row.call_id, "e": ended, "id": event_id},
                )
        if ended:
            self.notify()
        return pb.ReceiveMediaWebhookResponse(
            event_id=event_id, event=event.event, call_id=row.call_id if row is not None else "", call_ended=ended
        )

    # ---- reads ----------------------------------------------------------------------------------

    async def GetCall(self, request, context):
        row = await self._call(request.call_id)
        _require_party(auth.principal(), row)
        return pb.GetCallResponse(call=call_pb(row))

    async def ListCalls(self, request, context):
        principal = auth.principal()
        if bool(request.fan_id) == bool(request.creator_id):
            raise invalid("ONE_OWNER", "name exactly one of fan_id or creator_id", field="fan_id")
        column, owner = ("fan_id", request.fan_id) if request.fan_id else ("creator_id", request.creator_id)
        check_id(column, owner)
        _require_self(principal, owner)
        size = paging.page_size(request.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, accepted=1000)
        after = None
        if request.page_token:
            at, last_id, _ = paging.decode_keyset(request.page_token)
            after = (at, last_id)
        where = f"{column} = :owner" + (" AND (started_at, call_id) < (:at, :id)" if after else "")
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(f"{_SELECT_CALL} WHERE {where} ORDER BY started_at DESC, call_id DESC LIMIT :n"),
                    {
                        "owner": owner,
                        "at": after[0] if after else None,
                        "id": after[1] if after else None,
                        "n": size + 1,
                    },
                )
            ).all()
        response = pb.ListCallsResponse(calls=[call_pb(r) for r in rows[:size]])
        if len(rows) > size:
            last = rows[size - 1]
            response.next_page_token = paging.encode_token(last.started_at.isoformat(), last.call_id)
        return response

    async def GetCallStats(self, request, context):
        creator_id = check_id("creator_id", request.creator_id)
        _require_self(auth.principal(), creator_id)
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT count(*) AS calls, CAST(coalesce(sum(blocks_charged), 0) AS bigint) AS blocks, "
                        "CAST(coalesce(sum(tokens_charged), 0) AS bigint) AS tokens, CAST(coalesce(sum(fee_tokens), 0) AS bigint) AS fees, "
                        "CAST(coalesce(sum(active_ms), 0) AS bigint) AS ms FROM billing.calls "
                        "WHERE creator_id = :c AND status <> 'FAILED'"
                    ),
                    {"c": creator_id},
                )
            ).one()
        return pb.GetCallStatsResponse(
            creator_id=creator_id,
            calls=row.calls,
            blocks_charged=row.blocks,
            tokens_charged=row.tokens,
            fee_tokens=row.fees,
            billed_seconds=row.ms // 1000,
        )

    # ---- watches --------------------------------------------------------------------------------

    def _hub(self) -> Hub:
        if self.hub is None:
            raise DomainError(grpc.StatusCode.UNAVAILABLE, "EVENTS_UNAVAILABLE", "no Redis is configured")
        return self.hub

    async def WatchCall(self, request, context):
        row = await self._call(request.call_id)
        _require_party(auth.principal(), row)
        async with await self._hub().subscribe(f"call:{row.call_id}", request.resume_token or None) as sub:
            async for delivery in sub:
                yield pb.WatchCallResponse(event=pb.CallEvent.FromString(delivery.payload), resume_token=delivery.token)

    async def WatchNodeCalls(self, request, context):
        auth.require_service(auth.principal(), "WatchNodeCalls")
        node = check_id("media_node", request.media_node)
        async with await self._hub().subscribe(f"node:{node}", request.resume_token or None) as sub:
            async for delivery in sub:
                yield pb.WatchNodeCallsResponse(
                    event=pb.CallEvent.FromString(delivery.payload), resume_token=delivery.token
                )


class Billing:
    """The Billing service in one process: metering loop and sweeper, outbox relay, watch hub."""

    def __init__(self, settings: Settings, engine: AsyncEngine, database_url: str):
        self.settings = settings
        self.engine = engine
        self.preset = load_preset(settings.preset_name)
        self.wallet_channel = client.channel(
            settings, settings.addresses["wallet"], identity="billing", deadline_seconds=metering.WALLET_DEADLINE_S
        )
        self.live = LiveEvents(settings, engine, SCHEMA)
        self.metering = Metering(engine, wallet_grpc.WalletServiceStub(self.wallet_channel), settings, self.live.notify)
        self.servicer = BillingServicer(engine, self.preset, self.metering, self.live.hub, self.live.notify, settings)
        if settings.livekit_api_secret == DEV_LIVEKIT_API_SECRET:
            log.warning("FANBANK_LIVEKIT_API_SECRET is not set: LiveKit webhooks verify with the development key")
        self._loop: asyncio.Task | None = None

    def registration(self) -> Registration:
        return Registration(SERVICE_NAME, self.servicer, pb_grpc.add_BillingServiceServicer_to_server)

    def start(self) -> None:
        self.live.start()
        self._loop = asyncio.create_task(self._run(), name="billing-metering")

    async def _run(self) -> None:
        await self.metering.ensure_started()
        if not self.settings.background_ms:
            return  # FANBANK_BACKGROUND_MS=0: ticks are driven by hand (tests)

        async def tick_and_sweep() -> None:
            charged = await self.metering.tick()
            swept = await self.metering.sweep()
            if charged or swept:
                log.info("metering tick", extra={"blocks_charged": charged, "intents_swept": swept})

        await run_every(self.settings.background_ms / 1000, tick_and_sweep, "metering tick")

    async def stop(self) -> None:
        await stop_background(self._loop)
        await self.live.close()
        await self.wallet_channel.close()
