-- Wallet's ledger (DESIGN.md "The ledger"). Money is bigint minor units; nothing here is a float.

CREATE TABLE wallet.accounts (
    id                   bigserial PRIMARY KEY,
    owner_id             text NOT NULL,
    asset                text NOT NULL,
    code                 text NOT NULL,
    must_not_go_negative boolean NOT NULL,
    posted               bigint NOT NULL DEFAULT 0,
    -- Reserved by open holds; always equal to the sum of this account's OPEN holds.
    pending              bigint NOT NULL DEFAULT 0 CHECK (pending >= 0),
    created_at           timestamptz NOT NULL,
    UNIQUE (owner_id, asset, code)
);

-- One row per idempotent request, keyed by the calling service's own id. It keeps the request's
-- fields (to refuse a reused id with other fields) and the exact answer given (to give it again).
CREATE TABLE wallet.operations (
    id          bigserial PRIMARY KEY,
    scope       text NOT NULL,
    kind        text NOT NULL,
    key         text NOT NULL,
    request     jsonb NOT NULL,
    ok          boolean NOT NULL,
    response    bytea NOT NULL,
    created_at  timestamptz NOT NULL,
    UNIQUE (scope, kind, key)
);

CREATE TABLE wallet.transfers (
    id                   bigint PRIMARY KEY,
    operation_id         bigint NOT NULL REFERENCES wallet.operations (id),
    -- Position of the caller's item in its batch; a wallet spend split over promotional and
    -- purchased tokens is two postings of the same leg.
    leg                  integer NOT NULL,
    -- The caller's id for this item (a batch item's id, a reversal's id, a hold's id …).
    item_id              text NOT NULL,
    funding              text NOT NULL,
    code                 text NOT NULL,
    asset                text NOT NULL,
    debit_account_id     bigint NOT NULL REFERENCES wallet.accounts (id),
    credit_account_id    bigint NOT NULL REFERENCES wallet.accounts (id),
    amount               bigint NOT NULL CHECK (amount > 0 AND amount <= 1000000000000),
    context_type         text NOT NULL,
    context_id           text NOT NULL,
    counterparty_id      text NOT NULL,
    fee_bps              integer NOT NULL CHECK (fee_bps BETWEEN 0 AND 10000),
    reverses_transfer_id bigint REFERENCES wallet.transfers (id),
    reversed_amount      bigint NOT NULL DEFAULT 0 CHECK (reversed_amount BETWEEN 0 AND amount),
    created_at           timestamptz NOT NULL,
    CHECK (debit_account_id <> credit_account_id)
);
CREATE SEQUENCE wallet.transfer_ids OWNED BY wallet.transfers.id;
CREATE INDEX transfers_operation ON wallet.transfers (operation_id, leg);
CREATE INDEX transfers_credit_time ON wallet.transfers (credit_account_id, created_at);
CREATE INDEX transfers_debit_time ON wallet.transfers (debit_account_id, created_at);
CREATE INDEX transfers_code_time ON wallet.transfers (code, created_at);
CREATE INDEX transfers_context ON wallet.transfers (context_type, context_id);
CREATE INDEX transfers_counterparty ON wallet.transfers (counterparty_id, created_at);
CREATE INDEX transfers_reverses ON wallet.transfers (reverses_transfer_id) WHERE reverses_transfer_id IS NOT NULL;

-- Append-only: one row per side of each posting, with the account's balance after it.
CREATE TABLE wallet.entries (
    id            bigserial PRIMARY KEY,
    transfer_id   bigint NOT NULL REFERENCES wallet.transfers (id),
    account_id    bigint NOT NULL REFERENCES wallet.accounts (id),
    amount        bigint NOT NULL CHECK (amount <> 0),
    balance_after bigint NOT NULL,
    created_at    timestamptz NOT NULL
);
CREATE INDEX entries_account ON wallet.entries (account_id, id DESC);
CREATE INDEX entries_transfer ON wallet.entries (transfer_id);

CREATE TABLE wallet.holds (
    id                     bigserial PRIMARY KEY,
    operation_id           bigint NOT NULL REFERENCES wallet.operations (id),
    scope                  text NOT NULL,
    key                    text NOT NULL,
    account_id             bigint NOT NULL REFERENCES wallet.accounts (id),
    destination_account_id bigint NOT NULL REFERENCES wallet.accounts (id),
    asset                  text NOT NULL,
    amount                 bigint NOT NULL CHECK (amount > 0 AND amount <= 1000000000000),
    captured_amount        bigint NOT NULL DEFAULT 0 CHECK (captured_amount BETWEEN 0 AND amount),
    status                 text NOT NULL,
    code                   text NOT NULL,
    context_type           text NOT NULL,
    context_id             text NOT NULL,
    expires_at             timestamptz NOT NULL,
    created_at             timestamptz NOT NULL,
    resolved_at            timestamptz,
    capture_transfer_id    bigint REFERENCES wallet.transfers (id),
    UNIQUE (scope, key),
    CHECK ((status = 'OPEN') = (resolved_at IS NULL))
);
CREATE INDEX holds_open_expiry ON wallet.holds (expires_at) WHERE status = 'OPEN';

-- An admin's reason for an adjustment: kept beside the ledger, never in it.
CREATE TABLE wallet.adjustment_notes (
    transfer_id bigint PRIMARY KEY REFERENCES wallet.transfers (id),
    admin_id    text NOT NULL,
    reason      text NOT NULL
);
