-- Case coordination (casusregie): one state per household, as JSON of core::coordination.
CREATE TABLE coordinations (
    household_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    last_reminder BIGINT,
    updated_at BIGINT NOT NULL
);

-- Involvement history in counts only: per household, calendar quarter, agency and category. Written
-- when a signal ends (for every quarter it was active), so it outlives the signal without any link
-- to it; live signals are counted from the signals table when the history is read.
CREATE TABLE involvement_history (
    household_id TEXT NOT NULL,
    quarter TEXT NOT NULL,
    agency_oin TEXT NOT NULL,
    category TEXT NOT NULL,
    registered BIGINT NOT NULL,
    ended BIGINT NOT NULL,
    first_at BIGINT NOT NULL,
    PRIMARY KEY (household_id, quarter, agency_oin, category)
);
