//! The one implementation of [`Backend`], over sqlx's `Any` driver: SQLite and PostgreSQL run the
//! same statements, so neither has behaviour the other lacks. What differs is in [`Dialect`]:
//!
//! - **Write transactions.** SQLite: one dedicated write connection, `BEGIN IMMEDIATE` (a plain
//!   BEGIN that later writes fails at once with SQLITE_BUSY), `synchronous=FULL` in WAL mode.
//!   PostgreSQL: READ COMMITTED, `synchronous_commit=on`, and every write transaction first locks
//!   the one-row `log_head` (`SELECT … FOR UPDATE`). That lock totally orders write transactions
//!   across replicas: the chain gets one order, and a transaction sees every signal committed
//!   before it, so two replicas registering on one household cannot miss each other's match.
//! - **Change fan-out.** PostgreSQL: `pg_notify` inside the transaction (delivered on commit) wakes
//!   the other replicas' watchers; they re-read by cursor, so a missed notify loses nothing.
//!
//! Every statement uses `$n` placeholders in ascending order of first use (SQLite reads `$n` as a
//! named parameter, numbered in order of appearance).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use signaalpoort_core::access_log::tree::NodeHash;
use signaalpoort_core::access_log::{
    AccessRecord, DecisionCode, RecordDraft, SignedCheckpoint, GENESIS_HASH,
};
use signaalpoort_core::chronicity::Quarter;
use signaalpoort_core::consent::ConsentRecord;
use signaalpoort_core::coordination::{self, CoordinationError, CoordinationState};
use signaalpoort_core::involvement::MatchLevel;
use signaalpoort_core::{Basis, Category, ContactPoint, Oin, Purpose, Role, SubjectPseudonym};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{AnyConnection, AnyPool, ConnectOptions, Connection, Executor, Row};
use time::OffsetDateTime;
use tokio::sync::{watch, Mutex};

use crate::writer::finalise_record;
use crate::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// How long ended signals and dissolved households stay (so watchers can still be told a match
/// ended) before the purge deletes them.
const ENDED_GRACE: time::Duration = time::Duration::days(7);

const CHANGES_CHANNEL: &str = "signaalpoort_changes";

/// Checks, before any connection is tried, that the SQLite file can be created or opened for
/// writing, so a missing, read-only or unwritable data directory is named with its cause at once
/// (not as a pool timeout). The file is made readable by its owner only.
fn usable_database_file(path: &std::path::Path) -> Result<(), StoreError> {
    let fail = |p: &std::path::Path, cause: String| StoreError::DataDir {
        path: p.display().to_string(),
        cause,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| fail(dir, format!("cannot create it: {e}")))?;
        let probe = dir.join(".signaalpoort-write-check");
        std::fs::write(&probe, b"").map_err(|e| {
            fail(
                dir,
                format!("cannot write in it (SQLite needs to, for its journal): {e}"),
            )
        })?;
        let _ = std::fs::remove_file(&probe);
    }
    let existed = path.exists();
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| {
            fail(
                path,
                format!("cannot open the database file for writing: {e}"),
            )
        })?;
    if !existed {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| fail(path, format!("cannot restrict its permissions: {e}")))?;
    }
    Ok(())
}

