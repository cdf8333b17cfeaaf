-- Signaalpoort schema (PostgreSQL). Times are unix microseconds; subjects are 32-byte HMAC pseudonyms.
CREATE TABLE signals (
    id TEXT PRIMARY KEY,
    agency_oin TEXT NOT NULL,
    subject BYTEA NOT NULL,
    category TEXT NOT NULL,
    contact_team TEXT NOT NULL,
    contact_phone TEXT NOT NULL,
    contact_email TEXT,
    registered_at BIGINT NOT NULL,
    refreshed_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    withdrawn_at BIGINT
);
CREATE INDEX signals_subject ON signals (subject);
CREATE INDEX signals_agency ON signals (agency_oin, registered_at);
CREATE UNIQUE INDEX signals_one_open ON signals (agency_oin, subject, category) WHERE withdrawn_at IS NULL;

CREATE TABLE households (
    id TEXT PRIMARY KEY,
    agency_oin TEXT NOT NULL,
    household_ref TEXT NOT NULL,
    declared_at BIGINT NOT NULL,
    dissolved_at BIGINT
);
CREATE UNIQUE INDEX households_live_ref ON households (agency_oin, household_ref) WHERE dissolved_at IS NULL;

CREATE TABLE household_members (
    household_id TEXT NOT NULL REFERENCES households (id) ON DELETE CASCADE,
    subject BYTEA NOT NULL,
    protected BOOLEAN NOT NULL,
    PRIMARY KEY (household_id, subject)
);
CREATE INDEX household_members_subject ON household_members (subject);

CREATE TABLE consents (
    id TEXT PRIMARY KEY,
    recorded_by TEXT NOT NULL,
    subject BYTEA NOT NULL,
    include_household BOOLEAN NOT NULL,
    givers TEXT NOT NULL,
    purposes TEXT NOT NULL,
    roles TEXT NOT NULL,
    agencies TEXT NOT NULL,
    recorded_at BIGINT NOT NULL,
    valid_until BIGINT NOT NULL,
    renew_by TEXT,
    withdrawn_at BIGINT,
    evidence_ref TEXT NOT NULL
);
CREATE INDEX consents_subject ON consents (subject);

CREATE TABLE notifications (
    cursor BIGSERIAL PRIMARY KEY,
    recipient_oin TEXT NOT NULL,
    kind TEXT NOT NULL,
    recipient_signal_id TEXT NOT NULL,
    other_signal_id TEXT,
    level BIGINT,
    household_id TEXT,
    coordination_event TEXT,
    occurred_at BIGINT NOT NULL
);
CREATE INDEX notifications_recipient ON notifications (recipient_oin, cursor);
CREATE INDEX notifications_signal ON notifications (recipient_signal_id);
CREATE INDEX notifications_other ON notifications (other_signal_id);

CREATE TABLE idempotency (
    agency_oin TEXT NOT NULL,
    request_id TEXT NOT NULL,
    outcome TEXT NOT NULL,
    PRIMARY KEY (agency_oin, request_id)
);

CREATE TABLE access_log (
    seq BIGINT PRIMARY KEY,
    time BIGINT NOT NULL,
    agency_oin TEXT NOT NULL,
    role TEXT,
    actor_id TEXT NOT NULL,
    action TEXT NOT NULL,
    subjects TEXT NOT NULL,
    household_id TEXT NOT NULL,
    purpose TEXT,
    basis TEXT,
    decision TEXT NOT NULL,
    reason TEXT NOT NULL,
    status_code BIGINT NOT NULL,
    request_id TEXT NOT NULL,
    cert_fingerprint TEXT NOT NULL,
    justification TEXT NOT NULL,
    flagged BOOLEAN NOT NULL,
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    object_id TEXT NOT NULL,
    prev_hash BYTEA NOT NULL,
    hash BYTEA NOT NULL
);
CREATE INDEX access_log_time ON access_log (time);
CREATE INDEX access_log_agency ON access_log (agency_oin, seq);
CREATE INDEX access_log_actor ON access_log (actor_id, seq);
CREATE INDEX access_log_household ON access_log (household_id, seq);

CREATE TABLE access_log_subjects (
    subject BYTEA NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (subject, seq)
);

CREATE TABLE checkpoints (
    tree_size BIGINT PRIMARY KEY,
    note TEXT NOT NULL,
    signature BYTEA NOT NULL
);

CREATE TABLE alerts (
    cursor BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    time BIGINT NOT NULL,
    agency_oin TEXT NOT NULL,
    actor_id TEXT NOT NULL,
    record_seq BIGINT NOT NULL,
    detail TEXT NOT NULL
);

-- The chain head, one row. Writers lock it (SELECT ... FOR UPDATE) at the start of every write
-- transaction, so all replicas append to one totally ordered chain and see each other's writes.
CREATE TABLE log_head (
    id SMALLINT PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL,
    hash BYTEA NOT NULL
);
INSERT INTO log_head (id, seq, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'));
