//! The write thread: one OS thread owns the write connection and runs each group-commit batch
//! whole — BEGIN, every request's rule (`mutate.rs`), the batch's access-log records and Merkle
//! leaves, COMMIT — with one hand-off in (the batch) and one out (the results).
//!
//! SQLite runs on rusqlite with cached prepared statements, `BEGIN IMMEDIATE`, WAL and
//! `synchronous=FULL`. PostgreSQL runs on sqlx's typed connection, READ COMMITTED,
//! `synchronous_commit=on`, and every transaction first locks the one-row `log_head`
//! (`SELECT … FOR UPDATE`): that lock totally orders write transactions across replicas, so the
//! chain gets one order and a transaction sees every signal committed before it.
//!
//! Failures: a statement that fails for one request fails that request alone (the batch is rolled
//! back and applied again without it); a database that cannot take writes for now (disk full,
//! connection lost) fails the batch as [`StoreError::Unavailable`] and the next batch tries again
//! on a fresh connection; a COMMIT whose outcome is unknown is [`StoreError::CommitFailed`], which
//! poisons the writer (`writer.rs`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::mpsc;
use std::time::Duration;

use signaalpoort_core::access_log::tree::{self, Frontier, NodeHash};
use signaalpoort_core::access_log::{AccessRecord, GENESIS_HASH};
use signaalpoort_core::SubjectPseudonym;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Executor};
use tokio::sync::oneshot;

use crate::mutate::apply_request;
use crate::register_run;
use crate::rows::{hash32, json, micros};
use crate::tx::{Cols, PgTx, Rows, SqliteTx, Tx, Value};
use crate::writer::finalise_record;
use crate::{
    AlertDraft, AlertKind, Committed, Mutation, Outcome, Rejection, StatusOf, StoreError,
    WriteRequest,
};

pub(crate) const CHANGES_CHANNEL: &str = "signaalpoort_changes";

/// What the write thread connects to.
#[derive(Clone)]
pub(crate) enum Target {
    Sqlite {
        path: PathBuf,
        busy_timeout: Duration,
    },
    Postgres {
        url: String,
    },
}

enum Conn {
    Sqlite(rusqlite::Connection),
    Postgres(Box<PgConnection>),
}

enum Job {
    Batch {
        batch: Vec<WriteRequest>,
        reply: oneshot::Sender<Result<Vec<Committed>, StoreError>>,
    },
    Close(oneshot::Sender<()>),
}

/// The handle the backend holds: sends batches to the thread.
pub(crate) struct WriteThread {
    jobs: mpsc::Sender<Job>,
}

impl WriteThread {
    /// Starts the thread. It connects lazily (on the first batch), so a database that is down at
    /// start fails that batch as unavailable instead of the thread.
    pub(crate) fn spawn(target: Target, status_of: StatusOf) -> Result<WriteThread, StoreError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| StoreError::Unavailable(format!("no async runtime: {e}")))?;
        std::thread::Builder::new()
            .name("signaalpoort-writer".into())
            .spawn(move || {
                let checkpoints = match &target {
                    Target::Sqlite { path, busy_timeout } => {
                        Checkpointer::spawn(path.clone(), *busy_timeout)
                    }
                    Target::Postgres { .. } => None,
                };
                let mut state = State {
                    target,
                    runtime,
                    conn: None,
                    frontier: None,
                    checkpoints,
                    status_of,
                };
                while let Ok(job) = queue.recv() {
                    match job {
                        Job::Batch { batch, reply } => {
                            let _ = reply.send(state.commit(&batch));
                        }
                        Job::Close(done) => {
                            state.close();
                            let _ = done.send(());
                            return;
                        }
                    }
                }
                state.close();
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start the write thread: {e}")))?;
        Ok(WriteThread { jobs })
    }

    pub(crate) async fn commit(
        &self,
        batch: Vec<WriteRequest>,
    ) -> Result<Vec<Committed>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Batch { batch, reply })
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Closes the write connection; later batches fail as closed.
    pub(crate) async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.jobs.send(Job::Close(done)).is_ok() {
            let _ = closed.await;
        }
    }
}

