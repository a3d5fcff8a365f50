-- The foreign keys migration 2 dropped are back. Dropping them was measured
-- as a gain in one run and as none in the runs that followed (alternating
-- builds on the same cluster, scripts/bench.d/RESULTS.md): no reason to do
-- without the backstop.
--
-- Added here unchecked (`NOT VALID`: every row written from now on is
-- checked, the rows already there are not), which takes the tables' locks
-- only for a moment; migration 4 checks the existing rows, in a transaction
-- of its own that lets claims be recorded meanwhile. The locks are taken at
-- once, claims first, as a recording transaction takes them (it inserts its
-- claim before the rows the claim holds), so that a replica recording while
-- another starts waits for this migration instead of deadlocking with it. A
-- revocation takes them the other way round; should one run at that moment,
-- PostgreSQL rolls back one of the two: a revocation is tried again, a
-- migration stops its replica's start (it exits 1 and is started again).
LOCK TABLE claims, usage_counts, holders, events IN SHARE ROW EXCLUSIVE MODE;
ALTER TABLE usage_counts ADD CONSTRAINT usage_counts_claim_id_fkey
    FOREIGN KEY (claim_id) REFERENCES claims (claim_id) NOT VALID;
ALTER TABLE holders ADD CONSTRAINT holders_claim_id_fkey
    FOREIGN KEY (claim_id) REFERENCES claims (claim_id) NOT VALID;
ALTER TABLE events ADD CONSTRAINT events_claim_seq_fkey
    FOREIGN KEY (claim_seq) REFERENCES claims (seq) NOT VALID;
