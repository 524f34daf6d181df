-- Indexes no query reads, each one more btree insert (and its WAL) per posting or entry on the
-- hottest path (a call block or a tip is one posting, two entries): transfers by debit account and
-- time, by code and time, by context and by counterparty, and entries by transfer. History is read
-- per account from entries (entries_account); a reversal finds its originals through
-- transfers_operation; Audit scans whole tables and joins them by hash.
-- Kept: transfers_credit_time (credit account, time). DESIGN.md reads earnings by source and month
-- from the transfers' context columns; every earning is a credit to an earnings account, so that
-- read is an account's credits over a month, by code. A report that needs another index adds it in
-- the migration that adds the report.
DROP INDEX wallet.transfers_debit_time;
DROP INDEX wallet.transfers_code_time;
DROP INDEX wallet.transfers_context;
DROP INDEX wallet.transfers_counterparty;
DROP INDEX wallet.entries_transfer;
