"""Pure pieces of Streams: ticket legs and fees per preset, the pre-encoded WatchStream message,
and multi-channel resume tokens."""

from __future__ import annotations

import base64

import grpc
import pytest

from services.streams.server import encode_watch_response, feed_channels
from services.streams.tickets import Charge, batch_id, transfer_specs
from shared.errors import DomainError
from shared.gen.fanbank.gifts.v1 import gift_events_pb2 as gpb
from shared.gen.fanbank.streams.v1 import streams_service_pb2 as spb
from shared.gen.fanbank.wallet.v1 import wallet_service_pb2 as wpb
from shared.presets import fee_amount, load_preset
from shared.watch import Delivery, MultiDelivery, make_multi_token, make_token, parse_multi_token


def charge(price: int, bps: int) -> Charge:
    return Charge("t1", "s1", "fan", "creator", price, fee_amount(price, bps), bps)


def test_streamit_ticket_is_30_percent_fee_rounded_down():
    bps = load_preset("streamit").fees.ticket_bps
    assert bps == 3000
    specs = transfer_specs(charge(333, bps))
    assert [(s.transfer_id, s.amount, s.credit.code) for s in specs] == [
        ("ticket:t1:creator", 234, wpb.ACCOUNT_CODE_CREATOR_EARNINGS),
        ("ticket:t1:fee", 99, wpb.ACCOUNT_CODE_PLATFORM_REVENUE),
    ]
    assert all(s.debit.code == wpb.ACCOUNT_CODE_USER_WALLET and s.debit.owner_id == "fan" for s in specs)
    assert all(s.code == wpb.TRANSFER_CODE_TICKET and s.fee_bps == 3000 and not s.group_id for s in specs)
    assert batch_id("t1") == "ticket:t1"


def test_digis_ticket_and_a_zero_fee_have_no_fee_leg():
    bps = load_preset("digis").fees.ticket_bps
    assert bps == 0
    assert [(s.transfer_id, s.amount) for s in transfer_specs(charge(500, bps))] == [("ticket:t1:creator", 500)]
    # streamit's fee on a 3-token ticket is floor(0.9) = 0: no fee leg either.
    assert [s.amount for s in transfer_specs(charge(3, 3000))] == [3]
    # A 100% fee leaves no creator leg.
    assert [s.transfer_id for s in transfer_specs(charge(7, 10_000))] == ["ticket:t1:fee"]


def test_encoded_watch_response_parses_as_the_message():
    stream_event = spb.StreamEvent(type=spb.STREAM_EVENT_TYPE_TICKET_SOLD, stream_id="s1", tickets_sold=3)
    gift = gpb.GiftEvent(type=gpb.GIFT_EVENT_TYPE_GIFT, support_id="g", message="m" * 300, amount_tokens=10)
    channels = feed_channels("s1")
    for channel, event, field in ((channels[0], stream_event, "stream_event"), (channels[1], gift, "gift_event")):
        delivery = Delivery(4, make_token(channel, 4), "X", event.SerializeToString(), channel)
        item = MultiDelivery(delivery, channels, (4, 2) if field == "stream_event" else (1, 4))
        parsed = spb.WatchStreamResponse.FromString(encode_watch_response(item))
        assert parsed.WhichOneof("event") == field
        assert getattr(parsed, field) == event
        assert parsed.resume_token == item.token
        assert parse_multi_token(parsed.resume_token, channels) == list(item.positions)


def _refused(token: str, channels) -> str:
    with pytest.raises(DomainError) as refused:
        parse_multi_token(token, channels)
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    return refused.value.reason


def test_multi_tokens_round_trip_and_refuse_anything_else():
    channels = ("stream:abc", "stream_gifts:abc")
    token = make_multi_token(channels, (7, 0))
    assert parse_multi_token(token, channels) == [7, 0]
    assert "=" not in token and "+" not in token and "/" not in token

    def b64(raw: str) -> str:
        return base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode()

    bad = [
        "",
        "!!",
        token + "=",
        make_multi_token(channels[::-1], (0, 7)),  # other order
        make_multi_token(("stream:abc",), (7,)),  # fewer channels
        make_multi_token(("stream:xyz", "stream_gifts:xyz"), (7, 0)),
        make_token("stream:abc", 7),  # a single-channel token
        b64("m1|stream:abc=07|stream_gifts:abc=0"),  # non-canonical number
        b64("m1|stream:abc=-1|stream_gifts:abc=0"),
        b64("m2|stream:abc=7|stream_gifts:abc=0"),
        b64("m1|stream:abc=99999999999999999999|stream_gifts:abc=0"),
        "x" * 2000,
    ]
    for candidate in bad:
        assert _refused(candidate, channels) == "INVALID_RESUME_TOKEN", candidate