/// Free bytes for unprivileged writers on the file system holding `dir`.
fn free_bytes(dir: &std::path::Path) -> Result<u64, StoreError> {
    let st = rustix::fs::statvfs(dir).map_err(|e| StoreError::DataDir {
        path: dir.display().to_string(),
        cause: format!("cannot read its free space: {e}"),
    })?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Why a batch attempt stopped: a statement of one request, or the batch itself (the head, the
/// records, the connection).
#[derive(Debug)]
enum BatchError {
    Request { index: usize, error: StoreError },
    Batch(StoreError),
}

impl From<StoreError> for BatchError {
    fn from(e: StoreError) -> Self {
        BatchError::Batch(e)
    }
}

impl From<sqlx::Error> for BatchError {
    fn from(e: sqlx::Error) -> Self {
        BatchError::Batch(e.into())
    }
}

impl From<signaalpoort_core::access_log::RecordError> for BatchError {
    fn from(e: signaalpoort_core::access_log::RecordError) -> Self {
        BatchError::Batch(e.into())
    }
}

/// Whether an error says the database cannot take writes for now (no space, I/O, lost connection,
/// server shutting down) rather than that a statement was wrong. Such errors fail the whole batch
/// as UNAVAILABLE and leave the writer running, so the gateway recovers once the cause is gone.
fn cannot_write_now(e: &StoreError) -> bool {
    let StoreError::Database(e) = e else {
        return matches!(e, StoreError::Unavailable(_));
    };
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            match code.parse::<i32>() {
                // SQLite primary codes (the low byte of the extended code): BUSY, NOMEM, READONLY,
                // IOERR, CORRUPT, FULL, CANTOPEN.
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
    }
}

/// What an operator should read for an error that stopped writes.
fn describe_unavailable(e: &StoreError) -> String {
    if let StoreError::Database(sqlx::Error::Database(db)) = e {
        let code = db.code().unwrap_or_default();
        if code.parse::<i32>().is_ok_and(|n| n & 0xff == 13) || code == "53100" {
            return format!("the disk is full: {db}");
        }
    }
    if let StoreError::Database(sqlx::Error::Io(io)) = e {
        return format!("the database connection was lost: {io}");
    }
    if let StoreError::Database(sqlx::Error::Database(db)) = e {
        if db
            .code()
            .is_some_and(|c| c.starts_with("57") || c.starts_with("08"))
        {
            return format!("the database connection was lost: {db}");
        }
    }
    e.to_string()
}

pub(crate) struct SqlBackend {
    dialect: Dialect,
    url: String,
    read: AnyPool,
    write: Mutex<Option<AnyConnection>>,
    options: StoreOptions,
    /// Set by `close`: the change listener lets go of its connection.
    closed: watch::Sender<bool>,
    /// The directory of the SQLite database file, for the free-space check (`None`: PostgreSQL).
    sqlite_dir: Option<std::path::PathBuf>,
}

fn micros(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1000) as i64
}

fn from_micros(v: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(v) * 1000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt(what.into())
}

fn hash32(v: Vec<u8>, what: &str) -> Result<[u8; 32], StoreError> {
    v.try_into()
        .map_err(|_| corrupt(format!("{what} is not 32 bytes")))
}

fn subject(v: Vec<u8>) -> Result<SubjectPseudonym, StoreError> {
    Ok(SubjectPseudonym::from_bytes(hash32(v, "subject")?))
}

fn oin(s: String) -> Result<Oin, StoreError> {
    Oin::parse(&s).map_err(|_| corrupt(format!("bad OIN {s:?}")))
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| corrupt(e.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| corrupt(e.to_string()))
}

const SIGNAL_COLUMNS: &str = "id, agency_oin, subject, category, contact_team, contact_phone, contact_email, registered_at, refreshed_at, expires_at, withdrawn_at";

fn signal_row(r: &AnyRow) -> Result<SignalRow, StoreError> {
    Ok(SignalRow {
        id: r.try_get(0)?,
        agency: oin(r.try_get(1)?)?,
        subject: subject(r.try_get(2)?)?,
        category: Category::from_code(&r.try_get::<String, _>(3)?)
            .ok_or_else(|| corrupt("category"))?,
        contact: ContactPoint {
            team: r.try_get(4)?,
            phone: r.try_get(5)?,
            email: r.try_get(6)?,
        },
        registered_at: from_micros(r.try_get(7)?),
        refreshed_at: from_micros(r.try_get(8)?),
        expires_at: from_micros(r.try_get(9)?),
        withdrawn_at: r.try_get::<Option<i64>, _>(10)?.map(from_micros),
    })
}

/// Other agencies' active signals matching a signal of `agency` on `subject`, at `now`: same
/// subject (level 1), or another unprotected member of a live household in which the subject is an
/// unprotected member (level 2).
const MATCHES_SQL: &str = "
SELECT s.id, s.agency_oin, s.subject, s.category, s.contact_team, s.contact_phone, s.contact_email, s.registered_at, 1 AS level
  FROM signals s
 WHERE s.subject = $1 AND s.agency_oin <> $2 AND s.withdrawn_at IS NULL AND s.expires_at > $3
UNION
SELECT s.id, s.agency_oin, s.subject, s.category, s.contact_team, s.contact_phone, s.contact_email, s.registered_at, 2 AS level
  FROM household_members m1
  JOIN households h ON h.id = m1.household_id AND h.dissolved_at IS NULL
  JOIN household_members m2 ON m2.household_id = m1.household_id AND m2.subject <> m1.subject AND m2.protected = FALSE
  JOIN signals s ON s.subject = m2.subject
 WHERE m1.subject = $1 AND m1.protected = FALSE AND s.agency_oin <> $2 AND s.withdrawn_at IS NULL AND s.expires_at > $3";

fn match_rows(rows: &[AnyRow]) -> Result<Vec<MatchRow>, StoreError> {
    // A signal reachable at both levels, or through two households, appears once at its closest.
    let mut by_id: BTreeMap<String, MatchRow> = BTreeMap::new();
    for r in rows {
        let level = if r.try_get::<i64, _>(8)? == 1 {
            MatchLevel::Subject
        } else {
            MatchLevel::Household
        };
        let m = MatchRow {
            signal_id: r.try_get(0)?,
            agency: oin(r.try_get(1)?)?,
            subject: subject(r.try_get(2)?)?,
            category: Category::from_code(&r.try_get::<String, _>(3)?)
                .ok_or_else(|| corrupt("category"))?,
            contact: ContactPoint {
                team: r.try_get(4)?,
                phone: r.try_get(5)?,
                email: r.try_get(6)?,
            },
            since: from_micros(r.try_get(7)?),
            level,
        };
        match by_id.get(&m.signal_id) {
            Some(existing) if existing.level <= m.level => {}
            _ => {
                by_id.insert(m.signal_id.clone(), m);
            }
        }
    }
    let mut out: Vec<MatchRow> = by_id.into_values().collect();
    out.sort_by(|a, b| (a.since, &a.signal_id).cmp(&(b.since, &b.signal_id)));
    Ok(out)
}

async fn matches_on<'c, E: Executor<'c, Database = sqlx::Any>>(
    e: E,
    agency: &Oin,
    subject: &SubjectPseudonym,
    now: OffsetDateTime,
) -> Result<Vec<MatchRow>, StoreError> {
    let rows = sqlx::query(MATCHES_SQL)
        .bind(subject.as_bytes().to_vec())
        .bind(agency.to_string())
        .bind(micros(now))
        .fetch_all(e)
        .await?;
    match_rows(&rows)
}

const CONSENT_COLUMNS: &str = "c.id, c.recorded_by, c.subject, CASE WHEN c.include_household THEN 1 ELSE 0 END, c.givers, c.purposes, c.roles, c.agencies, c.recorded_at, c.valid_until, c.renew_by, c.withdrawn_at, c.evidence_ref";

fn consent_row(r: &AnyRow) -> Result<ConsentRecord, StoreError> {
    let renew_by: Option<String> = r.try_get(10)?;
    Ok(ConsentRecord {
        id: r.try_get(0)?,
        recorded_by: oin(r.try_get(1)?)?,
        subject: subject(r.try_get(2)?)?,
        include_household: r.try_get::<i64, _>(3)? != 0,
        givers: from_json(&r.try_get::<String, _>(4)?)?,
        purposes: from_json(&r.try_get::<String, _>(5)?)?,
        roles: from_json(&r.try_get::<String, _>(6)?)?,
        agencies: from_json(&r.try_get::<String, _>(7)?)?,
        recorded_at: from_micros(r.try_get(8)?),
        valid_until: from_micros(r.try_get(9)?),
        renew_by: match renew_by {
            Some(s) => Some(
                time::Date::parse(&s, &time::format_description::well_known::Iso8601::DATE)
                    .map_err(|_| corrupt("renew_by"))?,
            ),
            None => None,
        },
        withdrawn_at: r.try_get::<Option<i64>, _>(11)?.map(from_micros),
        evidence_ref: r.try_get(12)?,
    })
}

const RECORD_COLUMNS: &str = "seq, time, agency_oin, role, actor_id, action, subjects, household_id, purpose, basis, decision, reason, status_code, request_id, cert_fingerprint, justification, CASE WHEN flagged THEN 1 ELSE 0 END, trace_id, span_id, object_id, prev_hash, hash";

fn record_row(r: &AnyRow) -> Result<AccessRecord, StoreError> {
    let code =
        |i: usize| -> Result<Option<String>, StoreError> { Ok(r.try_get::<Option<String>, _>(i)?) };
    let draft = RecordDraft {
        time: from_micros(r.try_get(1)?),
        agency_oin: r.try_get(2)?,
        role: code(3)?
            .map(|c| Role::from_code(&c).ok_or_else(|| corrupt("role")))
            .transpose()?,
        actor_id: r.try_get(4)?,
        action: r.try_get(5)?,
        subjects: from_json(&r.try_get::<String, _>(6)?)?,
        household_id: r.try_get(7)?,
        purpose: code(8)?
            .map(|c| Purpose::from_code(&c).ok_or_else(|| corrupt("purpose")))
            .transpose()?,
        basis: code(9)?
            .map(|c| Basis::from_code(&c).ok_or_else(|| corrupt("basis")))
            .transpose()?,
        decision: DecisionCode::from_code(&r.try_get::<String, _>(10)?)
            .ok_or_else(|| corrupt("decision"))?,
        reason: r.try_get(11)?,
        status_code: r.try_get::<i64, _>(12)? as i32,
        request_id: r.try_get(13)?,
        cert_fingerprint: r.try_get(14)?,
        justification: r.try_get(15)?,
        flagged_for_review: r.try_get::<i64, _>(16)? != 0,
        trace_id: r.try_get(17)?,
        span_id: r.try_get(18)?,
        object_id: r.try_get(19)?,
    };
    Ok(AccessRecord {
        seq: r.try_get::<i64, _>(0)? as u64,
        prev_hash: hash32(r.try_get(20)?, "prev_hash")?,
        draft,
        hash: hash32(r.try_get(21)?, "hash")?,
    })
}

fn alert_row(r: &AnyRow) -> Result<AlertRow, StoreError> {
    Ok(AlertRow {
        cursor: r.try_get::<i64, _>(0)? as u64,
        kind: AlertKind::from_code(&r.try_get::<String, _>(1)?)
            .ok_or_else(|| corrupt("alert kind"))?,
        time: from_micros(r.try_get(2)?),
        agency_oin: r.try_get(3)?,
        actor_id: r.try_get(4)?,
        record_seq: r.try_get::<i64, _>(5)? as u64,
        detail: r.try_get(6)?,
    })
}

/// Clamps a client-supplied cursor into the database's signed range.
fn cursor(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl SqlBackend {
    pub(crate) async fn open(url: &str, options: &StoreOptions) -> Result<SqlBackend, StoreError> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else {
            Dialect::Postgres
        };
        let (url, sqlite_dir) = match dialect {
            Dialect::Sqlite => {
                let path = url
                    .trim_start_matches("sqlite://")
                    .trim_start_matches("sqlite:");
                let path = path.split('?').next().unwrap_or(path);
                let mode = if options.read_only {
                    "ro"
                } else {
                    usable_database_file(std::path::Path::new(path))?;
                    "rwc"
                };
                let dir = std::path::Path::new(path)
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(std::path::Path::new("."))
                    .to_path_buf();
                (format!("sqlite://{path}?mode={mode}"), Some(dir))
            }
            Dialect::Postgres => (url.to_owned(), None),
        };
        let busy_ms = options.busy_timeout.as_millis();
        let read = AnyPoolOptions::new()
            .max_connections(options.read_connections.max(1))
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    session_setup(conn, dialect, busy_ms).await?;
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        let backend = SqlBackend {
            dialect,
            url,
            read,
            write: Mutex::new(None),
            options: options.clone(),
            closed: watch::Sender::new(false),
            sqlite_dir,
        };
        if !options.read_only {
            let mut guard = backend.write.lock().await;
            let conn = backend.writer(&mut guard).await?;
            match dialect {
                Dialect::Sqlite => {
                    sqlx::migrate!("./migrations/sqlite")
                        .run(&mut *conn)
                        .await?
                }
                Dialect::Postgres => {
                    sqlx::migrate!("./migrations/postgres")
                        .run(&mut *conn)
                        .await?
                }
            }
            // Issue 14: a database from before the Merkle tree gets its tree built once.
            crate::merkle::catch_up_at_open(conn, dialect == Dialect::Sqlite).await?;
        }
        Ok(backend)
    }

    async fn writer<'a>(
        &self,
        guard: &'a mut Option<AnyConnection>,
    ) -> Result<&'a mut AnyConnection, StoreError> {
        if guard.is_none() {
            let options = AnyConnectOptions::from_str(&self.url)?;
            let mut conn = options.connect().await?;
            session_setup(
                &mut conn,
                self.dialect,
                self.options.busy_timeout.as_millis(),
            )
            .await?;
            if self.dialect == Dialect::Postgres {
                // The writer plans each statement with its real parameters and the tables'
                // current size. Its tables grow under it, and a cached generic plan is costed
                // once and kept: measured, the match query's generic plan, made while `signals`
                // was nearly empty, walked every open signal (2–10 ms per call at 15k signals).
                // Re-planning costs less (benchmark: 443 → 1,237 writes/s at 64 in flight).
                conn.execute("SET plan_cache_mode = force_custom_plan")
                    .await?;
            }
            *guard = Some(conn);
        }
        guard.as_mut().ok_or(StoreError::Closed)
    }

    /// Applies the batch inside the open transaction. The requests in `failed` are not applied:
    /// an earlier attempt found one of their statements failing, so they get
    /// [`Rejection::StatementFailed`] and their record says so.
    async fn apply_batch(
        &self,
        conn: &mut AnyConnection,
        batch: &[WriteRequest],
        failed: &BTreeMap<usize, String>,
    ) -> Result<(Vec<Committed>, bool), BatchError> {
        let (mut seq, mut prev) = match self.dialect {
            Dialect::Postgres => {
                let row = sqlx::query("SELECT seq, hash FROM log_head WHERE id = 1 FOR UPDATE")
                    .fetch_one(&mut *conn)
                    .await?;
                (
                    row.try_get::<i64, _>(0)? as u64,
                    hash32(row.try_get(1)?, "log head")?,
                )
            }
            Dialect::Sqlite => {
                match sqlx::query("SELECT seq, hash FROM access_log ORDER BY seq DESC LIMIT 1")
                    .fetch_optional(&mut *conn)
                    .await?
                {
                    Some(row) => (
                        row.try_get::<i64, _>(0)? as u64,
                        hash32(row.try_get(1)?, "log head")?,
                    ),
                    // Empty: a fresh log, or (never in practice) retention removed every record.
                    None => match sqlx::query("SELECT seq, hash FROM log_anchor WHERE id = 1")
                        .fetch_optional(&mut *conn)
                        .await?
                    {
                        Some(row) => (
                            row.try_get::<i64, _>(0)? as u64,
                            hash32(row.try_get(1)?, "log anchor")?,
                        ),
                        None => (0, GENESIS_HASH),
                    },
                }
            }
        };
        let mut out = Vec::with_capacity(batch.len());
        let mut records = Vec::with_capacity(batch.len());
        let mut notify = false;
        for (index, req) in batch.iter().enumerate() {
            let (outcome, replayed) = match failed.get(&index) {
                Some(why) => (Err(Rejection::StatementFailed(why.clone())), false),
                None => apply_request(&mut *conn, req)
                    .await
                    .map_err(|error| BatchError::Request { index, error })?,
            };
            let draft = finalise_record(&req.record, &outcome, replayed);
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
                sqlx::query("INSERT INTO alerts (kind, time, agency_oin, actor_id, record_seq, detail) VALUES ($1, $2, $3, $4, $5, $6)")
                    .bind(a.kind.code())
                    .bind(micros(record.draft.time))
                    .bind(record.draft.agency_oin.clone())
                    .bind(record.draft.actor_id.clone())
                    .bind(seq as i64)
                    .bind(a.detail.clone())
                    .execute(&mut *conn)
                    .await?;
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
        insert_records(&mut *conn, &records).await?;
        // Issue 14: the records' Merkle leaves, in this same transaction (see merkle.rs).
        crate::merkle::append_leaves(&mut *conn, &records).await?;
        if self.dialect == Dialect::Postgres {
            sqlx::query("UPDATE log_head SET seq = $1, hash = $2 WHERE id = 1")
                .bind(seq as i64)
                .bind(prev.to_vec())
                .execute(&mut *conn)
                .await?;
            if notify {
                sqlx::query(&format!("SELECT pg_notify('{CHANGES_CHANNEL}', 'c')"))
                    .execute(&mut *conn)
                    .await?;
            }
        }
        Ok((out, notify))
    }
}

