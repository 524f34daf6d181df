-- Streams: streams, tickets (the intents and outcomes of ticket payments and their refunds),
-- invites and presence. Money moves only through Wallet's RPCs; Streams never touches its schema.
CREATE SCHEMA IF NOT EXISTS streams;

CREATE TABLE streams.streams (
    stream_id text PRIMARY KEY,
    -- Idempotency of CreateStream: the caller's scope (service or user), its request id, and a
    -- digest of the request's fields (a replay with other fields is refused).
    request_scope text NOT NULL,
    request_id text NOT NULL,
    request_digest text NOT NULL,
    creator_id text NOT NULL,
    title text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('PUBLIC', 'PRIVATE', 'PREMIUM')),
    status text NOT NULL CHECK (status IN ('SCHEDULED', 'LIVE', 'ENDED', 'CANCELLED')),
    price_tokens bigint NOT NULL CHECK (price_tokens >= 0 AND price_tokens <= 1000000000000),
    -- The preset's ticket fee when the stream was created; its tickets all pay this rate.
    fee_bps integer NOT NULL CHECK (fee_bps BETWEEN 0 AND 10000),
    -- NULL: no cap. The cap counts seats: tickets sold plus purchases in flight.
    viewer_cap integer CHECK (viewer_cap > 0),
    invite_only boolean NOT NULL,
    seats_taken integer NOT NULL DEFAULT 0 CHECK (seats_taken >= 0),
    tickets_sold integer NOT NULL DEFAULT 0 CHECK (tickets_sold >= 0),
    -- The viewer count last written to the outbox. Presence itself is streams.viewers (counted on
    -- read), so a join never locks this row; the loop publishes changed counts, coalesced.
    viewer_count_published integer NOT NULL DEFAULT 0,
    scheduled_start_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT fanbank_shared.now(),
    started_at timestamptz,
    ended_at timestamptz,
    cancelled_at timestamptz,
    CHECK ((kind = 'PUBLIC') = (price_tokens = 0)),
    CHECK (viewer_cap IS NULL OR seats_taken <= viewer_cap),
    CHECK (tickets_sold <= seats_taken),
    UNIQUE (request_scope, request_id)
);
CREATE INDEX streams_by_creator ON streams.streams (creator_id, created_at DESC, stream_id DESC);
CREATE INDEX streams_live ON streams.streams (stream_id) WHERE status = 'LIVE';

-- One row per purchase attempt. PENDING is the intent (a seat is reserved and Wallet is being
-- called with ids derived from ticket_id); VALID / FAILED is the outcome. A cancelled stream moves
-- its VALID tickets to REFUND_PENDING, then REFUNDED (or REFUND_FAILED when Wallet refuses).
CREATE TABLE streams.tickets (
    ticket_id text PRIMARY KEY,
    stream_id text NOT NULL REFERENCES streams.streams (stream_id),
    fan_id text NOT NULL,
    request_scope text NOT NULL,
    request_id text NOT NULL,
    price_tokens bigint NOT NULL CHECK (price_tokens > 0),
    fee_tokens bigint NOT NULL CHECK (fee_tokens >= 0 AND fee_tokens <= price_tokens),
    fee_bps integer NOT NULL,
    status text NOT NULL CHECK (status IN ('PENDING', 'VALID', 'FAILED', 'REFUND_PENDING', 'REFUNDED', 'REFUND_FAILED')),
    failure_reason text,
    created_at timestamptz NOT NULL DEFAULT fanbank_shared.now(),
    settled_at timestamptz,
    refund_requested_at timestamptz,
    refunded_at timestamptz,
    UNIQUE (request_scope, request_id)
);
-- A fan holds at most one ticket per stream (a failed attempt does not count).
CREATE UNIQUE INDEX tickets_one_per_fan ON streams.tickets (stream_id, fan_id) WHERE status <> 'FAILED';
CREATE INDEX tickets_pending ON streams.tickets (created_at) WHERE status = 'PENDING';
CREATE INDEX tickets_refund_pending ON streams.tickets (refund_requested_at) WHERE status = 'REFUND_PENDING';
CREATE INDEX tickets_by_stream ON streams.tickets (stream_id, status);

CREATE TABLE streams.invites (
    stream_id text NOT NULL REFERENCES streams.streams (stream_id),
    user_id text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT fanbank_shared.now(),
    PRIMARY KEY (stream_id, user_id)
);

-- Who is present in a live stream; a row whose lease ran out is removed by the loop.
CREATE TABLE streams.viewers (
    stream_id text NOT NULL REFERENCES streams.streams (stream_id),
    user_id text NOT NULL,
    joined_at timestamptz NOT NULL DEFAULT fanbank_shared.now(),
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (stream_id, user_id)
);
CREATE INDEX viewers_expiry ON streams.viewers (expires_at);

CREATE SCHEMA IF NOT EXISTS "streams";

-- The per-channel sequence. Never delete a row: numbering must not restart after a prune.
CREATE TABLE IF NOT EXISTS "streams".outbox_channels (
    channel text PRIMARY KEY,
    last_seq bigint NOT NULL CHECK (last_seq > 0)
);

-- payload: the serialized protobuf event, published and replayed byte for byte.
CREATE TABLE IF NOT EXISTS "streams".outbox (
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
CREATE INDEX IF NOT EXISTS outbox_unpublished_by_id ON "streams".outbox (id) WHERE published_at IS NULL;
CREATE INDEX IF NOT EXISTS outbox_unpublished_by_channel ON "streams".outbox (channel, seq)
    WHERE published_at IS NULL;
-- prune(): oldest rows first, in bounded chunks.
CREATE INDEX IF NOT EXISTS outbox_created_at ON "streams".outbox (created_at);

