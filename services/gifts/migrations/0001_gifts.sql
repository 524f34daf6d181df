-- Gifts: the gift catalog, every tip / gift / like-tip (the intent and its outcome), the derived
-- leaderboards, daily totals and goals, and creators' overlay tokens. Gifts never touches Wallet's
-- schema: money moves only through Wallet's RPCs, under ids derived from tip_id.
CREATE SCHEMA IF NOT EXISTS gifts;

CREATE TABLE gifts.catalog (
    gift_id text PRIMARY KEY,
    name text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 60),
    price_tokens bigint NOT NULL CHECK (price_tokens > 0),
    category text NOT NULL,
    rarity text NOT NULL,
    active boolean NOT NULL DEFAULT true,
    featured boolean NOT NULL DEFAULT false,
    limited boolean NOT NULL DEFAULT false,
    sort_order integer NOT NULL DEFAULT 0,
    image_url text NOT NULL DEFAULT '',
    animation_url text NOT NULL DEFAULT '',
    -- Idempotency of CreateGift: the caller's scope and request id.
    request_scope text NOT NULL,
    request_id text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT fanbank_shared.now(),
    updated_at timestamptz NOT NULL DEFAULT fanbank_shared.now(),
    UNIQUE (request_scope, request_id)
);
CREATE INDEX catalog_active_in_order ON gifts.catalog (sort_order, gift_id) WHERE active;

-- One row per tip, gift or like-tip: written PENDING (the intent) before Wallet is called, settled
-- COMPLETED or FAILED after, in the transaction that also writes its events. The Wallet ids are
-- derived from tip_id, so the sweeper can re-drive a PENDING row after a crash without charging twice.
CREATE TABLE gifts.tips (
    tip_id text PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('TIP', 'GIFT', 'LIKE')),
    status text NOT NULL CHECK (status IN ('PENDING', 'COMPLETED', 'FAILED')),
    request_scope text NOT NULL,
    request_id text NOT NULL,
    sender_id text NOT NULL,
    creator_id text NOT NULL CHECK (creator_id <> sender_id),
    sender_display_name text NOT NULL DEFAULT '',
    amount_tokens bigint NOT NULL CHECK (amount_tokens > 0 AND amount_tokens <= 1000000000000),
    fee_bps integer NOT NULL CHECK (fee_bps BETWEEN 0 AND 10000),
    fee_tokens bigint NOT NULL CHECK (fee_tokens >= 0 AND fee_tokens <= amount_tokens),
    -- User-written text lives here, never in the ledger, where an admin can hide it.
    message text NOT NULL DEFAULT '',
    message_hidden boolean NOT NULL DEFAULT false,
    context_type text NOT NULL CHECK (context_type IN ('stream', 'call', 'post', 'profile', 'comment')),
    context_id text NOT NULL,
    -- GIFT: the item as it was sold.
    gift_id text,
    gift_name text,
    quantity bigint CHECK (quantity > 0),
    unit_price_tokens bigint,
    image_url text,
    animation_url text,
    failure_reason text,
    -- Business time of the request: leaderboard days and weeks count from it.
    created_at timestamptz NOT NULL,
    completed_at timestamptz,
    CHECK ((status = 'PENDING') = (completed_at IS NULL)),
    CHECK ((kind = 'GIFT') = (gift_id IS NOT NULL)),
    UNIQUE (request_scope, request_id)
);
-- A like-tip is charged once per (fan, target) forever; a refused one does not count.
CREATE UNIQUE INDEX tips_one_like_per_target ON gifts.tips (sender_id, context_type, context_id)
    WHERE kind = 'LIKE' AND status <> 'FAILED';
CREATE INDEX tips_by_sender ON gifts.tips (sender_id, created_at DESC, tip_id DESC);
CREATE INDEX tips_by_creator ON gifts.tips (creator_id, created_at DESC, tip_id DESC) WHERE status = 'COMPLETED';
CREATE INDEX tips_pending ON gifts.tips (created_at) WHERE status = 'PENDING';

