"""Platform presets: the typed, strict reader of ``deploy/presets/*.toml``.

Fanbank runs Digis, StreamIt, Flowtab and any platform after them from one code base. What differs
between them is configuration, not a fork (PRODUCT.md, "The three presets"), so every number that
shapes a platform's economics lives in its preset file and this module is the only place that reads
one. Services take a ``Preset`` and never hard-code a fee, a price or a limit.

The reader is strict on purpose. A misspelt key, a missing key, a ``true`` where a count belongs or a
``0.1`` where basis points belong would otherwise fall back to something and quietly move money by the
wrong amount; instead the file is refused with a ``PresetError`` naming the file and the key. Money is
integer minor units and fees are integer basis points, so every helper here is integer arithmetic.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
import typing
from collections.abc import Iterator
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path

PRESET_DIR = Path(__file__).resolve().parents[1] / "deploy" / "presets"

BPS_DENOMINATOR = 10_000
# The ledger caps one transfer at 10**12 minor units (DESIGN.md "The ledger"); no number in a preset
# has a reason to be larger, and a bound on every number is what makes a typo loud.
MAX_PRESET_INT = 10**12
MAX_BLOCK_SECONDS = 3_600
# Grace and pause are bounded so a stalled call cannot hold a fan's session open for days.
MAX_CALL_WAIT_SECONDS = 86_400
MAX_FIAT_SCALE = 4

PURCHASE_PROVIDERS = frozenset({"stripe", "dodo"})
PAYOUT_PROVIDERS = frozenset({"stripe_connect", "manual_bank"})
PAYOUT_MODES = frozenset({"withdrawal", "monthly_settlement"})
# Months (Flowtab's copy cap) and leaderboard days are UTC everywhere in Fanbank: the money path needs
# no time-zone database, and every replica agrees on when a month ends.
MONTH_TIMEZONE = "UTC"

_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_ASSET = re.compile(r"[A-Z][A-Z0-9_]{1,15}")
_CURRENCY = re.compile(r"[A-Z]{3}")
_IDENT = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


class PresetError(ValueError):
    """A preset that cannot be trusted to move money; the message names the file and the key."""


def fee_amount(line_total: int, bps: int) -> int:
    """The platform fee on a line (price x quantity), rounded down so the creator gets the remainder."""
    _require_int("line_total", line_total, 0, None)
    _require_int("bps", bps, 0, BPS_DENOMINATOR)
    return line_total * bps // BPS_DENOMINATOR


def fee_split(line_total: int, bps: int) -> tuple[int, int]:
    """``(fee, creator_share)`` of a line; the two always add up to ``line_total``."""
    fee = fee_amount(line_total, bps)
    return fee, line_total - fee


def _require_int(name: str, value: object, low: int, high: int | None) -> None:
    # bool is an int subclass in Python; a True slipping in as 1 token is exactly what we refuse.
    if type(value) is not int:
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be in {low}..{'' if high is None else high}, got {value}")


@dataclass(frozen=True, slots=True)
class Platform:
    name: str
    token_asset: str
    fiat_currency: str
    fiat_scale: int


@dataclass(frozen=True, slots=True)
class CoinPackage:
    id: str
    price_minor: int
    currency: str
    tokens: int
    bonus_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.tokens + self.bonus_tokens


@dataclass(frozen=True, slots=True)
class CustomAmount:
    enabled: bool
    min_tokens: int
    max_tokens: int
    price_minor_per_100_tokens: int

    def accepts(self, tokens: int) -> bool:
        _require_int("tokens", tokens, 0, None)
        return self.enabled and self.min_tokens <= tokens <= self.max_tokens

    def price_minor(self, tokens: int) -> int:
        """ceil(tokens x price / 100): the fan never pays less than the advertised rate."""
        if not self.accepts(tokens):
            raise ValueError(f"custom amount of {tokens} tokens is not offered")
        return -(-tokens * self.price_minor_per_100_tokens // 100)


@dataclass(frozen=True, slots=True)
class Purchase:
    enabled: bool
    providers: tuple[str, ...]
    packages: tuple[CoinPackage, ...]
    custom: CustomAmount

    def package(self, package_id: str) -> CoinPackage | None:
        return next((p for p in self.packages if p.id == package_id), None)

    def custom_price_minor(self, tokens: int) -> int:
        return self.custom.price_minor(tokens)


@dataclass(frozen=True, slots=True)
class Fees:
    tip_bps: int
    gift_bps: int
    ticket_bps: int
    call_bps: int
    like_bps: int


@dataclass(frozen=True, slots=True)
class Tips:
    enabled: bool
    min_tokens: int
    max_tokens: int
    presets: tuple[int, ...]
    message_max_chars: int

    def accepts_amount(self, tokens: int) -> bool:
        _require_int("tokens", tokens, 0, None)
        return self.enabled and self.min_tokens <= tokens <= self.max_tokens

    def accepts_message(self, message: str) -> bool:
        return len(message) <= self.message_max_chars


@dataclass(frozen=True, slots=True)
class Likes:
    enabled: bool
    tokens_per_like: int


@dataclass(frozen=True, slots=True)
class Calls:
    enabled: bool
    block_seconds: int
    min_rate_tokens_per_minute: int
    max_rate_tokens_per_minute: int
    heartbeat_grace_seconds: int
    max_pause_seconds: int
    start_min_blocks: int
    low_balance_warning_blocks: int

    def tokens_per_block(self, rate_tokens_per_minute: int) -> int | None:
        """Tokens charged per block at this rate, or None when that is not a positive whole number."""
        _require_int("rate_tokens_per_minute", rate_tokens_per_minute, 0, None)
        block_tokens, remainder = divmod(rate_tokens_per_minute * self.block_seconds, 60)
        return block_tokens if block_tokens > 0 and remainder == 0 else None

    def accepts_rate(self, rate_tokens_per_minute: int) -> bool:
        in_range = self.min_rate_tokens_per_minute <= rate_tokens_per_minute <= self.max_rate_tokens_per_minute
        return self.enabled and in_range and self.tokens_per_block(rate_tokens_per_minute) is not None


@dataclass(frozen=True, slots=True)
class Streams:
    enabled: bool
    tickets_enabled: bool
    ticket_min_tokens: int
    ticket_max_tokens: int

    def accepts_ticket_price(self, tokens: int) -> bool:
        _require_int("tokens", tokens, 0, None)
        return self.tickets_enabled and self.ticket_min_tokens <= tokens <= self.ticket_max_tokens


@dataclass(frozen=True, slots=True)
class Gifts:
    enabled: bool
    min_price_tokens: int
    max_price_tokens: int
    max_quantity: int
    categories: tuple[str, ...]
    rarities: tuple[str, ...]

    def accepts_price(self, tokens: int) -> bool:
        _require_int("tokens", tokens, 0, None)
        return self.enabled and self.min_price_tokens <= tokens <= self.max_price_tokens

    def accepts_quantity(self, quantity: int) -> bool:
        _require_int("quantity", quantity, 0, None)
        return self.enabled and 1 <= quantity <= self.max_quantity


@dataclass(frozen=True, slots=True)
class RateLimit:
    tips_gifts_per_second: int
    burst: int


@dataclass(frozen=True, slots=True)
class Payouts:
    mode: str
    provider: str
    earnings_asset: str
    currency: str
    minor_units_per_earnings_unit: int
    minimum_earnings_units: int
    requires_admin_approval: bool

    def payout_minor(self, earnings_units: int) -> int:
        _require_int("earnings_units", earnings_units, 0, None)
        return earnings_units * self.minor_units_per_earnings_unit

    def accepts_amount(self, earnings_units: int) -> bool:
        _require_int("earnings_units", earnings_units, 0, None)
        return earnings_units >= self.minimum_earnings_units


@dataclass(frozen=True, slots=True)
class Subscription:
    enabled: bool
    price_minor: int
    currency: str
    per_copy_minor: int
    copies_cap_per_month: int
    month_timezone: str

    def creator_pool_minor(self, copies: int) -> int:
        """What a subscriber's copies this month earn creators: copies past the cap earn nothing."""
        _require_int("copies", copies, 0, None)
        return min(copies, self.copies_cap_per_month) * self.per_copy_minor

    def platform_share_minor(self, copies: int) -> int:
        return self.price_minor - self.creator_pool_minor(copies)


