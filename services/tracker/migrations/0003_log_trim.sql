-- The catalogue log is trimmed by the leader after store.log_retention: each entry
-- records when it was written, and `catalogue_log_trimmed.through` the highest seq ever
-- trimmed. A replica whose position is below `through` has missed entries (sequences
-- have natural gaps from rolled-back writes, so contiguity cannot tell) and reloads the
-- whole catalogue from the tables.
ALTER TABLE catalogue_log ADD COLUMN at timestamptz NOT NULL DEFAULT now();

CREATE TABLE catalogue_log_trimmed (
    one      boolean PRIMARY KEY DEFAULT true CHECK (one),
    through  bigint NOT NULL
);
INSERT INTO catalogue_log_trimmed (through) VALUES (0);
