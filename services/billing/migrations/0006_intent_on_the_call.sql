-- A block charge's intent lives on the call row instead of a charge_intents row written PENDING and
-- then settled (DESIGN.md's intent pattern: a row that carries the Wallet id before Wallet is
-- called). The call already said which block was in flight (charging_block_no); it now also says
-- the block's nominal start and when the charge began, which is all a re-drive needs: the amount
-- is the call's fixed tokens_per_block and its fee_bps. A tick writes one row per block instead of
-- three (intent insert, its foreign-key check, its settle) and locks one.
--
-- The sweeper finds charges left in flight through the due index: while a charge is in flight the
-- call keeps the deadline it was claimed at (at most the claim's time), whatever its status, so
-- the index now holds every call with a deadline instead of the live ones. STARTING calls carry
-- their start as deadline for the same reason. The tick filters live, unclaimed calls from the heap.
ALTER TABLE billing.calls
    ADD COLUMN charging_block_at timestamptz,
    ADD COLUMN charging_since timestamptz;

-- Charges in flight now: their intent moves onto the call.
UPDATE billing.calls c SET
    charging_block_no = i.block_no,
    charging_block_at = i.block_at,
    charging_since = i.created_at,
    deadline_at = LEAST(COALESCE(c.deadline_at, i.created_at), i.created_at)
FROM billing.charge_intents i
WHERE i.call_id = c.call_id AND i.status = 'PENDING';
-- A call claimed but without a PENDING intent cannot exist (both were written in one transaction,
-- and settled in one); release any such row rather than leave it stuck.
UPDATE billing.calls SET charging_block_no = NULL
WHERE charging_block_no IS NOT NULL AND charging_since IS NULL;
UPDATE billing.calls SET deadline_at = NULL
WHERE status IN ('ENDED', 'FAILED') AND charging_block_no IS NULL;

DROP INDEX billing.calls_due;
CREATE INDEX calls_due ON billing.calls (deadline_at) WHERE deadline_at IS NOT NULL;

DROP TABLE billing.charge_intents;
