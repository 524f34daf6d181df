-- The one clock (DESIGN.md "Time"). Services read business time through fanbank_shared.now():
-- the database's now() unless a test has set a controlled time here, which every process sharing
-- the database then sees. Services started with FANBANK_CLOCK=system never write this table.
CREATE TABLE fanbank_shared.controlled_clock (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    now_at timestamptz NOT NULL
);

CREATE FUNCTION fanbank_shared.now() RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT now_at FROM fanbank_shared.controlled_clock), now())
$$;
