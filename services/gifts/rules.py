"""Gifts' pure rules: text a user writes, contexts, periods, derived Wallet ids and overlay tokens.
No I/O here, so every rule is tested on its own (tests/unit/test_gifts_rules.py)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
import unicodedata

from shared.errors import invalid
from shared.gen.fanbank.gifts.v1 import gifts_service_pb2 as pb

MAX_DISPLAY_NAME_CHARS = 50
MAX_GIFT_NAME_CHARS = 60
MAX_GOAL_TITLE_CHARS = 100
MAX_URL_CHARS = 500
MAX_GOAL_TOKENS = 10**12
MAX_SORT_ORDER = 1_000_000

# Wire enum ↔ the lowercase name stored in the table and carried by GiftEvent.context_type.
CONTEXT_NAMES = {
    pb.CONTEXT_TYPE_STREAM: "stream",
    pb.CONTEXT_TYPE_CALL: "call",
    pb.CONTEXT_TYPE_POST: "post",
    pb.CONTEXT_TYPE_PROFILE: "profile",
    pb.CONTEXT_TYPE_COMMENT: "comment",
}
CONTEXT_ENUMS = {name: value for value, name in CONTEXT_NAMES.items()}
TIP_CONTEXTS = frozenset({"stream", "call", "post", "profile"})
LIKE_CONTEXTS = frozenset({"post", "comment"})

KINDS = {"TIP": pb.TIP_KIND_TIP, "GIFT": pb.TIP_KIND_GIFT, "LIKE": pb.TIP_KIND_LIKE}
KIND_NAMES = {value: name for name, value in KINDS.items()}
# The prefix of a support's Wallet ids: `tip:<id>`, `gift:<id>`, `like:<id>`.
_ID_PREFIX = {"TIP": "tip", "GIFT": "gift", "LIKE": "like"}

ALL_TIME_START = dt.date(1970, 1, 1)
PERIOD_NAMES = {pb.PERIOD_DAY: "DAY", pb.PERIOD_ISO_WEEK: "WEEK", pb.PERIOD_ALL_TIME: "ALL"}

_URL = re.compile(r"https://[^\s<>\"'`]{1,490}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
OVERLAY_TOKEN_PREFIX = "ovl_"
_OVERLAY_TOKEN = re.compile(r"ovl_[A-Za-z0-9_-]{43}")


def check_text(field: str, value: str, max_chars: int, *, required: bool = False, lines: bool = False) -> str:
    """Plain text a user wrote: at most `max_chars` characters, no control or format characters (a
    newline is allowed where `lines`); it is stored and shown as text, never interpreted."""
    if required and not value.strip():
        raise invalid("TEXT_REQUIRED", f"{field} is required", field=field)
    if len(value) > max_chars:
        raise invalid("TEXT_TOO_LONG", f"{field} is longer than {max_chars} characters", field=field)
    for char in value:
        if lines and char == "\n":
            continue
        if unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn"):
            raise invalid("TEXT_NOT_PLAIN", f"{field} contains a control character", field=field)
    return value


def check_url(field: str, value: str) -> str:
    if value and not _URL.fullmatch(value):
        raise invalid("INVALID_URL", f"{field} must be an https URL of at most {MAX_URL_CHARS} characters", field=field)
    return value


def context_name(value: int, allowed: frozenset[str], field: str = "context_type") -> str:
    name = CONTEXT_NAMES.get(value)
    if name is None or name not in allowed:
        raise invalid("INVALID_CONTEXT_TYPE", f"{field} must be one of {', '.join(sorted(allowed))}", field=field)
    return name


def group_id(kind: str, tip_id: str) -> str:
    """The Wallet idempotency id of a support's linked group; its legs are `<group>:creator` and
    `<group>:fee`. Derived from Gifts' own id, never from anything the user sent."""
    return f"{_ID_PREFIX[kind]}:{tip_id}"


def split(amount_tokens: int, fee_bps: int) -> tuple[int, int]:
    """(fee, creator share) of a line: fee = floor(amount × bps / 10,000), the creator the rest."""
    assert amount_tokens > 0 and 0 <= fee_bps <= 10_000
    fee = amount_tokens * fee_bps // 10_000
    return fee, amount_tokens - fee


def parse_date(value: str, today: dt.date) -> dt.date:
    if not value:
        return today
    if not _DATE.fullmatch(value):
        raise invalid("INVALID_DATE", "date must be YYYY-MM-DD", field="date")
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise invalid("INVALID_DATE", "date must be a calendar day", field="date") from None


def period_range(period: int, day: dt.date) -> tuple[dt.date, dt.date] | None:
    """[first day, day after the last) of the UTC period holding `day`; None for all time."""
    if period == pb.PERIOD_DAY:
        return day, day + dt.timedelta(days=1)
    if period == pb.PERIOD_ISO_WEEK:
        monday = day - dt.timedelta(days=day.weekday())
        return monday, monday + dt.timedelta(days=7)
    if period == pb.PERIOD_MONTH:
        first = day.replace(day=1)
        following = (first + dt.timedelta(days=32)).replace(day=1)
        return first, following
    if period == pb.PERIOD_ALL_TIME:
        return None
    raise invalid("INVALID_PERIOD", "period must be DAY, ISO_WEEK, MONTH or ALL_TIME", field="period")


def board_periods(at: dt.datetime) -> list[tuple[str, dt.date]]:
    """The leaderboard periods a support made at `at` counts in: its UTC day, ISO week, all time."""
    day = at.astimezone(dt.UTC).date()
    return [("DAY", day), ("WEEK", day - dt.timedelta(days=day.weekday())), ("ALL", ALL_TIME_START)]


def overlay_token(key: bytes, creator_id: str, nonce: str) -> str:
    mac = hmac.new(key, f"overlay-token\n{creator_id}\n{nonce}".encode(), hashlib.sha256).digest()
    return OVERLAY_TOKEN_PREFIX + base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def overlay_token_hash(token: str) -> bytes | None:
    """What the table stores of a token; None for anything that is not a well-formed token."""
    if not isinstance(token, str) or not _OVERLAY_TOKEN.fullmatch(token):
        return None
    return hashlib.sha256(token.encode("ascii")).digest()


def first_difference(stored: dict, requested: dict) -> str | None:
    """The first field (in `requested`'s order) whose value differs: a reused request id must carry
    the same request, and the refusal names what changed."""
    for name, value in requested.items():
        if stored.get(name) != value:
            return name
    return None
