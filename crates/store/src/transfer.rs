//! Moving a SQLite deployment to PostgreSQL: every table, access log included, copied row by row
//! in one PostgreSQL transaction. Both schemas come from the same migrations, so a column's
//! PostgreSQL type says how to carry the value across; the chain head and the cursor sequences are
//! set from the copied rows, so the log continues where it stopped.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Connection, Row};

use crate::{Store, StoreError};

/// Tables in an order that satisfies foreign keys (household_members → households).
const TABLES: &[&str] = &[
    "signals",
    "households",
    "household_members",
    "consents",
    "notifications",
    "idempotency",
    "access_log",
    "access_log_subjects",
    "checkpoints",
    "log_anchor",
    // The Merkle tree and its signed, cosigned checkpoints (issue 14).
    "log_tree",
    "log_checkpoints",
    "alerts",
    "notification_cursors",
    "coordinations",
    "involvement_history",
];

/// Rows per INSERT statement (PostgreSQL allows 65 535 parameters; the widest table has 22).
const ROWS_PER_INSERT: usize = 500;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferReport {
    /// (table, rows copied), in copy order.
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

    for table in TABLES {
        let rows: i64 = sqlx::query(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&mut target)
            .await?
            .try_get(0)?;
        if rows > 0 {
            return Err(TransferError::TargetNotEmpty {
                table: (*table).to_owned(),
                rows,
            });
        }
    }

    let mut tx = target.begin().await?;
    let mut report = TransferReport {
        tables: Vec::new(),
        log_records: 0,
    };
    for table in TABLES {
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
        report.tables.push(((*table).to_owned(), rows.len() as u64));
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
