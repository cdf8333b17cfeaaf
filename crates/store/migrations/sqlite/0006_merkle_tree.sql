-- The access log as an RFC 6962 Merkle tree (issue 14). Every complete node in tlog's stored-hash
-- layout: the leaf of record `seq` is at tlog_tiles::stored_hash_index(0, seq - 1), its value
-- SHA-256(0x00 || record hash). Appended in the same transaction as the records, never updated;
-- retention removes record bodies and keeps these rows, so later proofs still verify.
CREATE TABLE log_tree (
    idx INTEGER PRIMARY KEY,
    hash BLOB NOT NULL
);

-- Checkpoints as c2sp.org/tlog-checkpoint signed notes: the log's Ed25519 signature line, and
-- witness cosignature lines (c2sp.org/tlog-cosignature) added to the note as they arrive.
-- The old `checkpoints` table (signed chain heads) is kept as it was and no longer written.
CREATE TABLE log_checkpoints (
    tree_size INTEGER PRIMARY KEY,
    root BLOB NOT NULL,
    note TEXT NOT NULL,
    signed_at INTEGER NOT NULL,
    cosignatures INTEGER NOT NULL DEFAULT 0
);
