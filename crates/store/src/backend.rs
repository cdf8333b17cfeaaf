//! The interfaces both databases implement: [`Reader`] for queries, [`Backend`] for the writes the
//! store itself performs. The server sees only the store and its read handle.

use async_trait::async_trait;
use std::collections::BTreeMap;

use signaalpoort_core::access_log::tree::NodeHash;
use signaalpoort_core::access_log::{AccessRecord, SignedCheckpoint};
use signaalpoort_core::consent::ConsentRecord;
use signaalpoort_core::{Oin, SubjectPseudonym};
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::{
    AlertRow, ChangeCursor, Committed, CoordinationRow, HistoryRow, HouseholdMember, LogFilter,
    MatchRow, NotificationRow, SignalRow, StoreError, WriteRequest,
};

/// What reading needs: queries only. [`crate::Store::read`] hands out this, so code holding a read
/// handle cannot write — every write goes through the group-commit writer with its record.
#[async_trait]
pub trait Reader: Send + Sync + 'static {
    fn kind(&self) -> &'static str;

    async fn ping(&self) -> Result<(), StoreError>;

    /// Whether a purge would change anything: signals past expiry not yet ended, or ended
    /// signals and dissolved households past the grace period. Keeps idle purges out of the log.
    async fn purge_due(&self, now: OffsetDateTime) -> Result<bool, StoreError>;

    // --- signals and matching ---
    async fn signal(&self, id: &str) -> Result<Option<SignalRow>, StoreError>;
    /// The agency's active signals, newest first, after the `(registered_at, id)` page cursor.
    async fn list_signals(
        &self,
        agency: &Oin,
        now: OffsetDateTime,
        after: Option<(OffsetDateTime, String)>,
        limit: u32,
    ) -> Result<Vec<SignalRow>, StoreError>;
    /// Whether the agency has an active signal on the subject.
    async fn is_involved(
        &self,
        agency: &Oin,
        subject: &SubjectPseudonym,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;
    /// Other agencies' active signals matching `signal` (see `core::involvement::reference_matches`).
    async fn matches(
        &self,
        signal: &SignalRow,
        now: OffsetDateTime,
    ) -> Result<Vec<MatchRow>, StoreError>;
    /// The person's birth date from the newest live household declaration that gives one.
    async fn birth_date(&self, person: &SubjectPseudonym)
        -> Result<Option<time::Date>, StoreError>;
    /// Ids of live households the subject is an unprotected member of.
    async fn households_of(&self, subject: &SubjectPseudonym) -> Result<Vec<String>, StoreError>;

    // --- case coordination ---
    /// Live signals on the unprotected members of a live household (who is involved, and since when).
    async fn household_signals(
        &self,
        household_id: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<SignalRow>, StoreError>;
    async fn coordination(&self, household_id: &str) -> Result<CoordinationRow, StoreError>;
    /// Counts of ended involvement per quarter, agency and category.
    async fn involvement_history(&self, household_id: &str) -> Result<Vec<HistoryRow>, StoreError>;
    /// Live households where at least two agencies are involved (a match).
    async fn households_with_match(&self, now: OffsetDateTime) -> Result<Vec<String>, StoreError>;

    // --- consent ---
    async fn consent(&self, id: &str) -> Result<Option<ConsentRecord>, StoreError>;
    /// Consents about the subject, plus household-wide consents about anyone sharing a live
    /// household with the subject (both unprotected).
    async fn consents_concerning(
        &self,
        subject: &SubjectPseudonym,
    ) -> Result<Vec<ConsentRecord>, StoreError>;
    /// Consents concerning the subjects of the agency's active signals.
    async fn consents_for_agency(
        &self,
        agency: &Oin,
        now: OffsetDateTime,
        include_inactive: bool,
    ) -> Result<Vec<ConsentRecord>, StoreError>;

    // --- notifications and alerts ---
    /// The recipient's delivered notifications with a cursor above `after_seq`, in cursor order.
    async fn numbered_notifications(
        &self,
        recipient: &Oin,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<NotificationRow>, StoreError>;
    /// The highest cursor the recipient's notifications were numbered with (0: none yet).
    async fn last_notification_cursor(&self, recipient: &Oin) -> Result<u64, StoreError>;
    /// The recipient's notifications not yet delivered (no cursor), in creation order after `after_id`.
    async fn pending_notifications(
        &self,
        recipient: &Oin,
        after_id: u64,
        limit: u32,
    ) -> Result<Vec<NotificationRow>, StoreError>;
    async fn alerts_after(&self, cursor: u64, limit: u32) -> Result<Vec<AlertRow>, StoreError>;

    // --- access log ---
    /// (seq, hash) of the newest record; (0, GENESIS) when empty.
    async fn head(&self) -> Result<(u64, [u8; 32]), StoreError>;
    async fn query_log(
        &self,
        filter: &LogFilter,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<AccessRecord>, StoreError>;
    async fn export_log(
        &self,
        from_seq: u64,
        to_seq: u64,
        limit: u32,
    ) -> Result<Vec<AccessRecord>, StoreError>;
    /// (seq, hash) of the last record removed by retention; `None` when the chain starts at genesis.
    async fn log_anchor(&self) -> Result<Option<(u64, [u8; 32])>, StoreError>;
    /// Whether any record is older than `before` (so a retention purge would remove something).
    async fn log_has_records_before(&self, before: OffsetDateTime) -> Result<bool, StoreError>;
    /// Newest first.
    async fn checkpoints(&self, limit: u32) -> Result<Vec<SignedCheckpoint>, StoreError>;
    /// Stored Merkle tree hashes by tlog stored-hash index (absent ones are left out).
    async fn tree_hashes(&self, indexes: &[u64]) -> Result<BTreeMap<u64, NodeHash>, StoreError>;
    /// Stored Merkle tree hashes with index in `lo..=hi`.
    async fn tree_range(&self, lo: u64, hi: u64) -> Result<BTreeMap<u64, NodeHash>, StoreError>;
    /// Leaves in the stored Merkle tree.
    async fn tree_size(&self) -> Result<u64, StoreError>;
}

/// The whole backend: the reads, and the writes only the store itself performs (the batch, the
/// checkpoint rows, the benchmark loader).
#[async_trait]
pub trait Backend: Reader {
    /// This backend as a read handle.
    fn reader(&self) -> &dyn Reader;

    /// Applies a batch in ONE transaction, in order: for each request, replay (idempotency) or
    /// apply the mutation, finalise the record from the outcome ([`crate::writer::finalise_record`]),
    /// chain it after the current head (read inside the transaction, under a lock that orders
    /// concurrent writers — other replicas too), insert it and its alerts. Returns one `Committed`
    /// per request, in order, only after the commit succeeded.
    async fn commit_batch(&self, batch: Vec<WriteRequest>) -> Result<Vec<Committed>, StoreError>;

    /// Publishes changes made by other processes (PostgreSQL LISTEN/NOTIFY); a no-op for SQLite.
    fn spawn_change_listener(&self, changes: watch::Sender<ChangeCursor>);

    /// Closes connections (SQLite folds its WAL back into the database file). Call last.
    async fn close(&self);

    /// Stores a checkpoint the log signed (a c2sp signed note); one per tree size.
    async fn insert_checkpoint(
        &self,
        checkpoint: &SignedCheckpoint,
        signed_at: OffsetDateTime,
    ) -> Result<(), StoreError>;
    /// Replaces a stored checkpoint's note by one with witness cosignatures added.
    async fn update_cosignatures(
        &self,
        checkpoint: &SignedCheckpoint,
        cosignatures: usize,
    ) -> Result<(), StoreError>;
    /// Benchmark preload: inserts directly, no records, no notifications.
    async fn bulk_load(
        &self,
        households: &[(String, String, Oin, Vec<HouseholdMember>)],
        signals: &[SignalRow],
    ) -> Result<(), StoreError>;
}
