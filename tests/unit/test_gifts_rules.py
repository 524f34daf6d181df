"""Gifts' pure rules: fee split, derived Wallet ids and legs, periods, text, overlay tokens."""

import datetime as dt

import grpc
import pytest

from services.gifts import rules
from services.gifts.support import Charge, Payments, transfer_specs
from shared.errors import DomainError, precondition
from shared.gen.fanbank.gifts.v1 import gifts_service_pb2 as pb
from shared.gen.fanbank.wallet.v1 import wallet_service_pb2 as wpb


def reason(call) -> str:
    with pytest.raises(DomainError) as e:
        call()
    return e.value.reason


@pytest.mark.parametrize(
    ("amount", "bps", "fee", "creator"),
    [(250, 0, 0, 250), (100, 2500, 25, 75), (21, 2500, 5, 16), (1, 1000, 0, 1), (15, 1000, 1, 14), (7, 10_000, 7, 0)],
)
def test_fee_is_rounded_down_and_the_creator_gets_the_rest(amount, bps, fee, creator):
    assert rules.split(amount, bps) == (fee, creator)


def charge(amount: int, fee: int, kind: str = "TIP") -> Charge:
    return Charge("t1", kind, "fan", "creator", amount, fee, 2500, "stream", "s1")


def test_legs_are_derived_from_the_support_id_and_a_zero_leg_is_left_out():
    both = transfer_specs(charge(100, 25, "GIFT"))
    assert [(s.transfer_id, s.amount, s.group_id) for s in both] == [
        ("gift:t1:creator", 75, "gift:t1"),
        ("gift:t1:fee", 25, "gift:t1"),
    ]
    assert both[0].credit.code == wpb.ACCOUNT_CODE_CREATOR_EARNINGS
    assert both[1].credit.code == wpb.ACCOUNT_CODE_PLATFORM_REVENUE
    assert all(s.debit.code == wpb.ACCOUNT_CODE_USER_WALLET and s.code == wpb.TRANSFER_CODE_GIFT for s in both)
    assert [s.transfer_id for s in transfer_specs(charge(1, 0, "LIKE"))] == ["like:t1:creator"]
    assert [s.transfer_id for s in transfer_specs(charge(7, 7))] == ["tip:t1:fee"]


def test_periods_are_utc_days_iso_weeks_and_months():
    sunday = dt.date(2032, 3, 7)
    assert rules.period_range(pb.PERIOD_DAY, sunday) == (sunday, dt.date(2032, 3, 8))
    assert rules.period_range(pb.PERIOD_ISO_WEEK, sunday) == (dt.date(2032, 3, 1), dt.date(2032, 3, 8))
    assert rules.period_range(pb.PERIOD_MONTH, dt.date(2032, 12, 31)) == (dt.date(2032, 12, 1), dt.date(2033, 1, 1))
    assert rules.period_range(pb.PERIOD_ALL_TIME, sunday) is None
    assert reason(lambda: rules.period_range(pb.PERIOD_UNSPECIFIED, sunday)) == "INVALID_PERIOD"
    late = dt.datetime(2032, 3, 8, 1, 0, tzinfo=dt.timezone(dt.timedelta(hours=5)))  # Sunday 20:00 UTC
    assert rules.board_periods(late) == [("DAY", sunday), ("WEEK", dt.date(2032, 3, 1)), ("ALL", rules.ALL_TIME_START)]


def test_dates():
    today = dt.date(2032, 1, 2)
    assert rules.parse_date("", today) == today
    assert rules.parse_date("2032-02-29", today) == dt.date(2032, 2, 29)
    for bad in ("2031-02-29", "2032-3-1", "yesterday", "2032-03-01T00:00"):
        assert reason(lambda bad=bad: rules.parse_date(bad, today)) == "INVALID_DATE"


def test_user_text_is_plain_and_bounded():
    assert rules.check_text("m", "héllo 👋 <b>as text</b>", 40) == "héllo 👋 <b>as text</b>"
    assert rules.check_text("m", "two\nlines", 20, lines=True) == "two\nlines"
    assert reason(lambda: rules.check_text("m", "two\nlines", 20)) == "TEXT_NOT_PLAIN"
    assert reason(lambda: rules.check_text("m", "rtl\u202eoverride", 40)) == "TEXT_NOT_PLAIN"
    assert reason(lambda: rules.check_text("m", "x" * 6, 5)) == "TEXT_TOO_LONG"
    assert reason(lambda: rules.check_text("m", "  ", 5, required=True)) == "TEXT_REQUIRED"
    assert rules.check_url("u", "https://cdn.example/a.png")
    for bad in ("http://cdn.example/a.png", "javascript:alert(1)", 'https://x/"onerror=1'):
        assert reason(lambda bad=bad: rules.check_url("u", bad)) == "INVALID_URL"


def test_overlay_tokens_are_keyed_and_only_well_formed_ones_hash():
    token = rules.overlay_token(b"k" * 32, "creator-1", "nonce-1")
    assert token.startswith("ovl_") and len(token) == 47
    assert token == rules.overlay_token(b"k" * 32, "creator-1", "nonce-1")
    assert token != rules.overlay_token(b"k" * 32, "creator-1", "nonce-2")
    assert token != rules.overlay_token(b"j" * 32, "creator-1", "nonce-1")
    assert len(rules.overlay_token_hash(token)) == 32
    for bad in ("", "ovl_short", token + "x", "abc_" + token[4:], token[:-1] + "="):
        assert rules.overlay_token_hash(bad) is None


def test_a_reused_request_names_the_first_field_that_differs():
    stored = {"kind": "TIP", "amount_tokens": 5, "message": "a"}
    assert rules.first_difference(stored, {"kind": "TIP", "amount_tokens": 5, "message": "a"}) is None
    assert rules.first_difference(stored, {"kind": "TIP", "amount_tokens": 6, "message": "b"}) == "amount_tokens"


async def test_pay_reads_each_groups_answer_and_leaves_transient_ones_pending():
    charges = [
        Charge("ok", "TIP", "fan", "creator", 10, 1, 1000, "stream", "s"),
        Charge("poor", "TIP", "fan2", "creator", 10, 1, 1000, "stream", "s"),
        Charge("busy", "TIP", "fan3", "creator", 10, 1, 1000, "stream", "s"),
    ]
    busy = DomainError(grpc.StatusCode.UNAVAILABLE, "OVERLOADED", "busy").to_status()
    poor = precondition("INSUFFICIENT_FUNDS", "no").to_status()

    class Wallet:
        async def BatchTransfer(self, request, **options):
            assert request.mode == wpb.BATCH_MODE_INDEPENDENT and options["timeout"] > 0
            response = wpb.BatchTransferResponse()
            for spec in request.transfers:
                result = response.results.add(transfer_id=spec.transfer_id)
                if spec.group_id == "tip:poor":
                    result.error.CopyFrom(poor)
                elif spec.group_id == "tip:busy":
                    result.error.CopyFrom(busy)
                else:
                    result.transfer.transfer_id = spec.transfer_id
            return response

    outcomes = await Payments(None, Wallet(), None).pay(charges)
    assert [(o.charge.tip_id, o.charged, o.reason) for o in outcomes] == [
        ("ok", True, ""),
        ("poor", False, "INSUFFICIENT_FUNDS"),
    ]
