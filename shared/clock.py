"""The one clock. Business time (hold expiry, call blocks, heartbeats, rate limits, months) is read
from the database inside the statement that needs it, through `fanbank_shared.now()`, so a batch
reads it once and every process agrees. Tests move it with `ControlledClock`; nothing sleeps.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

# The SQL expression every service uses for "now".
NOW_SQL = "fanbank_shared.now()"


async def db_now(engine: AsyncEngine) -> dt.datetime:
    async with engine.connect() as conn:
        return await conn.scalar(text(f"SELECT {NOW_SQL}"))


async def refuse_controlled_clock_in_production(engine: AsyncEngine, clock_mode: str) -> None:
    """A service on the system clock must not start while a test clock is set in its database."""
    if clock_mode == "controlled":
        return
    async with engine.connect() as conn:
        held = await conn.scalar(text("SELECT count(*) FROM fanbank_shared.controlled_clock"))
    if held:
        raise RuntimeError("a controlled clock is set in this database but FANBANK_CLOCK=system")


class ControlledClock:
    """Test clock stored in the database: all processes on the database see the same time."""

    def __init__(self, engine: AsyncEngine):
        self.engine = engine

    async def set(self, when: dt.datetime) -> None:
        assert when.tzinfo is not None, "controlled time must be timezone-aware"
        async with self.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO fanbank_shared.controlled_clock (singleton, now_at) VALUES (true, :t) "
                    "ON CONFLICT (singleton) DO UPDATE SET now_at = excluded.now_at"
                ),
                {"t": when},
            )

    async def advance(self, by: dt.timedelta) -> dt.datetime:
        when = await db_now(self.engine) + by
        await self.set(when)
        return when

    async def release(self) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(text("DELETE FROM fanbank_shared.controlled_clock"))
