//! The access log's Merkle tree and its checkpoints in the database (migration 0006).
//!
//! `log_tree` holds every complete tree node in tlog's stored-hash layout; the writer appends a
//! batch's leaves in the batch's own transaction (`write_thread.rs`), so the log order and the
//! tree order are one. Nothing here updates or deletes a tree row. `log_checkpoints` holds the
//! signed notes; witness cosignatures are added to a note when they arrive.

use std::collections::BTreeMap;

use signaalpoort_core::access_log::tree::{self, Frontier, NodeHash};
use signaalpoort_core::access_log::SignedCheckpoint;
use sqlx::{AnyConnection, Executor, Row};
use time::OffsetDateTime;

use crate::StoreError;

/// Tree rows per INSERT statement.
const ROWS_PER_INSERT: usize = 400;

fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt(what.into())
}

fn node(v: Vec<u8>) -> Result<NodeHash, StoreError> {
    v.try_into()
        .map_err(|_| corrupt("a tree hash is not 32 bytes"))
}

fn idx(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Reads the stored hashes at `indexes`; missing ones are simply absent from the map.
pub(crate) async fn read_hashes<'c, E>(
    conn: E,
    indexes: &[u64],
) -> Result<BTreeMap<u64, NodeHash>, StoreError>
where
    E: Executor<'c, Database = sqlx::Any>,
{
    let mut out = BTreeMap::new();
    if indexes.is_empty() {
        return Ok(out);
    }
    let mut sql = String::from("SELECT idx, hash FROM log_tree WHERE idx IN (");
    for i in 0..indexes.len() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!("${}", i + 1));
    }
    sql.push(')');
    let mut q = sqlx::query(&sql);
    for i in indexes {
        q = q.bind(idx(*i));
    }
    for row in q.fetch_all(conn).await? {
        out.insert(row.try_get::<i64, _>(0)? as u64, node(row.try_get(1)?)?);
    }
    Ok(out)
}

/// The stored hashes with index in `lo..=hi` (a contiguous stretch, e.g. a page's leaves).
pub(crate) async fn read_range<'c, E>(
    conn: E,
    lo: u64,
    hi: u64,
) -> Result<BTreeMap<u64, NodeHash>, StoreError>
where
    E: Executor<'c, Database = sqlx::Any>,
{
    let mut out = BTreeMap::new();
    let rows = sqlx::query("SELECT idx, hash FROM log_tree WHERE idx >= $1 AND idx <= $2")
        .bind(idx(lo))
        .bind(idx(hi))
        .fetch_all(conn)
        .await?;
    for row in rows {
        out.insert(row.try_get::<i64, _>(0)? as u64, node(row.try_get(1)?)?);
    }
    Ok(out)
}

