-- The ledger in PostgreSQL (API.md §7). A claim record keeps the embedded
-- store's encoding (a header and a compressed body, personal fields sealed),
-- beside the columns that listings, reports and replays select on. What the
-- rules read (usage, unique keys, running totals) are rows of their own,
-- keyed by the 16-byte digest of a ledger key; concurrent claims that read
-- the same key are serialised by a transaction-scoped advisory lock on it.

-- Recording order and event numbers, given out at commit: a claim's number
-- is never seen before every smaller one is committed (listing cursors and
-- replays never skip a claim).
CREATE TABLE ledger_counters (
    id         smallint PRIMARY KEY CHECK (id = 1),
    next_seq   bigint NOT NULL,
    next_event bigint NOT NULL
);
INSERT INTO ledger_counters VALUES (1, 1, 1);

CREATE TABLE claims (
    seq        bigint PRIMARY KEY,
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
