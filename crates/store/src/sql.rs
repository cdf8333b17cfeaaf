//! The one implementation of [`Backend`] for SQLite and PostgreSQL. Writes run on the write
//! thread (`write_thread.rs`: the batch, the chain, the tree) through the rules in `mutate.rs`,
//! which both databases share. Reads here use sqlx's `Any` pool: the same statements on both, so
//! neither has behaviour the other lacks. What differs is in [`Dialect`]: session settings, and
//! the change fan-out — on PostgreSQL `pg_notify` inside the write transaction (delivered on
//! commit) wakes the other replicas' watchers; they re-read by cursor, so a missed notify loses
//! nothing.
//!
//! Every statement uses `$n` placeholders in ascending order of first use (SQLite reads `$n` as a
//! named parameter, numbered in order of appearance).

use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use signaalpoort_core::access_log::tree::NodeHash;
use signaalpoort_core::access_log::{AccessRecord, SignedCheckpoint, GENESIS_HASH};
use signaalpoort_core::consent::ConsentRecord;
use signaalpoort_core::involvement::MatchLevel;
use signaalpoort_core::{Category, ContactPoint, Oin, SubjectPseudonym};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, ConnectOptions, Connection, Executor, Row};
use time::OffsetDateTime;
use tokio::sync::{watch, Mutex};

use crate::mutate::{coordination_row, COORDINATION_SQL, ENDED_GRACE, HOUSEHOLD_SIGNALS_SQL};
use crate::rows::*;
use crate::write_thread::{Target, WriteThread};
use crate::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

pub(crate) struct SqlBackend {
    dialect: Dialect,
    url: String,
    read: AnyPool,
    /// The connection that runs migrations at open and the benchmark's bulk loader.
    write: Mutex<Option<AnyConnection>>,
    /// Every batch runs on this thread (`None`: opened read-only).
    write_thread: Option<WriteThread>,
    options: StoreOptions,
    /// Set by `close`: the change listener lets go of its connection.
    closed: watch::Sender<bool>,
    /// The directory of the SQLite database file, for the free-space check (`None`: PostgreSQL).
    sqlite_dir: Option<std::path::PathBuf>,
}

impl SqlBackend {
    pub(crate) async fn open(url: &str, options: &StoreOptions) -> Result<SqlBackend, StoreError> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else {
            Dialect::Postgres
        };
        let (url, sqlite_dir, target) = match dialect {
            Dialect::Sqlite => {
                let path = url
                    .trim_start_matches("sqlite://")
                    .trim_start_matches("sqlite:");
                let path = path.split('?').next().unwrap_or(path);
                let mode = if options.read_only {
                    "ro"
                } else {
                    crate::files::usable_database_file(std::path::Path::new(path))?;
                    "rwc"
                };
                let dir = std::path::Path::new(path)
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(std::path::Path::new("."))
                    .to_path_buf();
                let target = Target::Sqlite {
                    path: std::path::PathBuf::from(path),
                    busy_timeout: options.busy_timeout,
                };
                (format!("sqlite://{path}?mode={mode}"), Some(dir), target)
            }
            Dialect::Postgres => (
                url.to_owned(),
                None,
                Target::Postgres {
                    url: url.to_owned(),
                },
            ),
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
        let mut backend = SqlBackend {
            dialect,
            url,
            read,
            write: Mutex::new(None),
            write_thread: None,
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
            // The open-time connection is not needed until a bulk load; on PostgreSQL it would
            // hold a server slot.
            if let Some(conn) = guard.take() {
                let _ = conn.close().await;
            }
            drop(guard);
            backend.write_thread = Some(WriteThread::spawn(target, options.status_of)?);
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

/// Live signals on the unprotected members of a household.
async fn household_signals_on<'c, E: Executor<'c, Database = sqlx::Any>>(
    e: E,
    household_id: &str,
    now: OffsetDateTime,
) -> Result<Vec<SignalRow>, StoreError> {
    let rows = sqlx::query(HOUSEHOLD_SIGNALS_SQL)
        .bind(household_id.to_owned())
        .bind(micros(now))
        .fetch_all(e)
        .await?;
    rows.iter().map(signal_row).collect()
}

async fn coordination_on<'c, E: Executor<'c, Database = sqlx::Any>>(
    e: E,
    household_id: &str,
) -> Result<CoordinationRow, StoreError> {
    let row = sqlx::query(COORDINATION_SQL)
        .bind(household_id.to_owned())
        .fetch_optional(e)
        .await?;
    coordination_row(row.as_ref())
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
            let free = crate::files::free_bytes(dir)?;
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

    async fn commit_batch(&self, batch: Vec<WriteRequest>) -> Result<Vec<Committed>, StoreError> {
        match &self.write_thread {
            Some(thread) => thread.commit(batch).await,
            None => Err(StoreError::Unavailable(
                "the store was opened read-only".into(),
            )),
        }
    }

    fn spawn_change_listener(&self, changes: watch::Sender<ChangeCursor>) {
        if self.dialect == Dialect::Postgres {
            crate::listener::spawn(self.url.clone(), self.closed.subscribe(), changes);
        }
    }

    async fn close(&self) {
        self.closed.send_replace(true);
        if let Some(thread) = &self.write_thread {
            thread.close().await;
        }
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
        crate::bulk::load(conn, households, signals).await
    }
}
