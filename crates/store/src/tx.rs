//! The write transaction as the mutation rules see it: synchronous statements with typed
//! parameters, on the one thread that owns the write connection (see `write_thread.rs`).
//!
//! Both backends implement [`Tx`], so each rule (`mutate.rs`) is written once. SQLite runs on
//! rusqlite with cached prepared statements: a statement is a function call on this thread, not a
//! hand-off to a driver's worker thread. PostgreSQL runs on sqlx's typed `PgConnection`, driven
//! from the same thread (`Handle::block_on`): every statement is a round trip anyway.

use sqlx::postgres::{PgArguments, PgConnection, PgRow};
use sqlx::query::Query;
use sqlx::{Column, Postgres, Row as _, TypeInfo};

use crate::StoreError;

/// A statement parameter. Typed even when NULL: PostgreSQL needs the type of a NULL.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Int(Option<i64>),
    Text(Option<String>),
    Blob(Option<Vec<u8>>),
    Bool(Option<bool>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(Some(v))
    }
}
impl From<Option<i64>> for Value {
    fn from(v: Option<i64>) -> Self {
        Value::Int(v)
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(Some(v))
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(Some(v.to_owned()))
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(Some(v.clone()))
    }
}
impl From<Option<String>> for Value {
    fn from(v: Option<String>) -> Self {
        Value::Text(v)
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Blob(Some(v))
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(Some(v))
    }
}

/// Column access by position, for rows of the write thread ([`Row`]) and of the read pool
/// (sqlx's `AnyRow`) alike, so each row is decoded by one function.
pub(crate) trait Cols {
    fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError>;
    fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError>;
    fn opt_blob(&self, i: usize) -> Result<Option<Vec<u8>>, StoreError>;

    fn int(&self, i: usize) -> Result<i64, StoreError> {
        self.opt_int(i)?.ok_or_else(|| null(i))
    }
    fn text(&self, i: usize) -> Result<String, StoreError> {
        self.opt_text(i)?.ok_or_else(|| null(i))
    }
    fn blob(&self, i: usize) -> Result<Vec<u8>, StoreError> {
        self.opt_blob(i)?.ok_or_else(|| null(i))
    }
}

fn null(i: usize) -> StoreError {
    StoreError::Corrupt(format!("column {i} is NULL where a value is required"))
}

fn wrong_type(i: usize, want: &str) -> StoreError {
    StoreError::Corrupt(format!("column {i} is not {want}"))
}

impl Cols for sqlx::any::AnyRow {
    fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError> {
        Ok(self.try_get::<Option<i64>, _>(i)?)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        Ok(self.try_get::<Option<String>, _>(i)?)
    }
    fn opt_blob(&self, i: usize) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.try_get::<Option<Vec<u8>>, _>(i)?)
    }
}

/// One result row of the write thread, decoded out of the driver's buffers.
#[derive(Debug, Clone, Default)]
pub(crate) struct Row(Vec<Value>);

impl Cols for Row {
    fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError> {
        match self.0.get(i) {
            Some(Value::Int(v)) => Ok(*v),
            Some(Value::Bool(v)) => Ok(v.map(i64::from)),
            Some(Value::Text(None) | Value::Blob(None)) => Ok(None),
            _ => Err(wrong_type(i, "an integer")),
        }
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        match self.0.get(i) {
            Some(Value::Text(v)) => Ok(v.clone()),
            Some(Value::Int(None) | Value::Blob(None) | Value::Bool(None)) => Ok(None),
            _ => Err(wrong_type(i, "text")),
        }
    }
    fn opt_blob(&self, i: usize) -> Result<Option<Vec<u8>>, StoreError> {
        match self.0.get(i) {
            Some(Value::Blob(v)) => Ok(v.clone()),
            Some(Value::Int(None) | Value::Text(None) | Value::Bool(None)) => Ok(None),
            _ => Err(wrong_type(i, "a blob")),
        }
    }
}

/// One insert of [`Tx::insert_all`]: `{head} VALUES …{tail}` for rows of `width` values.
pub(crate) struct Rows<'a> {
    pub(crate) head: &'a str,
    pub(crate) tail: &'a str,
    pub(crate) width: usize,
    pub(crate) params: Vec<Value>,
}

/// The open write transaction. Statements use `$1, $2, …` placeholders in ascending order of
/// first use (SQLite numbers `$n` names in order of appearance).
pub(crate) trait Tx {
    fn is_postgres(&self) -> bool;
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError>;
    /// Runs a statement; returns the rows it changed.
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, StoreError>;

    /// Inserts rows of `width` values each (`params` holds them one row after the other):
    /// `{head} VALUES (…){tail}`. SQLite runs one cached single-row statement per row (no parse
    /// per batch: a multi-row statement of a new size is parsed anew, and parsing a few thousand
    /// placeholders costs more than the rows); PostgreSQL sends one `UNNEST` statement for all
    /// rows (each statement is a round trip, and its text does not change with the row count).
    fn insert_rows(
        &mut self,
        head: &str,
        tail: &str,
        width: usize,
        params: &[Value],
    ) -> Result<(), StoreError>;

