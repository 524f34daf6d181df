"""Billing's migration 0006 moves the charges in flight from `charge_intents` rows onto their calls:
a database upgraded with charges in flight (a start, a live call, a call ended while its block was
in flight) has them re-driven by the sweeper and settled as before the upgrade."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import text

from services.billing.metering import Metering, Outcome
from shared.clock import ControlledClock
from shared.db import all_migrations, make_engine, migrate
from tests.harness import settings_for

T0 = dt.datetime(2035, 3, 1, 12, 0, tzinfo=dt.UTC)
BLOCK = dt.timedelta(seconds=30)

_CALL = """
INSERT INTO billing.calls (call_id, request_scope, request_id, fan_id, creator_id, status, rate_tokens_per_minute,
    tokens_per_block, block_seconds, fee_bps, grace_seconds, max_pause_seconds, warning_blocks, media_channel,
    started_at, next_block_no, next_block_at, charging_block_no, deadline_at, last_heartbeat_at,
    segment_started_at, blocks_charged, ended_at, end_reason)
VALUES (:id, 'service:test', :id, 'fan-' || :id, 'creator-' || :id, :status, 100, 50, 30, 3000, 20, 300, 1,
    'call-' || :id, :started, :next_no, :next_at, :charging, :deadline, :beat, :started, :charged, :ended, :reason)
"""
_INTENT = """
INSERT INTO billing.charge_intents (call_id, block_no, block_at, tokens, fee_tokens, status, created_at)
VALUES (:id, :block, :at, 50, 15, :status, :created)
"""


async def test_charges_in_flight_survive_the_upgrade(database_url):
    engine = make_engine(database_url, 4)
    try:
        before = [m for m in all_migrations() if not (m.schema == "billing" and m.version >= 6)]
        await migrate(engine, before)
        await ControlledClock(engine).set(T0)
        claimed = T0 - dt.timedelta(minutes=5)
        live_block_at = claimed - dt.timedelta(seconds=1)
        calls = [
            # id, status, next block no/at, charging, deadline, blocks charged, ended
            ("starting", "STARTING", 0, claimed, 0, None, 0, None),
            ("live", "ACTIVE", 3, live_block_at, 3, live_block_at, 3, None),
            # The old EndCall let go of the call's charge; only its intent still said it was in flight.
            ("ended", "ENDED", 5, None, None, None, 5, claimed + BLOCK),
            ("idle", "ACTIVE", 4, T0 + BLOCK, None, T0 + BLOCK, 4, None),
            ("over", "ENDED", 2, None, None, None, 2, claimed),
        ]
        async with engine.begin() as conn:
            for call_id, status, next_no, next_at, charging, deadline, charged, ended in calls:
                await conn.execute(
                    text(_CALL),
                    {
                        "id": call_id, "status": status, "started": claimed - 10 * BLOCK, "next_no": next_no,
                        "next_at": next_at, "charging": charging, "deadline": deadline, "beat": T0,
                        "charged": charged, "ended": ended, "reason": "FAN_ENDED" if ended else None,
                    },
                )  # fmt: skip
            intents = [("starting", 0, "PENDING"), ("live", 3, "PENDING"), ("ended", 5, "PENDING")]
            intents += [("live", 2, "CHARGED"), ("over", 1, "CHARGED")]
            for call_id, block_no, status in intents:
                await conn.execute(
                    text(_INTENT),
                    {"id": call_id, "block": block_no, "at": live_block_at, "status": status, "created": claimed},
                )

        assert "billing/0006_intent_on_the_call" in await migrate(engine)

        async with engine.connect() as conn:
            rows = {
                r.call_id: r
                for r in await conn.execute(
                    text("SELECT call_id, charging_block_no, charging_since, deadline_at FROM billing.calls")
                )
            }
            gone = await conn.scalar(text("SELECT to_regclass('billing.charge_intents')"))
        assert gone is None
        assert {i: (r.charging_block_no, r.charging_since) for i, r in rows.items()} == {
            "starting": (0, claimed),
            "live": (3, claimed),
            "ended": (5, claimed),
            "idle": (None, None),
            "over": (None, None),
        }
        # In flight, every call is in reach of the sweeper (a deadline no later than its claim).
        assert rows["starting"].deadline_at == claimed and rows["ended"].deadline_at == claimed
        assert rows["live"].deadline_at == live_block_at
        assert rows["over"].deadline_at is None and rows["idle"].deadline_at == T0 + BLOCK

        meter = Metering(engine, wallet=None, settings=settings_for(database_url))
        paid = []

        async def pay(charges):
            paid.extend((c.call_id, c.block_no, c.tokens, c.fee) for c in charges)
            return [Outcome(c, True, "", 1_000) for c in charges]

        refunded = []

        async def refund(call_ids):
            refunded.extend(call_ids)

        meter.pay, meter.refund = pay, refund
        assert await meter.sweep(dt.timedelta(seconds=60)) == 3
        assert sorted(paid) == [("ended", 5, 50, 15), ("live", 3, 50, 15), ("starting", 0, 50, 15)]
        assert refunded == ["starting"]  # a start nobody confirmed is abandoned and its block given back
        async with engine.connect() as conn:
            after = {
                r.call_id: r
                for r in await conn.execute(
                    text(
                        "SELECT call_id, status, end_reason, blocks_charged, next_block_no, charging_block_no, "
                        "deadline_at FROM billing.calls"
                    )
                )
            }
        assert (after["starting"].status, after["starting"].end_reason) == ("FAILED", "START_ABANDONED")
        live = after["live"]
        assert (live.status, live.blocks_charged, live.next_block_no, live.charging_block_no) == ("ACTIVE", 4, 4, None)
        assert live.deadline_at == live_block_at + BLOCK  # the next block, within the lease
        ended = after["ended"]
        assert (ended.status, ended.blocks_charged, ended.charging_block_no, ended.deadline_at) == (
            "ENDED",
            6,
            None,
            None,
        )
        assert await meter.sweep(dt.timedelta(0)) == 0
    finally:
        await engine.dispose()
