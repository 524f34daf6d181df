-- A start whose answer the fan never received (Wallet unreachable during StartCall, no retry
-- within the sweep lease) is abandoned: the call is FAILED with START_ABANDONED and, when Wallet had
-- charged the first block, that block is refunded through Wallet.ReverseTransfer. The refund is an
-- intent like a charge: PENDING in the transaction that abandons the call, DONE once Wallet answered
-- (the reversal id is derived from the block id, so a re-drive cannot refund twice).
ALTER TABLE billing.calls ADD COLUMN refund_state text CHECK (refund_state IN ('PENDING', 'DONE'));
CREATE INDEX calls_refund_pending ON billing.calls (call_id) WHERE refund_state = 'PENDING';