impl SqlBackend {
    /// Notifications of one recipient, with the other signal as it is now and whether the MATCH a
    /// MATCH_ENDED belongs to was delivered. `tail` filters on `$2` and orders.
    async fn notifications_where(
        &self,
        tail: &str,
        recipient: &Oin,
        after: u64,
        limit: u32,
    ) -> Result<Vec<NotificationRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT n.cursor, n.kind, n.recipient_signal_id, r.subject, n.other_signal_id, o.agency_oin, o.subject, o.category, o.contact_team, o.contact_phone, o.contact_email, o.registered_at, n.level, n.household_id, n.coordination_event, n.occurred_at, n.recipient_seq,
                    CASE WHEN n.kind = 'match_ended' AND EXISTS (SELECT 1 FROM notifications d WHERE d.recipient_signal_id = n.recipient_signal_id AND d.other_signal_id = n.other_signal_id AND d.kind = 'match' AND d.recipient_seq IS NOT NULL) THEN 1 ELSE 0 END
               FROM notifications n
               JOIN signals r ON r.id = n.recipient_signal_id
               LEFT JOIN signals o ON o.id = n.other_signal_id
              WHERE n.recipient_oin = $1 AND {tail} LIMIT $3"
        ))
        .bind(recipient.to_string())
        .bind(cursor(after))
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let other = match r.try_get::<Option<String>, _>(5)? {
                Some(agency) => Some(MatchRow {
                    signal_id: r.try_get::<Option<String>, _>(4)?.unwrap_or_default(),
                    agency: oin(agency)?,
                    subject: subject(r.try_get(6)?)?,
                    category: Category::from_code(&r.try_get::<String, _>(7)?)
                        .ok_or_else(|| corrupt("category"))?,
                    contact: ContactPoint {
                        team: r.try_get(8)?,
                        phone: r.try_get(9)?,
                        email: r.try_get(10)?,
                    },
                    since: from_micros(r.try_get(11)?),
                    level: if r.try_get::<Option<i64>, _>(12)? == Some(2) {
                        MatchLevel::Household
                    } else {
                        MatchLevel::Subject
                    },
                }),
                None => None,
            };
            out.push(NotificationRow {
                id: r.try_get::<i64, _>(0)? as u64,
                seq: r.try_get::<Option<i64>, _>(16)?.map(|s| s as u64),
                recipient: recipient.clone(),
                kind: NotificationKind::from_code(&r.try_get::<String, _>(1)?)
                    .ok_or_else(|| corrupt("notification kind"))?,
                recipient_signal_id: r.try_get(2)?,
                recipient_subject: subject(r.try_get(3)?)?,
                other,
                household_id: r.try_get(13)?,
                coordination_event: r.try_get(14)?,
                occurred_at: from_micros(r.try_get(15)?),
                match_delivered: r.try_get::<i64, _>(17)? == 1,
            });
        }
        Ok(out)
    }

    /// The person's birth date from the newest live declaration that gives one.
    async fn declared_birth_date(
        &self,
        person: &SubjectPseudonym,
    ) -> Result<Option<time::Date>, StoreError> {
        let row = sqlx::query("SELECT m.birth_date FROM household_members m JOIN households h ON h.id = m.household_id AND h.dissolved_at IS NULL WHERE m.subject = $1 AND m.birth_date IS NOT NULL ORDER BY m.declared_at DESC LIMIT 1")
            .bind(person.as_bytes().to_vec())
            .fetch_optional(&self.read)
            .await?;
        match row {
            None => Ok(None),
            Some(r) => {
                let text: String = r.try_get(0)?;
                let format = time::macros::format_description!("[year]-[month]-[day]");
                time::Date::parse(&text, &format)
                    .map(Some)
                    .map_err(|_| corrupt("birth date"))
            }
        }
    }
}

async fn session_setup(
    conn: &mut AnyConnection,
    dialect: Dialect,
    busy_ms: u128,
) -> Result<(), sqlx::Error> {
    match dialect {
        Dialect::Sqlite => {
            // Durability is claimed, so it is set explicitly: WAL with FULL sync, never NORMAL.
            for pragma in [
                "PRAGMA journal_mode = WAL",
                "PRAGMA synchronous = FULL",
                "PRAGMA foreign_keys = ON",
            ] {
                conn.execute(pragma).await?;
            }
            conn.execute(format!("PRAGMA busy_timeout = {busy_ms}").as_str())
                .await?;
        }
        Dialect::Postgres => {
            conn.execute("SET synchronous_commit = on").await?;
        }
    }
    Ok(())
}

/// Access-log rows per INSERT: a batch's records go in a few statements, not one per call — on
/// SQLite every statement is a round trip to the connection's worker thread, inside the write lock.
const RECORDS_PER_INSERT: usize = 256;