/// Copies committed WAL frames into the database file on its own connection and thread
/// (`PRAGMA wal_checkpoint(PASSIVE)`: it never blocks the writer or a reader), so no COMMIT waits
/// for a checkpoint. Each commit nudges it; it checkpoints at most every few milliseconds.
struct Checkpointer {
    nudges: Option<mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn spawn(path: PathBuf, busy_timeout: Duration) -> Option<Checkpointer> {
        let (nudges, nudged) = mpsc::sync_channel::<()>(1);
        let spawned = std::thread::Builder::new()
            .name("signaalpoort-checkpoint".into())
            .spawn(move || {
                let conn = match rusqlite::Connection::open_with_flags(
                    &path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
                        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                ) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "checkpoint connection failed; the writer checkpoints inline");
                        return;
                    }
                };
                let _ = conn.busy_timeout(busy_timeout);
                let _ = conn.pragma_update(None, "synchronous", "FULL");
                while nudged.recv().is_ok() {
                    let ran = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                        Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                    });
                    if let Err(e) = ran {
                        tracing::warn!(error = %e, "checkpoint failed; retrying on the next commit");
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
        match spawned {
            Ok(thread) => Some(Checkpointer {
                nudges: Some(nudges),
                thread: Some(thread),
            }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the checkpoint thread; the writer checkpoints inline");
                None
            }
        }
    }

    fn nudge(&self) {
        // Full: a checkpoint is already due; it will include this commit.
        if let Some(n) = &self.nudges {
            let _ = n.try_send(());
        }
    }

    /// Lets a running checkpoint finish and closes the connection: after `Store::close` nothing
    /// of the store touches the file.
    fn stop(&mut self) {
        self.nudges = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Why a batch attempt stopped: a statement of one request, or the batch itself (the head, the
/// records, the connection).
#[derive(Debug)]
enum BatchError {
    Request {
        index: usize,
        error: StoreError,
    },
    Batch(StoreError),
    /// A statement of a set-applied run failed: whose it was is not known, so the batch is applied
    /// again one request at a time.
    SetFailed(StoreError),
}

impl From<StoreError> for BatchError {
    fn from(e: StoreError) -> Self {
        BatchError::Batch(e)
    }
}

impl From<signaalpoort_core::access_log::RecordError> for BatchError {
    fn from(e: signaalpoort_core::access_log::RecordError) -> Self {
        BatchError::Batch(e.into())
    }
}

struct State {
    target: Target,
    runtime: tokio::runtime::Handle,
    conn: Option<Conn>,
    /// The Merkle tree's frontier after the last committed batch, so a batch does not re-read
    /// it. Used only when its size is the head the batch found (another replica may have
    /// appended meanwhile).
    frontier: Option<Frontier>,
    /// SQLite: nudged after each commit; copies the WAL into the database off this thread.
    checkpoints: Option<Checkpointer>,
    /// The server's status code for a refused call (the store does not know the codes).
    status_of: StatusOf,
}

impl State {
    fn is_sqlite(&self) -> bool {
        matches!(self.target, Target::Sqlite { .. })
    }

    fn connect(&self) -> Result<Conn, StoreError> {
        match &self.target {
            Target::Sqlite { path, busy_timeout } => {
                let conn = rusqlite::Connection::open_with_flags(
                    path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
                        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                // Durability is claimed, so it is set explicitly: WAL with FULL sync, never NORMAL.
                conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| {
                    r.get::<_, String>(0)
                })?;
                conn.pragma_update(None, "synchronous", "FULL")?;
                conn.pragma_update(None, "foreign_keys", "ON")?;
                conn.busy_timeout(*busy_timeout)?;
                // Checkpoints run on their own thread (`Checkpointer`), not inline in a COMMIT
                // every 1,000 pages: measured, the inline checkpoint was a tenth of the writer's
                // time and every p99 stall. This connection checkpoints only as a backstop, when
                // the WAL has grown far past what the checkpointer keeps it at.
                conn.pragma_update(None, "wal_autocheckpoint", 20_000)?;
                // After a checkpoint lets the WAL start over, its file is cut back to this.
                conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
                // Every rule's statements, the batch's and the tree's stay prepared.
                conn.set_prepared_statement_cache_capacity(128);
                Ok(Conn::Sqlite(conn))
            }
            Target::Postgres { url } => {
                let options = PgConnectOptions::from_str(url)?;
                let mut conn = self.runtime.block_on(options.connect())?;
                self.runtime.block_on(async {
                    conn.execute("SET synchronous_commit = on").await?;
                    // The writer plans each statement with its real parameters and the tables'
                    // current size. A cached generic plan, costed while `signals` was nearly
                    // empty, walked every open signal (2–10 ms per call at 15k signals).
                    conn.execute("SET plan_cache_mode = force_custom_plan")
                        .await?;
                    Ok::<_, sqlx::Error>(())
                })?;
                Ok(Conn::Postgres(Box::new(conn)))
            }
        }
    }

    fn close(&mut self) {
        if let Some(c) = &mut self.checkpoints {
            c.stop();
        }
        if let Some(Conn::Postgres(conn)) = self.conn.take() {
            let _ = self.runtime.block_on(sqlx::Connection::close(*conn));
        }
    }

    /// Runs `f` with the open connection as a [`Tx`].
    fn with_tx<R>(&mut self, f: impl FnOnce(&mut dyn Tx) -> R) -> Option<R> {
        match self.conn.as_mut()? {
            Conn::Sqlite(conn) => Some(f(&mut SqliteTx { conn })),
            Conn::Postgres(conn) => Some(f(&mut PgTx {
                conn,
                runtime: &self.runtime,
            })),
        }
    }

    fn commit(&mut self, batch: &[WriteRequest]) -> Result<Vec<Committed>, StoreError> {
        // Requests whose own statements failed; the batch is applied again without them. Each
        // attempt fails at most one more, so this ends.
        let mut failed = BTreeMap::new();
        let mut set_runs = true;
        let sqlite = self.is_sqlite();
        loop {
            if self.conn.is_none() {
                let conn = self
                    .connect()
                    .map_err(|e| StoreError::Unavailable(describe_unavailable(&e)))?;
                self.conn = Some(conn);
            }
            let begin = if sqlite { "BEGIN IMMEDIATE" } else { "BEGIN" };
            match self.with_tx(|tx| tx.execute(begin, &[])) {
                None => return Err(StoreError::Closed),
                Some(Err(e)) => {
                    // A broken connection is replaced on the next batch.
                    self.conn = None;
                    return Err(StoreError::Unavailable(describe_unavailable(&e)));
                }
                Some(Ok(_)) => {}
            }
            let cached = self.frontier.clone();
            let status_of = self.status_of;
            let Some(attempt) =
                self.with_tx(|tx| apply_batch(tx, batch, &failed, cached, set_runs, status_of))
            else {
                return Err(StoreError::Closed);
            };
            let error = match attempt {
                Ok((committed, frontier)) => {
                    let Some(done) = self.with_tx(|tx| tx.execute("COMMIT", &[])) else {
                        return Err(StoreError::Closed);
                    };
                    match done {
                        Ok(_) => {
                            self.frontier = Some(frontier);
                            if let Some(c) = &self.checkpoints {
                                c.nudge();
                            }
                            return Ok(committed);
                        }
                        Err(e) => {
                            self.frontier = None;
                            // SQLite keeps the transaction open when COMMIT fails for want of
                            // space (or a lock): rolled back, nothing happened, the writer goes on.
                            if sqlite && cannot_write_now(&e) {
                                self.rollback();
                                return Err(StoreError::Unavailable(describe_unavailable(&e)));
                            }
                            // Otherwise nobody knows whether it committed.
                            self.conn = None;
                            return Err(StoreError::CommitFailed(e.to_string()));
                        }
                    }
                }
                Err(error) => error,
            };
            self.frontier = None;
            self.rollback();
            match error {
                BatchError::SetFailed(error) if !cannot_write_now(&error) => {
                    tracing::warn!(error = %error, "a set statement failed; applying the batch one request at a time");
                    set_runs = false;
                }
                BatchError::Request { index, error } if !cannot_write_now(&error) => {
                    tracing::error!(error = %error, request = index, "a request's statement failed; applying its batch without it");
                    failed.insert(index, error.to_string());
                }
                BatchError::Request { error, .. }
                | BatchError::Batch(error)
                | BatchError::SetFailed(error) => {
                    if cannot_write_now(&error) {
                        // The connection may be dead (terminated, reset): the next batch opens
                        // a fresh one.
                        self.conn = None;
                        tracing::warn!(error = %error, "the database cannot take writes now; the batch was rolled back");
                        return Err(StoreError::Unavailable(describe_unavailable(&error)));
                    }
                    return Err(error);
                }
            }
        }
    }

    fn rollback(&mut self) {
        let ok = self
            .with_tx(|tx| tx.execute("ROLLBACK", &[]).is_ok())
            .unwrap_or(false);
        if !ok {
            self.conn = None;
        }
    }
}

/// Applies the batch inside the open transaction. The requests in `failed` are not applied: an
/// earlier attempt found one of their statements failing, so they get
/// [`Rejection::StatementFailed`] and their record says so. Returns the tree's new frontier.
fn apply_batch(
    tx: &mut dyn Tx,
    batch: &[WriteRequest],
    failed: &BTreeMap<usize, String>,
    cached: Option<Frontier>,
    set_runs: bool,
    status_of: StatusOf,
) -> Result<(Vec<Committed>, Frontier), BatchError> {
    let (mut seq, mut prev) = head(tx)?;
    // Each request's outcome, in batch order: runs of new signals as a set where they are the
    // plain case (`register_run.rs`), everything else one request at a time.
    let mut outcomes: Vec<(Outcome, bool)> = Vec::with_capacity(batch.len());
    let mut index = 0;
    while index < batch.len() {
        let run_end = if set_runs {
            (index..batch.len())
                .find(|&i| failed.contains_key(&i) || !register_run::is_new_signal(&batch[i]))
                .unwrap_or(batch.len())
        } else {
            index
        };
        if run_end > index + 1 {
            let run = &batch[index..run_end];
            if let Some(done) = register_run::apply_run(tx, run).map_err(BatchError::SetFailed)? {
                outcomes.extend(done.into_iter().map(|o| (o, false)));
                index = run_end;
                continue;
            }
        }
        let end = run_end.max(index + 1);
        for (offset, req) in batch[index..end].iter().enumerate() {
            let at = index + offset;
            outcomes.push(match failed.get(&at) {
                Some(why) => (Err(Rejection::StatementFailed(why.clone())), false),
                None => apply_request(tx, req)
                    .map_err(|error| BatchError::Request { index: at, error })?,
            });
        }
        index = end;
    }
    let mut out = Vec::with_capacity(batch.len());
    let mut records = Vec::with_capacity(batch.len());
    let mut notify = false;
    for (req, (outcome, replayed)) in batch.iter().zip(outcomes) {
        let draft = finalise_record(&req.record, &outcome, replayed, status_of);
        seq += 1;
        let record = AccessRecord::chain(seq, prev, draft)?;
        prev = record.hash;
        let mut alerts = req.alerts.clone();
        if record.draft.flagged_for_review {
            alerts.insert(
                0,
                AlertDraft {
                    kind: AlertKind::SafetyBasisUsed,
                    detail: format!("safety basis used for {}", record.draft.action),
                },
            );
        }
        for a in &alerts {
            tx.execute(
                "INSERT INTO alerts (kind, time, agency_oin, actor_id, record_seq, detail) VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    a.kind.code().into(),
                    micros(record.draft.time).into(),
                    (&record.draft.agency_oin).into(),
                    (&record.draft.actor_id).into(),
                    (seq as i64).into(),
                    (&a.detail).into(),
                ],
            )?;
        }
        notify |= !alerts.is_empty()
            || (outcome.is_ok()
                && !matches!(
                    req.mutation,
                    Mutation::None | Mutation::DeliverNotifications { .. }
                ));
        out.push(Committed {
            seq,
            outcome,
            replayed,
        });
        records.push(record);
    }
    // The records, their subject index and their Merkle leaves (issue 14), in this same
    // transaction; on PostgreSQL in one statement.
    let [log, subjects] = record_rows(&records)?;
    let (leaves, frontier) = leaf_rows(tx, &records, cached)?;
    tx.insert_all(vec![log, subjects, leaves])?;
    if tx.is_postgres() {
        // The new head, and the wake-up for other replicas' watchers (delivered on commit).
        tx.execute(
            &format!(
                "WITH h AS (UPDATE log_head SET seq = $1, hash = $2 WHERE id = 1) SELECT pg_notify('{CHANGES_CHANNEL}', 'c') WHERE $3"
            ),
            &[(seq as i64).into(), prev.to_vec().into(), notify.into()],
        )?;
    }
    Ok((out, frontier))
}

/// The chain head: the last record's seq and hash (the anchor when retention removed them all).
fn head(tx: &mut dyn Tx) -> Result<(u64, [u8; 32]), StoreError> {
    if tx.is_postgres() {
        // The lock that orders write transactions across replicas.
        let row = tx.query_one(
            "SELECT seq, hash FROM log_head WHERE id = 1 FOR UPDATE",
            &[],
        )?;
        return Ok((row.int(0)? as u64, hash32(row.blob(1)?, "log head")?));
    }
    if let Some(row) = tx.query_opt(
        "SELECT seq, hash FROM access_log ORDER BY seq DESC LIMIT 1",
        &[],
    )? {
        return Ok((row.int(0)? as u64, hash32(row.blob(1)?, "log head")?));
    }
    // Empty: a fresh log, or (never in practice) retention removed every record.
    match tx.query_opt("SELECT seq, hash FROM log_anchor WHERE id = 1", &[])? {
        Some(row) => Ok((row.int(0)? as u64, hash32(row.blob(1)?, "log anchor")?)),
        None => Ok((0, GENESIS_HASH)),
    }
}

/// The inserts of a batch's records (already chained, in seq order) and their subject index rows.
fn record_rows(records: &[AccessRecord]) -> Result<[Rows<'static>; 2], StoreError> {
    const COLUMNS: usize = 22;
    let mut params: Vec<Value> = Vec::with_capacity(records.len() * COLUMNS);
    for r in records {
        let d = &r.draft;
        params.extend([
            (r.seq as i64).into(),
            micros(d.time).into(),
            (&d.agency_oin).into(),
            d.role.map(|x| x.code().to_owned()).into(),
            (&d.actor_id).into(),
            (&d.action).into(),
            json(&d.subjects)?.into(),
            (&d.household_id).into(),
            d.purpose.map(|x| x.code().to_owned()).into(),
            d.basis.map(|x| x.code().to_owned()).into(),
            d.decision.code().into(),
            (&d.reason).into(),
            i64::from(d.status_code).into(),
            (&d.request_id).into(),
            (&d.cert_fingerprint).into(),
            (&d.justification).into(),
            d.flagged_for_review.into(),
            (&d.trace_id).into(),
            (&d.span_id).into(),
            (&d.object_id).into(),
            r.prev_hash.to_vec().into(),
            r.hash.to_vec().into(),
        ]);
    }
    let records_rows = Rows {
        head: "INSERT INTO access_log (seq, time, agency_oin, role, actor_id, action, subjects, household_id, purpose, basis, decision, reason, status_code, request_id, cert_fingerprint, justification, flagged, trace_id, span_id, object_id, prev_hash, hash)",
        tail: "",
        width: COLUMNS,
        params,
    };
    let mut subjects: Vec<Value> = Vec::new();
    for r in records {
        for s in &r.draft.subjects {
            if let Some(p) = SubjectPseudonym::from_hex(s) {
                subjects.push(p.as_bytes().to_vec().into());
                subjects.push((r.seq as i64).into());
            }
        }
    }
    Ok([
        records_rows,
        Rows {
            head: "INSERT INTO access_log_subjects (subject, seq)",
            tail: " ON CONFLICT DO NOTHING",
            width: 2,
            params: subjects,
        },
    ])
}

/// The stored tree's frontier at `size` leaves; an error when the tree lacks a node there.
fn stored_frontier(tx: &mut dyn Tx, size: u64) -> Result<Frontier, StoreError> {
    let indexes = tree::frontier_indexes(size);
    let mut found: BTreeMap<u64, NodeHash> = BTreeMap::new();
    if !indexes.is_empty() {
        let list = (1..=indexes.len())
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let params: Vec<Value> = indexes
            .iter()
            .map(|i| Value::from(i64::try_from(*i).unwrap_or(i64::MAX)))
            .collect();
        for row in tx.query(
            &format!("SELECT idx, hash FROM log_tree WHERE idx IN ({list})"),
            &params,
        )? {
            found.insert(row.int(0)? as u64, hash32(row.blob(1)?, "a tree hash")?);
        }
    }
    let hashes = indexes
        .iter()
        .map(|i| {
            found.get(i).copied().ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "the access-log Merkle tree lacks node {i} of a tree of {size} records"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Frontier::from_hashes(size, &hashes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The tree rows of a batch's records' leaves (in seq order, directly after the tree's current
/// size), and the frontier after them.
fn leaf_rows(
    tx: &mut dyn Tx,
    records: &[AccessRecord],
    cached: Option<Frontier>,
) -> Result<(Rows<'static>, Frontier), StoreError> {
    let Some(first) = records.first() else {
        let empty = Rows {
            head: "INSERT INTO log_tree (idx, hash)",
            tail: "",
            width: 2,
            params: Vec::new(),
        };
        return Ok((empty, cached.unwrap_or_default()));
    };
    let size = first.seq - 1;
    let mut f = match cached {
        Some(f) if f.size() == size => f,
        _ => stored_frontier(tx, size)?,
    };
    let mut params: Vec<Value> = Vec::with_capacity(records.len() * 4);
    for r in records {
        for (i, h) in f.append(&r.hash) {
            params.push(i64::try_from(i).unwrap_or(i64::MAX).into());
            params.push(h.to_vec().into());
        }
    }
    let rows = Rows {
        head: "INSERT INTO log_tree (idx, hash)",
        tail: "",
        width: 2,
        params,
    };
    Ok((rows, f))
}

/// Whether an error says the database cannot take writes for now (no space, I/O, lost connection,
/// server shutting down) rather than that a statement was wrong. Such errors fail the whole batch
/// as UNAVAILABLE and leave the writer running, so the gateway recovers once the cause is gone.
pub(crate) fn cannot_write_now(e: &StoreError) -> bool {
    match e {
        StoreError::Unavailable(_) => true,
        // SQLite primary codes (the low byte of the extended code): BUSY, NOMEM, READONLY, IOERR,
        // CORRUPT, FULL, CANTOPEN.
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => {
            matches!(f.extended_code & 0xff, 5 | 7 | 8 | 10 | 11 | 13 | 14)
        }
        StoreError::Database(e) => match e {
            sqlx::Error::Database(db) => {
                let code = db.code().unwrap_or_default();
                match code.parse::<i32>() {
                    Ok(n) => matches!(n & 0xff, 5 | 7 | 8 | 10 | 11 | 13 | 14),
                    // PostgreSQL SQLSTATE classes: connection exception, insufficient resources,
                    // operator intervention, system error.
                    Err(_) => ["08", "53", "57", "58"].iter().any(|c| code.starts_with(c)),
                }
            }
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            _ => false,
        },
        _ => false,
    }
}

/// What an operator should read for an error that stopped writes.
pub(crate) fn describe_unavailable(e: &StoreError) -> String {
    match e {
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, msg))
            if f.extended_code & 0xff == 13 =>
        {
            format!(
                "the disk is full: {}",
                msg.as_deref().unwrap_or("database or disk is full")
            )
        }
        StoreError::Database(sqlx::Error::Database(db)) => {
            let code = db.code().unwrap_or_default();
            if code.parse::<i32>().is_ok_and(|n| n & 0xff == 13) || code == "53100" {
                format!("the disk is full: {db}")
            } else if code.starts_with("57") || code.starts_with("08") {
                format!("the database connection was lost: {db}")
            } else {
                e.to_string()
            }
        }
        StoreError::Database(sqlx::Error::Io(io)) => {
            format!("the database connection was lost: {io}")
        }
        other => other.to_string(),
    }
}
