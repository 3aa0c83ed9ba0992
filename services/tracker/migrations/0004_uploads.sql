-- Uploads in flight, shared by every replica: a client may upload through a standby
-- while the leader collects garbage, so the leader must see the chunks every replica's
-- uploads may still commit. A row is written when an upload's chunks are placed (before
-- the client is told where to send them) and deleted when it commits or aborts; rows past
-- `expires_at` (database time, so replicas' clocks do not matter) are abandoned and
-- deleted by the leader.
CREATE TABLE uploads (
    upload_id   text PRIMARY KEY,
    chunks      bytea NOT NULL,         -- the chunks' 32-byte hashes, concatenated
    expires_at  timestamptz NOT NULL
);
CREATE INDEX uploads_expires_at ON uploads (expires_at);
