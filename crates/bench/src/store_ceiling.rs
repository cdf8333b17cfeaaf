//! The store's ceiling: a lean group-commit writer over the same disk (SQLite) or server
//! (PostgreSQL), writing per call one state row and one access record of the sizes the gateway
//! writes, durably (`synchronous=FULL` / `synchronous_commit=on`), with no gRPC, no policy and no
//! indexes beyond the primary keys. A gateway cell is judged against the lower of this and the
//! transport ceiling: whichever binds on this machine.
//!
//! Same shape as the gateway's writer: every caller waiting at the moment shares one transaction
//! and hears back only after COMMIT.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, Executor};
use tokio::sync::{mpsc, oneshot};

use crate::load::{self, LoadResult};

/// A state row about the size of a signal row (id, agency, pseudonym, contact, times).
const STATE_BYTES: usize = 150;
/// An access record about the size of the gateway's canonical JSON record.
const RECORD_BYTES: usize = 850;
/// The gateway's default batch limit.
const MAX_BATCH: usize = 256;

type Reply = oneshot::Sender<Result<(), String>>;

fn payload(n: u64, len: usize) -> Vec<u8> {
    // Incompressible enough that the page layout is realistic.
    let mut v = Vec::with_capacity(len);
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// The SQLite ceiling at `concurrency` in flight, in a fresh file under `dir`.
pub async fn sqlite(
    dir: &Path,
    concurrency: usize,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<LoadResult> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("ceiling-{concurrency}.db"));
    let conn = rusqlite::Connection::open(&path).context("open the ceiling's SQLite file")?;
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(
        "CREATE TABLE state (id TEXT PRIMARY KEY, payload BLOB NOT NULL);
         CREATE TABLE log (seq INTEGER PRIMARY KEY, record BLOB NOT NULL);",
    )?;
    let (jobs, mut queue) = mpsc::channel::<(u64, Reply)>(MAX_BATCH * 8);
    let (batches_tx, batches_rx) = std::sync::mpsc::channel::<Vec<(u64, Reply)>>();
    // The thread that owns the connection, as in the gateway.
    let writer = std::thread::spawn(move || -> rusqlite::Result<()> {
        let mut seq = 0i64;
        while let Ok(batch) = batches_rx.recv() {
            let outcome = (|| -> rusqlite::Result<()> {
                conn.execute_batch("BEGIN IMMEDIATE")?;
                {
                    let mut state =
                        conn.prepare_cached("INSERT INTO state (id, payload) VALUES (?1, ?2)")?;
                    let mut log =
                        conn.prepare_cached("INSERT INTO log (seq, record) VALUES (?1, ?2)")?;
                    for (n, _) in &batch {
                        seq += 1;
                        state.execute(rusqlite::params![
                            format!("{:032x}", n.wrapping_mul(0x2545_F491_4F6C_DD1D)),
                            payload(*n, STATE_BYTES)
                        ])?;
                        log.execute(rusqlite::params![seq, payload(!*n, RECORD_BYTES)])?;
                    }
                }
                conn.execute_batch("COMMIT")
            })();
            for (_, reply) in batch {
                let _ = reply.send(outcome.as_ref().map(|_| ()).map_err(|e| e.to_string()));
            }
        }
        Ok(())
    });
    // The group-commit task: takes every waiting call, hands the batch to the thread.
    let grouper = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
            if batches_tx.send(std::mem::take(&mut batch)).is_err() {
                return;
            }
        }
    });
    let result = load::run(concurrency, warmup, measure, move |_, n| {
        let jobs = jobs.clone();
        async move {
            let (reply, answer) = oneshot::channel();
            jobs.send((n, reply)).await.map_err(|e| e.to_string())?;
            answer.await.map_err(|e| e.to_string())?
        }
    })
    .await;
    grouper.abort();
    let _ = grouper.await;
    let _ = tokio::task::spawn_blocking(move || writer.join()).await;
    let _ = std::fs::remove_file(&path);
    Ok(result)
}

/// The PostgreSQL ceiling: one client connection committing the same rows in groups, with
/// multi-row INSERTs (the fewest round trips a batch can take: BEGIN, two INSERTs, COMMIT).
pub async fn postgres(
    url: &str,
    concurrency: usize,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<LoadResult> {
    let mut conn: PgConnection = PgConnectOptions::from_str(url)?.connect().await?;
    let table = format!("ceiling_{concurrency}");
    conn.execute(
        format!(
            "CREATE TABLE {table}_state (id TEXT PRIMARY KEY, payload BYTEA NOT NULL);
             CREATE TABLE {table}_log (seq BIGINT PRIMARY KEY, record BYTEA NOT NULL);"
        )
        .as_str(),
    )
    .await?;
    conn.execute("SET synchronous_commit = on").await?;
    let (jobs, mut queue) = mpsc::channel::<(u64, Reply)>(MAX_BATCH * 8);
    let state_sql = format!(
        "INSERT INTO {table}_state (id, payload) SELECT * FROM UNNEST($1::text[], $2::bytea[])"
    );
    let log_sql = format!(
        "INSERT INTO {table}_log (seq, record) SELECT * FROM UNNEST($1::bigint[], $2::bytea[])"
    );
    let writer = tokio::spawn(async move {
        let mut seq = 0i64;
        let mut batch: Vec<(u64, Reply)> = Vec::with_capacity(MAX_BATCH);
        while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
            let ids: Vec<String> = batch
                .iter()
                .map(|(n, _)| format!("{:032x}", n.wrapping_mul(0x2545_F491_4F6C_DD1D)))
                .collect();
            let states: Vec<Vec<u8>> = batch
                .iter()
                .map(|(n, _)| payload(*n, STATE_BYTES))
                .collect();
            let seqs: Vec<i64> = (0..batch.len() as i64).map(|i| seq + 1 + i).collect();
            let records: Vec<Vec<u8>> = batch
                .iter()
                .map(|(n, _)| payload(!*n, RECORD_BYTES))
                .collect();
            let outcome = async {
                let mut tx = conn.begin().await?;
                sqlx::query(&state_sql)
                    .bind(&ids)
                    .bind(&states)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(&log_sql)
                    .bind(&seqs)
                    .bind(&records)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await
            }
            .await;
            if outcome.is_ok() {
                seq += batch.len() as i64;
            }
            for (_, reply) in batch.drain(..) {
                let _ = reply.send(outcome.as_ref().map(|_| ()).map_err(|e| e.to_string()));
            }
        }
        conn
    });
    let result = load::run(concurrency, warmup, measure, move |_, n| {
        let jobs = jobs.clone();
        async move {
            let (reply, answer) = oneshot::channel();
            jobs.send((n, reply)).await.map_err(|e| e.to_string())?;
            answer.await.map_err(|e| e.to_string())?
        }
    })
    .await;
    if let Ok(mut conn) = writer.await {
        let _ = conn
            .execute(format!("DROP TABLE {table}_state; DROP TABLE {table}_log").as_str())
            .await;
    }
    Ok(result)
}
