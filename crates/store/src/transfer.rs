//! Moving a SQLite deployment to PostgreSQL: every table, access log included, copied row by row
//! in one PostgreSQL transaction. Both schemas come from the same migrations, so the list of tables
//! and a column's PostgreSQL type come from the target's schema, not from a list kept here: a table a
//! later migration adds is moved without anyone remembering to. A table in the source that the
//! target lacks stops the move, and every table's row count is compared before the commit. The
//! chain head and the cursor sequences are set from the copied rows, so the log continues where it
//! stopped.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Connection, Row};

use crate::{Store, StoreError};

/// Tables the move does not copy row by row: the migrations' own bookkeeping, and the chain head,
/// which is set from the copied log afterwards.
const NOT_COPIED: &[&str] = &["_sqlx_migrations", "log_head"];

/// Rows per INSERT statement (PostgreSQL allows 65 535 parameters; the widest table has 22).
const ROWS_PER_INSERT: usize = 500;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferReport {
    /// (table, rows copied — equal in source and target), in copy order.
    pub tables: Vec<(String, u64)>,
    /// Records in the access log after the move.
    pub log_records: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("the source must be a sqlite:// database, got {0:?}")]
    SourceNotSqlite(String),
    #[error("the target must be a postgres:// database, got a {0}: URL")]
    TargetNotPostgres(String),
    #[error("the target already holds data (table {table} has {rows} rows); move into an empty database")]
    TargetNotEmpty { table: String, rows: i64 },
    #[error(
        "column {table}.{column} has type {data_type}, which the move does not know how to carry"
    )]
    UnknownType {
        table: String,
        column: String,
        data_type: String,
    },
    #[error("table {0} exists in the source but not in the target's schema; nothing was moved")]
    TableNotInTarget(String),
    #[error("table {table}: {source_rows} rows in the source but {target_rows} in the target after the copy; nothing was moved")]
    CountMismatch {
        table: String,
        source_rows: i64,
        target_rows: i64,
    },
    #[error("the target's foreign keys form a cycle among tables {0:?}")]
    ForeignKeyCycle(Vec<String>),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

#[derive(Clone, Copy)]
enum Kind {
    Int,
    Text,
    Bytes,
    Bool,
}

/// Copies everything from `from` (SQLite) into `to` (PostgreSQL, migrated here, must be empty).
/// The source is only read. Verify the chain on the target afterwards (the CLI does).
pub async fn sqlite_to_postgres(from: &str, to: &str) -> Result<TransferReport, TransferError> {
    if !from.starts_with("sqlite:") {
        return Err(TransferError::SourceNotSqlite(from.to_owned()));
    }
    if !(to.starts_with("postgres://") || to.starts_with("postgresql://")) {
        let scheme = to.split(':').next().unwrap_or_default();
        return Err(TransferError::TargetNotPostgres(scheme.to_owned()));
    }
    // Both sides at the current schema (the source may be from an older release).
    Store::migrate(from).await?;
    Store::migrate(to).await?;
    sqlx::any::install_default_drivers();
    let mut source = AnyConnection::connect(from).await?;
    let mut target = AnyConnection::connect(to).await?;

    let tables = target_tables(&mut target).await?;
    for table in source_tables(&mut source).await? {
        if !tables.contains(&table) && !NOT_COPIED.contains(&table.as_str()) {
            return Err(TransferError::TableNotInTarget(table));
        }
    }
    for table in &tables {
        let rows: i64 = sqlx::query(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&mut target)
            .await?
            .try_get(0)?;
        if rows > 0 {
            return Err(TransferError::TargetNotEmpty {
                table: table.clone(),
                rows,
            });
        }
    }

    let mut tx = target.begin().await?;
    let mut report = TransferReport {
        tables: Vec::new(),
        log_records: 0,
    };
    for table in &tables {
        let columns = target_columns(&mut tx, table).await?;
        let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
        // SQLite has no boolean type; read flags as integers.
        let select_list: Vec<String> = columns
            .iter()
            .map(|(n, k)| match k {
                Kind::Bool => format!("CASE WHEN {n} THEN 1 ELSE 0 END"),
                _ => n.clone(),
            })
            .collect();
        let rows = sqlx::query(&format!(
            "SELECT {} FROM {table} ORDER BY 1",
            select_list.join(", ")
        ))
        .fetch_all(&mut source)
        .await?;
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            insert_chunk(&mut tx, table, &names, &columns, chunk).await?;
        }
        let target_rows = count(&mut tx, table).await?;
        if target_rows != rows.len() as i64 {
            return Err(TransferError::CountMismatch {
                table: table.clone(),
                source_rows: rows.len() as i64,
                target_rows,
            });
        }
        report.tables.push((table.clone(), rows.len() as u64));
    }

    // The chain head and the cursor sequences continue from the copied rows.
    sqlx::query(
        "UPDATE log_head SET seq = COALESCE((SELECT MAX(seq) FROM access_log), 0), \
         hash = COALESCE((SELECT hash FROM access_log ORDER BY seq DESC LIMIT 1), decode(repeat('00', 32), 'hex')) WHERE id = 1",
    )
    .execute(&mut *tx)
    .await?;
    for table in ["notifications", "alerts"] {
        sqlx::query(&format!(
            "SELECT setval(pg_get_serial_sequence('{table}', 'cursor'), COALESCE(MAX(cursor), 0) + 1, false) FROM {table}"
        ))
        .execute(&mut *tx)
        .await?;
    }
    report.log_records = sqlx::query("SELECT seq FROM log_head WHERE id = 1")
        .fetch_one(&mut *tx)
        .await?
        .try_get::<i64, _>(0)? as u64;
    tx.commit().await?;
    source.close().await?;
    Ok(report)
}