    /// Several inserts, in as few round trips as the database allows (PostgreSQL: one).
    fn insert_all(&mut self, inserts: Vec<Rows<'_>>) -> Result<(), StoreError> {
        for r in inserts {
            self.insert_rows(r.head, r.tail, r.width, &r.params)?;
        }
        Ok(())
    }

    fn query_opt(&mut self, sql: &str, params: &[Value]) -> Result<Option<Row>, StoreError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }
    fn query_one(&mut self, sql: &str, params: &[Value]) -> Result<Row, StoreError> {
        self.query_opt(sql, params)?
            .ok_or_else(|| StoreError::Corrupt(format!("no row from {sql}")))
    }
}

/// `($1, ..., $w), ($w+1, ...)` for `rows` rows of `width` parameters.
pub(crate) fn placeholders(rows: usize, width: usize) -> String {
    use std::fmt::Write;
    let mut sql = String::with_capacity(rows * width * 5);
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
    sql
}

// ---- SQLite: rusqlite on the write thread ----

pub(crate) struct SqliteTx<'c> {
    pub(crate) conn: &'c rusqlite::Connection,
}

fn bind(stmt: &mut rusqlite::Statement<'_>, params: &[Value]) -> Result<(), rusqlite::Error> {
    for (i, v) in params.iter().enumerate() {
        let n = i + 1;
        match v {
            Value::Int(v) => stmt.raw_bind_parameter(n, v)?,
            Value::Text(v) => stmt.raw_bind_parameter(n, v)?,
            Value::Blob(v) => stmt.raw_bind_parameter(n, v)?,
            Value::Bool(v) => stmt.raw_bind_parameter(n, v)?,
        }
    }
    Ok(())
}

impl Tx for SqliteTx<'_> {
    fn is_postgres(&self) -> bool {
        false
    }

    fn insert_rows(
        &mut self,
        head: &str,
        tail: &str,
        width: usize,
        params: &[Value],
    ) -> Result<(), StoreError> {
        if width == 0 {
            return Ok(());
        }
        let mut stmt = self
            .conn
            .prepare_cached(&format!("{head} VALUES {}{tail}", placeholders(1, width)))?;
        for row in params.chunks(width) {
            bind(&mut stmt, row)?;
            stmt.raw_execute()?;
        }
        Ok(())
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        bind(&mut stmt, params)?;
        let width = stmt.column_count();
        let mut rows = stmt.raw_query();
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let mut row = Vec::with_capacity(width);
            for i in 0..width {
                use rusqlite::types::ValueRef;
                row.push(match r.get_ref(i)? {
                    ValueRef::Null => Value::Int(None),
                    ValueRef::Integer(v) => Value::Int(Some(v)),
                    ValueRef::Text(t) => Value::Text(Some(
                        std::str::from_utf8(t)
                            .map_err(|_| wrong_type(i, "UTF-8 text"))?
                            .to_owned(),
                    )),
                    ValueRef::Blob(b) => Value::Blob(Some(b.to_vec())),
                    ValueRef::Real(_) => return Err(wrong_type(i, "an integer, text or blob")),
                });
            }
            out.push(Row(row));
        }
        Ok(out)
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        bind(&mut stmt, params)?;
        Ok(stmt.raw_execute()? as u64)
    }
}

// ---- PostgreSQL: sqlx's typed connection, driven from the write thread ----

pub(crate) struct PgTx<'c> {
    pub(crate) conn: &'c mut PgConnection,
    pub(crate) runtime: &'c tokio::runtime::Handle,
}

fn pg_query<'q>(sql: &'q str, params: &'q [Value]) -> Query<'q, Postgres, PgArguments> {
    let mut q = sqlx::query(sql);
    for v in params {
        q = match v {
            Value::Int(v) => q.bind(*v),
            Value::Text(v) => q.bind(v.as_deref()),
            Value::Blob(v) => q.bind(v.as_deref()),
            Value::Bool(v) => q.bind(*v),
        };
    }
    q
}

fn pg_row(r: &PgRow) -> Result<Row, StoreError> {
    let mut row = Vec::with_capacity(r.len());
    for (i, col) in r.columns().iter().enumerate() {
        row.push(match col.type_info().name() {
            "INT8" => Value::Int(r.try_get::<Option<i64>, _>(i)?),
            "INT4" => Value::Int(r.try_get::<Option<i32>, _>(i)?.map(i64::from)),
            "INT2" => Value::Int(r.try_get::<Option<i16>, _>(i)?.map(i64::from)),
            "BOOL" => Value::Bool(r.try_get::<Option<bool>, _>(i)?),
            "BYTEA" => Value::Blob(r.try_get::<Option<Vec<u8>>, _>(i)?),
            "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" => {
                Value::Text(r.try_get::<Option<String>, _>(i)?)
            }
            other => {
                return Err(StoreError::Corrupt(format!(
                    "column {i} has type {other}, which the write path does not read"
                )))
            }
        });
    }
    Ok(Row(row))
}

