-- Issue 12: disclosure is decided per person.
-- Birth dates from the municipality's declarations (BRP), per member row, for the age rules. The
-- newest live declaration that gives one counts (declared_at orders them).
ALTER TABLE household_members ADD COLUMN birth_date TEXT;
ALTER TABLE household_members ADD COLUMN declared_at BIGINT;

-- Notifications get a per-recipient cursor when they are first delivered; until then they are
-- pending (recipient_seq NULL) and invisible. Rows from before keep their old global cursor as
-- their number, and every recipient's sequence continues above the highest old cursor, so a client
-- resuming from an old cursor neither skips nor repeats anything.
ALTER TABLE notifications ADD COLUMN recipient_seq BIGINT;
UPDATE notifications SET recipient_seq = cursor;
CREATE UNIQUE INDEX notifications_recipient_seq ON notifications (recipient_oin, recipient_seq);
CREATE INDEX notifications_pending ON notifications (recipient_oin, cursor) WHERE recipient_seq IS NULL;
CREATE TABLE notification_cursors (
    recipient_oin TEXT PRIMARY KEY,
    last_seq BIGINT NOT NULL
);
INSERT INTO notification_cursors (recipient_oin, last_seq)
    SELECT DISTINCT recipient_oin, (SELECT MAX(cursor) FROM notifications) FROM notifications;

-- A request id is bound to the RPC and the request's content (AIP-155): a keyed fingerprint of the
-- content (never of a BSN in clear). Old rows have none and replay only for the same RPC.
ALTER TABLE idempotency ADD COLUMN action TEXT NOT NULL DEFAULT '';
ALTER TABLE idempotency ADD COLUMN fingerprint BYTEA;

-- History keeps the person (a pseudonym, not a signal) so a viewer sees only the counts its basis
-- covers. Rows from before have an empty subject and are shown only on the safety basis.
ALTER TABLE involvement_history ADD COLUMN subject BYTEA NOT NULL DEFAULT '\x'::bytea;
ALTER TABLE involvement_history DROP CONSTRAINT involvement_history_pkey;
ALTER TABLE involvement_history ADD PRIMARY KEY (household_id, subject, quarter, agency_oin, category);