@dataclass(frozen=True, slots=True)
class Preset:
    platform: Platform
    purchase: Purchase
    fees: Fees
    tips: Tips
    likes: Likes
    calls: Calls
    streams: Streams
    gifts: Gifts
    rate_limit: RateLimit
    payouts: Payouts
    subscription: Subscription

    @staticmethod
    def fee(line_total: int, bps: int) -> int:
        return fee_amount(line_total, bps)


def load_preset(name_or_path: str | os.PathLike[str]) -> Preset:
    """Load ``deploy/presets/<name>.toml`` for a bare name, or the file itself for a ``*.toml`` path."""
    path = _resolve(name_or_path)
    preset = _build(Preset, _read(path), "", path)
    problems = list(_problems(preset))
    if problems:
        raise PresetError(f"{path}: " + "; ".join(f"{key}: {problem}" for key, problem in problems))
    return preset


def available_presets() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in PRESET_DIR.glob("*.toml")))


def _resolve(name_or_path: str | os.PathLike[str]) -> Path:
    text = os.fspath(name_or_path)
    if text.endswith(".toml"):
        return Path(text)
    # A name is never a path: "../x" must not reach outside deploy/presets.
    if not _NAME.fullmatch(text):
        raise PresetError(f"{text!r}: not a preset name (such as 'digis') nor a path ending in .toml")
    return PRESET_DIR / f"{text}.toml"


