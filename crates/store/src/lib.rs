//! Persistence for Signaalpoort: one [`Store`] over two backends, SQLite (the embedded default) and
//! PostgreSQL, with migrations embedded.
//!
//! Every write goes through the group-commit writer ([`Store::execute`]): the state change and its
//! access-log record are applied in one transaction together with those of other calls waiting at
//! the same moment, and each caller is answered only after that transaction committed. So no call is
//! acknowledged before its record is durable. A statement that fails for one request fails that
//! request alone (the batch is applied again without it); a database that cannot take writes (disk
//! full, connection lost) fails the batch as UNAVAILABLE and the next batch tries again; only a
//! COMMIT whose outcome is unknown stops the writer for good (see `writer`).
//! Reads go straight to the backend's read pool.

mod backend;
mod model;
mod sql;
pub mod testing;
pub mod transfer;
mod writer;

pub use writer::finalise_record;

use std::sync::Arc;
use std::time::Duration;

use signaalpoort_core::access_log::{RecordDraft, SignedCheckpoint};
use signaalpoort_core::Oin;
use tokio::sync::watch;

pub use backend::{Backend, Reader};
pub use model::*;

/// Errors of the store. Every one of them fails the call (fail closed).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database url {0:?}: use sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
    #[error("access-log record could not be encoded: {0}")]
    Record(#[from] signaalpoort_core::access_log::RecordError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("commit failed: {0}")]
    CommitFailed(sqlx::Error),
    #[error("the writer stopped after a failed commit; restart the gateway")]
    WriterPoisoned,
    #[error("the store is shutting down")]
    Closed,
    /// The database cannot take writes for now (disk full, connection lost, I/O error): the batch
    /// was rolled back and nothing it held was changed. The next batch tries again.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The data directory cannot be used; names the path and the cause.
    #[error("data directory {path}: {cause}")]
    DataDir { path: String, cause: String },
}

/// Tuning of the store; the defaults are what the benchmark was run with.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Most writes committed in one transaction.
    pub max_batch: usize,
    /// Connections for reads.
    pub read_connections: u32,
    /// How long a connection waits for a lock before failing.
    pub busy_timeout: Duration,
    /// SQLite: below this much free space on the database's file system the store reports itself
    /// not ready, before a write fails for want of space.
    pub min_free_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_batch: 256,
            read_connections: 8,
            busy_timeout: Duration::from_secs(5),
            min_free_bytes: 64 * 1024 * 1024,
        }
    }
}

/// One write: a state change (or none, for a read call) plus the call's access-log record.
#[derive(Debug)]
pub struct WriteRequest {
    pub mutation: Mutation,
    /// A retry with the same key replays the first outcome instead of applying the mutation again
    /// (it still gets its own access-log record); the same key for another RPC or other content is
    /// refused with [`Rejection::RequestIdReused`].
    pub idempotency: Option<Idempotency>,
    pub record: RecordDraft,
    /// Alerts raised by this call, stored with its record's seq. Safety-basis records raise one
    /// automatically.
    pub alerts: Vec<AlertDraft>,
}

/// An idempotency key (AIP-155), bound to the agency, the RPC and the request's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    pub agency: Oin,
    pub request_id: String,
    /// The RPC name, e.g. "RegisterSignal".
    pub action: &'static str,
    /// A keyed digest of the request's content (never a BSN in clear: the server hashes the
    /// request with its pseudonyms in place of BSNs).
    pub fingerprint: [u8; 32],
}

/// The result of a committed write.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The seq of the call's access-log record.
    pub seq: u64,
    pub outcome: Outcome,
    /// True when the outcome was replayed from an earlier call with the same request id.
    pub replayed: bool,
}

/// The store handle; cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    writer: writer::WriterHandle,
    changes: watch::Receiver<ChangeCursor>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.backend.kind())
    }
}

impl Store {
    /// Opens `sqlite://PATH` (created if absent) or `postgres://...`, runs migrations and starts the
    /// writer.
    pub async fn open(url: &str, options: StoreOptions) -> Result<Store, StoreError> {
        let supported = ["sqlite:", "postgres://", "postgresql://"];
        if !supported.iter().any(|p| url.starts_with(p)) {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        }
        let backend: Arc<dyn Backend> = Arc::new(sql::SqlBackend::open(url, &options).await?);
        Ok(Self::with_backend(backend, options))
    }

