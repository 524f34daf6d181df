"""GiftsService: the gift catalog, tips, gifts and like-tips, leaderboards, goals, live alerts and
overlay tokens. The money path is in `services/gifts/support.py`. Who may do what:

- a fan sends tips, gifts and like-tips only as themselves, and lists their own sent tips;
- a creator lists the tips they received, reads their stats, sets their goals, watches their
  alerts and rotates their overlay token; the holder of the current overlay token may watch the
  alerts too (the edge's overlay page);
- admins manage the catalog and hide messages; leaderboards, goals and the catalog are for anyone
  signed in; internal services acting as themselves may do everything, and only they resolve an
  overlay token.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.gifts import rules, support
from services.gifts.support import SCHEMA, Answer, Draft, Payments, RateLimiter, SoldGift
from shared import auth, client, paging
from shared.auth import Principal
from shared.clock import NOW_SQL
from shared.config import Settings
from shared.convert import optional_timestamp
from shared.errors import DomainError, already_exists, denied, invalid, not_found, precondition
from shared.gen.fanbank.gifts.v1 import gift_events_pb2 as epb
from shared.gen.fanbank.gifts.v1 import gifts_service_pb2 as pb
from shared.gen.fanbank.gifts.v1 import gifts_service_pb2_grpc as pb_grpc
from shared.gen.fanbank.wallet.v1 import wallet_service_pb2_grpc as wallet_grpc
from shared.host import start_background, stop_background
from shared.live import LiveEvents
from shared.outbox import append
from shared.presets import Preset, load_preset
from shared.server import Registration
from shared.validate import check_id
from shared.watch import Hub

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GiftsService"].full_name
MAX_PAGE_SIZE = 100
MAX_PAGE_SIZE_ASKED = 1_000
DEFAULT_TIPS_PAGE = 20
DEFAULT_GIFTS_PAGE = 50
DEFAULT_BOARD_SIZE = 10
MAX_BOARD_SIZE = 100


def _require_self(principal: Principal, user_id: str, reason: str = "NOT_YOURS") -> None:
    if not principal.is_privileged and principal.user != user_id:
        raise denied(reason, "a user acts only for themselves")


def _page_size(asked: int, default: int) -> int:
    return paging.page_size(asked, default, MAX_PAGE_SIZE, accepted=MAX_PAGE_SIZE_ASKED)


def gift_pb(row) -> pb.Gift:
    return pb.Gift(
        gift_id=row.gift_id,
        name=row.name,
        price_tokens=row.price_tokens,
        category=row.category,
        rarity=row.rarity,
        active=row.active,
        featured=row.featured,
        limited=row.limited,
        sort_order=row.sort_order,
        image_url=row.image_url,
        animation_url=row.animation_url,
        create_time=optional_timestamp(row.created_at),
        update_time=optional_timestamp(row.updated_at),
    )


def tip_pb(row) -> pb.Tip:
    return pb.Tip(
        tip_id=row.tip_id,
        kind=rules.KINDS[row.kind],
        status=pb.TipStatus.Value(f"TIP_STATUS_{row.status}"),
        sender_id=row.sender_id,
        creator_id=row.creator_id,
        sender_display_name=row.sender_display_name,
        amount_tokens=row.amount_tokens,
        fee_tokens=row.fee_tokens,
        creator_tokens=row.amount_tokens - row.fee_tokens,
        fee_bps=row.fee_bps,
        message="" if row.message_hidden else row.message,
        message_hidden=row.message_hidden,
        context_type=rules.CONTEXT_ENUMS[row.context_type],
        context_id=row.context_id,
        gift_id=row.gift_id or "",
        gift_name=row.gift_name or "",
        quantity=row.quantity or 0,
        unit_price_tokens=row.unit_price_tokens or 0,
        failure_reason=row.failure_reason or "",
        create_time=optional_timestamp(row.created_at),
        complete_time=optional_timestamp(row.completed_at) if row.status != "PENDING" else None,
    )


def goal_pb(row) -> pb.Goal:
    return pb.Goal(
        goal_id=row.goal_id,
        creator_id=row.creator_id,
        stream_id=row.stream_id,
        title=row.title,
        target_tokens=row.target_tokens,
        progress_tokens=row.progress_tokens,
        reached=row.reached_at is not None,
        create_time=optional_timestamp(row.created_at),
        reach_time=optional_timestamp(row.reached_at),
    )


class GiftsServicer(pb_grpc.GiftsServiceServicer):
    def __init__(self, engine: AsyncEngine, preset: Preset, payments: Payments, hub: Hub, overlay_key: bytes):
        self.engine = engine
        self.preset = preset
        self.payments = payments
        self.hub = hub
        self.overlay_key = overlay_key

    async def _now(self) -> dt.datetime:
        async with self.engine.connect() as conn:
            return await conn.scalar(text(f"SELECT {NOW_SQL}"))

    # ---- catalog --------------------------------------------------------------------------------

    def _gift_fields(self, gift: pb.Gift) -> dict:
        rules_ = self.preset.gifts
        if not rules_.enabled:
            raise precondition("GIFTS_DISABLED", "this platform has no gift catalog")
        name = rules.check_text("gift.name", gift.name, rules.MAX_GIFT_NAME_CHARS, required=True)
        if gift.price_tokens <= 0 or not rules_.accepts_price(gift.price_tokens):
            raise invalid(
                "INVALID_PRICE",
                f"price must be {rules_.min_price_tokens}..{rules_.max_price_tokens} tokens",
                field="gift.price_tokens",
            )
        if gift.category not in rules_.categories:
            raise invalid(
                "INVALID_CATEGORY", f"category must be one of {', '.join(rules_.categories)}", field="gift.category"
            )
        if gift.rarity not in rules_.rarities:
            raise invalid("INVALID_RARITY", f"rarity must be one of {', '.join(rules_.rarities)}", field="gift.rarity")
        if abs(gift.sort_order) > rules.MAX_SORT_ORDER:
            raise invalid(
                "INVALID_SORT_ORDER", f"sort_order must be within ±{rules.MAX_SORT_ORDER}", field="gift.sort_order"
            )
        return {
            "name": name,
            "price_tokens": gift.price_tokens,
            "category": gift.category,
            "rarity": gift.rarity,
            "featured": gift.featured,
            "limited": gift.limited,
            "sort_order": gift.sort_order,
            "image_url": rules.check_url("gift.image_url", gift.image_url),
            "animation_url": rules.check_url("gift.animation_url", gift.animation_url),
        }

    async def CreateGift(self, request, context):
        principal = auth.principal()
        auth.require_privileged(principal, "CreateGift")
        check_id("request_id", request.request_id)
        fields = self._gift_fields(request.gift)
        params = {**fields, "gift_id": uuid.uuid4().hex, "scope": principal.scope, "rid": request.request_id}
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    text(
                        f"""
                        INSERT INTO gifts.catalog (gift_id, name, price_tokens, category, rarity, featured, limited,
                            sort_order, image_url, animation_url, request_scope, request_id, created_at, updated_at)
                        VALUES (:gift_id, :name, :price_tokens, :category, :rarity, :featured, :limited, :sort_order,
                            :image_url, :animation_url, :scope, :rid, {NOW_SQL}, {NOW_SQL})
                        ON CONFLICT (request_scope, request_id) DO NOTHING RETURNING *
                        """
                    ),
                    params,
                )
            ).one_or_none()
            if row is None:
                row = (
                    await conn.execute(
                        text("SELECT * FROM gifts.catalog WHERE request_scope = :scope AND request_id = :rid"), params
                    )
                ).one()
                stored = {name: getattr(row, name) for name in ("name", "price_tokens", "category", "rarity")}
                changed = rules.first_difference(stored, {k: fields[k] for k in stored})
                if changed is not None:
                    raise already_exists(
                        f"ID_REUSED_{changed.upper()}", "request_id was used for another gift", field=changed
                    )
        return pb.CreateGiftResponse(gift=gift_pb(row))

    async def UpdateGift(self, request, context):
        auth.require_privileged(auth.principal(), "UpdateGift")
        check_id("request_id", request.request_id)
        gift_id = check_id("gift_id", request.gift_id)
        fields = self._gift_fields(request.gift)
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    text(
                        f"""
                        UPDATE gifts.catalog SET name = :name, price_tokens = :price_tokens, category = :category,
                            rarity = :rarity, active = :active, featured = :featured, limited = :limited,
                            sort_order = :sort_order, image_url = :image_url, animation_url = :animation_url,
                            updated_at = {NOW_SQL}
                        WHERE gift_id = :gift_id RETURNING *
                        """
                    ),
                    {**fields, "active": request.gift.active, "gift_id": gift_id},
                )
            ).one_or_none()
        if row is None:
            raise not_found("GIFT_NOT_FOUND", f"no gift {gift_id!r}")
        return pb.UpdateGiftResponse(gift=gift_pb(row))

    async def DeactivateGift(self, request, context):
        auth.require_privileged(auth.principal(), "DeactivateGift")
        check_id("request_id", request.request_id)
        gift_id = check_id("gift_id", request.gift_id)
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    text(
                        f"UPDATE gifts.catalog SET active = false, updated_at = CASE WHEN active THEN {NOW_SQL} "
                        "ELSE updated_at END WHERE gift_id = :g RETURNING *"
                    ),
                    {"g": gift_id},
                )
            ).one_or_none()
        if row is None:
            raise not_found("GIFT_NOT_FOUND", f"no gift {gift_id!r}")
        return pb.DeactivateGiftResponse(gift=gift_pb(row))

    async def ListGifts(self, request, context):
        size = _page_size(request.page_size, DEFAULT_GIFTS_PAGE)
        if request.category and request.category not in self.preset.gifts.categories:
            raise invalid("INVALID_CATEGORY", "unknown category", field="category")
        after = None
        if request.page_token:
            order, last = paging.decode_token(request.page_token, 2)
            try:
                after = (int(order), check_id("page_token", last))
            except (ValueError, DomainError):
                raise invalid("INVALID_PAGE_TOKEN", "page_token is malformed", field="page_token") from None
        where = ["active"]
        if request.category:
            where.append("category = :category")
        if after:
            where.append("(sort_order, gift_id) > (:order, :last)")
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        f"SELECT * FROM gifts.catalog WHERE {' AND '.join(where)} ORDER BY sort_order, gift_id LIMIT :n"
                    ),
                    {
                        "category": request.category,
                        "order": after[0] if after else None,
                        "last": after[1] if after else None,
                        "n": size + 1,
                    },
                )
            ).all()
        response = pb.ListGiftsResponse(gifts=[gift_pb(r) for r in rows[:size]])
        if len(rows) > size:
            last_row = rows[size - 1]
            response.next_page_token = paging.encode_token(str(last_row.sort_order), last_row.gift_id)
        return response

    # ---- sending --------------------------------------------------------------------------------

    def _parties(self, principal: Principal, request) -> tuple[str, str]:
        check_id("request_id", request.request_id)
        sender = check_id("sender_id", request.sender_id)
        creator = check_id("creator_id", request.creator_id)
        _require_self(principal, sender)
        if sender == creator:
            raise invalid("SELF_TIP", "a fan cannot tip themselves", field="creator_id")
        return sender, creator

    def _words(self, request) -> tuple[str, str]:
        limit = self.preset.tips.message_max_chars
        if len(request.message) > limit:
            raise invalid("MESSAGE_TOO_LONG", f"the message is longer than {limit} characters", field="message")
        message = rules.check_text("message", request.message, limit, lines=True)
        name = rules.check_text("sender_display_name", request.sender_display_name, rules.MAX_DISPLAY_NAME_CHARS)
        return message, name

    async def SendTip(self, request, context):
        principal = auth.principal()
        sender, creator = self._parties(principal, request)
        tips = self.preset.tips
        if not tips.enabled:
            raise precondition("TIPS_DISABLED", "this platform does not offer tips")
        amount = request.amount_tokens
        if amount <= 0:
            raise invalid("INVALID_AMOUNT", "amount_tokens must be positive", field="amount_tokens")
        if amount < tips.min_tokens:
            raise invalid("AMOUNT_BELOW_MINIMUM", f"a tip is at least {tips.min_tokens} tokens", field="amount_tokens")
        if amount > tips.max_tokens:
            raise invalid("AMOUNT_ABOVE_MAXIMUM", f"a tip is at most {tips.max_tokens} tokens", field="amount_tokens")
        context_type = rules.context_name(request.context_type, rules.TIP_CONTEXTS)
        context_id = check_id("context_id", request.context_id)
        message, name = self._words(request)
        draft = Draft(
            "TIP",
            principal.scope,
            request.request_id,
            sender,
            creator,
            name,
            amount,
            self.preset.fees.tip_bps,
            message,
            context_type,
            context_id,
        )
        answer = await self.payments.submit(draft)
        return pb.SendTipResponse(tip=tip_pb(answer.row))

    async def SendGift(self, request, context):
        principal = auth.principal()
        sender, creator = self._parties(principal, request)
        rules_ = self.preset.gifts
        if not rules_.enabled:
            raise precondition("GIFTS_DISABLED", "this platform has no gifts")
        gift_id = check_id("gift_id", request.gift_id)
        if request.quantity <= 0 or not rules_.accepts_quantity(request.quantity):
            raise invalid("INVALID_QUANTITY", f"quantity must be 1..{rules_.max_quantity}", field="quantity")
        if request.price_tokens <= 0:
            raise invalid("INVALID_PRICE", "price_tokens (the price shown) must be positive", field="price_tokens")
        context_type = rules.context_name(request.context_type, rules.TIP_CONTEXTS)
        context_id = check_id("context_id", request.context_id)
        message, name = self._words(request)
        async with self.engine.connect() as conn:
            item = (
                await conn.execute(text("SELECT * FROM gifts.catalog WHERE gift_id = :g"), {"g": gift_id})
            ).one_or_none()
        if item is None:
            raise not_found("GIFT_NOT_FOUND", f"no gift {gift_id!r}")
        draft = Draft(
            "GIFT",
            principal.scope,
            request.request_id,
            sender,
            creator,
            name,
            request.price_tokens * request.quantity,
            self.preset.fees.gift_bps,
            message,
            context_type,
            context_id,
            SoldGift(gift_id, item.name, request.quantity, request.price_tokens, item.image_url, item.animation_url),
        )
        refusal = None
        if not item.active:
            refusal = precondition("GIFT_INACTIVE", "this gift is no longer offered", gift_id=gift_id)
        elif item.price_tokens != request.price_tokens:
            refusal = precondition(
                "PRICE_CHANGED", "the gift's price changed; show the new price", price_tokens=str(item.price_tokens)
            )
        if refusal is not None:
            # A retry of a gift bought before the catalog changed still gets its first answer.
            replay = await self.payments.replayed(draft)
            if replay is None:
                raise refusal
            return pb.SendGiftResponse(tip=tip_pb(replay.row))
        answer = await self.payments.submit(draft)
        return pb.SendGiftResponse(tip=tip_pb(answer.row))

    async def LikeTip(self, request, context):
        principal = auth.principal()
        sender, creator = self._parties(principal, request)
        likes = self.preset.likes
        if not likes.enabled:
            raise precondition("LIKE_TIPS_DISABLED", "this platform does not charge for likes")
        context_type = rules.context_name(request.context_type, rules.LIKE_CONTEXTS)
        context_id = check_id("context_id", request.context_id)
        draft = Draft(
            "LIKE",
            principal.scope,
            request.request_id,
            sender,
            creator,
            "",
            likes.tokens_per_like,
            self.preset.fees.like_bps,
            "",
            context_type,
            context_id,
        )
        answer: Answer = await self.payments.submit(draft)
        return pb.LikeTipResponse(tip=tip_pb(answer.row), already_paid=answer.already_paid)

    # ---- reads ----------------------------------------------------------------------------------

    async def ListTips(self, request, context):
        principal = auth.principal()
        if bool(request.sender_id) == bool(request.creator_id):
            raise invalid("ONE_OWNER", "name exactly one of sender_id or creator_id", field="sender_id")
        if request.sender_id:
            column, owner, extra = "sender_id", check_id("sender_id", request.sender_id), ""
        else:
            column, owner, extra = "creator_id", check_id("creator_id", request.creator_id), " AND status = 'COMPLETED'"
        _require_self(principal, owner)
        size = _page_size(request.page_size, DEFAULT_TIPS_PAGE)
        after = None
        if request.page_token:
            at, last, _ = paging.decode_keyset(request.page_token)
            after = (at, last)
        where = f"{column} = :owner{extra}" + (" AND (created_at, tip_id) < (:at, :id)" if after else "")
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(f"SELECT * FROM gifts.tips WHERE {where} ORDER BY created_at DESC, tip_id DESC LIMIT :n"),
                    {
                        "owner": owner,
                        "at": after[0] if after else None,
                        "id": after[1] if after else None,
                        "n": size + 1,
                    },
                )
            ).all()
        response = pb.ListTipsResponse(tips=[tip_pb(r) for r in rows[:size]])
        if len(rows) > size:
            last_row = rows[size - 1]
            response.next_page_token = paging.encode_token(last_row.created_at.isoformat(), last_row.tip_id)
        return response

    async def GetTipStats(self, request, context):
        creator = check_id("creator_id", request.creator_id)
        _require_self(auth.principal(), creator)
        today = (await self._now()).astimezone(dt.UTC).date()
        span = rules.period_range(request.period, rules.parse_date(request.date, today))
        where = "creator_id = :c" + (" AND day >= :start AND day < :end" if span else "")
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT kind, context_type, CAST(sum(tip_count) AS bigint) AS n, "
                        "CAST(sum(gross_tokens) AS bigint) AS gross, CAST(sum(fee_tokens) AS bigint) AS fee "
                        f"FROM gifts.daily_totals WHERE {where} GROUP BY kind, context_type ORDER BY kind, context_type"
                    ),
                    {"c": creator, "start": span[0] if span else None, "end": span[1] if span else None},
                )
            ).all()
        response = pb.GetTipStatsResponse(creator_id=creator, period=request.period)
        if span:
            response.start_date, response.end_date = span[0].isoformat(), span[1].isoformat()
        for r in rows:
            response.totals.add(
                kind=rules.KINDS[r.kind],
                context_type=rules.CONTEXT_ENUMS[r.context_type],
                count=r.n,
                gross_tokens=r.gross,
                fee_tokens=r.fee,
                creator_tokens=r.gross - r.fee,
            )
            response.count += r.n
            response.gross_tokens += r.gross
            response.fee_tokens += r.fee
            response.creator_tokens += r.gross - r.fee
        return response

    async def GetLeaderboard(self, request, context):
        creator = check_id("creator_id", request.creator_id)
        stream = check_id("stream_id", request.stream_id) if request.stream_id else ""
        period = rules.PERIOD_NAMES.get(request.period)
        if period is None:
            raise invalid("INVALID_PERIOD", "period must be DAY, ISO_WEEK or ALL_TIME", field="period")
        if not 0 <= request.limit <= MAX_BOARD_SIZE:
            raise invalid("INVALID_LIMIT", f"limit must be 0..{MAX_BOARD_SIZE}", field="limit")
        today = (await self._now()).astimezone(dt.UTC).date()
        span = rules.period_range(request.period, rules.parse_date(request.date, today))
        start = span[0] if span else rules.ALL_TIME_START
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT sender_id, sender_display_name, amount_tokens, tip_count FROM gifts.leaderboard "
                        "WHERE creator_id = :c AND stream_id = :s AND period = :p AND period_start = :d "
                        "ORDER BY amount_tokens DESC, sender_id LIMIT :n"
                    ),
                    {"c": creator, "s": stream, "p": period, "d": start, "n": request.limit or DEFAULT_BOARD_SIZE},
                )
            ).all()
        response = pb.GetLeaderboardResponse(creator_id=creator, stream_id=stream, period=request.period)
        if span:
            response.start_date, response.end_date = span[0].isoformat(), span[1].isoformat()
        for rank, r in enumerate(rows, start=1):
            response.entries.add(
                rank=rank,
                sender_id=r.sender_id,
                sender_display_name=r.sender_display_name,
                amount_tokens=r.amount_tokens,
                tip_count=r.tip_count,
            )
        return response

    # ---- goals ----------------------------------------------------------------------------------

    async def SetGoal(self, request, context):
        principal = auth.principal()
        check_id("request_id", request.request_id)
        creator = check_id("creator_id", request.creator_id)
        stream = check_id("stream_id", request.stream_id)
        _require_self(principal, creator)
        if not 0 < request.target_tokens <= rules.MAX_GOAL_TOKENS:
            raise invalid("INVALID_TARGET", f"target_tokens must be 1..{rules.MAX_GOAL_TOKENS}", field="target_tokens")
        title = rules.check_text("title", request.title, rules.MAX_GOAL_TITLE_CHARS)
        wanted = {"creator_id": creator, "stream_id": stream, "target_tokens": request.target_tokens, "title": title}
        key = {"scope": principal.scope, "rid": request.request_id}
        async with self.engine.begin() as conn:
            await conn.execute(
                text("SELECT pg_advisory_xact_lock(hashtext('gifts.goal|' || :c || '|' || :s))"),
                {"c": creator, "s": stream},
            )
            row = (
                await conn.execute(
                    text("SELECT * FROM gifts.goals WHERE request_scope = :scope AND request_id = :rid"), key
                )
            ).one_or_none()
            if row is None:
                await conn.execute(
                    text("UPDATE gifts.goals SET active = false WHERE creator_id = :c AND stream_id = :s AND active"),
                    {"c": creator, "s": stream},
                )
                row = (
                    await conn.execute(
                        text(
                            f"""
                            INSERT INTO gifts.goals (goal_id, creator_id, stream_id, title, target_tokens, active,
                                request_scope, request_id, created_at)
                            VALUES (:g, :c, :s, :t, :n, true, :scope, :rid, {NOW_SQL}) RETURNING *
                            """
                        ),
                        {
                            **key,
                            "g": uuid.uuid4().hex,
                            "c": creator,
                            "s": stream,
                            "t": title,
                            "n": request.target_tokens,
                        },
                    )
                ).one()
        stored = {name: getattr(row, name) for name in wanted}
        changed = rules.first_difference(stored, wanted)
        if changed is not None:
            raise already_exists(f"ID_REUSED_{changed.upper()}", "request_id was used for another goal", field=changed)
        return pb.SetGoalResponse(goal=goal_pb(row))

    async def GetGoal(self, request, context):
        creator = check_id("creator_id", request.creator_id)
        stream = check_id("stream_id", request.stream_id)
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    text("SELECT * FROM gifts.goals WHERE creator_id = :c AND stream_id = :s AND active"),
                    {"c": creator, "s": stream},
                )
            ).one_or_none()
        if row is None:
            raise not_found("GOAL_NOT_FOUND", "this stream has no goal")
        return pb.GetGoalResponse(goal=goal_pb(row))

    # ---- moderation -----------------------------------------------------------------------------

    async def HideMessage(self, request, context):
        auth.require_privileged(auth.principal(), "HideMessage")
        check_id("request_id", request.request_id)
        tip_id = check_id("tip_id", request.tip_id)
        published = False
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    text(
                        "UPDATE gifts.tips SET message_hidden = true WHERE tip_id = :t AND NOT message_hidden"
                        " RETURNING *"
                    ),
                    {"t": tip_id},
                )
            ).one_or_none()
            if row is None:  # unknown, or hidden already (nothing more to say)
                row = (
                    await conn.execute(text("SELECT * FROM gifts.tips WHERE tip_id = :t"), {"t": tip_id})
                ).one_or_none()
                if row is None:
                    raise not_found("TIP_NOT_FOUND", f"no tip {tip_id!r}")
            elif row.status == "COMPLETED" and row.message:
                # Its alert went out with the message (a support still PENDING will go out without
                # it: settling reads the flag under the same row lock). Said in this transaction.
                await append(conn, SCHEMA, support.hidden_message_events(row))
                published = True
        if published:
            self.payments.notify()
        return pb.HideMessageResponse(tip=tip_pb(row))

    # ---- alerts and the overlay -----------------------------------------------------------------

    async def _overlay_creator(self, token: str) -> str | None:
        digest = rules.overlay_token_hash(token)
        if digest is None:
            return None
        async with self.engine.connect() as conn:
            return await conn.scalar(
                text("SELECT creator_id FROM gifts.overlay_tokens WHERE token_hash = :h"), {"h": digest}
            )

    async def WatchCreatorAlerts(self, request, context):
        principal = auth.principal()
        token = request.overlay_token
        if token:
            creator = await self._overlay_creator(token)
            if creator is None or (request.creator_id and request.creator_id != creator):
                raise denied("OVERLAY_TOKEN_INVALID", "this overlay token is not (or no longer) valid")
        else:
            creator = check_id("creator_id", request.creator_id)
            _require_self(principal, creator)
        async with await self.hub.subscribe(f"alerts:{creator}", request.resume_token or None) as sub:
            async for delivery in sub:
                # A rotated token stops working at once, open watches included: checked before
                # every event it would receive (overlays are one or two per creator).
                if token and await self._overlay_creator(token) != creator:
                    raise denied("OVERLAY_TOKEN_INVALID", "this overlay token was rotated")
                yield pb.WatchCreatorAlertsResponse(
                    event=epb.GiftEvent.FromString(delivery.payload), resume_token=delivery.token
                )

    async def RotateOverlayToken(self, request, context):
        principal = auth.principal()
        check_id("request_id", request.request_id)
        creator = check_id("creator_id", request.creator_id)
        _require_self(principal, creator)
        key = {"scope": principal.scope, "rid": request.request_id}
        nonce = secrets.token_urlsafe(16)
        token = rules.overlay_token(self.overlay_key, creator, nonce)
        async with self.engine.begin() as conn:
            inserted = (
                await conn.execute(
                    text(
                        f"""
                        INSERT INTO gifts.overlay_rotations (request_scope, request_id, creator_id, nonce, rotated_at)
                        VALUES (:scope, :rid, :c, :nonce, {NOW_SQL})
                        ON CONFLICT (request_scope, request_id) DO NOTHING RETURNING rotated_at
                        """
                    ),
                    {**key, "c": creator, "nonce": nonce},
                )
            ).one_or_none()
            if inserted is not None:
                await conn.execute(
                    text(
                        """
                        INSERT INTO gifts.overlay_tokens (creator_id, token_hash, nonce, rotated_at)
                        VALUES (:c, :h, :nonce, :at)
                        ON CONFLICT (creator_id) DO UPDATE SET token_hash = excluded.token_hash,
                            nonce = excluded.nonce, rotated_at = excluded.rotated_at
                        """
                    ),
                    {"c": creator, "h": rules.overlay_token_hash(token), "nonce": nonce, "at": inserted.rotated_at},
                )
                return pb.RotateOverlayTokenResponse(
                    overlay_token=token, rotate_time=optional_timestamp(inserted.rotated_at)
                )
            earlier = (
                await conn.execute(
                    text(
                        "SELECT r.creator_id, r.nonce, r.rotated_at, o.nonce AS current_nonce "
                        "FROM gifts.overlay_rotations r LEFT JOIN gifts.overlay_tokens o USING (creator_id) "
                        "WHERE r.request_scope = :scope AND r.request_id = :rid"
                    ),
                    key,
                )
            ).one()
        if earlier.creator_id != creator:
            raise already_exists("ID_REUSED_CREATOR_ID", "request_id was used for another creator", field="creator_id")
        if earlier.nonce != earlier.current_nonce:
            raise precondition("OVERLAY_TOKEN_SUPERSEDED", "this rotation's token was rotated again since")
        return pb.RotateOverlayTokenResponse(
            overlay_token=rules.overlay_token(self.overlay_key, creator, earlier.nonce),
            rotate_time=optional_timestamp(earlier.rotated_at),
        )

    async def ResolveOverlayToken(self, request, context):
        auth.require_service_or_anonymous(auth.principal(), "ResolveOverlayToken")
        creator = await self._overlay_creator(request.overlay_token)
        if creator is None:
            raise not_found("OVERLAY_TOKEN_UNKNOWN", "no creator has this overlay token")
        return pb.ResolveOverlayTokenResponse(creator_id=creator)


class Gifts:
    """The Gifts service in one process: the payment batches, the sweeper, the outbox relay and the
    alerts hub. Needs Redis: it holds the senders' rate limits and carries the live alerts."""

    def __init__(self, settings: Settings, engine: AsyncEngine, database_url: str):
        self.settings = settings
        self.engine = engine
        self.preset = load_preset(settings.preset_name)
        self.wallet_channel = client.channel(
            settings, settings.addresses["wallet"], identity="gifts", deadline_seconds=support.WALLET_DEADLINE_S
        )
        self.live = LiveEvents(settings, engine, SCHEMA, required="rate limits and live alerts")
        limits = self.preset.rate_limit
        self.payments = Payments(
            engine,
            wallet_grpc.WalletServiceStub(self.wallet_channel),
            RateLimiter(self.live.redis, limits.tips_gifts_per_second, limits.burst),
            self.live.notify,
            dt.timedelta(seconds=settings.sweep_after_seconds),
        )
        self.servicer = GiftsServicer(engine, self.preset, self.payments, self.live.hub, settings.key_for("gifts"))
        self._loop: asyncio.Task | None = None

    def registration(self) -> Registration:
        return Registration(SERVICE_NAME, self.servicer, pb_grpc.add_GiftsServiceServicer_to_server)

    def start(self) -> None:
        self.live.start()
        self.payments.start()
        self._loop = start_background(self.settings, self.payments.sweep, "gifts sweeper")

    async def stop(self) -> None:
        await stop_background(self._loop)
        await self.payments.stop()
        await self.live.close()
        await self.wallet_channel.close()
