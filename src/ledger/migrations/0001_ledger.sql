-- The ledger in PostgreSQL (API.md §7). A claim record keeps the embedded
-- store's encoding (a header and a compressed body, personal fields sealed),
-- beside the columns that listings, reports and replays select on. What the
-- rules read (usage, unique keys, running totals) are rows of their own,
-- keyed by the 16-byte digest of a ledger key; concurrent claims that read
-- the same key are serialised by a transaction-scoped advisory lock on it.

-- Recording order without a counter every writer would wait on: a claim's
-- number is its transaction's id (xid8) shifted left by 20 bits plus its place
-- in the transaction, and listings and replays read only claims whose
-- transaction is older than every transaction still running
-- (`xid < pg_snapshot_xmin(pg_current_snapshot())`), so a claim never appears
-- behind a cursor that has already passed its number. Event numbers come from
-- a sequence (increasing; gaps where a transaction rolled back).
CREATE SEQUENCE event_numbers;

CREATE TABLE claims (
    seq        bigint PRIMARY KEY,
    xid        xid8 NOT NULL DEFAULT pg_current_xact_id(),
    claim_id   text NOT NULL UNIQUE,
    county     text NOT NULL,
    kind       text NOT NULL,
    status     text NOT NULL,
    event_date date NOT NULL,
    department text,
    parties    text[] NOT NULL,
    granted    numeric NOT NULL,
    header     bytea NOT NULL,
    body       bytea NOT NULL
);
CREATE INDEX claims_county_date ON claims (county, event_date);

-- A person's counted grants in a year: one row per counted claim.
CREATE TABLE usage_counts (
    key      bytea NOT NULL,
    claim_id text NOT NULL REFERENCES claims (claim_id),
    PRIMARY KEY (key, claim_id)
);

-- Unique keys (certificates, occupation and level, natural keys): the
-- primary key is the backstop if a lock were ever missed.
CREATE TABLE holders (
    key      bytea PRIMARY KEY,
    claim_id text NOT NULL REFERENCES claims (claim_id)
);

-- Running totals (an institution's cumulative grants, tranches paid).
CREATE TABLE totals (
    key   bytea PRIMARY KEY,
    total numeric NOT NULL CHECK (total >= 0)
);

-- Replays and revocations (a claim's `decided` event is its record).
CREATE TABLE events (
    seq       bigint PRIMARY KEY,
    claim_seq bigint NOT NULL REFERENCES claims (seq),
    event     text NOT NULL
);
CREATE INDEX events_claim ON events (claim_seq);

-- Trade-friction directories; `revision` tells replicas theirs is stale.
CREATE TABLE directories (
    county   text PRIMARY KEY,
    revision bigint NOT NULL,
    record   text NOT NULL
);

-- Written by readiness probes: the database takes a durable write.
CREATE TABLE readiness (
    id        smallint PRIMARY KEY CHECK (id = 1),
    probed_at timestamptz NOT NULL
);