/// Inserts a batch's records (already chained, in seq order) and their subject index rows.
async fn insert_records(
    conn: &mut AnyConnection,
    records: &[AccessRecord],
) -> Result<(), StoreError> {
    const COLUMNS: usize = 22;
    for chunk in records.chunks(RECORDS_PER_INSERT) {
        let mut sql = String::from(
            "INSERT INTO access_log (seq, time, agency_oin, role, actor_id, action, subjects, household_id, purpose, basis, decision, reason, status_code, request_id, cert_fingerprint, justification, flagged, trace_id, span_id, object_id, prev_hash, hash) VALUES ",
        );
        push_placeholders(&mut sql, chunk.len(), COLUMNS);
        let mut q = sqlx::query(&sql);
        for r in chunk {
            let d = &r.draft;
            q = q
                .bind(r.seq as i64)
                .bind(micros(d.time))
                .bind(d.agency_oin.clone())
                .bind(d.role.map(|x| x.code().to_owned()))
                .bind(d.actor_id.clone())
                .bind(d.action.clone())
                .bind(json(&d.subjects)?)
                .bind(d.household_id.clone())
                .bind(d.purpose.map(|x| x.code().to_owned()))
                .bind(d.basis.map(|x| x.code().to_owned()))
                .bind(d.decision.code())
                .bind(d.reason.clone())
                .bind(i64::from(d.status_code))
                .bind(d.request_id.clone())
                .bind(d.cert_fingerprint.clone())
                .bind(d.justification.clone())
                .bind(d.flagged_for_review)
                .bind(d.trace_id.clone())
                .bind(d.span_id.clone())
                .bind(d.object_id.clone())
                .bind(r.prev_hash.to_vec())
                .bind(r.hash.to_vec());
        }
        q.execute(&mut *conn).await?;
    }
    let mut subjects: Vec<(SubjectPseudonym, i64)> = Vec::new();
    for r in records {
        for s in &r.draft.subjects {
            if let Some(p) = SubjectPseudonym::from_hex(s) {
                subjects.push((p, r.seq as i64));
            }
        }
    }
    for chunk in subjects.chunks(RECORDS_PER_INSERT * 2) {
        let mut sql = String::from("INSERT INTO access_log_subjects (subject, seq) VALUES ");
        push_placeholders(&mut sql, chunk.len(), 2);
        sql.push_str(" ON CONFLICT DO NOTHING");
        let mut q = sqlx::query(&sql);
        for (p, seq) in chunk {
            q = q.bind(p.as_bytes().to_vec()).bind(*seq);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Appends `($1, ..., $w), ($w+1, ...)` for `rows` rows of `width` parameters.
fn push_placeholders(sql: &mut String, rows: usize, width: usize) {
    use std::fmt::Write;
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for col in 0..width {
            let _ = write!(
                sql,
                "{}${}",
                if col == 0 { "" } else { ", " },
                row * width + col + 1
            );
        }
        sql.push(')');
    }
}

/// Live signals on the unprotected members of a household.
async fn household_signals_on<'c, E: Executor<'c, Database = sqlx::Any>>(
    e: E,
    household_id: &str,
    now: OffsetDateTime,
) -> Result<Vec<SignalRow>, StoreError> {
    let columns = SIGNAL_COLUMNS
        .split(", ")
        .map(|c| format!("s.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let rows = sqlx::query(&format!(
        "SELECT {columns} FROM signals s JOIN household_members m ON m.subject = s.subject \
         JOIN households h ON h.id = m.household_id \
         WHERE m.household_id = $1 AND m.protected = FALSE AND h.dissolved_at IS NULL \
         AND s.withdrawn_at IS NULL AND s.expires_at > $2 ORDER BY s.registered_at, s.id"
    ))
    .bind(household_id.to_owned())
    .bind(micros(now))
    .fetch_all(e)
    .await?;
    rows.iter().map(signal_row).collect()
}

fn coordination_from_json(state: &str) -> Result<CoordinationState, StoreError> {
    serde_json::from_str(state).map_err(|e| StoreError::Corrupt(format!("coordination state: {e}")))
}

async fn coordination_on<'c, E: Executor<'c, Database = sqlx::Any>>(
    e: E,
    household_id: &str,
) -> Result<CoordinationRow, StoreError> {
    match sqlx::query("SELECT state, last_reminder FROM coordinations WHERE household_id = $1")
        .bind(household_id.to_owned())
        .fetch_optional(e)
        .await?
    {
        Some(row) => Ok(CoordinationRow {
            state: coordination_from_json(&row.try_get::<String, _>(0)?)?,
            last_reminder: row.try_get::<Option<i64>, _>(1)?.map(from_micros),
        }),
        None => Ok(CoordinationRow::default()),
    }
}

async fn save_coordination(
    conn: &mut AnyConnection,
    household_id: &str,
    state: &CoordinationState,
    last_reminder: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO coordinations (household_id, state, last_reminder, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (household_id) DO UPDATE SET state = excluded.state, last_reminder = excluded.last_reminder, updated_at = excluded.updated_at",
    )
    .bind(household_id.to_owned())
    .bind(json(state)?)
    .bind(last_reminder.map(micros))
    .bind(micros(now))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// One coordination notification to every involved agency, on one of its signals in the household.
async fn notify_involved(
    conn: &mut AnyConnection,
    signals: &[SignalRow],
    kind: NotificationKind,
    household_id: &str,
    event: &str,
    now: OffsetDateTime,
) -> Result<u32, StoreError> {
    let mut first_signal: BTreeMap<String, &SignalRow> = BTreeMap::new();
    for s in signals {
        first_signal.entry(s.agency.to_string()).or_insert(s);
    }
    for (agency, sig) in &first_signal {
        sqlx::query("INSERT INTO notifications (recipient_oin, kind, recipient_signal_id, other_signal_id, level, household_id, coordination_event, occurred_at) VALUES ($1, $2, $3, NULL, NULL, $4, $5, $6)")
            .bind(agency.clone())
            .bind(kind.code())
            .bind(sig.id.clone())
            .bind(household_id.to_owned())
            .bind(event.to_owned())
            .bind(micros(now))
            .execute(&mut *conn)
            .await?;
    }
    Ok(first_signal.len() as u32)
}

/// Adds an ended signal to the involvement history of each household its person is in: one count
/// row per quarter it was active. Nothing in the row points back to the signal.
async fn record_history(
    conn: &mut AnyConnection,
    sig: &SignalRow,
    ended_at: OffsetDateTime,
) -> Result<(), StoreError> {
    let households: Vec<String> = sqlx::query("SELECT m.household_id FROM household_members m JOIN households h ON h.id = m.household_id WHERE m.subject = $1 AND m.protected = FALSE AND h.dissolved_at IS NULL")
        .bind(sig.subject.as_bytes().to_vec())
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<Result<_, _>>()?;
    let first = Quarter::of(sig.registered_at.date());
    let last = Quarter::of(ended_at.date());
    for household in &households {
        let mut q = first;
        loop {
            sqlx::query(
                "INSERT INTO involvement_history (household_id, subject, quarter, agency_oin, category, registered, ended, first_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (household_id, subject, quarter, agency_oin, category) DO UPDATE SET registered = involvement_history.registered + excluded.registered, \
                 ended = involvement_history.ended + excluded.ended, first_at = CASE WHEN excluded.first_at < involvement_history.first_at THEN excluded.first_at ELSE involvement_history.first_at END",
            )
            .bind(household.clone())
            .bind(sig.subject.as_bytes().to_vec())
            .bind(q.label())
            .bind(sig.agency.to_string())
            .bind(sig.category.code())
            .bind(i64::from(q == first))
            .bind(i64::from(q == last))
            .bind(micros(sig.registered_at))
            .execute(&mut *conn)
            .await?;
            if q >= last {
                break;
            }
            q = q.next();
        }
    }
    Ok(())
}

async fn notify(
    conn: &mut AnyConnection,
    recipient: &Oin,
    kind: NotificationKind,
    recipient_signal: &str,
    other: Option<(&str, MatchLevel)>,
    household: Option<&str>,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO notifications (recipient_oin, kind, recipient_signal_id, other_signal_id, level, household_id, coordination_event, occurred_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
        .bind(recipient.to_string())
        .bind(kind.code())
        .bind(recipient_signal.to_owned())
        .bind(other.map(|(id, _)| id.to_owned()))
        .bind(other.map(|(_, l)| if l == MatchLevel::Subject { 1i64 } else { 2 }))
        .bind(household.map(str::to_owned))
        .bind(None::<String>)
        .bind(micros(now))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn signal_by_id(conn: &mut AnyConnection, id: &str) -> Result<Option<SignalRow>, StoreError> {
    sqlx::query(&format!(
        "SELECT {SIGNAL_COLUMNS} FROM signals WHERE id = $1"
    ))
    .bind(id.to_owned())
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(signal_row)
    .transpose()
}

/// Directed match pairs (signal, other signal, level) among the active signals of `subjects`.
async fn pairs(
    conn: &mut AnyConnection,
    subjects: &BTreeSet<SubjectPseudonym>,
    now: OffsetDateTime,
) -> Result<BTreeMap<(String, String), (Oin, MatchLevel)>, StoreError> {
    let mut out = BTreeMap::new();
    for s in subjects {
        let rows = sqlx::query(&format!("SELECT {SIGNAL_COLUMNS} FROM signals WHERE subject = $1 AND withdrawn_at IS NULL AND expires_at > $2"))
            .bind(s.as_bytes().to_vec())
            .bind(micros(now))
            .fetch_all(&mut *conn)
            .await?;
        for row in rows {
            let sig = signal_row(&row)?;
            for m in matches_on(&mut *conn, &sig.agency, &sig.subject, now).await? {
                out.insert((sig.id.clone(), m.signal_id), (sig.agency.clone(), m.level));
            }
        }
    }
    Ok(out)
}

async fn household_subjects(
    conn: &mut AnyConnection,
    household_id: &str,
) -> Result<BTreeSet<SubjectPseudonym>, StoreError> {
    let rows = sqlx::query("SELECT subject FROM household_members WHERE household_id = $1")
        .bind(household_id.to_owned())
        .fetch_all(&mut *conn)
        .await?;
    rows.into_iter().map(|r| subject(r.try_get(0)?)).collect()
}

/// Notifies pairs that formed (Match) and pairs that ended (MatchEnded) between two snapshots.
async fn notify_diff(
    conn: &mut AnyConnection,
    before: &BTreeMap<(String, String), (Oin, MatchLevel)>,
    after: &BTreeMap<(String, String), (Oin, MatchLevel)>,
    household: &str,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    for ((sig, other), (agency, level)) in after {
        if !before.contains_key(&(sig.clone(), other.clone())) {
            notify(
                conn,
                agency,
                NotificationKind::Match,
                sig,
                Some((other, *level)),
                Some(household),
                now,
            )
            .await?;
        }
    }
    for ((sig, other), (agency, level)) in before {
        if !after.contains_key(&(sig.clone(), other.clone())) {
            notify(
                conn,
                agency,
                NotificationKind::MatchEnded,
                sig,
                Some((other, *level)),
                Some(household),
                now,
            )
            .await?;
        }
    }
    Ok(())
}

/// Applies one mutation inside the open transaction. Refusals change nothing.
async fn apply(conn: &mut AnyConnection, mutation: &Mutation) -> Result<Outcome, StoreError> {
    match mutation {
        Mutation::None => Ok(Ok(Effect::None)),
        Mutation::RegisterSignal {
            new_id,
            agency,
            subject: subj,
            category,
            contact,
            expires_at,
            now,
        } => {
            let open = sqlx::query(&format!("SELECT {SIGNAL_COLUMNS} FROM signals WHERE agency_oin = $1 AND subject = $2 AND category = $3 AND withdrawn_at IS NULL"))
                .bind(agency.to_string())
                .bind(subj.as_bytes().to_vec())
                .bind(category.code())
                .fetch_optional(&mut *conn)
                .await?
                .as_ref()
                .map(signal_row)
                .transpose()?;
            if let Some(existing) = open {
                if existing.expires_at > *now {
                    sqlx::query("UPDATE signals SET contact_team = $1, contact_phone = $2, contact_email = $3, refreshed_at = $4, expires_at = $5 WHERE id = $6")
                        .bind(contact.team.clone())
                        .bind(contact.phone.clone())
                        .bind(contact.email.clone())
                        .bind(micros(*now))
                        .bind(micros(*expires_at))
                        .bind(existing.id.clone())
                        .execute(&mut *conn)
                        .await?;
                    let signal = SignalRow {
                        contact: contact.clone(),
                        refreshed_at: *now,
                        expires_at: *expires_at,
                        ..existing
                    };
                    return Ok(Ok(Effect::SignalRegistered {
                        signal,
                        refreshed: true,
                    }));
                }
                // Expired but not yet purged: it ended at its expiry; tell its matches, then start anew.
                end_by_expiry(conn, &existing).await?;
            }
            sqlx::query(&format!("INSERT INTO signals ({SIGNAL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"))
                .bind(new_id.clone())
                .bind(agency.to_string())
                .bind(subj.as_bytes().to_vec())
                .bind(category.code())
                .bind(contact.team.clone())
                .bind(contact.phone.clone())
                .bind(contact.email.clone())
                .bind(micros(*now))
                .bind(micros(*now))
                .bind(micros(*expires_at))
                .bind(None::<i64>)
                .execute(&mut *conn)
                .await?;
            let matches = matches_on(&mut *conn, agency, subj, *now).await?;
            for m in &matches {
                notify(
                    conn,
                    &m.agency,
                    NotificationKind::Match,
                    &m.signal_id,
                    Some((new_id, m.level)),
                    None,
                    *now,
                )
                .await?;
                notify(
                    conn,
                    agency,
                    NotificationKind::Match,
                    new_id,
                    Some((&m.signal_id, m.level)),
                    None,
                    *now,
                )
                .await?;
            }
            let signal = SignalRow {
                id: new_id.clone(),
                agency: agency.clone(),
                subject: *subj,
                category: *category,
                contact: contact.clone(),
                registered_at: *now,
                refreshed_at: *now,
                expires_at: *expires_at,
                withdrawn_at: None,
            };
            Ok(Ok(Effect::SignalRegistered {
                signal,
                refreshed: false,
            }))
        }
        Mutation::WithdrawSignal {
            agency,
            signal_id,
            now,
        } => {
            let own = signal_by_id(conn, signal_id)
                .await?
                .filter(|s| s.agency == *agency && s.is_active(*now));
            let Some(sig) = own else {
                return Ok(Err(Rejection::NotFound(
                    "no active signal of this agency with that id".into(),
                )));
            };
            let matches = matches_on(&mut *conn, agency, &sig.subject, *now).await?;
            record_history(conn, &sig, *now).await?;
            sqlx::query("UPDATE signals SET withdrawn_at = $1 WHERE id = $2")
                .bind(micros(*now))
                .bind(sig.id.clone())
                .execute(&mut *conn)
                .await?;
            for m in &matches {
                notify(
                    conn,
                    &m.agency,
                    NotificationKind::MatchEnded,
                    &m.signal_id,
                    Some((&sig.id, m.level)),
                    None,
                    *now,
                )
                .await?;
            }
            Ok(Ok(Effect::SignalWithdrawn { at: *now }))
        }
        Mutation::DeclareHousehold {
            agency,
            household_ref,
            new_id,
            members,
            now,
        } => {
            let existing: Option<String> = sqlx::query("SELECT id FROM households WHERE agency_oin = $1 AND household_ref = $2 AND dissolved_at IS NULL")
                .bind(agency.to_string())
                .bind(household_ref.clone())
                .fetch_optional(&mut *conn)
                .await?
                .map(|r| r.try_get(0))
                .transpose()?;
            let id = existing.clone().unwrap_or_else(|| new_id.clone());
            let mut affected: BTreeSet<SubjectPseudonym> =
                members.iter().map(|m| m.subject).collect();
            if let Some(old) = &existing {
                affected.extend(household_subjects(conn, old).await?);
            }
            let before = pairs(conn, &affected, *now).await?;
            match &existing {
                Some(old) => {
                    sqlx::query("DELETE FROM household_members WHERE household_id = $1")
                        .bind(old.clone())
                        .execute(&mut *conn)
                        .await?;
                }
                None => {
                    sqlx::query("INSERT INTO households (id, agency_oin, household_ref, declared_at, dissolved_at) VALUES ($1, $2, $3, $4, $5)")
                        .bind(id.clone())
                        .bind(agency.to_string())
                        .bind(household_ref.clone())
                        .bind(micros(*now))
                        .bind(None::<i64>)
                        .execute(&mut *conn)
                        .await?;
                }
            }
            for m in members {
                sqlx::query("INSERT INTO household_members (household_id, subject, protected, birth_date, declared_at) VALUES ($1, $2, $3, $4, $5)")
                    .bind(id.clone())
                    .bind(m.subject.as_bytes().to_vec())
                    .bind(m.protected)
                    .bind(m.birth_date.map(|d| d.to_string()))
                    .bind(micros(*now))
                    .execute(&mut *conn)
                    .await?;
            }
            let after = pairs(conn, &affected, *now).await?;
            notify_diff(conn, &before, &after, &id, *now).await?;
            Ok(Ok(Effect::HouseholdDeclared {
                household_id: id,
                replaced: existing.is_some(),
                member_count: members.len() as u32,
                at: *now,
            }))
        }
        Mutation::DissolveHousehold {
            agency,
            household_ref,
            now,
        } => {
            let existing: Option<String> = sqlx::query("SELECT id FROM households WHERE agency_oin = $1 AND household_ref = $2 AND dissolved_at IS NULL")
                .bind(agency.to_string())
                .bind(household_ref.clone())
                .fetch_optional(&mut *conn)
                .await?
                .map(|r| r.try_get(0))
                .transpose()?;
            let Some(id) = existing else {
                return Ok(Err(Rejection::NotFound(
                    "no live household with that reference declared by this agency".into(),
                )));
            };
            let affected = household_subjects(conn, &id).await?;
            let before = pairs(conn, &affected, *now).await?;
            sqlx::query("UPDATE households SET dissolved_at = $1 WHERE id = $2")
                .bind(micros(*now))
                .bind(id.clone())
                .execute(&mut *conn)
                .await?;
            let after = pairs(conn, &affected, *now).await?;
            notify_diff(conn, &before, &after, &id, *now).await?;
            Ok(Ok(Effect::HouseholdDissolved { at: *now }))
        }
        Mutation::RecordConsent(c) => {
            sqlx::query("INSERT INTO consents (id, recorded_by, subject, include_household, givers, purposes, roles, agencies, recorded_at, valid_until, renew_by, withdrawn_at, evidence_ref) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)")
                .bind(c.id.clone())
                .bind(c.recorded_by.to_string())
                .bind(c.subject.as_bytes().to_vec())
                .bind(c.include_household)
                .bind(json(&c.givers)?)
                .bind(json(&c.purposes)?)
                .bind(json(&c.roles)?)
                .bind(json(&c.agencies)?)
                .bind(micros(c.recorded_at))
                .bind(micros(c.valid_until))
                .bind(c.renew_by.map(|d| d.to_string()))
                .bind(c.withdrawn_at.map(micros))
                .bind(c.evidence_ref.clone())
                .execute(&mut *conn)
                .await?;
            Ok(Ok(Effect::ConsentRecorded { consent: c.clone() }))
        }
        Mutation::WithdrawConsent { consent_id, now } => {
            let done = sqlx::query(
                "UPDATE consents SET withdrawn_at = $1 WHERE id = $2 AND withdrawn_at IS NULL",
            )
            .bind(micros(*now))
            .bind(consent_id.clone())
            .execute(&mut *conn)
            .await?
            .rows_affected();
            if done == 0 {
                return Ok(Err(Rejection::NotFound(
                    "no active consent with that id".into(),
                )));
            }
            Ok(Ok(Effect::ConsentWithdrawn { at: *now }))
        }
        Mutation::Coordinate {
            household_id,
            command,
            now,
        } => {
            let signals = household_signals_on(&mut *conn, household_id, *now).await?;
            let involved: BTreeSet<Oin> = signals.iter().map(|s| s.agency.clone()).collect();
            let stored = coordination_on(&mut *conn, household_id).await?;
            match coordination::apply(&stored.state, &involved, command.clone(), *now) {
                Ok((state, event)) => {
                    save_coordination(conn, household_id, &state, stored.last_reminder, *now)
                        .await?;
                    notify_involved(
                        conn,
                        &signals,
                        NotificationKind::Coordination,
                        household_id,
                        event.code(),
                        *now,
                    )
                    .await?;
                    Ok(Ok(Effect::Coordinated { state, event }))
                }
                Err(e) => Ok(Err(match e {
                    CoordinationError::NotCoordinator => {
                        Rejection::PermissionDenied(signaalpoort_core::DenyReason::NotCoordinator)
                    }
                    CoordinationError::NoSuchProposal => Rejection::NotFound(e.to_string()),
                    CoordinationError::NotEligible => Rejection::CoordinatorNotEligible,
                    other => Rejection::FailedPrecondition(other.to_string()),
                })),
            }
        }
        Mutation::RemindCoordination {
            household_id,
            recipients,
            now,
        } => {
            let mut signals = household_signals_on(&mut *conn, household_id, *now).await?;
            signals.retain(|s| recipients.contains(&s.agency));
            let stored = coordination_on(&mut *conn, household_id).await?;
            let recipients = notify_involved(
                conn,
                &signals,
                NotificationKind::CoordinationReminder,
                household_id,
                "NO_COORDINATOR",
                *now,
            )
            .await?;
            save_coordination(conn, household_id, &stored.state, Some(*now), *now).await?;
            Ok(Ok(Effect::Reminded { recipients }))
        }
        Mutation::DeliverNotifications { recipient, ids } => {
            let mut last: i64 =
                sqlx::query("SELECT last_seq FROM notification_cursors WHERE recipient_oin = $1")
                    .bind(recipient.to_string())
                    .fetch_optional(&mut *conn)
                    .await?
                    .map(|r| r.try_get(0))
                    .transpose()?
                    .unwrap_or(0);
            let start = last;
            let mut numbered = Vec::with_capacity(ids.len());
            for id in ids {
                let row = sqlx::query(
                    "SELECT recipient_seq FROM notifications WHERE cursor = $1 AND recipient_oin = $2",
                )
                .bind(cursor(*id))
                .bind(recipient.to_string())
                .fetch_optional(&mut *conn)
                .await?;
                let Some(row) = row else { continue };
                let seq = match row.try_get::<Option<i64>, _>(0)? {
                    Some(seq) => seq,
                    None => {
                        last += 1;
                        sqlx::query(
                            "UPDATE notifications SET recipient_seq = $1 WHERE cursor = $2",
                        )
                        .bind(last)
                        .bind(cursor(*id))
                        .execute(&mut *conn)
                        .await?;
                        last
                    }
                };
                numbered.push((*id, seq as u64));
            }
            if last != start {
                sqlx::query("INSERT INTO notification_cursors (recipient_oin, last_seq) VALUES ($1, $2) ON CONFLICT (recipient_oin) DO UPDATE SET last_seq = excluded.last_seq")
                    .bind(recipient.to_string())
                    .bind(last)
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(Ok(Effect::NotificationsDelivered {
                numbered,
                previous_last: start as u64,
            }))
        }
        Mutation::PurgeAccessLog { before } => {
            let last: Option<i64> = sqlx::query("SELECT MAX(seq) FROM access_log WHERE time < $1")
                .bind(micros(*before))
                .fetch_one(&mut *conn)
                .await?
                .try_get(0)?;
            let Some(last) = last else {
                return Ok(Ok(Effect::LogPurged {
                    records: 0,
                    anchor_seq: 0,
                }));
            };
            let hash: Vec<u8> = sqlx::query("SELECT hash FROM access_log WHERE seq = $1")
                .bind(last)
                .fetch_one(&mut *conn)
                .await?
                .try_get(0)?;
            sqlx::query("INSERT INTO log_anchor (id, seq, hash) VALUES (1, $1, $2) ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash")
                .bind(last)
                .bind(hash)
                .execute(&mut *conn)
                .await?;
            sqlx::query("DELETE FROM access_log_subjects WHERE seq <= $1")
                .bind(last)
                .execute(&mut *conn)
                .await?;
            let records = sqlx::query("DELETE FROM access_log WHERE seq <= $1")
                .bind(last)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            Ok(Ok(Effect::LogPurged {
                records,
                anchor_seq: last as u64,
            }))
        }
        Mutation::PurgeExpired { now } => {
            let expired = sqlx::query(&format!("SELECT {SIGNAL_COLUMNS} FROM signals WHERE withdrawn_at IS NULL AND expires_at <= $1"))
                .bind(micros(*now))
                .fetch_all(&mut *conn)
                .await?;
            for row in &expired {
                end_by_expiry(conn, &signal_row(row)?).await?;
            }
            let cutoff = micros(*now - ENDED_GRACE);
            sqlx::query("DELETE FROM notifications WHERE recipient_signal_id IN (SELECT id FROM signals WHERE withdrawn_at <= $1) OR other_signal_id IN (SELECT id FROM signals WHERE withdrawn_at <= $1)")
                .bind(cutoff)
                .execute(&mut *conn)
                .await?;
            let signals = sqlx::query("DELETE FROM signals WHERE withdrawn_at <= $1")
                .bind(cutoff)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            sqlx::query("DELETE FROM household_members WHERE household_id IN (SELECT id FROM households WHERE dissolved_at <= $1)").bind(cutoff).execute(&mut *conn).await?;
            // A dissolved household's coordination and history go with it.
            sqlx::query("DELETE FROM coordinations WHERE household_id IN (SELECT id FROM households WHERE dissolved_at <= $1)").bind(cutoff).execute(&mut *conn).await?;
            sqlx::query("DELETE FROM involvement_history WHERE household_id IN (SELECT id FROM households WHERE dissolved_at <= $1)").bind(cutoff).execute(&mut *conn).await?;
            let households = sqlx::query("DELETE FROM households WHERE dissolved_at <= $1")
                .bind(cutoff)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            Ok(Ok(Effect::Purged {
                signals,
                households,
            }))
        }
    }
}

/// One request's own statements: replay by its idempotency key, or apply its mutation and keep
/// the key. An error here belongs to this request alone.
async fn apply_request(
    conn: &mut AnyConnection,
    req: &WriteRequest,
) -> Result<(Outcome, bool), StoreError> {
    let replay = match &req.idempotency {
        Some(key) => sqlx::query(
            "SELECT outcome, action, fingerprint FROM idempotency WHERE agency_oin = $1 AND request_id = $2",
        )
        .bind(key.agency.to_string())
        .bind(key.request_id.clone())
        .fetch_optional(&mut *conn)
        .await?
        .map(|r| -> Result<_, StoreError> {
            let stored: String = r.try_get(0)?;
            let action: String = r.try_get(1)?;
            let fingerprint: Option<Vec<u8>> = r.try_get(2)?;
            // Rows from before fingerprints were kept match on the RPC alone.
            let same = (action.is_empty() || action == key.action)
                && fingerprint.is_none_or(|f| f == key.fingerprint);
            Ok(if same {
                Ok(from_json::<Outcome>(&stored)?)
            } else {
                Err(Rejection::RequestIdReused)
            })
        })
        .transpose()?,
        None => None,
    };
    let (outcome, replayed) = match replay {
        Some(Ok(stored)) => (stored, true),
        Some(Err(reused)) => (Err(reused), false),
        None => {
            let outcome = apply(&mut *conn, &req.mutation).await?;
            if let Some(key) = &req.idempotency {
                sqlx::query("INSERT INTO idempotency (agency_oin, request_id, outcome, action, fingerprint) VALUES ($1, $2, $3, $4, $5)")
                    .bind(key.agency.to_string())
                    .bind(key.request_id.clone())
                    .bind(json(&outcome)?)
                    .bind(key.action)
                    .bind(key.fingerprint.to_vec())
                    .execute(&mut *conn)
                    .await?;
            }
            (outcome, false)
        }
    };
    Ok((outcome, replayed))
}

/// Marks an expired signal as ended at its expiry and tells the agencies it matched.
async fn end_by_expiry(conn: &mut AnyConnection, sig: &SignalRow) -> Result<(), StoreError> {
    let just_before = sig.expires_at - time::Duration::microseconds(1);
    for m in matches_on(&mut *conn, &sig.agency, &sig.subject, just_before).await? {
        notify(
            conn,
            &m.agency,
            NotificationKind::MatchEnded,
            &m.signal_id,
            Some((&sig.id, m.level)),
            None,
            sig.expires_at,
        )
        .await?;
    }
    record_history(conn, sig, sig.expires_at).await?;
    sqlx::query("UPDATE signals SET withdrawn_at = expires_at WHERE id = $1")
        .bind(sig.id.clone())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[async_trait]
impl Reader for SqlBackend {
    fn kind(&self) -> &'static str {
        match self.dialect {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").fetch_one(&self.read).await?;
        if let Some(dir) = &self.sqlite_dir {
            let free = free_bytes(dir)?;
            if free < self.options.min_free_bytes {
                return Err(StoreError::Unavailable(format!(
                    "only {} MiB free on the file system of {}, below the {} MiB kept in reserve; free space before writes fail",
                    free / (1024 * 1024),
                    dir.display(),
                    self.options.min_free_bytes / (1024 * 1024)
                )));
            }
        }
        Ok(())
    }

    async fn signal(&self, id: &str) -> Result<Option<SignalRow>, StoreError> {
        sqlx::query(&format!(
            "SELECT {SIGNAL_COLUMNS} FROM signals WHERE id = $1"
        ))
        .bind(id.to_owned())
        .fetch_optional(&self.read)
        .await?
        .as_ref()
        .map(signal_row)
        .transpose()
    }

    async fn list_signals(
        &self,
        agency: &Oin,
        now: OffsetDateTime,
        after: Option<(OffsetDateTime, String)>,
        limit: u32,
    ) -> Result<Vec<SignalRow>, StoreError> {
        let rows = match after {
            None => sqlx::query(&format!("SELECT {SIGNAL_COLUMNS} FROM signals WHERE agency_oin = $1 AND withdrawn_at IS NULL AND expires_at > $2 ORDER BY registered_at DESC, id DESC LIMIT $3"))
                .bind(agency.to_string())
                .bind(micros(now))
                .bind(i64::from(limit))
                .fetch_all(&self.read)
                .await?,
            Some((at, id)) => sqlx::query(&format!("SELECT {SIGNAL_COLUMNS} FROM signals WHERE agency_oin = $1 AND withdrawn_at IS NULL AND expires_at > $2 AND (registered_at < $3 OR (registered_at = $3 AND id < $4)) ORDER BY registered_at DESC, id DESC LIMIT $5"))
                .bind(agency.to_string())
                .bind(micros(now))
                .bind(micros(at))
                .bind(id)
                .bind(i64::from(limit))
                .fetch_all(&self.read)
                .await?,
        };
        rows.iter().map(signal_row).collect()
    }

    async fn household_signals(
        &self,
        household_id: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<SignalRow>, StoreError> {
        household_signals_on(&self.read, household_id, now).await
    }

    async fn coordination(&self, household_id: &str) -> Result<CoordinationRow, StoreError> {
        coordination_on(&self.read, household_id).await
    }

    async fn involvement_history(&self, household_id: &str) -> Result<Vec<HistoryRow>, StoreError> {
        let rows = sqlx::query("SELECT quarter, agency_oin, category, registered, ended, first_at, subject FROM involvement_history WHERE household_id = $1 ORDER BY quarter, agency_oin, category")
            .bind(household_id.to_owned())
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| {
                let who: Vec<u8> = r.try_get(6)?;
                Ok(HistoryRow {
                    subject: if who.is_empty() {
                        None
                    } else {
                        Some(subject(who)?)
                    },
                    quarter: r.try_get(0)?,
                    agency: Oin::parse(&r.try_get::<String, _>(1)?)
                        .map_err(|_| corrupt("history agency"))?,
                    category: Category::from_code(&r.try_get::<String, _>(2)?)
                        .ok_or_else(|| corrupt("history category"))?,
                    registered: r.try_get::<i64, _>(3)? as u32,
                    ended: r.try_get::<i64, _>(4)? as u32,
                    first_at: from_micros(r.try_get(5)?),
                })
            })
            .collect()
    }

    async fn households_with_match(&self, now: OffsetDateTime) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT m.household_id FROM household_members m JOIN households h ON h.id = m.household_id \
             JOIN signals s ON s.subject = m.subject \
             WHERE m.protected = FALSE AND h.dissolved_at IS NULL AND s.withdrawn_at IS NULL AND s.expires_at > $1 \
             GROUP BY m.household_id HAVING COUNT(DISTINCT s.agency_oin) >= 2 ORDER BY m.household_id",
        )
        .bind(micros(now))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    async fn log_anchor(&self) -> Result<Option<(u64, [u8; 32])>, StoreError> {
        match sqlx::query("SELECT seq, hash FROM log_anchor WHERE id = 1")
            .fetch_optional(&self.read)
            .await?
        {
            Some(row) => Ok(Some((
                row.try_get::<i64, _>(0)? as u64,
                hash32(row.try_get(1)?, "log anchor")?,
            ))),
            None => Ok(None),
        }
    }

    async fn log_has_records_before(&self, before: OffsetDateTime) -> Result<bool, StoreError> {
        Ok(
            sqlx::query("SELECT 1 FROM access_log WHERE time < $1 LIMIT 1")
                .bind(micros(before))
                .fetch_optional(&self.read)
                .await?
                .is_some(),
        )
    }

    async fn purge_due(&self, now: OffsetDateTime) -> Result<bool, StoreError> {
        let cutoff = micros(now - ENDED_GRACE);
        Ok(sqlx::query(
            "SELECT 1 WHERE EXISTS (SELECT 1 FROM signals WHERE (withdrawn_at IS NULL AND expires_at <= $1) OR withdrawn_at <= $2) \
             OR EXISTS (SELECT 1 FROM households WHERE dissolved_at <= $2)",
        )
        .bind(micros(now))
        .bind(cutoff)
        .fetch_optional(&self.read)
        .await?
        .is_some())
    }

    async fn is_involved(
        &self,
        agency: &Oin,
        subject: &SubjectPseudonym,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        Ok(sqlx::query("SELECT 1 FROM signals WHERE agency_oin = $1 AND subject = $2 AND withdrawn_at IS NULL AND expires_at > $3 LIMIT 1")
            .bind(agency.to_string())
            .bind(subject.as_bytes().to_vec())
            .bind(micros(now))
            .fetch_optional(&self.read)
            .await?
            .is_some())
    }

    async fn matches(
        &self,
        signal: &SignalRow,
        now: OffsetDateTime,
    ) -> Result<Vec<MatchRow>, StoreError> {
        matches_on(&self.read, &signal.agency, &signal.subject, now).await
    }

    async fn birth_date(
        &self,
        person: &SubjectPseudonym,
    ) -> Result<Option<time::Date>, StoreError> {
        self.declared_birth_date(person).await
    }

    async fn households_of(&self, subject: &SubjectPseudonym) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT h.id FROM household_members m JOIN households h ON h.id = m.household_id WHERE m.subject = $1 AND m.protected = FALSE AND h.dissolved_at IS NULL ORDER BY h.id")
            .bind(subject.as_bytes().to_vec())
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    async fn consent(&self, id: &str) -> Result<Option<ConsentRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {CONSENT_COLUMNS} FROM consents c WHERE c.id = $1"
        ))
        .bind(id.to_owned())
        .fetch_optional(&self.read)
        .await?
        .as_ref()
        .map(consent_row)
        .transpose()
    }

    async fn consents_concerning(
        &self,
        subject: &SubjectPseudonym,
    ) -> Result<Vec<ConsentRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {CONSENT_COLUMNS} FROM consents c WHERE c.subject = $1
             UNION
             SELECT {CONSENT_COLUMNS} FROM consents c
               JOIN household_members m1 ON m1.subject = c.subject AND m1.protected = FALSE
               JOIN households h ON h.id = m1.household_id AND h.dissolved_at IS NULL
               JOIN household_members m2 ON m2.household_id = m1.household_id AND m2.protected = FALSE
              WHERE c.include_household = TRUE AND m2.subject = $1"
        ))
        .bind(subject.as_bytes().to_vec())
        .fetch_all(&self.read)
        .await?;
        let mut out: Vec<ConsentRecord> = rows.iter().map(consent_row).collect::<Result<_, _>>()?;
        out.sort_by(|a, b| (a.recorded_at, &a.id).cmp(&(b.recorded_at, &b.id)));
        out.dedup_by(|a, b| a.id == b.id);
        Ok(out)
    }

    async fn consents_for_agency(
        &self,
        agency: &Oin,
        now: OffsetDateTime,
        include_inactive: bool,
    ) -> Result<Vec<ConsentRecord>, StoreError> {
        let rows = sqlx::query("SELECT DISTINCT subject FROM signals WHERE agency_oin = $1 AND withdrawn_at IS NULL AND expires_at > $2")
            .bind(agency.to_string())
            .bind(micros(now))
            .fetch_all(&self.read)
            .await?;
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for r in rows {
            for c in self.consents_concerning(&subject(r.try_get(0)?)?).await? {
                if (include_inactive || c.is_active(now)) && seen.insert(c.id.clone()) {
                    out.push(c);
                }
            }
        }
        out.sort_by(|a, b| (a.recorded_at, &a.id).cmp(&(b.recorded_at, &b.id)));
        Ok(out)
    }

    async fn numbered_notifications(
        &self,
        recipient: &Oin,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<NotificationRow>, StoreError> {
        self.notifications_where(
            "n.recipient_seq > $2 ORDER BY n.recipient_seq",
            recipient,
            after_seq,
            limit,
        )
        .await
    }

    async fn last_notification_cursor(&self, recipient: &Oin) -> Result<u64, StoreError> {
        Ok(
            sqlx::query("SELECT last_seq FROM notification_cursors WHERE recipient_oin = $1")
                .bind(recipient.to_string())
                .fetch_optional(&self.read)
                .await?
                .map(|r| r.try_get::<i64, _>(0))
                .transpose()?
                .unwrap_or(0) as u64,
        )
    }

    async fn pending_notifications(
        &self,
        recipient: &Oin,
        after_id: u64,
        limit: u32,
    ) -> Result<Vec<NotificationRow>, StoreError> {
        self.notifications_where(
            "n.recipient_seq IS NULL AND n.cursor > $2 ORDER BY n.cursor",
            recipient,
            after_id,
            limit,
        )
        .await
    }

    async fn alerts_after(&self, after: u64, limit: u32) -> Result<Vec<AlertRow>, StoreError> {
        let rows = sqlx::query("SELECT cursor, kind, time, agency_oin, actor_id, record_seq, detail FROM alerts WHERE cursor > $1 ORDER BY cursor LIMIT $2")
            .bind(cursor(after))
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(alert_row).collect()
    }

    async fn head(&self) -> Result<(u64, [u8; 32]), StoreError> {
        match sqlx::query("SELECT seq, hash FROM access_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&self.read)
            .await?
        {
            Some(row) => Ok((
                row.try_get::<i64, _>(0)? as u64,
                hash32(row.try_get(1)?, "head")?,
            )),
            None => Ok((0, GENESIS_HASH)),
        }
    }

    async fn query_log(
        &self,
        filter: &LogFilter,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<AccessRecord>, StoreError> {
        let mut sql = format!("SELECT {RECORD_COLUMNS} FROM access_log a WHERE a.seq > $1");
        let mut n = 1;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if filter.subject.is_some() {
            sql.push_str(&format!(
                " AND a.seq IN (SELECT seq FROM access_log_subjects WHERE subject = {})",
                next()
            ));
        }
        for (present, column) in [
            (filter.household_id.is_some(), "a.household_id"),
            (filter.agency_oin.is_some(), "a.agency_oin"),
            (filter.actor_id.is_some(), "a.actor_id"),
            (filter.action.is_some(), "a.action"),
            (filter.decision.is_some(), "a.decision"),
            (filter.reason.is_some(), "a.reason"),
        ] {
            if present {
                sql.push_str(&format!(" AND {column} = {}", next()));
            }
        }
        if filter.from.is_some() {
            sql.push_str(&format!(" AND a.time >= {}", next()));
        }
        if filter.until.is_some() {
            sql.push_str(&format!(" AND a.time < {}", next()));
        }
        if filter.flagged_only {
            sql.push_str(" AND a.flagged = TRUE");
        }
        sql.push_str(&format!(" ORDER BY a.seq LIMIT {}", next()));
        let mut q = sqlx::query(&sql).bind(cursor(after_seq));
        if let Some(s) = &filter.subject {
            q = q.bind(s.as_bytes().to_vec());
        }
        for v in [
            &filter.household_id,
            &filter.agency_oin,
            &filter.actor_id,
            &filter.action,
        ]
        .into_iter()
        .flatten()
        {
            q = q.bind(v.clone());
        }
        if let Some(d) = filter.decision {
            q = q.bind(d.code());
        }
        if let Some(r) = &filter.reason {
            q = q.bind(r.clone());
        }
        if let Some(t) = filter.from {
            q = q.bind(micros(t));
        }
        if let Some(t) = filter.until {
            q = q.bind(micros(t));
        }
        let rows = q.bind(i64::from(limit)).fetch_all(&self.read).await?;
        rows.iter().map(record_row).collect()
    }

    async fn export_log(
        &self,
        from_seq: u64,
        to_seq: u64,
        limit: u32,
    ) -> Result<Vec<AccessRecord>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {RECORD_COLUMNS} FROM access_log WHERE seq >= $1 AND seq <= $2 ORDER BY seq LIMIT $3"))
            .bind(cursor(from_seq))
            .bind(cursor(to_seq))
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(record_row).collect()
    }

    async fn checkpoints(&self, limit: u32) -> Result<Vec<SignedCheckpoint>, StoreError> {
        crate::merkle::checkpoints(&self.read, limit).await
    }

    async fn tree_hashes(&self, indexes: &[u64]) -> Result<BTreeMap<u64, NodeHash>, StoreError> {
        crate::merkle::read_hashes(&self.read, indexes).await
    }

    async fn tree_range(&self, lo: u64, hi: u64) -> Result<BTreeMap<u64, NodeHash>, StoreError> {
        crate::merkle::read_range(&self.read, lo, hi).await
    }

    async fn tree_size(&self) -> Result<u64, StoreError> {
        crate::merkle::tree_size(&self.read).await
    }
}

#[async_trait]
impl Backend for SqlBackend {
    fn reader(&self) -> &dyn Reader {
        self
    }

    async fn commit_batch(&self, batch: &[WriteRequest]) -> Result<Vec<Committed>, StoreError> {
        let mut guard = self.write.lock().await;
        // Requests whose own statements failed; the batch is applied again without them. Each
        // attempt fails at most one more, so this ends.
        let mut failed = BTreeMap::new();
        loop {
            let conn = match self.writer(&mut guard).await {
                Ok(conn) => conn,
                Err(e) => return Err(StoreError::Unavailable(describe_unavailable(&e))),
            };
            let begin = match self.dialect {
                Dialect::Sqlite => "BEGIN IMMEDIATE",
                Dialect::Postgres => "BEGIN",
            };
            if let Err(e) = conn.execute(begin).await {
                // A broken connection is replaced on the next batch.
                *guard = None;
                return Err(StoreError::Unavailable(describe_unavailable(&e.into())));
            }
            let attempt = self.apply_batch(conn, batch, &failed).await;
            let error = match attempt {
                Ok((committed, _)) => match conn.execute("COMMIT").await {
                    Ok(_) => return Ok(committed),
                    Err(e) => {
                        let e = StoreError::from(e);
                        // SQLite keeps the transaction open when COMMIT fails for want of space
                        // (or a lock): rolled back, nothing happened, and the writer goes on.
                        if self.dialect == Dialect::Sqlite && cannot_write_now(&e) {
                            if conn.execute("ROLLBACK").await.is_err() {
                                *guard = None;
                            }
                            return Err(StoreError::Unavailable(describe_unavailable(&e)));
                        }
                        // Otherwise nobody knows whether it committed.
                        *guard = None;
                        let StoreError::Database(e) = e else {
                            return Err(e);
                        };
                        return Err(StoreError::CommitFailed(e));
                    }
                },
                Err(error) => error,
            };
            if conn.execute("ROLLBACK").await.is_err() {
                *guard = None;
            }
            match error {
                BatchError::Request { index, error } if !cannot_write_now(&error) => {
                    tracing::error!(error = %error, request = index, "a request's statement failed; applying its batch without it");
                    failed.insert(index, error.to_string());
                }
                BatchError::Request { error, .. } | BatchError::Batch(error) => {
                    if cannot_write_now(&error) {
                        // The connection may be dead (terminated, reset): the next batch opens
                        // a fresh one.
                        *guard = None;
                        tracing::warn!(error = %error, "the database cannot take writes now; the batch was rolled back");
                        return Err(StoreError::Unavailable(describe_unavailable(&error)));
                    }
                    return Err(error);
                }
            }
        }
    }

    fn spawn_change_listener(&self, changes: watch::Sender<ChangeCursor>) {
        if self.dialect != Dialect::Postgres {
            return;
        }
        let url = self.url.clone();
        let mut closed = self.closed.subscribe();
        tokio::spawn(async move {
            loop {
                let connected = tokio::select! {
                    c = sqlx::postgres::PgListener::connect(&url) => c,
                    _ = closed.wait_for(|c| *c) => return,
                };
                match connected {
                    Ok(mut listener) => {
                        if listener.listen(CHANGES_CHANNEL).await.is_ok() {
                            // (Re)connected: anything may have happened meanwhile; watchers re-read.
                            changes.send_modify(|c| {
                                c.notification += 1;
                                c.alert += 1;
                            });
                            loop {
                                tokio::select! {
                                    received = listener.recv() => {
                                        if let Err(e) = received {
                                            tracing::warn!(error = %e, "change listener lost its PostgreSQL connection; reconnecting");
                                            break;
                                        }
                                        changes.send_modify(|c| {
                                            c.notification += 1;
                                            c.alert += 1;
                                        });
                                    }
                                    _ = closed.wait_for(|c| *c) => return,
                                }
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "change listener cannot connect; retrying")
                    }
                }
                if changes.is_closed() {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = closed.wait_for(|c| *c) => return,
                }
            }
        });
    }

    async fn close(&self) {
        self.closed.send_replace(true);
        if let Some(conn) = self.write.lock().await.take() {
            let _ = conn.close().await;
        }
        self.read.close().await;
    }

    // Issue 14: the tree and its checkpoints live in merkle.rs.
    async fn insert_checkpoint(
        &self,
        checkpoint: &SignedCheckpoint,
        signed_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        crate::merkle::insert_checkpoint(&self.read, checkpoint, signed_at).await
    }

    async fn update_cosignatures(
        &self,
        checkpoint: &SignedCheckpoint,
        cosignatures: usize,
    ) -> Result<(), StoreError> {
        crate::merkle::update_cosignatures(&self.read, checkpoint, cosignatures).await
    }

    async fn bulk_load(
        &self,
        households: &[(String, String, Oin, Vec<HouseholdMember>)],
        signals: &[SignalRow],
    ) -> Result<(), StoreError> {
        let mut guard = self.write.lock().await;
        let conn = self.writer(&mut guard).await?;
        let mut tx = conn.begin().await?;
        for chunk in households.chunks(500) {
            let mut sql = String::from("INSERT INTO households (id, agency_oin, household_ref, declared_at, dissolved_at) VALUES ");
            for i in 0..chunk.len() {
                let b = i * 4;
                sql.push_str(&format!(
                    "{}(${}, ${}, ${}, ${}, NULL)",
                    if i > 0 { ", " } else { "" },
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4
                ));
            }
            let mut q = sqlx::query(&sql);
            for (id, reference, agency, _) in chunk {
                q = q
                    .bind(id.clone())
                    .bind(agency.to_string())
                    .bind(reference.clone())
                    .bind(micros(OffsetDateTime::now_utc()));
            }
            q.execute(&mut *tx).await?;
            let members: Vec<(&String, &HouseholdMember)> = chunk
                .iter()
                .flat_map(|(id, _, _, ms)| ms.iter().map(move |m| (id, m)))
                .collect();
            for part in members.chunks(1000) {
                let mut sql = String::from(
                    "INSERT INTO household_members (household_id, subject, protected) VALUES ",
                );
                for i in 0..part.len() {
                    let b = i * 3;
                    sql.push_str(&format!(
                        "{}(${}, ${}, ${})",
                        if i > 0 { ", " } else { "" },
                        b + 1,
                        b + 2,
                        b + 3
                    ));
                }
                let mut q = sqlx::query(&sql);
                for (id, m) in part {
                    q = q
                        .bind((*id).clone())
                        .bind(m.subject.as_bytes().to_vec())
                        .bind(m.protected);
                }
                q.execute(&mut *tx).await?;
            }
        }
        for chunk in signals.chunks(500) {
            let mut sql = format!("INSERT INTO signals ({SIGNAL_COLUMNS}) VALUES ");
            for i in 0..chunk.len() {
                let b = i * 11;
                let ps: Vec<String> = (1..=11).map(|k| format!("${}", b + k)).collect();
                sql.push_str(&format!(
                    "{}({})",
                    if i > 0 { ", " } else { "" },
                    ps.join(", ")
                ));
            }
            let mut q = sqlx::query(&sql);
            for s in chunk {
                q = q
                    .bind(s.id.clone())
                    .bind(s.agency.to_string())
                    .bind(s.subject.as_bytes().to_vec())
                    .bind(s.category.code())
                    .bind(s.contact.team.clone())
                    .bind(s.contact.phone.clone())
                    .bind(s.contact.email.clone())
                    .bind(micros(s.registered_at))
                    .bind(micros(s.refreshed_at))
                    .bind(micros(s.expires_at))
                    .bind(s.withdrawn_at.map(micros));
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
