-- The rows written while migration 2's schema was in force are checked
-- against the foreign keys migration 3 added. `VALIDATE CONSTRAINT` locks a
-- table only against other schema changes, so claims go on being recorded
-- while it scans. The ledger writes each of these rows in the transaction
-- that writes its claim, so none should lack its claim; if one does (a row
-- written by hand while the constraints were away), this migration fails,
-- PostgreSQL's message names the constraint, and the service does not start
-- until the row is removed (`subsidy-service migrate --url` tries again).
ALTER TABLE usage_counts VALIDATE CONSTRAINT usage_counts_claim_id_fkey;
ALTER TABLE holders VALIDATE CONSTRAINT holders_claim_id_fkey;
ALTER TABLE events VALIDATE CONSTRAINT events_claim_seq_fkey;
