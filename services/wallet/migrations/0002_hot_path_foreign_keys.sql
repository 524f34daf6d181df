-- The append path's per-row foreign-key checks (measured ~5 µs per check per row; a call block or a
-- tip wrote seven) are dropped where the row is derived inside the same statement that writes its
-- parent, so the constraint could only fail on a bug in ledger.py's one write statement:
--   entries → transfers / accounts: every entry is written beside its posting, from the posting's
--     own locked accounts; Audit verifies each posting has exactly two entries on its debit and
--     credit accounts that balance, and each balance equals the sum of its entries.
--   transfers → operations: the operation row is claimed earlier in the same transaction.
-- Kept: transfers → accounts (a posting always names real accounts) and every reversal, hold and
-- note reference, which are written rarely.
ALTER TABLE wallet.entries DROP CONSTRAINT entries_transfer_id_fkey;
ALTER TABLE wallet.entries DROP CONSTRAINT entries_account_id_fkey;
ALTER TABLE wallet.transfers DROP CONSTRAINT transfers_operation_id_fkey;
