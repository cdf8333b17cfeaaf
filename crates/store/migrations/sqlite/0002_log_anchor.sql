-- Retention removes the oldest access-log records. The chain that remains is verified from this
-- anchor: the sequence number and hash of the last removed record. No row: the chain starts at genesis.
CREATE TABLE log_anchor (
    id SMALLINT PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    hash BLOB NOT NULL
);