-- Top supporters, kept up to date when a tip completes: per creator (stream_id = '') and per stream,
-- per UTC day, ISO week (period_start = its Monday) and all time (period_start = 1970-01-01).
CREATE TABLE gifts.leaderboard (
    creator_id text NOT NULL,
    stream_id text NOT NULL,
    period text NOT NULL CHECK (period IN ('DAY', 'WEEK', 'ALL')),
    period_start date NOT NULL,
    sender_id text NOT NULL,
    sender_display_name text NOT NULL,
    amount_tokens bigint NOT NULL CHECK (amount_tokens > 0),
    tip_count bigint NOT NULL CHECK (tip_count > 0),
    PRIMARY KEY (creator_id, stream_id, period, period_start, sender_id)
);
CREATE INDEX leaderboard_top ON gifts.leaderboard
    (creator_id, stream_id, period, period_start, amount_tokens DESC, sender_id);

-- A creator's completed supports per UTC day, kind and context: GetTipStats sums the days of a period.
CREATE TABLE gifts.daily_totals (
    creator_id text NOT NULL,
    day date NOT NULL,
    kind text NOT NULL,
    context_type text NOT NULL,
    tip_count bigint NOT NULL,
    gross_tokens bigint NOT NULL,
    fee_tokens bigint NOT NULL,
    PRIMARY KEY (creator_id, day, kind, context_type)
);

-- A creator's goal for a stream; SetGoal retires the active one and starts a new one at 0.
CREATE TABLE gifts.goals (
    goal_id text PRIMARY KEY,
    creator_id text NOT NULL,
    stream_id text NOT NULL,
    title text NOT NULL,
    target_tokens bigint NOT NULL CHECK (target_tokens > 0),
    progress_tokens bigint NOT NULL DEFAULT 0 CHECK (progress_tokens >= 0),
    active boolean NOT NULL,
    request_scope text NOT NULL,
    request_id text NOT NULL,
    created_at timestamptz NOT NULL,
    reached_at timestamptz,
    UNIQUE (request_scope, request_id)
);
CREATE UNIQUE INDEX goals_one_active ON gifts.goals (creator_id, stream_id) WHERE active;

-- A creator's current overlay token, stored as its SHA-256 only: rotating replaces the row, so the
-- old token stops resolving in the same commit. The token is HMAC(gifts' key, creator ‖ nonce), so
-- a replayed RotateOverlayToken can answer the same token without the token being stored.
CREATE TABLE gifts.overlay_tokens (
    creator_id text PRIMARY KEY,
    token_hash bytea NOT NULL UNIQUE,
    nonce text NOT NULL,
    rotated_at timestamptz NOT NULL
);
CREATE TABLE gifts.overlay_rotations (
    request_scope text NOT NULL,
    request_id text NOT NULL,
    creator_id text NOT NULL,
    nonce text NOT NULL,
    rotated_at timestamptz NOT NULL,
    PRIMARY KEY (request_scope, request_id)
);

CREATE SCHEMA IF NOT EXISTS "gifts";

-- The per-channel sequence. Never delete a row: numbering must not restart after a prune.
CREATE TABLE IF NOT EXISTS "gifts".outbox_channels (
    channel text PRIMARY KEY,
    last_seq bigint NOT NULL CHECK (last_seq > 0)
);

-- payload: the serialized protobuf event, published and replayed byte for byte.
CREATE TABLE IF NOT EXISTS "gifts".outbox (
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
CREATE INDEX IF NOT EXISTS outbox_unpublished_by_id ON "gifts".outbox (id) WHERE published_at IS NULL;
CREATE INDEX IF NOT EXISTS outbox_unpublished_by_channel ON "gifts".outbox (channel, seq)
    WHERE published_at IS NULL;
-- prune(): oldest rows first, in bounded chunks.
CREATE INDEX IF NOT EXISTS outbox_created_at ON "gifts".outbox (created_at);

