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
mod bulk;
mod files;
mod listener;
mod merkle;
mod model;
mod mutate;
mod register_run;
mod rows;
mod sql;
pub mod testing;
pub mod transfer;
mod tx;
mod write_thread;
mod writer;

pub use writer::finalise_record;

use std::sync::Arc;
use std::time::Duration;

use signaalpoort_core::access_log::tree::{self, NodeHash};
use signaalpoort_core::access_log::{
    ChainStart, CheckpointSigner, LogVerifier, RecordDraft, SignedCheckpoint, TrustPolicy,
    VerifyInput, VerifyReport,
};
use signaalpoort_core::Oin;
use time::OffsetDateTime;
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
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("commit failed: {0}")]
    CommitFailed(String),
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
    /// The stored Merkle tree does not agree with itself or with the last signed checkpoint
    /// (records or tree rows altered, removed, or restored from an older backup).
    #[error("access-log tree: {0}")]
    TreeInconsistent(String),
    #[error("checkpoint signing failed: {0}")]
    Signing(String),
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
    /// Open for reading only (`audit verify --database`): no migrations, no tree catch-up, and
    /// SQLite opened read-only. Writes through such a store fail.
    pub read_only: bool,
    /// The status code a refused call ends with, written into its record. The store does not
    /// know the transport's codes: the server supplies its own mapping.
    pub status_of: StatusOf,
}

/// How the transport names the end of a call the store refused (see [`StoreOptions::status_of`]).
pub type StatusOf = fn(&Rejection) -> i32;

/// The status of a refused write made without a server (store-level tests, tools): none.
pub const NO_TRANSPORT_STATUS: i32 = -1;

