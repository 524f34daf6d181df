-- Billing: creators' call settings, calls, and the intents of each block charge (DESIGN.md
-- "Metering"). Billing never touches Wallet's schema: money moves only through Wallet's RPCs.
CREATE SCHEMA IF NOT EXISTS billing;

CREATE TABLE billing.call_settings (
    creator_id text PRIMARY KEY,
    rate_tokens_per_minute bigint NOT NULL CHECK (rate_tokens_per_minute > 0),
    available boolean NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT fanbank_shared.now()
);

CREATE TABLE billing.calls (
    call_id text PRIMARY KEY,
    -- Idempotency of StartCall: the caller's scope (service or user) and its request id.
    request_scope text NOT NULL,
    request_id text NOT NULL,
    fan_id text NOT NULL,
    creator_id text NOT NULL,
    -- STARTING until the first block's outcome is known, then ACTIVE/PAUSED, then ENDED (or FAILED
    -- when the first block was refused).
    status text NOT NULL CHECK (status IN ('STARTING', 'ACTIVE', 'PAUSED', 'ENDED', 'FAILED')),
    -- Fixed at StartCall for the call's life, preset numbers included.
    rate_tokens_per_minute bigint NOT NULL,
    tokens_per_block bigint NOT NULL CHECK (tokens_per_block > 0),
    block_seconds integer NOT NULL CHECK (block_seconds > 0),
    fee_bps integer NOT NULL,
    grace_seconds integer NOT NULL,
    max_pause_seconds integer NOT NULL,
    warning_blocks integer NOT NULL,
    media_channel text NOT NULL,
    media_node text NOT NULL DEFAULT '',
    started_at timestamptz NOT NULL,
    next_block_no bigint NOT NULL DEFAULT 0,
    -- Nominal start of the next block; NULL while paused or over.
    next_block_at timestamptz,
    -- The block whose charge is in flight (an intent is PENDING); the tick leaves such calls alone.
    charging_block_no bigint,
    -- The earliest moment the tick has something to do for this call: the next block, the end of
    -- the heartbeat lease, or the end of the allowed pause. The tick's only index.
    deadline_at timestamptz,
    paused_at timestamptz,
    -- Unused part of the paid block at pause time, given back at resume.
    carry_ms bigint NOT NULL DEFAULT 0,
    last_heartbeat_at timestamptz NOT NULL,
    -- Start of the current active stretch (start or last resume) and the active time before it.
    segment_started_at timestamptz,
    active_ms bigint NOT NULL DEFAULT 0,
    low_balance_warned boolean NOT NULL DEFAULT false,
    blocks_charged bigint NOT NULL DEFAULT 0,
    blocks_forgiven bigint NOT NULL DEFAULT 0,
    tokens_charged bigint NOT NULL DEFAULT 0,
    fee_tokens bigint NOT NULL DEFAULT 0,
    ended_at timestamptz,
    end_reason text,
    UNIQUE (request_scope, request_id)
);

-- A fan has one live call at a time.
CREATE UNIQUE INDEX calls_one_live_per_fan ON billing.calls (fan_id)
    WHERE status IN ('STARTING', 'ACTIVE', 'PAUSED');
CREATE INDEX calls_due ON billing.calls (deadline_at)
    WHERE status IN ('ACTIVE', 'PAUSED') AND charging_block_no IS NULL;
CREATE INDEX calls_by_fan ON billing.calls (fan_id, started_at DESC, call_id DESC);
CREATE INDEX calls_by_creator ON billing.calls (creator_id, started_at DESC, call_id DESC);
CREATE INDEX calls_by_node ON billing.calls (media_node) WHERE status IN ('ACTIVE', 'PAUSED');

-- One row per block charge attempt, written PENDING before Wallet is called and settled after; a
-- PENDING row older than a lease is re-driven by the sweeper under the same derived id.
CREATE TABLE billing.charge_intents (
    call_id text NOT NULL REFERENCES billing.calls (call_id),
    block_no bigint NOT NULL CHECK (block_no >= 0),
    -- Nominal start of the block.
    block_at timestamptz NOT NULL,
    tokens bigint NOT NULL,
    fee_tokens bigint NOT NULL,
    status text NOT NULL CHECK (status IN ('PENDING', 'CHARGED', 'FAILED')),
    failure_reason text,
    created_at timestamptz NOT NULL DEFAULT fanbank_shared.now(),
    settled_at timestamptz,
    PRIMARY KEY (call_id, block_no)
);
CREATE INDEX charge_intents_pending ON billing.charge_intents (created_at) WHERE status = 'PENDING';

-- Billing's own liveness, shared by its replicas: a process starting after every replica was
-- silent longer than OUTAGE_AFTER records the outage, whose blocks are forgiven and whose heartbeat
-- grace restarts at resumed_at (DESIGN.md "Metering").
CREATE TABLE billing.meter_state (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_alive_at timestamptz,
    outage_from timestamptz,
    resumed_at timestamptz
);
INSERT INTO billing.meter_state (singleton) VALUES (true);

CREATE SCHEMA IF NOT EXISTS "billing";

-- The per-channel sequence. Never delete a row: numbering must not restart after a prune.
CREATE TABLE IF NOT EXISTS "billing".outbox_channels (
    channel text PRIMARY KEY,
    last_seq bigint NOT NULL CHECK (last_seq > 0)
);

-- payload: the serialized protobuf event, published and replayed byte for byte.
CREATE TABLE IF NOT EXISTS "billing".outbox (
    id bigserial PRIMARY KEY,
    channel text NOT NULL,
    seq bigint NOT NULL CHECK (seq > 0),
    event_type text NOT NULL,
    payload bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT fanbank_shared.now(),
    published_at timestamptz,
    UNIQUE (channel, seq)
);

-- The relay's two reads: the oldest unpublished rows, and a claimed channel's backlog in seq order.
-- Both stay small: rows leave them once published.
CREATE INDEX IF NOT EXISTS outbox_unpublished_by_id ON "billing".outbox (id) WHERE published_at IS NULL;
CREATE INDEX IF NOT EXISTS outbox_unpublished_by_channel ON "billing".outbox (channel, seq)
    WHERE published_at IS NULL;
-- prune(): oldest rows first, in bounded chunks.
CREATE INDEX IF NOT EXISTS outbox_created_at ON "billing".outbox (created_at);

