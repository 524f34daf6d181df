-- Every posting rewrites its two accounts' balances. Such an update is heap-only (no new index
-- entries) only if the account's page has room for the new row version; on packed pages half of
-- them were not, and each of those wrote two index entries (the id and the natural key, three text
-- columns). Half of each new page is now left free for the updates. Pages written before this
-- migration keep their packing until the table is rewritten (VACUUM FULL, in a maintenance window).
ALTER TABLE wallet.accounts SET (fillfactor = 50);
