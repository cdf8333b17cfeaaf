-- Issue 12: disclosure is decided per person.
-- Birth dates from the municipality's declarations (BRP), per member row, for the age rules. The
-- newest live declaration that gives one counts (declared_at orders them).
ALTER TABLE household_members ADD COLUMN birth_date TEXT;
ALTER TABLE household_members ADD COLUMN declared_at INTEGER;

-- Notifications get a per-recipient cursor when they are first delivered; until then they are
-- pending (recipient_seq NULL) and invisible. Rows from before keep their old global cursor as
-- their number, and every recipient's sequence continues above the highest old cursor, so a client
-- resuming from an old cursor neither skips nor repeats anything.
ALTER TABLE notifications ADD COLUMN recipient_seq INTEGER;
UPDATE notifications SET recipient_seq = cursor;
CREATE UNIQUE INDEX notifications_recipient_seq ON notifications (recipient_oin, recipient_seq);
CREATE INDEX notifications_pending ON notifications (recipient_oin, cursor) WHERE recipient_seq IS NULL;
CREATE TABLE notification_cursors (
    recipient_oin TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL
);
INSERT INTO notification_cursors (recipient_oin, last_seq)
    SELECT DISTINCT recipient_oin, (SELECT MAX(cursor) FROM notifications) FROM notifications;

-- A request id is bound to the RPC and the request's content (AIP-155): a keyed fingerprint of the
-- content (never of a BSN in clear). Old rows have none and replay only for the same RPC.
ALTER TABLE idempotency ADD COLUMN action TEXT NOT NULL DEFAULT '';
ALTER TABLE idempotency ADD COLUMN fingerprint BLOB;

-- History keeps the person (a pseudonym, not a signal) so a viewer sees only the counts its basis
-- covers. Rows from before have an empty subject and are shown only on the safety basis.
CREATE TABLE involvement_history_v2 (
    household_id TEXT NOT NULL,
    subject BLOB NOT NULL,
    quarter TEXT NOT NULL,
    agency_oin TEXT NOT NULL,
    category TEXT NOT NULL,
    registered INTEGER NOT NULL,
    ended INTEGER NOT NULL,
    first_at INTEGER NOT NULL,
    PRIMARY KEY (household_id, subject, quarter, agency_oin, category)
);
INSERT INTO involvement_history_v2
    SELECT household_id, x'', quarter, agency_oin, category, registered, ended, first_at FROM involvement_history;
DROP TABLE involvement_history;
ALTER TABLE involvement_history_v2 RENAME TO involvement_history;
