-- Matching looks signals up by subject; the open-signal uniqueness check by subject, agency and
-- category. With the subject first, one index serves both (PostgreSQL chose the old
-- agency-first index for subject lookups and scanned all of it: cost grew with the table).
DROP INDEX signals_one_open;
CREATE UNIQUE INDEX signals_one_open ON signals (subject, agency_oin, category) WHERE withdrawn_at IS NULL;
