-- Peers and where chunks live, written by whichever replica a peer talks to.
-- last_seen is the database's clock, so liveness is the same seen from every replica.
CREATE TABLE peers (
    id                 text PRIMARY KEY,
    addr               text NOT NULL,
    zone               text NOT NULL,
    capacity           bigint NOT NULL,
    used               bigint NOT NULL,
    active_transfers   integer NOT NULL DEFAULT 0,
    draining           boolean NOT NULL DEFAULT false,
    last_seen          timestamptz NOT NULL DEFAULT now(),
    -- Bumped by every transaction that changes the peer's locations: a replica reloads
    -- a peer's locations when the version differs from the one it holds.
    inventory_version  bigint NOT NULL DEFAULT 0
);

CREATE TABLE locations (
    chunk  text NOT NULL,
    peer   text NOT NULL,
    PRIMARY KEY (peer, chunk)
);
