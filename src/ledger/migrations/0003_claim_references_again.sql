-- The foreign keys migration 2 dropped are back. Dropping them was measured
-- as a gain in one run and as none in the runs that followed (alternating
-- builds on the same cluster, scripts/bench.d/RESULTS.md): no reason to do
-- without the backstop. The ledger writes each of these rows in the
-- transaction that writes its claim, so no row should lack its claim; if
-- one does (a row written by hand while the constraints were away), this
-- migration fails and PostgreSQL's message names the constraint.
ALTER TABLE usage_counts ADD CONSTRAINT usage_counts_claim_id_fkey
    FOREIGN KEY (claim_id) REFERENCES claims (claim_id);
ALTER TABLE holders ADD CONSTRAINT holders_claim_id_fkey
    FOREIGN KEY (claim_id) REFERENCES claims (claim_id);
ALTER TABLE events ADD CONSTRAINT events_claim_seq_fkey
    FOREIGN KEY (claim_seq) REFERENCES claims (seq);
