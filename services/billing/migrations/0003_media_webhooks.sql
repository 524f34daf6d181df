-- LiveKit webhooks Billing has acted on, one row per event id: a redelivered event (LiveKit retries
-- until it gets a 2xx) finds its row and changes nothing.
CREATE TABLE billing.media_webhooks (
    event_id text PRIMARY KEY,
    event text NOT NULL,
    room text NOT NULL,
    -- The call whose room the event named, and whether this event ended it.
    call_id text,
    call_ended boolean NOT NULL DEFAULT false,
    received_at timestamptz NOT NULL DEFAULT fanbank_shared.now()
);