async fn count(conn: &mut AnyConnection, table: &str) -> Result<i64, TransferError> {
    Ok(sqlx::query(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(&mut *conn)
        .await?
        .try_get(0)?)
}

/// The source's tables (SQLite's own bookkeeping left out).
async fn source_tables(conn: &mut AnyConnection) -> Result<Vec<String>, TransferError> {
    let rows = sqlx::query(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| r.try_get::<String, _>(0).map_err(Into::into))
        .collect()
}

/// The target's tables to copy, each after the tables its foreign keys point to.
async fn target_tables(conn: &mut AnyConnection) -> Result<Vec<String>, TransferError> {
    let names: Vec<String> = sqlx::query(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name",
    )
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| r.try_get::<String, _>(0))
    .collect::<Result<_, _>>()?;
    let edges: Vec<(String, String)> = sqlx::query(
        "SELECT tc.table_name::text, ccu.table_name::text \
         FROM information_schema.table_constraints tc \
         JOIN information_schema.constraint_column_usage ccu \
           ON ccu.constraint_name = tc.constraint_name AND ccu.constraint_schema = tc.constraint_schema \
         WHERE tc.constraint_type = 'FOREIGN KEY' AND tc.table_schema = current_schema()",
    )
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<String, _>(1)?)))
    .collect::<Result<_, sqlx::Error>>()?;
    let mut left: Vec<String> = names
        .into_iter()
        .filter(|n| !NOT_COPIED.contains(&n.as_str()))
        .collect();
    let mut ordered = Vec::with_capacity(left.len());
    while !left.is_empty() {
        let ready: Vec<String> = left
            .iter()
            .filter(|t| {
                !edges
                    .iter()
                    .any(|(from, to)| from == *t && to != *t && left.contains(to))
            })
            .cloned()
            .collect();
        if ready.is_empty() {
            return Err(TransferError::ForeignKeyCycle(left));
        }
        left.retain(|t| !ready.contains(t));
        ordered.extend(ready);
    }
    Ok(ordered)
}

async fn target_columns(
    conn: &mut AnyConnection,
    table: &str,
) -> Result<Vec<(String, Kind)>, TransferError> {
    let rows = sqlx::query(
        "SELECT column_name::text, data_type::text FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
    )
    .bind(table.to_owned())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            let name: String = r.try_get(0)?;
            let data_type: String = r.try_get(1)?;
            let kind = match data_type.as_str() {
                "bigint" | "integer" | "smallint" => Kind::Int,
                "text" | "character varying" => Kind::Text,
                "bytea" => Kind::Bytes,
                "boolean" => Kind::Bool,
                _ => {
                    return Err(TransferError::UnknownType {
                        table: table.to_owned(),
                        column: name,
                        data_type,
                    })
                }
            };
            Ok((name, kind))
        })
        .collect()
}

async fn insert_chunk(
    conn: &mut AnyConnection,
    table: &str,
    names: &[&str],
    columns: &[(String, Kind)],
    rows: &[AnyRow],
) -> Result<(), TransferError> {
    let width = columns.len();
    let tuples: Vec<String> = (0..rows.len())
        .map(|r| {
            let params: Vec<String> = (1..=width).map(|c| format!("${}", r * width + c)).collect();
            format!("({})", params.join(", "))
        })
        .collect();
    let sql = format!(
        "INSERT INTO {table} ({}) VALUES {}",
        names.join(", "),
        tuples.join(", ")
    );
    let mut query = sqlx::query(&sql);
    for row in rows {
        for (i, (_, kind)) in columns.iter().enumerate() {
            query = match kind {
                Kind::Int => query.bind(row.try_get::<Option<i64>, _>(i)?),
                Kind::Text => query.bind(row.try_get::<Option<String>, _>(i)?),
                Kind::Bytes => query.bind(row.try_get::<Option<Vec<u8>>, _>(i)?),
                Kind::Bool => query.bind(row.try_get::<Option<i64>, _>(i)?.map(|v| v != 0)),
            };
        }
    }
    query.execute(&mut *conn).await?;
    Ok(())
}
