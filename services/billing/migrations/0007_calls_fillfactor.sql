-- A live call's row is rewritten three times per block (the media server's heartbeat, the tick's
-- claim, its settle). The heartbeat and the claim change no indexed column and stay heap-only only
-- while the page has room for the new row version: at 70% one in seven of them did not find it
-- and wrote an entry in each of the table's five indexes. New pages now keep half their space free.
-- Pages written before this migration keep their packing until the table is rewritten.
ALTER TABLE billing.calls SET (fillfactor = 50);
