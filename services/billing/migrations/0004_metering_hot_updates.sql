-- Metering writes every live call's row twice per block (claim, then settle). Each non-HOT update
-- inserts a new entry into every index of billing.calls, so the indexes decide what a tick costs.
-- calls_by_node was never read (a node's feed comes from the outbox): dropped.
DROP INDEX billing.calls_by_node;
-- The tick's index no longer depends on charging_block_no: claiming a call (setting it) changes
-- no indexed column and becomes a heap-only update; the claim query filters calls in flight from
-- the heap instead. Free space on each page keeps those updates on their page.
DROP INDEX billing.calls_due;
CREATE INDEX calls_due ON billing.calls (deadline_at) WHERE status IN ('ACTIVE', 'PAUSED');
ALTER TABLE billing.calls SET (fillfactor = 70);