/// One column of an `UNNEST` insert: the rows' values of one position, as a typed array.
enum PgColumn {
    Int(Vec<Option<i64>>),
    Text(Vec<Option<String>>),
    Blob(Vec<Option<Vec<u8>>>),
    Bool(Vec<Option<bool>>),
}

impl PgColumn {
    fn of(first: &Value, rows: usize) -> PgColumn {
        match first {
            Value::Int(_) => PgColumn::Int(Vec::with_capacity(rows)),
            Value::Text(_) => PgColumn::Text(Vec::with_capacity(rows)),
            Value::Blob(_) => PgColumn::Blob(Vec::with_capacity(rows)),
            Value::Bool(_) => PgColumn::Bool(Vec::with_capacity(rows)),
        }
    }

    fn array_type(&self) -> &'static str {
        match self {
            PgColumn::Int(_) => "int8[]",
            PgColumn::Text(_) => "text[]",
            PgColumn::Blob(_) => "bytea[]",
            PgColumn::Bool(_) => "bool[]",
        }
    }

    fn push(&mut self, v: &Value) -> Result<(), StoreError> {
        match (self, v) {
            (PgColumn::Int(c), Value::Int(v)) => c.push(*v),
            (PgColumn::Text(c), Value::Text(v)) => c.push(v.clone()),
            (PgColumn::Blob(c), Value::Blob(v)) => c.push(v.clone()),
            (PgColumn::Bool(c), Value::Bool(v)) => c.push(*v),
            _ => {
                return Err(StoreError::Corrupt(
                    "an insert's rows do not have the same column types".into(),
                ))
            }
        }
        Ok(())
    }
}

impl Tx for PgTx<'_> {
    fn is_postgres(&self) -> bool {
        true
    }

    /// One statement for any number of rows: each column goes as one array and `UNNEST` turns
    /// them back into rows. The statement's text does not depend on the row count, so it is
    /// prepared once per connection.
    fn insert_rows(
        &mut self,
        head: &str,
        tail: &str,
        width: usize,
        params: &[Value],
    ) -> Result<(), StoreError> {
        self.insert_all(vec![Rows {
            head,
            tail,
            width,
            params: params.to_vec(),
        }])
    }

    /// All the inserts in one statement: each but the last as a data-modifying `WITH` query.
    fn insert_all(&mut self, inserts: Vec<Rows<'_>>) -> Result<(), StoreError> {
        let mut parts = Vec::new();
        let mut columns: Vec<PgColumn> = Vec::new();
        for r in inserts
            .iter()
            .filter(|r| r.width > 0 && !r.params.is_empty())
        {
            let rows = r.params.len() / r.width;
            let first = columns.len();
            columns.extend(r.params[..r.width].iter().map(|v| PgColumn::of(v, rows)));
            for row in r.params.chunks(r.width) {
                for (column, v) in columns[first..].iter_mut().zip(row) {
                    column.push(v)?;
                }
            }
            let arrays = columns[first..]
                .iter()
                .enumerate()
                .map(|(i, c)| format!("${}::{}", first + i + 1, c.array_type()))
                .collect::<Vec<_>>()
                .join(", ");
            parts.push(format!(
                "{} SELECT * FROM UNNEST({arrays}){}",
                r.head, r.tail
            ));
        }
        let Some(last) = parts.pop() else {
            return Ok(());
        };
        let sql = if parts.is_empty() {
            last
        } else {
            let with = parts
                .iter()
                .enumerate()
                .map(|(i, p)| format!("i{i} AS ({p})"))
                .collect::<Vec<_>>()
                .join(", ");
            format!("WITH {with} {last}")
        };
        let mut q = sqlx::query(&sql);
        for c in columns {
            q = match c {
                PgColumn::Int(v) => q.bind(v),
                PgColumn::Text(v) => q.bind(v),
                PgColumn::Blob(v) => q.bind(v),
                PgColumn::Bool(v) => q.bind(v),
            };
        }
        let conn = &mut *self.conn;
        self.runtime.block_on(q.execute(conn))?;
        Ok(())
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError> {
        let conn = &mut *self.conn;
        let rows = self
            .runtime
            .block_on(pg_query(sql, params).fetch_all(conn))?;
        rows.iter().map(pg_row).collect()
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, StoreError> {
        let conn = &mut *self.conn;
        Ok(self
            .runtime
            .block_on(pg_query(sql, params).execute(conn))?
            .rows_affected())
    }
}