fn no_transport_status(_: &Rejection) -> i32 {
    NO_TRANSPORT_STATUS
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_batch: 256,
            read_connections: 8,
            busy_timeout: Duration::from_secs(5),
            min_free_bytes: 64 * 1024 * 1024,
            read_only: false,
            status_of: no_transport_status,
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

    /// The stored tree's size and root. An error when the tree lacks a node it needs.
    pub async fn tree_head(&self) -> Result<(u64, NodeHash), StoreError> {
        let size = self.backend.tree_size().await?;
        let hashes = self.backend.tree_hashes(&tree::root_indexes(size)).await?;
        let root = tree::root_from(size, &hashes).map_err(|_| {
            StoreError::TreeInconsistent(format!(
                "the stored tree of {size} records lacks a node of its root"
            ))
        })?;
        Ok((size, root))
    }

    /// A consistency proof (RFC 6962) from `old` to `size` leaves, from the stored tree.
    pub async fn consistency_proof(
        &self,
        size: u64,
        old: u64,
    ) -> Result<Vec<NodeHash>, StoreError> {
        if old > size {
            return Err(StoreError::TreeInconsistent(format!(
                "no proof from {old} to {size}"
            )));
        }
        let hashes = self
            .backend
            .tree_hashes(&tree::consistency_proof_indexes(size, old))
            .await?;
        tree::consistency_proof(size, old, &hashes).map_err(|e| {
            StoreError::TreeInconsistent(format!("consistency proof {old} → {size}: {e}"))
        })
    }

    /// An inclusion proof (RFC 6962 audit path) of record `seq` in the tree of `size` leaves.
    pub async fn inclusion_proof(&self, size: u64, seq: u64) -> Result<Vec<NodeHash>, StoreError> {
        let index = seq.checked_sub(1).filter(|i| *i < size).ok_or_else(|| {
            StoreError::TreeInconsistent(format!("record {seq} is not in a tree of {size}"))
        })?;
        let hashes = self
            .backend
            .tree_hashes(&tree::inclusion_proof_indexes(size, index))
            .await?;
        tree::inclusion_proof(size, index, &hashes).map_err(|e| {
            StoreError::TreeInconsistent(format!("inclusion proof of {seq} in {size}: {e}"))
        })
    }

    /// Signs a checkpoint over the stored tree when it grew since the newest checkpoint, and
    /// stores it; `None` when nothing grew. Refuses (`TreeInconsistent`) to sign a tree that is
    /// smaller than the newest checkpoint or that the stored tree cannot prove consistent with it:
    /// the gateway's key never vouches for a head it cannot link to what it signed before.
    pub async fn checkpoint(
        &self,
        signer: &dyn CheckpointSigner,
        now: OffsetDateTime,
    ) -> Result<Option<SignedCheckpoint>, StoreError> {
        let (size, root) = self.tree_head().await?;
        let latest = self.backend.checkpoints(1).await?.into_iter().next();
        if let Some(latest) = &latest {
            self.check_consistent_with(latest, size, &root).await?;
            if latest.tree_size == size {
                return Ok(None);
            }
        } else if size == 0 {
            return Ok(None);
        }
        let cp = signer
            .sign_checkpoint(size, &root)
            .map_err(|e| StoreError::Signing(e.to_string()))?;
        self.backend.insert_checkpoint(&cp, now).await?;
        Ok(Some(cp))
    }

    /// Whether the stored tree of `size` leaves with `root` extends the signed checkpoint `cp`.
    pub async fn check_consistent_with(
        &self,
        cp: &SignedCheckpoint,
        size: u64,
        root: &NodeHash,
    ) -> Result<(), StoreError> {
        if size < cp.tree_size {
            return Err(StoreError::TreeInconsistent(format!(
                "the stored tree has {size} records but the last signed checkpoint covers {}: records were removed",
                cp.tree_size
            )));
        }
        let proof = self.consistency_proof(size, cp.tree_size).await?;
        tree::check_consistency(&proof, size, root, cp.tree_size, &cp.root).map_err(|_| {
            StoreError::TreeInconsistent(format!(
                "the stored tree of {size} records is not consistent with the signed checkpoint at {}: history was rewritten",
                cp.tree_size
            ))
        })
    }

    /// Adds witness cosignatures to a stored checkpoint.
    pub async fn store_cosignatures(
        &self,
        cp: &SignedCheckpoint,
        cosignatures: usize,
    ) -> Result<(), StoreError> {
        self.backend.update_cosignatures(cp, cosignatures).await
    }

    /// Verifies the live log (read-only): every record's hash and link, every record's leaf
    /// against the stored tree, the tree against every stored checkpoint under `policy`, and
    /// against `trusted` (a witness's latest cosigned checkpoint) when given. Reads in pages.
    pub async fn verify_log(
        &self,
        policy: &TrustPolicy,
        trusted: Option<&SignedCheckpoint>,
    ) -> Result<VerifyReport, StoreError> {
        // Read before the records: on a running gateway both only grow, so a tree longer than
        // the records read after it means records were removed.
        let tree_size = self.backend.tree_size().await?;
        let checkpoints = self.backend.checkpoints(u32::MAX).await?;
        let start = match self.backend.log_anchor().await? {
            Some((seq, hash)) => {
                let frontier = self.frontier_at(seq).await?;
                ChainStart::After {
                    seq,
                    hash,
                    frontier,
                }
            }
            None => ChainStart::Genesis,
        };
        let mut verifier = LogVerifier::new(&VerifyInput {
            policy,
            checkpoints: &checkpoints,
            trusted,
            start,
        });
        let mut from = 1u64;
        'pages: loop {
            let page = self.backend.export_log(from, u64::MAX, 10_000).await?;
            let (Some(first), Some(last)) = (page.first(), page.last()) else {
                break;
            };
            let leaves = self
                .backend
                .tree_range(
                    tree::leaf_index(first.seq.saturating_sub(1)),
                    tree::leaf_index(last.seq.saturating_sub(1)),
                )
                .await?;
            from = last.seq + 1;
            for r in &page {
                let line = r.export_line()?;
                let stored = leaves.get(&tree::leaf_index(r.seq.saturating_sub(1)));
                // A record without a leaf: the tree does not hold it (appended behind its back).
                let missing = [0u8; 32];
                if !verifier.push_line(line.as_bytes(), Some(stored.unwrap_or(&missing))) {
                    break 'pages;
                }
            }
        }
        let mut report = verifier.finish();
        if tree_size > report.records && report.first_problem.is_none() {
            report.first_problem = Some(signaalpoort_core::access_log::Problem {
                line: 0,
                seq: None,
                kind: signaalpoort_core::access_log::ProblemKind::TailRemoved {
                    tree_size,
                    records: report.records,
                },
            });
        }
        Ok(report)
    }

    async fn frontier_at(&self, size: u64) -> Result<tree::Frontier, StoreError> {
        let indexes = tree::frontier_indexes(size);
        let hashes = self.backend.tree_hashes(&indexes).await?;
        let ordered = indexes
            .iter()
            .map(|i| hashes.get(i).copied())
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                StoreError::TreeInconsistent(format!(
                    "the stored tree lacks the nodes at the retention anchor {size}"
                ))
            })?;
        tree::Frontier::from_hashes(size, &ordered)
            .map_err(|e| StoreError::TreeInconsistent(e.to_string()))
    }

    /// False once a commit failed: the gateway then refuses all calls until restarted.
    /// Stores a checkpoint signed elsewhere (one per tree size). The gateway signs through
    /// [`Store::checkpoint`]; this is for tools, and for tests that play an attacker holding the key.
    pub async fn insert_checkpoint(
        &self,
        checkpoint: &SignedCheckpoint,
        signed_at: time::OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.backend.insert_checkpoint(checkpoint, signed_at).await
    }

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