def _read(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise PresetError(f"{path}: no such preset file") from None
    except tomllib.TOMLDecodeError as exc:
        raise PresetError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise PresetError(f"{path}: cannot be read: {exc.strerror}") from None


def _fail(path: Path, key: str, problem: str) -> PresetError:
    return PresetError(f"{path}: {key}: {problem}")


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


_TOML_TYPES = {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "an array"}


def _toml_type(value: object) -> str:
    return _TOML_TYPES.get(type(value), "a table" if isinstance(value, dict) else type(value).__name__)


def _build(cls: type, raw: object, key: str, path: Path) -> typing.Any:
    """Turn one TOML table into ``cls``: exactly its fields, each of exactly its type."""
    if not isinstance(raw, dict):
        raise _fail(path, key, f"must be a table, not {_toml_type(raw)}")
    names = [f.name for f in fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise _fail(path, _join(key, unknown[0]), "unknown key")
    hints = typing.get_type_hints(cls)
    values = {}
    for name in names:
        if name not in raw:
            raise _fail(path, _join(key, name), "missing key")
        values[name] = _convert(hints[name], raw[name], _join(key, name), path)
    return cls(**values)


def _convert(tp: typing.Any, value: object, key: str, path: Path) -> object:
    if typing.get_origin(tp) is tuple:
        if not isinstance(value, list):
            raise _fail(path, key, f"must be an array, not {_toml_type(value)}")
        item_tp = typing.get_args(tp)[0]
        return tuple(_convert(item_tp, item, f"{key}[{i}]", path) for i, item in enumerate(value))
    if is_dataclass(tp):
        return _build(tp, value, key, path)
    if tp is int:
        return _convert_int(value, key, path)
    if type(value) is not tp:
        raise _fail(path, key, f"must be {_TOML_TYPES[tp]}, not {_toml_type(value)}")
    if tp is str and not value:
        raise _fail(path, key, "must not be empty")
    return value


def _convert_int(value: object, key: str, path: Path) -> int:
    if type(value) is float:
        raise _fail(path, key, "must be an integer, not a float: money is integer minor units, fees bps")
    if type(value) is not int:
        raise _fail(path, key, f"must be an integer, not {_toml_type(value)}")
    if value < 0:
        raise _fail(path, key, "must not be negative")
    if value > MAX_PRESET_INT:
        raise _fail(path, key, f"must be at most {MAX_PRESET_INT}")
    return value


Problems = Iterator[tuple[str, str]]


def _problems(p: Preset) -> Problems:
    for section in fields(Preset):
        yield from _switched_off_problems(section.name, getattr(p, section.name))
    yield from _platform_problems(p.platform)
    yield from _purchase_problems(p.purchase, p.platform)
    yield from _fee_problems(p)
    yield from _tips_problems(p.tips)
    yield from _likes_problems(p.likes)
    yield from _calls_problems(p.calls)
    yield from _streams_problems(p.streams)
    yield from _gifts_problems(p.gifts)
    yield from _rate_limit_problems(p.rate_limit)
    yield from _payouts_problems(p.payouts, p.platform)
    yield from _subscription_problems(p.subscription, p.platform)


def _switched_off_problems(key: str, section: object) -> Problems:
    """A switched-off section holds zeros and empty lists, so nobody mistakes its numbers for live ones."""
    switched_off = not getattr(section, "enabled", True)
    for f in fields(section):
        value = getattr(section, f.name)
        if is_dataclass(value):
            yield from _switched_off_problems(_join(key, f.name), value)
        elif switched_off and f.name != "enabled" and not isinstance(value, str) and value:
            yield _join(key, f.name), f"must be {_empty_of(value)} while {key}.enabled is false"


def _empty_of(value: object) -> str:
    return "false" if type(value) is bool else "0" if type(value) is int else "empty"


def _bounds(prefix: str, low_name: str, low: int, high_name: str, high: int) -> Problems:
    if low < 1:
        yield f"{prefix}.{low_name}", "must be at least 1"
    if high < low:
        yield f"{prefix}.{high_name}", f"must not be below {prefix}.{low_name} ({low})"


def _at_least_one(key: str, value: int) -> Problems:
    if value < 1:
        yield key, "must be at least 1"


def _names(key: str, values: tuple[str, ...], pattern: re.Pattern[str], allowed: frozenset[str] | None) -> Problems:
    seen: set[str] = set()
    for i, value in enumerate(values):
        if not pattern.fullmatch(value):
            yield f"{key}[{i}]", f"{value!r} is not a valid name"
        elif allowed is not None and value not in allowed:
            yield f"{key}[{i}]", f"unknown {value!r}; known: {', '.join(sorted(allowed))}"
        if value in seen:
            yield f"{key}[{i}]", f"{value!r} appears twice"
        seen.add(value)


def _platform_problems(pl: Platform) -> Problems:
    if not _NAME.fullmatch(pl.name):
        yield "platform.name", "must be lowercase letters, digits, '_' or '-', starting with a letter"
    if not _ASSET.fullmatch(pl.token_asset):
        yield "platform.token_asset", "must be an upper-case asset code such as TOKEN"
    if not _CURRENCY.fullmatch(pl.fiat_currency):
        yield "platform.fiat_currency", "must be a three-letter ISO 4217 code such as USD"
    if pl.token_asset == pl.fiat_currency:
        yield "platform.token_asset", "must differ from platform.fiat_currency"
    if pl.fiat_scale > MAX_FIAT_SCALE:
        yield "platform.fiat_scale", f"must be at most {MAX_FIAT_SCALE}"


def _purchase_problems(pu: Purchase, pl: Platform) -> Problems:
    yield from _names("purchase.providers", pu.providers, _NAME, PURCHASE_PROVIDERS)
    yield from _names("purchase.packages[].id", tuple(p.id for p in pu.packages), _IDENT, None)
    for i, package in enumerate(pu.packages):
        yield from _package_problems(f"purchase.packages[{i}]", package, pl)
    if pu.custom.enabled:
        c = pu.custom
        yield from _bounds("purchase.custom", "min_tokens", c.min_tokens, "max_tokens", c.max_tokens)
        yield from _at_least_one("purchase.custom.price_minor_per_100_tokens", c.price_minor_per_100_tokens)
    if pu.enabled and not pu.providers:
        yield "purchase.providers", "must name a payment provider while purchase.enabled is true"
    if pu.enabled and not (pu.packages or pu.custom.enabled):
        yield "purchase.packages", "must offer a package or a custom amount while purchase.enabled is true"


def _package_problems(key: str, package: CoinPackage, pl: Platform) -> Problems:
    yield from _at_least_one(f"{key}.price_minor", package.price_minor)
    yield from _at_least_one(f"{key}.tokens", package.tokens)
    # One deployment books purchases in its one fiat asset; a second currency would need its own
    # provider clearing account and exchange rules that no preset describes.
    if package.currency != pl.fiat_currency:
        yield f"{key}.currency", f"must be platform.fiat_currency ({pl.fiat_currency})"


def _fee_problems(p: Preset) -> Problems:
    flow_is_on = {
        "tip_bps": p.tips.enabled,
        "gift_bps": p.gifts.enabled,
        "ticket_bps": p.streams.tickets_enabled,
        "call_bps": p.calls.enabled,
        "like_bps": p.likes.enabled,
    }
    for name, on in flow_is_on.items():
        bps = getattr(p.fees, name)
        if bps > BPS_DENOMINATOR:
            yield f"fees.{name}", f"must be at most {BPS_DENOMINATOR} (100%)"
        if bps and not on:
            yield f"fees.{name}", "must be 0 while its flow is switched off"


def _tips_problems(t: Tips) -> Problems:
    if not t.enabled:
        return
    yield from _bounds("tips", "min_tokens", t.min_tokens, "max_tokens", t.max_tokens)
    for i, amount in enumerate(t.presets):
        if not t.min_tokens <= amount <= t.max_tokens:
            yield f"tips.presets[{i}]", "must lie within tips.min_tokens..tips.max_tokens"
        if i and amount <= t.presets[i - 1]:
            yield f"tips.presets[{i}]", "must be larger than the preset before it"


def _likes_problems(lk: Likes) -> Problems:
    if lk.enabled:
        yield from _at_least_one("likes.tokens_per_like", lk.tokens_per_like)


def _calls_problems(c: Calls) -> Problems:
    if not c.enabled:
        return
    if not 1 <= c.block_seconds <= MAX_BLOCK_SECONDS:
        yield "calls.block_seconds", f"must be in 1..{MAX_BLOCK_SECONDS}"
        return
    low, high = c.min_rate_tokens_per_minute, c.max_rate_tokens_per_minute
    yield from _bounds("calls", "min_rate_tokens_per_minute", low, "max_rate_tokens_per_minute", high)
    # Only rates that are a multiple of this step give whole tokens per block.
    step = 60 // math.gcd(c.block_seconds, 60)
    if 1 <= low <= high and -(-low // step) * step > high:
        yield "calls.max_rate_tokens_per_minute", "no rate in range gives a whole number of tokens per block"
    for name in ("heartbeat_grace_seconds", "start_min_blocks", "low_balance_warning_blocks"):
        yield from _at_least_one(f"calls.{name}", getattr(c, name))
    for name in ("heartbeat_grace_seconds", "max_pause_seconds"):
        if getattr(c, name) > MAX_CALL_WAIT_SECONDS:
            yield f"calls.{name}", f"must be at most {MAX_CALL_WAIT_SECONDS}"


def _streams_problems(s: Streams) -> Problems:
    if s.tickets_enabled:
        yield from _bounds(
            "streams", "ticket_min_tokens", s.ticket_min_tokens, "ticket_max_tokens", s.ticket_max_tokens
        )
    elif s.ticket_min_tokens or s.ticket_max_tokens:
        yield "streams.ticket_min_tokens", "ticket bounds must be 0 while streams.tickets_enabled is false"


def _gifts_problems(g: Gifts) -> Problems:
    if not g.enabled:
        return
    yield from _bounds("gifts", "min_price_tokens", g.min_price_tokens, "max_price_tokens", g.max_price_tokens)
    yield from _at_least_one("gifts.max_quantity", g.max_quantity)
    for name in ("categories", "rarities"):
        values = getattr(g, name)
        if not values:
            yield f"gifts.{name}", "must name at least one while gifts.enabled is true"
        yield from _names(f"gifts.{name}", values, _IDENT, None)


def _rate_limit_problems(r: RateLimit) -> Problems:
    yield from _at_least_one("rate_limit.tips_gifts_per_second", r.tips_gifts_per_second)
    if r.burst < r.tips_gifts_per_second:
        yield "rate_limit.burst", "must not be below rate_limit.tips_gifts_per_second"


def _payouts_problems(po: Payouts, pl: Platform) -> Problems:
    if po.mode not in PAYOUT_MODES:
        yield "payouts.mode", f"must be one of {', '.join(sorted(PAYOUT_MODES))}"
    if po.provider not in PAYOUT_PROVIDERS:
        yield "payouts.provider", f"must be one of {', '.join(sorted(PAYOUT_PROVIDERS))}"
    if po.currency != pl.fiat_currency:
        yield "payouts.currency", f"must be platform.fiat_currency ({pl.fiat_currency})"
    if po.earnings_asset not in (pl.token_asset, pl.fiat_currency):
        yield "payouts.earnings_asset", "must be platform.token_asset or platform.fiat_currency"
    yield from _at_least_one("payouts.minor_units_per_earnings_unit", po.minor_units_per_earnings_unit)
    if po.earnings_asset == po.currency and po.minor_units_per_earnings_unit != 1:
        yield "payouts.minor_units_per_earnings_unit", "must be 1 when earnings are already payouts.currency"
    yield from _at_least_one("payouts.minimum_earnings_units", po.minimum_earnings_units)


def _subscription_problems(s: Subscription, pl: Platform) -> Problems:
    if s.currency != pl.fiat_currency:
        yield "subscription.currency", f"must be platform.fiat_currency ({pl.fiat_currency})"
    if s.month_timezone != MONTH_TIMEZONE:
        yield "subscription.month_timezone", f"must be {MONTH_TIMEZONE}"
    if not s.enabled:
        return
    for name in ("price_minor", "per_copy_minor", "copies_cap_per_month"):
        yield from _at_least_one(f"subscription.{name}", getattr(s, name))
    # The creator pool is paid out of the subscription; a cap above the price would mint money.
    if s.per_copy_minor * s.copies_cap_per_month > s.price_minor:
        yield "subscription.copies_cap_per_month", "per_copy_minor x copies_cap_per_month exceeds price_minor"
