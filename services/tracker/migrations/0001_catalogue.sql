-- The catalogue, shared by every tracker replica.
-- Hashes are BLAKE3, 64 hex characters. Records are the tracker's JSON (serde) forms.

-- File contents by content id.
CREATE TABLE files (
    id      text PRIMARY KEY,
    record  jsonb NOT NULL
);

-- Names: the primary key makes "exactly one tracker wins a name" a database fact.
CREATE TABLE names (
    name        text PRIMARY KEY,
    id          text NOT NULL,
    created_ms  bigint NOT NULL
);

-- Chunks waiting for repair (the leader's work queue; survives a leader change).
CREATE TABLE repairs (
    chunk        text PRIMARY KEY,
    enqueued_ms  bigint NOT NULL
);

-- Every catalogue change in commit order: replicas tail it to keep their memory in step.
-- Writers hold pg_advisory_xact_lock(catalogue) while they append, so sequence order is
-- commit order and a reader never sees a later row before an earlier one.
CREATE TABLE catalogue_log (
    seq     bigserial PRIMARY KEY,
    change  jsonb NOT NULL
);
