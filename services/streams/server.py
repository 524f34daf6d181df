"""StreamsService: live streams, their tickets, presence and live feed. Who may do what:

- a user with the creator role creates streams for themselves; only a stream's creator starts,
  ends, cancels it and edits or reads its invite list (admins and internal services may act on any);
- anyone signed in reads streams and lists a creator's streams;
- a fan buys tickets, joins and leaves only for themselves; CheckAccess answers about oneself, or
  about anyone to the stream's creator and to privileged callers;
- watching and joining a ticketed stream needs access: its creator, a valid ticket, or staff.

Money: tickets.py (intent → Wallet → outcome + outbox, sweeper, refunds). Live feed: WatchStream
merges the stream's own channel `stream:<id>` (this service's outbox) with `stream_gifts:<id>`
(written by Gifts) through `shared.watch.Hub.subscribe_many`, one resumable feed.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import hashlib
import logging
import uuid

import grpc
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.streams.tickets import SCHEMA, Charge, Tickets, stream_event
from shared import auth, client, paging
from shared.auth import Principal
from shared.clock import NOW_SQL
from shared.config import Settings
from shared.convert import optional_timestamp
from shared.errors import DomainError, denied, invalid, not_found, precondition
from shared.gen.fanbank.streams.v1 import streams_service_pb2 as pb
from shared.gen.fanbank.wallet.v1 import wallet_service_pb2_grpc as wallet_grpc
from shared.host import start_background, stop_background
from shared.live import LiveEvents
from shared.outbox import Event, append
from shared.presets import BPS_DENOMINATOR, Preset, fee_amount, load_preset
from shared.server import Registration
from shared.validate import check_id
from shared.watch import Hub, MultiDelivery

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["StreamsService"].full_name
MAX_TITLE_CHARS = 200
MAX_INVITES_PER_REQUEST = 1_000
MAX_INVITES_PER_STREAM = 10_000
MAX_VIEWER_CAP = 1_000_000
MAX_PRICE_TOKENS = 10**12  # Wallet's cap on one transfer
MAX_SCHEDULE_AHEAD = dt.timedelta(days=366)
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20
MAX_INVITE_PAGE_SIZE = 1_000
DEFAULT_INVITE_PAGE_SIZE = 100
# A viewer not seen (JoinStream) for this long by business time is no longer counted.
PRESENCE_TTL = dt.timedelta(seconds=90)
NO_SHOWS_PER_TICK = 100
VIEWER_COUNTS_PER_TICK = 1_000
# WatchStream messages built as bytes, shared by the local watchers at the same feed position.
ENCODED_CACHE_ENTRIES = 4_096

_KINDS = {pb.STREAM_KIND_PUBLIC: "PUBLIC", pb.STREAM_KIND_PRIVATE: "PRIVATE", pb.STREAM_KIND_PREMIUM: "PREMIUM"}
_TICKET_STATUS = {
    "VALID": pb.TICKET_STATUS_VALID,
    "REFUND_PENDING": pb.TICKET_STATUS_REFUND_PENDING,
    "REFUNDED": pb.TICKET_STATUS_REFUNDED,
    "REFUND_FAILED": pb.TICKET_STATUS_REFUND_FAILED,
}

_SELECT_STREAM = (
    "SELECT s.*, (SELECT count(*) FROM streams.viewers v WHERE v.stream_id = s.stream_id) AS viewer_count "
    "FROM streams.streams s"
)
_LOCK_STREAM = text(f"SELECT s.*, {NOW_SQL} AS now FROM streams.streams s WHERE stream_id = :id FOR UPDATE")


def stream_pb(row) -> pb.Stream:
    return pb.Stream(
        stream_id=row.stream_id,
        creator_id=row.creator_id,
        title=row.title,
        kind=pb.StreamKind.Value(f"STREAM_KIND_{row.kind}"),
        status=pb.StreamStatus.Value(f"STREAM_STATUS_{row.status}"),
        price_tokens=row.price_tokens,
        fee_bps=row.fee_bps,
        viewer_cap=row.viewer_cap or 0,
        invite_only=row.invite_only,
        tickets_sold=row.tickets_sold,
        viewer_count=row.viewer_count,
        scheduled_start_time=optional_timestamp(row.scheduled_start_at),
        create_time=optional_timestamp(row.created_at),
        start_time=optional_timestamp(row.started_at),
        end_time=optional_timestamp(row.ended_at),
        cancel_time=optional_timestamp(row.cancelled_at),
    )


def ticket_pb(row) -> pb.Ticket:
    return pb.Ticket(
        ticket_id=row.ticket_id,
        stream_id=row.stream_id,
        fan_id=row.fan_id,
        creator_id=row.creator_id,
        price_tokens=row.price_tokens,
        fee_tokens=row.fee_tokens,
        fee_bps=row.fee_bps,
        status=_TICKET_STATUS.get(row.status, pb.TICKET_STATUS_UNSPECIFIED),
        refund_failure_reason=(row.failure_reason or "") if row.status == "REFUND_FAILED" else "",
        purchase_time=optional_timestamp(row.settled_at),
        refund_time=optional_timestamp(row.refunded_at),
    )


def _require_self(principal: Principal, user_id: str) -> None:
    if not principal.is_privileged and principal.user != user_id:
        raise denied("NOT_YOURS", "a user acts only for themselves")


def _require_owner(principal: Principal, row) -> None:
    if not principal.is_privileged and principal.user != row.creator_id:
        raise denied("NOT_YOUR_STREAM", "only the stream's creator may do this")


def _stream_gone(row) -> None:
    if row.status == "ENDED":
        raise precondition("STREAM_ENDED", "the stream has ended", stream_id=row.stream_id)
    if row.status == "CANCELLED":
        raise precondition("STREAM_CANCELLED", "the stream was cancelled", stream_id=row.stream_id)


def _check_user_ids(field: str, ids) -> list[str]:
    if len(ids) > MAX_INVITES_PER_REQUEST:
        raise invalid("TOO_MANY_INVITES", f"at most {MAX_INVITES_PER_REQUEST} user ids per request", field=field)
    return sorted({check_id(field, user_id) for user_id in ids})


# ---- WatchStream messages as bytes ---------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _tag(field: str) -> bytes:
    number = pb.WatchStreamResponse.DESCRIPTOR.fields_by_name[field].number
    assert number < 16
    return bytes([(number << 3) | 2])  # wire type 2: length-delimited


_TAG_STREAM_EVENT, _TAG_GIFT_EVENT, _TAG_TOKEN = _tag("stream_event"), _tag("gift_event"), _tag("resume_token")


def encode_watch_response(item: MultiDelivery) -> bytes:
    """A WatchStreamResponse on the wire, from the event's bytes as its owner serialized them: an
    embedded message is encoded exactly like bytes, so the event is never parsed or re-serialized."""
    payload = item.delivery.payload
    tag = _TAG_STREAM_EVENT if item.channel.startswith("stream:") else _TAG_GIFT_EVENT
    token = item.token.encode()
    return tag + _varint(len(payload)) + payload + _TAG_TOKEN + _varint(len(token)) + token


class _EncodedCache:
    """Built once per (event, feed position): every local watcher of a stream that is caught up
    sits at the same position, so 10,000 of them share one bytes object per event."""

    def __init__(self, size: int = ENCODED_CACHE_ENTRIES):
        self.size = size
        self._entries: collections.OrderedDict[tuple, bytes] = collections.OrderedDict()

    def get(self, item: MultiDelivery) -> bytes:
        key = (item.delivery.channel, item.delivery.seq, item.positions)
        data = self._entries.get(key)
        if data is None:
            data = self._entries[key] = encode_watch_response(item)
            if len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return data


def _serialize_watch(message) -> bytes:
    return message if isinstance(message, bytes) else message.SerializeToString()


def add_to_server(servicer, server) -> None:
    """Like the generated add_StreamsServiceServicer_to_server, except that WatchStream may yield
    a pre-encoded WatchStreamResponse (bytes) as well as a message."""
    service = pb.DESCRIPTOR.services_by_name["StreamsService"]
    handlers = {}
    for method in service.methods:
        request_cls = getattr(pb, method.input_type.name)
        behavior = getattr(servicer, method.name)
        if method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                behavior, request_deserializer=request_cls.FromString, response_serializer=_serialize_watch
            )
        else:
            response_cls = getattr(pb, method.output_type.name)
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                behavior,
                request_deserializer=request_cls.FromString,
                response_serializer=response_cls.SerializeToString,
            )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


def feed_channels(stream_id: str) -> tuple[str, str]:
    """WatchStream's channels, in token order: Streams' own, then the gifts sent in the stream."""
    return f"stream:{stream_id}", f"stream_gifts:{stream_id}"


async def mark_cancelled(conn: AsyncConnection, rows) -> list[Event]:
    """The cancelling transaction's writes for SCHEDULED streams (rows with stream_id, creator_id and
    the business time `now`, locked by the caller): each stream CANCELLED and its VALID tickets
    REFUND_PENDING, refunded by `Tickets.settle_stream` once this commits. Answers the CANCELLED
    events for the caller to append."""
    ids = [row.stream_id for row in rows]
    await conn.execute(
        text(
            f"UPDATE streams.streams SET status = 'CANCELLED', cancelled_at = {NOW_SQL} "
            "WHERE stream_id = ANY(CAST(:ids AS text[]))"
        ),
        {"ids": ids},
    )
    await conn.execute(
        text(
            f"UPDATE streams.tickets SET status = 'REFUND_PENDING', refund_requested_at = {NOW_SQL} "
            "WHERE stream_id = ANY(CAST(:ids AS text[])) AND status = 'VALID'"
        ),
        {"ids": ids},
    )
    return [stream_event(row.stream_id, row.creator_id, pb.STREAM_EVENT_TYPE_CANCELLED, row.now) for row in rows]


class StreamsServicer:
    def __init__(self, engine: AsyncEngine, preset: Preset, tickets: Tickets, hub: Hub | None, notify):
        self.engine = engine
        self.preset = preset
        self.tickets = tickets
        self.hub = hub
        self.notify = notify
        self.encoded = _EncodedCache()

    async def _stream(self, stream_id: str):
        check_id("stream_id", stream_id)
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(text(f"{_SELECT_STREAM} WHERE s.stream_id = :id"), {"id": stream_id})
            ).one_or_none()
        if row is None:
            raise not_found("STREAM_NOT_FOUND", f"no stream {stream_id!r}")
        return row

    async def _locked(self, conn: AsyncConnection, stream_id: str):
        check_id("stream_id", stream_id)
        row = (await conn.execute(_LOCK_STREAM, {"id": stream_id})).one_or_none()
        if row is None:
            raise not_found("STREAM_NOT_FOUND", f"no stream {stream_id!r}")
        return row

    # ---- create ---------------------------------------------------------------------------------

    def _validate_create(self, request) -> tuple[str, int, int | None, list[str], int]:
        """Answers (kind, price, cap, invitees, fee_bps) or raises INVALID_ARGUMENT."""
        streams = self.preset.streams
        if not streams.enabled:
            raise precondition("STREAMS_DISABLED", "this platform does not offer streams")
        kind = _KINDS.get(request.kind)
        if kind is None:
            raise invalid("INVALID_KIND", "kind must be PUBLIC, PRIVATE or PREMIUM", field="kind")
        if len(request.title) > MAX_TITLE_CHARS or any(ord(c) < 32 or ord(c) == 127 for c in request.title):
            raise invalid("INVALID_TITLE", f"title is at most {MAX_TITLE_CHARS} printable characters", field="title")
        if not 0 <= request.viewer_cap <= MAX_VIEWER_CAP:
            raise invalid("INVALID_VIEWER_CAP", f"viewer_cap must be 0..{MAX_VIEWER_CAP}", field="viewer_cap")
        invitees = _check_user_ids("invited_user_ids", request.invited_user_ids)
        if invitees and not request.invite_only:
            raise invalid("INVITES_NEED_INVITE_ONLY", "invited users are for invite-only streams", field="invite_only")
        if kind == "PUBLIC":
            if request.price_tokens != 0:
                raise invalid("INVALID_PRICE", "a public stream is free: price_tokens must be 0", field="price_tokens")
            if request.viewer_cap or request.invite_only:
                raise invalid("TICKETED_ONLY", "viewer caps and invite lists are for ticketed streams", field="kind")
            return kind, 0, None, [], 0
        if not streams.tickets_enabled:
            raise precondition("TICKETS_DISABLED", "this platform does not sell stream tickets")
        price = request.price_tokens
        if not streams.ticket_min_tokens <= price <= streams.ticket_max_tokens:
            raise invalid(
                "INVALID_PRICE",
                f"price_tokens must be {streams.ticket_min_tokens}..{streams.ticket_max_tokens}",
                field="price_tokens",
            )
        fee_bps = self.preset.fees.ticket_bps
        assert 0 <= fee_bps <= BPS_DENOMINATOR
        return kind, price, request.viewer_cap or None, invitees, fee_bps

    @staticmethod
    def _digest(request, invitees: list[str]) -> str:
        schedule = request.scheduled_start_time.ToJsonString() if request.HasField("scheduled_start_time") else ""
        fields = [
            request.creator_id,
            request.title,
            str(request.kind),
            str(request.price_tokens),
            str(request.viewer_cap),
            str(request.invite_only),
            ",".join(invitees),
            schedule,
        ]
        return hashlib.sha256("\x1f".join(fields).encode()).hexdigest()

    async def _created(self, scope: str, request, digest: str) -> pb.CreateStreamResponse | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    text(f"{_SELECT_STREAM} WHERE s.request_scope = :scope AND s.request_id = :rid"),
                    {"scope": scope, "rid": request.request_id},
                )
            ).one_or_none()
        if row is None:
            return None
        if row.request_digest != digest:
            raise DomainError(grpc.StatusCode.ALREADY_EXISTS, "ID_REUSED", "request_id was used for another stream")
        return pb.CreateStreamResponse(stream=stream_pb(row))

    async def CreateStream(self, request, context):
        principal = auth.principal()
        check_id("request_id", request.request_id)
        creator_id = check_id("creator_id", request.creator_id)
        _require_self(principal, creator_id)
        if principal.user is not None and not principal.is_admin and auth.ROLE_CREATOR not in principal.roles:
            raise denied("CREATOR_ROLE_REQUIRED", "only creators create streams")
        kind, price, cap, invitees, fee_bps = self._validate_create(request)
        digest = self._digest(request, invitees)
        replay = await self._created(principal.scope, request, digest)
        if replay is not None:
            return replay
        scheduled = (
            request.scheduled_start_time.ToDatetime(dt.UTC) if request.HasField("scheduled_start_time") else None
        )
        stream_id = uuid.uuid4().hex
        try:
            async with self.engine.begin() as conn:
                now = await conn.scalar(text(f"SELECT {NOW_SQL}"))
                if scheduled is not None and not now < scheduled <= now + MAX_SCHEDULE_AHEAD:
                    raise invalid(
                        "INVALID_SCHEDULED_START",
                        "scheduled_start_time must be in the future, within a year",
                        field="scheduled_start_time",
                    )
                await conn.execute(
                    text(
                        """
                        INSERT INTO streams.streams (stream_id, request_scope, request_id, request_digest,
                            creator_id, title, kind, status, price_tokens, fee_bps, viewer_cap, invite_only,
                            scheduled_start_at)
                        VALUES (:id, :scope, :rid, :digest, :creator, :title, :kind, 'SCHEDULED', :price,
                            :bps, :cap, :invite_only, :scheduled)
                        """
                    ),
                    {
                        "id": stream_id,
                        "scope": principal.scope,
                        "rid": request.request_id,
                        "digest": digest,
                        "creator": creator_id,
                        "title": request.title,
                        "kind": kind,
                        "price": price,
                        "bps": fee_bps,
                        "cap": cap,
                        "invite_only": request.invite_only,
                        "scheduled": scheduled,
                    },
                )
                if invitees:
                    await self._add_invites(conn, stream_id, invitees)
        except IntegrityError:
            replay = await self._created(principal.scope, request, digest)
            if replay is not None:
                return replay
            raise
        return pb.CreateStreamResponse(stream=stream_pb(await self._stream(stream_id)))

    # ---- reads ----------------------------------------------------------------------------------

    async def GetStream(self, request, context):
        return pb.GetStreamResponse(stream=stream_pb(await self._stream(request.stream_id)))

    async def ListCreatorStreams(self, request, context):
        creator_id = check_id("creator_id", request.creator_id)
        size = paging.page_size(request.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        status = ""
        if request.status != pb.STREAM_STATUS_UNSPECIFIED:
            try:
                status = pb.StreamStatus.Name(request.status).removeprefix("STREAM_STATUS_")
            except ValueError:
                raise invalid("INVALID_STATUS", "unknown stream status", field="status") from None
        after = None
        if request.page_token:
            at, last_id, (token_status,) = paging.decode_keyset(request.page_token, extra=1)
            after = (at, last_id)
            if token_status != status:
                raise invalid("INVALID_PAGE_TOKEN", "page_token belongs to another status filter", field="page_token")
        where = "s.creator_id = :creator"
        if status:
            where += " AND s.status = :status"
        if after:
            where += " AND (s.created_at, s.stream_id) < (:at, :id)"
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(f"{_SELECT_STREAM} WHERE {where} ORDER BY s.created_at DESC, s.stream_id DESC LIMIT :n"),
                    {
                        "creator": creator_id,
                        "status": status,
                        "at": after[0] if after else None,
                        "id": after[1] if after else None,
                        "n": size + 1,
                    },
                )
            ).all()
        response = pb.ListCreatorStreamsResponse(streams=[stream_pb(r) for r in rows[:size]])
        if len(rows) > size:
            last = rows[size - 1]
            response.next_page_token = paging.encode_token(last.created_at.isoformat(), last.stream_id, status)
        return response

    # ---- lifecycle ------------------------------------------------------------------------------

    async def StartStream(self, request, context):
        principal = auth.principal()
        check_id("request_id", request.request_id)
        async with self.engine.begin() as conn:
            row = await self._locked(conn, request.stream_id)
            _require_owner(principal, row)
            if row.status == "SCHEDULED":
                await conn.execute(
                    text(f"UPDATE streams.streams SET status = 'LIVE', started_at = {NOW_SQL} WHERE stream_id = :id"),
                    {"id": row.stream_id},
                )
                await append(
                    conn, SCHEMA, [stream_event(row.stream_id, row.creator_id, pb.STREAM_EVENT_TYPE_STARTED, row.now)]
                )
            elif row.status != "LIVE":  # LIVE: already started, answered as it is
                _stream_gone(row)
        self.notify()
        return pb.StartStreamResponse(stream=stream_pb(await self._stream(row.stream_id)))

    async def EndStream(self, request, context):
        principal = auth.principal()
        check_id("request_id", request.request_id)
        async with self.engine.begin() as conn:
            row = await self._locked(conn, request.stream_id)
            _require_owner(principal, row)
            if row.status == "SCHEDULED":
                raise precondition(
                    "STREAM_NOT_STARTED", "a stream that has not started is cancelled (tickets are refunded)"
                )
            if row.status == "CANCELLED":
                _stream_gone(row)
            if row.status == "LIVE":
                await conn.execute(
                    text(
                        f"UPDATE streams.streams SET status = 'ENDED', ended_at = {NOW_SQL}, "
                        "viewer_count_published = 0 WHERE stream_id = :id"
                    ),
                    {"id": row.stream_id},
                )
                await conn.execute(text("DELETE FROM streams.viewers WHERE stream_id = :id"), {"id": row.stream_id})
                await append(
                    conn, SCHEMA, [stream_event(row.stream_id, row.creator_id, pb.STREAM_EVENT_TYPE_ENDED, row.now)]
                )
        self.notify()
        return pb.EndStreamResponse(stream=stream_pb(await self._stream(row.stream_id)))

    async def CancelStream(self, request, context):
        principal = auth.principal()
        check_id("request_id", request.request_id)
        async with self.engine.begin() as conn:
            row = await self._locked(conn, request.stream_id)
            _require_owner(principal, row)
            if row.status in ("LIVE", "ENDED"):
                raise precondition("STREAM_ALREADY_STARTED", "only a stream that has not started can be cancelled")
            if row.status == "SCHEDULED":
                await append(conn, SCHEMA, await mark_cancelled(conn, [row]))
        self.notify()
        # Also on a repeat: drives what a first attempt left in flight (same ids, so never twice).
        await self.tickets.settle_stream(row.stream_id)
        async with self.engine.connect() as conn:
            counts = dict(
                (
                    await conn.execute(
                        text("SELECT status, count(*) FROM streams.tickets WHERE stream_id = :id GROUP BY status"),
                        {"id": row.stream_id},
                    )
                ).all()
            )
        return pb.CancelStreamResponse(
            stream=stream_pb(await self._stream(row.stream_id)),
            tickets_refunded=counts.get("REFUNDED", 0),
            refunds_pending=counts.get("REFUND_PENDING", 0) + counts.get("PENDING", 0),
            refunds_failed=counts.get("REFUND_FAILED", 0),
        )

    # ---- invites --------------------------------------------------------------------------------

    @staticmethod
    async def _add_invites(conn: AsyncConnection, stream_id: str, user_ids: list[str]) -> None:
        await conn.execute(
            text(
                "INSERT INTO streams.invites (stream_id, user_id) "
                "SELECT :id, u FROM unnest(CAST(:users AS text[])) AS u ON CONFLICT DO NOTHING"
            ),
            {"id": stream_id, "users": user_ids},
        )

    async def UpdateInvites(self, request, context):
        principal = auth.principal()
        check_id("request_id", request.request_id)
        add = _check_user_ids("add_user_ids", request.add_user_ids)
        remove = _check_user_ids("remove_user_ids", request.remove_user_ids)
        async with self.engine.begin() as conn:
            row = await self._locked(conn, request.stream_id)
            _require_owner(principal, row)
            if not row.invite_only:
                raise precondition("NOT_INVITE_ONLY", "this stream has no invite list")
            _stream_gone(row)
            if remove:
                await conn.execute(
                    text("DELETE FROM streams.invites WHERE stream_id = :id AND user_id = ANY(CAST(:users AS text[]))"),
                    {"id": row.stream_id, "users": remove},
                )
            if add:
                await self._add_invites(conn, row.stream_id, add)
            count = await conn.scalar(
                text("SELECT count(*) FROM streams.invites WHERE stream_id = :id"), {"id": row.stream_id}
            )
            if count > MAX_INVITES_PER_STREAM:
                raise precondition("INVITE_LIMIT", f"a stream invites at most {MAX_INVITES_PER_STREAM} users")
        return pb.UpdateInvitesResponse(stream_id=row.stream_id, invite_count=count)

    async def ListInvites(self, request, context):
        row = await self._stream(request.stream_id)
        _require_owner(auth.principal(), row)
        size = paging.page_size(request.page_size, DEFAULT_INVITE_PAGE_SIZE, MAX_INVITE_PAGE_SIZE)
        after = ""
        if request.page_token:
            (after,) = paging.decode_token(request.page_token, 1)
        async with self.engine.connect() as conn:
            users = (
                await conn.execute(
                    text(
                        "SELECT user_id FROM streams.invites WHERE stream_id = :id AND user_id > :after "
                        "ORDER BY user_id LIMIT :n"
                    ),
                    {"id": row.stream_id, "after": after, "n": size + 1},
                )
            ).scalars()
            users = list(users)
        response = pb.ListInvitesResponse(user_ids=users[:size])
        if len(users) > size:
            response.next_page_token = paging.encode_token(users[size - 1])
        return response

    # ---- tickets --------------------------------------------------------------------------------

    async def _ticket_row(self, where: str, params: dict):
        async with self.engine.connect() as conn:
            return (
                await conn.execute(
                    text(
                        "SELECT t.*, s.creator_id FROM streams.tickets t JOIN streams.streams s USING (stream_id) "
                        f"WHERE {where}"
                    ),
                    params,
                )
            ).one_or_none()

    @staticmethod
    def _refusal(reason: str) -> DomainError:
        if reason == "INSUFFICIENT_FUNDS":
            return precondition("INSUFFICIENT_FUNDS", "the fan's balance is below the ticket price")
        return precondition("PAYMENT_REFUSED", "the payment was refused", wallet_reason=reason)

    @staticmethod
    def _pending_error() -> DomainError:
        return DomainError(
            grpc.StatusCode.UNAVAILABLE,
            "TICKET_PENDING",
            "the payment's outcome is not known yet; retry with the same request_id for the final answer",
            retry_delay_ms=1_000,
        )

    async def _answer(self, ticket_id: str, charged: bool) -> pb.PurchaseTicketResponse:
        row = await self._ticket_row("t.ticket_id = :t", {"t": ticket_id})
        if row.status == "PENDING":
            raise self._pending_error()
        if row.status == "FAILED":
            raise self._refusal(row.failure_reason or "")
        return pb.PurchaseTicketResponse(ticket=ticket_pb(row), charged=charged)

    async def _replayed(self, scope: str, request) -> pb.PurchaseTicketResponse | None:
        row = await self._ticket_row(
            "t.request_scope = :scope AND t.request_id = :rid", {"scope": scope, "rid": request.request_id}
        )
        if row is None:
            return None
        for field, stored, sent in (
            ("stream_id", row.stream_id, request.stream_id),
            ("fan_id", row.fan_id, request.fan_id),
            ("price_tokens", row.price_tokens, request.price_tokens),
        ):
            if stored != sent:
                raise DomainError(
                    grpc.StatusCode.ALREADY_EXISTS,
                    "ID_REUSED",
                    f"request_id was used for another purchase ({field} differs)",
                    {"field": field},
                )
        if row.status == "PENDING":
            # The first attempt's outcome is unknown (or it is still running): drive it to its end
            # with the same derived ids, which Wallet answers with the original result.
            await self.tickets.drive(Charge.of(row))
        return await self._answer(row.ticket_id, charged=True)

    async def _reserve(self, scope: str, request):
        """The intent transaction: answers ("new" | "owned" | "in_flight", ticket row)."""
        fan_id = request.fan_id
        async with self.engine.begin() as conn:
            stream = await self._locked(conn, request.stream_id)
            if stream.kind == "PUBLIC":
                raise precondition("STREAM_IS_PUBLIC", "a public stream needs no ticket")
            if fan_id == stream.creator_id:
                raise precondition("CREATOR_NEEDS_NO_TICKET", "the creator watches their own stream without a ticket")
            _stream_gone(stream)
            held = (
                await conn.execute(
                    text(
                        "SELECT t.*, CAST(:creator AS text) AS creator_id FROM streams.tickets t "
                        "WHERE stream_id = :s AND fan_id = :f AND status <> 'FAILED'"
                    ),
                    {"s": stream.stream_id, "f": fan_id, "creator": stream.creator_id},
                )
            ).one_or_none()
            if held is not None:
                return ("in_flight" if held.status == "PENDING" else "owned"), held
            if stream.invite_only:
                invited = await conn.scalar(
                    text("SELECT true FROM streams.invites WHERE stream_id = :s AND user_id = :f"),
                    {"s": stream.stream_id, "f": fan_id},
                )
                if not invited:
                    raise denied("NOT_INVITED", "this stream is invite-only")
            if request.price_tokens != stream.price_tokens:
                raise precondition(
                    "PRICE_CHANGED",
                    "the ticket price is not the one shown; show the new price",
                    price_tokens=str(stream.price_tokens),
                )
            if stream.viewer_cap is not None and stream.seats_taken >= stream.viewer_cap:
                raise precondition("SOLD_OUT", "every ticket of this stream is sold")
            ticket_id = uuid.uuid4().hex
            row = (
                await conn.execute(
                    text(
                        """
                        INSERT INTO streams.tickets (ticket_id, stream_id, fan_id, request_scope, request_id,
                            price_tokens, fee_tokens, fee_bps, status)
                        VALUES (:t, :s, :f, :scope, :rid, :price, :fee, :bps, 'PENDING')
                        RETURNING *, CAST(:creator AS text) AS creator_id
                        """
                    ),
                    {
                        "t": ticket_id,
                        "s": stream.stream_id,
                        "f": fan_id,
                        "scope": scope,
                        "rid": request.request_id,
                        "price": stream.price_tokens,
                        "fee": fee_amount(stream.price_tokens, stream.fee_bps),
                        "bps": stream.fee_bps,
                        "creator": stream.creator_id,
                    },
                )
            ).one()
            await conn.execute(
                text("UPDATE streams.streams SET seats_taken = seats_taken + 1 WHERE stream_id = :s"),
                {"s": stream.stream_id},
            )
        return "new", row

    async def PurchaseTicket(self, request, context):
        principal = auth.principal()
        check_id("request_id", request.request_id)
        check_id("stream_id", request.stream_id)
        fan_id = check_id("fan_id", request.fan_id)
        _require_self(principal, fan_id)
        if not 0 < request.price_tokens <= MAX_PRICE_TOKENS:
            raise invalid("INVALID_PRICE", f"price_tokens must be 1..{MAX_PRICE_TOKENS}", field="price_tokens")
        scope = principal.scope
        # Bounded: each round either answers or waits for another request's purchase to settle.
        for _ in range(3):
            replay = await self._replayed(scope, request)
            if replay is not None:
                return replay
            try:
                kind, row = await self._reserve(scope, request)
            except IntegrityError:
                continue  # a concurrent request of this fan (or this very request id) won the race
            if kind == "owned":
                return pb.PurchaseTicketResponse(ticket=ticket_pb(row), charged=False)
            if kind == "in_flight":
                if await self.tickets.drive(Charge.of(row)) == "PENDING":
                    raise self._pending_error()
                continue  # settled now: valid (owned) or failed (this request may buy)
            await self.tickets.drive(Charge.of(row))
            return await self._answer(row.ticket_id, charged=True)
        raise self._pending_error()

    # ---- access and presence --------------------------------------------------------------------

    async def _access(self, row, user_id: str | None, staff: bool):
        """(grant, denial reason, ticket row or None) for `user_id` in the stream `row`."""
        ticket = None
        if user_id is not None:
            ticket = await self._ticket_row(
                "t.stream_id = :s AND t.fan_id = :f AND t.status <> 'FAILED'", {"s": row.stream_id, "f": user_id}
            )
        if row.kind == "PUBLIC":
            return pb.ACCESS_GRANT_PUBLIC, "", ticket
        if user_id is not None and user_id == row.creator_id:
            return pb.ACCESS_GRANT_CREATOR, "", ticket
        if ticket is not None and ticket.status == "VALID":
            return pb.ACCESS_GRANT_TICKET, "", ticket
        if staff:
            return pb.ACCESS_GRANT_STAFF, "", ticket
        if ticket is not None and ticket.status == "PENDING":
            return pb.ACCESS_GRANT_UNSPECIFIED, "TICKET_PENDING", None
        return pb.ACCESS_GRANT_UNSPECIFIED, "TICKET_REQUIRED", ticket

    async def CheckAccess(self, request, context):
        principal = auth.principal()
        user_id = check_id("user_id", request.user_id)
        row = await self._stream(request.stream_id)
        if not principal.is_privileged and principal.user not in (user_id, row.creator_id):
            raise denied("NOT_YOURS", "ask about your own access (a stream's creator may ask about anyone)")
        staff = principal.is_admin and principal.user == user_id
        grant, denial, ticket = await self._access(row, user_id, staff)
        response = pb.CheckAccessResponse(allowed=grant != pb.ACCESS_GRANT_UNSPECIFIED, grant=grant)
        response.denial_reason = denial
        if ticket is not None and ticket.status != "PENDING":
            response.ticket.CopyFrom(ticket_pb(ticket))
        return response

    async def _require_access(self, principal: Principal, row, user_id: str | None) -> None:
        staff = principal.is_service if user_id is None else (principal.is_admin and principal.user == user_id)
        grant, denial, _ = await self._access(row, user_id, staff)
        if grant == pb.ACCESS_GRANT_UNSPECIFIED:
            raise denied(denial, "this stream needs a ticket", stream_id=row.stream_id)

    async def JoinStream(self, request, context):
        principal = auth.principal()
        check_id("request_id", request.request_id)
        user_id = check_id("user_id", request.user_id)
        _require_self(principal, user_id)
        row = await self._stream(request.stream_id)
        await self._require_access(principal, row, user_id)
        async with self.engine.begin() as conn:
            # FOR SHARE: joins do not wait for each other, and EndStream (FOR UPDATE) cannot clear
            # presence between this check and the insert.
            status = await conn.scalar(
                text("SELECT status FROM streams.streams WHERE stream_id = :s FOR SHARE"), {"s": row.stream_id}
            )
            if status != "LIVE":
                raise precondition("STREAM_NOT_LIVE", "the stream is not live", stream_id=row.stream_id)
            expires = await conn.scalar(
                text(
                    f"""
                    INSERT INTO streams.viewers (stream_id, user_id, expires_at)
                    VALUES (:s, :u, {NOW_SQL} + CAST(:ttl AS interval))
                    ON CONFLICT (stream_id, user_id) DO UPDATE SET expires_at = excluded.expires_at
                    RETURNING expires_at
                    """
                ),
                {"s": row.stream_id, "u": user_id, "ttl": PRESENCE_TTL},
            )
            count = await conn.scalar(
                text("SELECT count(*) FROM streams.viewers WHERE stream_id = :s"), {"s": row.stream_id}
            )
        return pb.JoinStreamResponse(viewer_count=count, presence_expire_time=optional_timestamp(expires))

    async def LeaveStream(self, request, context):
        principal = auth.principal()
        check_id("request_id", request.request_id)
        user_id = check_id("user_id", request.user_id)
        _require_self(principal, user_id)
        row = await self._stream(request.stream_id)
        async with self.engine.begin() as conn:
            await conn.execute(
                text("DELETE FROM streams.viewers WHERE stream_id = :s AND user_id = :u"),
                {"s": row.stream_id, "u": user_id},
            )
            count = await conn.scalar(
                text("SELECT count(*) FROM streams.viewers WHERE stream_id = :s"), {"s": row.stream_id}
            )
        return pb.LeaveStreamResponse(viewer_count=count)

    # ---- the live feed --------------------------------------------------------------------------

    async def WatchStream(self, request, context):
        principal = auth.principal()
        row = await self._stream(request.stream_id)
        await self._require_access(principal, row, principal.user)
        if self.hub is None:
            raise DomainError(grpc.StatusCode.UNAVAILABLE, "EVENTS_UNAVAILABLE", "no Redis is configured")
        feed = await self.hub.subscribe_many(feed_channels(row.stream_id), request.resume_token or None)
        async with feed:
            async for item in feed:
                yield self.encoded.get(item)


class Streams:
    """The Streams service in one process: outbox relay, watch hub, and the background loop (ticket
    sweeper, presence expiry, coalesced viewer counts)."""

    def __init__(self, settings: Settings, engine: AsyncEngine, database_url: str):
        self.settings = settings
        self.engine = engine
        self.preset = load_preset(settings.preset_name)
        self.wallet_channel = client.channel(settings, settings.addresses["wallet"], identity="streams")
        queue = settings.streams_watch_queue
        self.live = LiveEvents(
            settings,
            engine,
            SCHEMA,
            # stream_gifts: belongs to Gifts' outbox: replayed from Redis only.
            replay_kinds=frozenset({"stream"}),
            max_subscribers=2 * settings.streams_max_watchers,
            queue_size=queue,
            read_count=min(100, queue),
        )
        self.hub = self.live.hub
        self.tickets = Tickets(
            engine,
            wallet_grpc.WalletServiceStub(self.wallet_channel),
            dt.timedelta(seconds=settings.sweep_after_seconds),
            self._notify,
        )
        self.servicer = StreamsServicer(engine, self.preset, self.tickets, self.hub, self._notify)
        self._loop: asyncio.Task | None = None

    def _notify(self) -> None:
        self.live.notify()

    def registration(self) -> Registration:
        return Registration(SERVICE_NAME, self.servicer, add_to_server)

    def start(self) -> None:
        self.live.start()
        # The sweeper, presence expiry and viewer counts; FANBANK_BACKGROUND_MS=0: run by hand (tests).
        self._loop = start_background(self.settings, self.tick, "streams loop")

    async def tick(self) -> None:
        """One round of background work; safe in any number of processes at once."""
        await self.tickets.sweep()
        await self.cancel_no_shows()
        await self.expire_presence()
        await self.publish_viewer_counts()

    async def cancel_no_shows(self) -> int:
        """Cancels the SCHEDULED streams whose scheduled start is more than
        FANBANK_STREAMS_NO_SHOW_HOURS past (business time) and refunds their tickets, exactly as the
        creator's CancelStream would: fans never stay charged for a stream that did not happen.
        Rows are skip-locked, so replicas doing this at once cancel each stream once; answers how
        many streams this call cancelled."""
        if not self.settings.streams_no_show_hours:
            return 0
        async with self.engine.begin() as conn:
            rows = (
                await conn.execute(
                    text(
                        f"SELECT stream_id, creator_id, {NOW_SQL} AS now FROM streams.streams "
                        "WHERE status = 'SCHEDULED' AND scheduled_start_at IS NOT NULL "
                        f"AND scheduled_start_at < {NOW_SQL} - CAST(:grace AS interval) "
                        "ORDER BY scheduled_start_at LIMIT :limit FOR UPDATE SKIP LOCKED"
                    ),
                    {"grace": dt.timedelta(hours=self.settings.streams_no_show_hours), "limit": NO_SHOWS_PER_TICK},
                )
            ).all()
            if not rows:
                return 0
            rows.sort(key=lambda row: row.stream_id)  # one append, channels in a fixed order
            await append(conn, SCHEMA, await mark_cancelled(conn, rows))
        self._notify()
        for row in rows:
            log.info("scheduled stream never started; cancelled", extra={"stream_id": row.stream_id})
            await self.tickets.settle_stream(row.stream_id)
        return len(rows)

    async def expire_presence(self) -> int:
        async with self.engine.begin() as conn:
            result = await conn.execute(text(f"DELETE FROM streams.viewers WHERE expires_at <= {NOW_SQL}"))
        return result.rowcount

    async def publish_viewer_counts(self) -> int:
        """A VIEWER_COUNT event for each live stream whose count changed since the last one: one
        event per stream per round however many joined, so a crowd arriving is not an event storm.
        Rows are skip-locked, so replicas running this at once publish each change once."""
        async with self.engine.begin() as conn:
            rows = (
                await conn.execute(
                    text(
                        f"""
                        SELECT s.stream_id, s.creator_id, {NOW_SQL} AS now,
                            (SELECT count(*) FROM streams.viewers v WHERE v.stream_id = s.stream_id) AS n
                        FROM streams.streams s
                        WHERE s.status = 'LIVE'
                            AND (SELECT count(*) FROM streams.viewers v WHERE v.stream_id = s.stream_id)
                                <> s.viewer_count_published
                        ORDER BY s.stream_id LIMIT :limit
                        FOR UPDATE OF s SKIP LOCKED
                        """
                    ),
                    {"limit": VIEWER_COUNTS_PER_TICK},
                )
            ).all()
            if not rows:
                return 0
            await conn.execute(
                text("UPDATE streams.streams SET viewer_count_published = :n WHERE stream_id = :s"),
                [{"n": r.n, "s": r.stream_id} for r in rows],
            )
            events: list[Event] = [
                stream_event(r.stream_id, r.creator_id, pb.STREAM_EVENT_TYPE_VIEWER_COUNT, r.now, viewer_count=r.n)
                for r in rows
            ]
            await append(conn, SCHEMA, events)
        self._notify()
        return len(rows)

    async def stop(self) -> None:
        await stop_background(self._loop)
        await self.live.close()
        await self.wallet_channel.close()
