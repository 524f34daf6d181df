"""The presets reproduce PRODUCT.md's economics exactly, and a bad preset is refused by file and key."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from shared.presets import (
    PRESET_DIR,
    Preset,
    PresetError,
    available_presets,
    fee_amount,
    fee_split,
    load_preset,
)

DIGIS_TOML = PRESET_DIR / "digis.toml"


@pytest.fixture(scope="module")
def digis() -> Preset:
    return load_preset("digis")


@pytest.fixture(scope="module")
def streamit() -> Preset:
    return load_preset("streamit")


@pytest.fixture(scope="module")
def flowtab() -> Preset:
    return load_preset("flowtab")


def _key_shape(table: object) -> object:
    if isinstance(table, dict):
        return {key: _key_shape(value) for key, value in table.items()}
    if isinstance(table, list):
        return [_key_shape(table[0])] if table and isinstance(table[0], dict) else "array"
    return type(table).__name__


def test_the_three_presets_exist_and_load() -> None:
    assert {"digis", "streamit", "flowtab"} <= set(available_presets())
    for name in ("digis", "streamit", "flowtab"):
        assert load_preset(name).platform.name == name


def test_presets_share_one_shape() -> None:
    shapes = {}
    for name in ("digis", "streamit", "flowtab"):
        with (PRESET_DIR / f"{name}.toml").open("rb") as file:
            raw = tomllib.load(file)
        # flowtab writes `packages = []`; compare everything else key for key and type for type.
        raw["purchase"].pop("packages")
        shapes[name] = _key_shape(raw)
    assert shapes["digis"] == shapes["streamit"] == shapes["flowtab"]


def test_no_preset_file_holds_a_float() -> None:
    for path in PRESET_DIR.glob("*.toml"):
        text = path.read_text()
        assert not re.search(r"^[^#\n]*=\s*[-+]?\d+\.\d", text, re.MULTILINE), path


def test_load_by_path_equals_load_by_name(digis: Preset) -> None:
    assert load_preset(str(DIGIS_TOML)) == digis
    assert load_preset(DIGIS_TOML) == digis


# --- digis -------------------------------------------------------------------------------------------


def test_digis_custom_purchase_is_priced_at_999_cents_per_100_tokens(digis: Preset) -> None:
    assert digis.purchase.custom_price_minor(500) == 4995
    assert digis.purchase.custom_price_minor(100) == 999
    # ceil, not floor: 1 token costs 9.99 cents, so 10.
    assert digis.purchase.custom_price_minor(50) == 500
    assert digis.purchase.custom_price_minor(51) == 510
    assert digis.purchase.custom_price_minor(100_000) == 999_000


def test_digis_custom_range_is_50_to_100000(digis: Preset) -> None:
    assert (digis.purchase.custom.min_tokens, digis.purchase.custom.max_tokens) == (50, 100_000)
    assert not digis.purchase.custom.accepts(49)
    assert not digis.purchase.custom.accepts(100_001)
    with pytest.raises(ValueError):
        digis.purchase.custom_price_minor(49)


def test_digis_buy_sheet_is_priced_at_the_custom_rate(digis: Preset) -> None:
    sheet = {p.tokens: p.price_minor for p in digis.purchase.packages}
    assert sheet == {500: 4995, 1000: 9990, 2500: 24975}
    for package in digis.purchase.packages:
        assert package.bonus_tokens == 0
        assert package.currency == "USD"
        assert package.price_minor == digis.purchase.custom_price_minor(package.tokens)


def test_digis_creators_keep_everything(digis: Preset) -> None:
    fees = digis.fees
    assert (fees.tip_bps, fees.gift_bps, fees.ticket_bps, fees.call_bps, fees.like_bps) == (0, 0, 0, 0, 0)
    assert fee_split(500, fees.ticket_bps) == (0, 500)
    assert not digis.likes.enabled


def test_digis_tips(digis: Preset) -> None:
    assert digis.tips.presets == (50, 100, 250, 500)
    assert (digis.tips.min_tokens, digis.tips.max_tokens) == (1, 100_000)
    assert digis.tips.message_max_chars == 200
    assert digis.tips.accepts_message("x" * 200)
    assert not digis.tips.accepts_message("x" * 201)


def test_digis_call_at_100_per_minute_costs_50_tokens_per_30s_block(digis: Preset) -> None:
    calls = digis.calls
    assert calls.block_seconds == 30
    assert calls.tokens_per_block(100) == 50
    assert calls.tokens_per_block(2) == 1
    assert calls.tokens_per_block(3) is None
    assert calls.accepts_rate(10_000)
    assert not calls.accepts_rate(3)
    assert not calls.accepts_rate(10_002)
    assert (calls.heartbeat_grace_seconds, calls.max_pause_seconds) == (20, 300)
    assert (calls.start_min_blocks, calls.low_balance_warning_blocks) == (1, 1)


def test_digis_payout_of_500_tokens_is_2500_cents(digis: Preset) -> None:
    payouts = digis.payouts
    assert (payouts.currency, payouts.earnings_asset) == ("USD", "TOKEN")
    assert payouts.payout_minor(500) == 2500
    assert payouts.accepts_amount(100)
    assert not payouts.accepts_amount(99)
    assert payouts.requires_admin_approval


# --- streamit ----------------------------------------------------------------------------------------


def test_streamit_coin_packages(streamit: Preset) -> None:
    packages = {(p.price_minor, p.tokens, p.bonus_tokens) for p in streamit.purchase.packages}
    assert packages == {(9900, 99, 0), (29900, 299, 15), (99900, 999, 100), (249900, 2499, 300)}
    assert {p.currency for p in streamit.purchase.packages} == {"INR"}
    assert streamit.purchase.package("coins_299").total_tokens == 314
    assert streamit.purchase.package("coins_1") is None
    assert not streamit.purchase.custom.enabled


def test_streamit_gift_of_100_pays_25_to_the_platform(streamit: Preset) -> None:
    assert streamit.fee(100, streamit.fees.gift_bps) == 25
    assert fee_split(100, streamit.fees.gift_bps) == (25, 75)


def test_streamit_one_coin_like_tip_pays_no_fee(streamit: Preset) -> None:
    assert streamit.likes.enabled
    assert streamit.likes.tokens_per_like == 1
    assert fee_amount(streamit.likes.tokens_per_like, streamit.fees.like_bps) == 0


def test_streamit_fees(streamit: Preset) -> None:
    fees = streamit.fees
    assert (fees.gift_bps, fees.tip_bps, fees.like_bps) == (2500, 1000, 1000)
    assert (fees.ticket_bps, fees.call_bps) == (3000, 3000)
    # A premium-stream ticket of 1,000 coins: 30% to the platform.
    assert fee_split(1000, fees.ticket_bps) == (300, 700)


def test_streamit_tips_limits_and_payouts(streamit: Preset) -> None:
    assert streamit.tips.min_tokens == 10
    assert not streamit.tips.accepts_amount(9)
    assert streamit.tips.message_max_chars == 200
    assert (streamit.rate_limit.tips_gifts_per_second, streamit.rate_limit.burst) == (5, 20)
    assert streamit.payouts.payout_minor(1) == 100
    assert streamit.payouts.minimum_earnings_units == 1000
    assert streamit.payouts.currency == "INR"
    assert streamit.payouts.requires_admin_approval


# --- flowtab -----------------------------------------------------------------------------------------


def test_flowtab_50_copies_split_350_to_creators_650_to_platform(flowtab: Preset) -> None:
    sub = flowtab.subscription
    assert (sub.price_minor, sub.currency, sub.month_timezone) == (1000, "USD", "UTC")
    assert sub.creator_pool_minor(50) == 350
    assert sub.platform_share_minor(50) == 650


def test_flowtab_copies_past_100_earn_nothing(flowtab: Preset) -> None:
    sub = flowtab.subscription
    assert sub.creator_pool_minor(100) == 700
    assert sub.creator_pool_minor(250) == 700
    assert sub.platform_share_minor(250) == 300


def test_flowtab_has_no_token_flows(flowtab: Preset) -> None:
    switched_off = (
        flowtab.purchase,
        flowtab.tips,
        flowtab.likes,
        flowtab.calls,
        flowtab.streams,
        flowtab.gifts,
    )
    assert not any(section.enabled for section in switched_off)
    assert flowtab.calls.tokens_per_block(100) is None
    assert flowtab.payouts.earnings_asset == "USD"
    assert flowtab.payouts.payout_minor(350) == 350


# --- fee arithmetic ----------------------------------------------------------------------------------


def test_fee_rounds_down_and_the_creator_gets_the_rest() -> None:
    assert fee_amount(99, 1000) == 9
    assert fee_split(99, 1000) == (9, 90)
    assert fee_amount(10**12, 10_000) == 10**12
    assert fee_amount(0, 2500) == 0


@pytest.mark.parametrize(("line_total", "bps"), [(True, 100), (100, True), (1.0, 100), (100, 2500.0)])
def test_fee_refuses_non_integers(line_total: object, bps: object) -> None:
    with pytest.raises(TypeError):
        fee_amount(line_total, bps)  # type: ignore[arg-type]


@pytest.mark.parametrize(("line_total", "bps"), [(-1, 100), (100, -1), (100, 10_001)])
def test_fee_refuses_out_of_range(line_total: int, bps: int) -> None:
    with pytest.raises(ValueError):
        fee_amount(line_total, bps)


# --- refused presets ---------------------------------------------------------------------------------


def _variant(tmp_path: Path, old: str, new: str) -> Path:
    text = DIGIS_TOML.read_text()
    pattern = re.compile(rf"^{re.escape(old)}$", re.MULTILINE)
    assert len(pattern.findall(text)) == 1, old
    path = tmp_path / "variant.toml"
    path.write_text(pattern.sub(lambda _: new, text))
    return path


def _refused(path: Path, *fragments: str) -> None:
    with pytest.raises(PresetError) as caught:
        load_preset(str(path))
    for fragment in (str(path), *fragments):
        assert fragment in str(caught.value)


def test_unknown_key_is_refused(tmp_path: Path) -> None:
    _refused(_variant(tmp_path, "tip_bps = 0", "tip_bps = 0\ntips_bps = 0"), "fees.tips_bps", "unknown key")


def test_unknown_section_is_refused(tmp_path: Path) -> None:
    _refused(_variant(tmp_path, "[likes]", "[like]"), "like", "unknown key")


def test_float_is_refused(tmp_path: Path) -> None:
    _refused(
        _variant(tmp_path, "price_minor = 4995", "price_minor = 49.95"),
        "purchase.packages[0].price_minor",
        "float",
    )


def test_missing_key_is_refused(tmp_path: Path) -> None:
    _refused(_variant(tmp_path, "heartbeat_grace_seconds = 20", ""), "calls.heartbeat_grace_seconds", "missing key")


def test_bool_for_int_is_refused(tmp_path: Path) -> None:
    _refused(
        _variant(tmp_path, "tokens_per_like = 0", "tokens_per_like = false"),
        "likes.tokens_per_like",
        "boolean",
    )


def test_int_for_bool_is_refused(tmp_path: Path) -> None:
    _refused(_variant(tmp_path, "[likes]\nenabled = false", "[likes]\nenabled = 0"), "likes.enabled", "integer")


def test_negative_amount_is_refused(tmp_path: Path) -> None:
    _refused(_variant(tmp_path, "tokens = 500", "tokens = -500"), "purchase.packages[0].tokens", "negative")


def test_fee_above_100_percent_is_refused(tmp_path: Path) -> None:
    _refused(_variant(tmp_path, "tip_bps = 0", "tip_bps = 10001"), "fees.tip_bps")


def test_fee_on_a_switched_off_flow_is_refused(tmp_path: Path) -> None:
    _refused(_variant(tmp_path, "like_bps = 0", "like_bps = 1000"), "fees.like_bps", "switched off")


def test_tip_min_above_max_is_refused(tmp_path: Path) -> None:
    _refused(_variant(tmp_path, "min_tokens = 1", "min_tokens = 100001"), "tips.max_tokens")


def test_block_seconds_out_of_range_is_refused(tmp_path: Path) -> None:
    _refused(_variant(tmp_path, "block_seconds = 30", "block_seconds = 3601"), "calls.block_seconds")


def test_live_number_in_switched_off_section_is_refused(tmp_path: Path) -> None:
    _refused(_variant(tmp_path, "tokens_per_like = 0", "tokens_per_like = 1"), "likes.tokens_per_like")


def test_package_in_foreign_currency_is_refused(tmp_path: Path) -> None:
    _refused(_variant(tmp_path, 'currency = "USD"\ntokens = 500', 'currency = "INR"\ntokens = 500'), "currency")


def test_subscription_pool_above_price_is_refused(tmp_path: Path) -> None:
    text = (PRESET_DIR / "flowtab.toml").read_text().replace("per_copy_minor = 7", "per_copy_minor = 11")
    path = tmp_path / "flowtab.toml"
    path.write_text(text)
    _refused(path, "subscription.copies_cap_per_month")


def test_several_problems_are_reported_together(tmp_path: Path) -> None:
    path = _variant(tmp_path, "burst = 20", "burst = 1")
    path.write_text(path.read_text().replace("like_bps = 0", "like_bps = 5"))
    _refused(path, "rate_limit.burst", "fees.like_bps")


def test_invalid_toml_and_missing_file_are_refused(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[platform\n")
    _refused(broken, "not valid TOML")
    _refused(tmp_path / "absent.toml", "no such preset file")


def test_a_name_never_escapes_the_preset_folder() -> None:
    with pytest.raises(PresetError):
        load_preset("../digis")
    with pytest.raises(PresetError, match="no such preset file"):
        load_preset("nonexistent")
