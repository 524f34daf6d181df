-- Indexes no query reads, each written on every posting (a call block or a tip is one posting, two
-- entries): transfers by credit/debit account and time, by code and time, by context and by
-- counterparty, and entries by transfer. History is read per account from entries
-- (entries_account); a reversal finds its originals through transfers_operation; Audit scans
-- whole tables and joins them by hash. Each was one more btree insert (and its WAL) per posting or
-- entry on the hottest path. A report that needs one adds it in the migration that adds the report.
DROP INDEX wallet.transfers_credit_time;
DROP INDEX wallet.transfers_debit_time;
DROP INDEX wallet.transfers_code_time;
DROP INDEX wallet.transfers_context;
DROP INDEX wallet.transfers_counterparty;
DROP INDEX wallet.entries_transfer;