    /// Runs migrations only (for `signaalpoort migrate`).
    pub async fn migrate(url: &str) -> Result<(), StoreError> {
        Store::open(url, StoreOptions::default()).await.map(|_| ())
    }

    fn with_backend(backend: Arc<dyn Backend>, options: StoreOptions) -> Store {
        let (changes_tx, changes) = watch::channel(ChangeCursor::default());
        let writer = writer::spawn(backend.clone(), options.max_batch, changes_tx.clone());
        backend.spawn_change_listener(changes_tx);
        Store {
            backend,
            writer,
            changes,
        }
    }

    /// Applies a write through the group-commit writer and waits for its commit. Runs to completion
    /// even if the caller's future is dropped (the writer owns the work once submitted).
    pub async fn execute(&self, request: WriteRequest) -> Result<Committed, StoreError> {
        self.writer.submit(request).await
    }

    /// Appends the access-log record of a call that changed nothing.
    pub async fn log_only(
        &self,
        record: RecordDraft,
        alerts: Vec<AlertDraft>,
    ) -> Result<u64, StoreError> {
        let committed = self
            .execute(WriteRequest {
                mutation: Mutation::None,
                idempotency: None,
                record,
                alerts,
            })
            .await?;
        Ok(committed.seq)
    }

    /// Fires whenever notifications or alerts were committed (by this process or, on PostgreSQL,
    /// by any replica). Watchers re-read from their cursor; the value is a hint, not the data.
    pub fn changes(&self) -> watch::Receiver<ChangeCursor> {
        self.changes.clone()
    }

    /// `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        self.backend.kind()
    }

    /// The backend for reads. Reads never change state and need no access-log record of their own
    /// from the store's point of view; the server logs the call.
    pub fn read(&self) -> &dyn Reader {
        self.backend.reader()
    }

    /// Signs and stores a checkpoint over the current chain head; returns it (or `None` when the
    /// head is already covered by the newest checkpoint).
    pub async fn checkpoint(
        &self,
        sign: &(dyn Fn(u64, [u8; 32]) -> SignedCheckpoint + Send + Sync),
    ) -> Result<Option<SignedCheckpoint>, StoreError> {
        let (size, head) = self.backend.head().await?;
        if let Some(latest) = self.backend.checkpoints(1).await?.first() {
            if latest.body.tree_size == size {
                return Ok(None);
            }
        }
        let cp = sign(size, head);
        self.backend.insert_checkpoint(&cp).await?;
        Ok(Some(cp))
    }

    /// Verifies the whole stored chain and checkpoints against a public key, reading in pages.
    pub async fn verify_chain(
        &self,
        public_key: &[u8],
    ) -> Result<signaalpoort_core::access_log::VerifyReport, StoreError> {
        let checkpoints = self.backend.checkpoints(u32::MAX).await?;
        let mut lines: Vec<String> = Vec::new();
        let mut from = 1u64;
        loop {
            let page = self.backend.export_log(from, u64::MAX, 10_000).await?;
            let Some(last) = page.last() else { break };
            from = last.seq + 1;
            for r in &page {
                lines.push(r.export_line()?);
            }
        }
        let start = match self.backend.log_anchor().await? {
            Some((seq, hash)) => signaalpoort_core::access_log::ChainStart::After { seq, hash },
            None => signaalpoort_core::access_log::ChainStart::Genesis,
        };
        Ok(signaalpoort_core::access_log::verify_export_from(
            lines.iter().map(|l| l.as_bytes()),
            &checkpoints,
            public_key,
            start,
        ))
    }

    /// False once a commit failed: the gateway then refuses all calls until restarted.
    pub fn is_writable(&self) -> bool {
        !self.writer.is_poisoned()
    }

    /// Loads households and signals directly, without access-log records or notifications. Only
    /// for preloading benchmark data; never on a gateway's own database in use.
    pub async fn bulk_load(
        &self,
        households: &[(String, String, Oin, Vec<HouseholdMember>)],
        signals: &[SignalRow],
    ) -> Result<(), StoreError> {
        self.backend.bulk_load(households, signals).await
    }

    /// Closes the database connections; call last, after the final checkpoint.
    pub async fn close(&self) {
        self.backend.close().await;
    }

    /// For tests and the readiness probe: can the database be reached.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.backend.ping().await
    }
}
