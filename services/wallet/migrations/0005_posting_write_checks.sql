-- The two checks each posting still paid for on its way in (measured on a 500-block metering batch):
--
-- transfers → accounts (debit and credit). Each is a lookup of the account row by id per posting,
-- about 8 µs of the posting's 17. Every account a posting names is a row the same transaction
-- locked FOR UPDATE a statement earlier (ledger.py, step 3) or inserted itself, and accounts are
-- never deleted, so the checks could only fail on a bug in ledger.py's write. Audit now reports
-- such a bug (DANGLING_REFERENCE), as it does for the references migration 0002 dropped.
ALTER TABLE wallet.transfers DROP CONSTRAINT transfers_debit_account_id_fkey;
ALTER TABLE wallet.transfers DROP CONSTRAINT transfers_credit_account_id_fkey;
-- entries had two btrees, the id and (account, id): one is enough. The key (account_id, id) keeps
-- every entry unique (the id is) and is the index an account's history is read through, newest
-- first, by a backward scan. About 4 µs of each block's two entries.
ALTER TABLE wallet.entries DROP CONSTRAINT entries_pkey;
DROP INDEX wallet.entries_account;
ALTER TABLE wallet.entries ADD PRIMARY KEY (account_id, id);