/// The frontier of the stored tree at `size` leaves; an error when the tree lacks a node there
/// (it was altered, or is behind the log).
pub(crate) async fn frontier<'c, E>(conn: E, size: u64) -> Result<Frontier, StoreError>
where
    E: Executor<'c, Database = sqlx::Any>,
{
    let indexes = tree::frontier_indexes(size);
    let found = read_hashes(conn, &indexes).await?;
    let hashes = indexes
        .iter()
        .map(|i| {
            found.get(i).copied().ok_or_else(|| {
                corrupt(format!(
                    "the access-log Merkle tree lacks node {i} of a tree of {size} records"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Frontier::from_hashes(size, &hashes).map_err(|e| corrupt(e.to_string()))
}

/// The tree's size: one more than the last leaf stored (0 when empty).
pub(crate) async fn tree_size<'c, E>(conn: E) -> Result<u64, StoreError>
where
    E: Executor<'c, Database = sqlx::Any>,
{
    let max: Option<i64> = sqlx::query("SELECT MAX(idx) FROM log_tree")
        .fetch_one(conn)
        .await?
        .try_get(0)?;
    Ok(max.map_or(0, |m| tree::size_from_max_index(m as u64)))
}

async fn insert_rows(conn: &mut AnyConnection, rows: &[(u64, NodeHash)]) -> Result<(), StoreError> {
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let mut sql = String::from("INSERT INTO log_tree (idx, hash) VALUES ");
        for i in 0..chunk.len() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("(${}, ${})", 2 * i + 1, 2 * i + 2));
        }
        let mut q = sqlx::query(&sql);
        for (i, h) in chunk {
            q = q.bind(idx(*i)).bind(h.to_vec());
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Builds the tree for records written before it existed (a database from before migration
/// 0006). Runs at open, in the caller's transaction. Nothing to do when the tree is complete.
pub(crate) async fn catch_up(conn: &mut AnyConnection) -> Result<u64, StoreError> {
    let size = tree_size(&mut *conn).await?;
    let last: Option<i64> = sqlx::query("SELECT MAX(seq) FROM access_log")
        .fetch_one(&mut *conn)
        .await?
        .try_get(0)?;
    let last = last.unwrap_or(0) as u64;
    if last <= size {
        return Ok(0);
    }
    let mut f = frontier(&mut *conn, size).await?;
    let mut added = 0;
    let mut next = size + 1;
    while next <= last {
        let rows = sqlx::query(
            "SELECT seq, hash FROM access_log WHERE seq >= $1 ORDER BY seq LIMIT 10000",
        )
        .bind(idx(next))
        .fetch_all(&mut *conn)
        .await?;
        if rows.is_empty() {
            break;
        }
        let mut new = Vec::new();
        for row in rows {
            let seq = row.try_get::<i64, _>(0)? as u64;
            if seq != next {
                return Err(corrupt(format!(
                    "cannot build the access-log Merkle tree: record {next} is missing (found {seq}); \
                     verify the log with `signaalpoort audit verify --database`"
                )));
            }
            new.extend(f.append(&node(row.try_get(1)?)?));
            next += 1;
            added += 1;
        }
        insert_rows(conn, &new).await?;
    }
    Ok(added)
}

/// [`catch_up`] in its own write transaction, at open (before the writer runs).
pub(crate) async fn catch_up_at_open(
    conn: &mut AnyConnection,
    sqlite: bool,
) -> Result<(), StoreError> {
    conn.execute(if sqlite { "BEGIN IMMEDIATE" } else { "BEGIN" })
        .await?;
    if !sqlite {
        // The same lock every writer takes first: replicas opening together build it once.
        conn.execute("SELECT seq FROM log_head WHERE id = 1 FOR UPDATE")
            .await?;
    }
    match catch_up(&mut *conn).await {
        Ok(added) => {
            conn.execute("COMMIT").await?;
            if added > 0 {
                tracing::info!(
                    records = added,
                    "built the access-log Merkle tree for earlier records"
                );
            }
            Ok(())
        }
        Err(e) => {
            let _ = conn.execute("ROLLBACK").await;
            Err(e)
        }
    }
}

// ---- checkpoints ----

pub(crate) async fn insert_checkpoint<'c, E>(
    conn: E,
    cp: &SignedCheckpoint,
    signed_at: OffsetDateTime,
) -> Result<(), StoreError>
where
    E: Executor<'c, Database = sqlx::Any>,
{
    sqlx::query("INSERT INTO log_checkpoints (tree_size, root, note, signed_at, cosignatures) VALUES ($1, $2, $3, $4, 0) ON CONFLICT (tree_size) DO NOTHING")
        .bind(idx(cp.tree_size))
        .bind(cp.root.to_vec())
        .bind(cp.to_text())
        .bind((signed_at.unix_timestamp_nanos() / 1000) as i64)
        .execute(conn)
        .await?;
    Ok(())
}

/// Replaces a checkpoint's note with one carrying more (witness) signature lines.
pub(crate) async fn update_cosignatures<'c, E>(
    conn: E,
    cp: &SignedCheckpoint,
    cosignatures: usize,
) -> Result<(), StoreError>
where
    E: Executor<'c, Database = sqlx::Any>,
{
    sqlx::query("UPDATE log_checkpoints SET note = $1, cosignatures = $2 WHERE tree_size = $3 AND root = $4")
        .bind(cp.to_text())
        .bind(cosignatures as i64)
        .bind(idx(cp.tree_size))
        .bind(cp.root.to_vec())
        .execute(conn)
        .await?;
    Ok(())
}

/// Checkpoints, newest first.
pub(crate) async fn checkpoints<'c, E>(
    conn: E,
    limit: u32,
) -> Result<Vec<SignedCheckpoint>, StoreError>
where
    E: Executor<'c, Database = sqlx::Any>,
{
    let rows = sqlx::query("SELECT note FROM log_checkpoints ORDER BY tree_size DESC LIMIT $1")
        .bind(i64::from(limit))
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|r| {
            let note: String = r.try_get(0)?;
            SignedCheckpoint::parse(note.as_bytes())
                .map_err(|e| corrupt(format!("stored checkpoint: {e}")))
        })
        .collect()
}
