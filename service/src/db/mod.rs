//! The service's database: one SQL dialect over two drivers.
//!
//! Every query is written once, with PostgreSQL's `$1` placeholders and
//! types both engines accept (`TEXT`, `BIGINT`); [`sqlite`] rewrites the
//! placeholders to SQLite's `?1`. The embedded default is a SQLite file
//! (one process); [`postgres`] serves several server replicas sharing one
//! queue. Values cross the boundary as [`Value`], so the queue logic in
//! [`crate::store`] never sees a driver type.

pub mod postgres;
pub mod sqlite;

use futures::future::BoxFuture;

/// A parameter or a column value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<Option<String>> for Value {
    fn from(v: Option<String>) -> Self {
        v.map_or(Value::Null, Value::Text)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Int(i64::from(v))
    }
}

/// One result row, columns in the order of the query.
#[derive(Debug, Clone)]
pub struct Row(pub Vec<Value>);

impl Row {
    pub fn int(&self, i: usize) -> Result<i64, DbError> {
        match self.0.get(i) {
            Some(Value::Int(v)) => Ok(*v),
            other => Err(DbError::Shape(format!(
                "column {i}: expected an integer, got {other:?}"
            ))),
        }
    }
    pub fn opt_int(&self, i: usize) -> Result<Option<i64>, DbError> {
        match self.0.get(i) {
            Some(Value::Null) => Ok(None),
            _ => self.int(i).map(Some),
        }
    }
    pub fn text(&self, i: usize) -> Result<String, DbError> {
        match self.0.get(i) {
            Some(Value::Text(v)) => Ok(v.clone()),
            other => Err(DbError::Shape(format!(
                "column {i}: expected text, got {other:?}"
            ))),
        }
    }
    pub fn opt_text(&self, i: usize) -> Result<Option<String>, DbError> {
        match self.0.get(i) {
            Some(Value::Null) => Ok(None),
            _ => self.text(i).map(Some),
        }
    }
}

/// A statement of a transaction. With `must_change`, the transaction rolls
/// back when the statement changes no row (a guard: the lease is still
/// ours, the job is still running).
#[derive(Debug, Clone)]
pub struct Statement {
    pub sql: &'static str,
    pub params: Vec<Value>,
    pub must_change: bool,
}

impl Statement {
    pub fn new(sql: &'static str, params: Vec<Value>) -> Self {
        Statement {
            sql,
            params,
            must_change: false,
        }
    }
    pub fn guard(sql: &'static str, params: Vec<Value>) -> Self {
        Statement {
            sql,
            params,
            must_change: true,
        }
    }
}

/// A database failure.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database cannot be reached or is busy: retry later (503).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A query failed: a bug in kiln or a schema from another version.
    #[error("database query failed: {0}")]
    Query(String),
    /// A row did not have the expected shape.
    #[error("unexpected row shape: {0}")]
    Shape(String),
    /// The `--db` URL is wrong.
    #[error("{0}")]
    Config(String),
}

/// Which engine a [`Backend`] talks to, for the few clauses that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A database the store can run its SQL on. Object safe, so the store
/// holds `Arc<dyn Backend>`.
pub trait Backend: Send + Sync {
    fn dialect(&self) -> Dialect;
    /// Runs one statement and returns its rows (a `SELECT`, or a write with
    /// `RETURNING`).
    fn query<'a>(
        &'a self,
        sql: &'a str,
        params: Vec<Value>,
    ) -> BoxFuture<'a, Result<Vec<Row>, DbError>>;
    /// Runs one write; returns the number of rows changed.
    fn execute<'a>(
        &'a self,
        sql: &'a str,
        params: Vec<Value>,
    ) -> BoxFuture<'a, Result<u64, DbError>>;
    /// Runs the statements in one transaction. `Ok(false)` when a guard
    /// changed nothing and everything was rolled back.
    fn transaction(&self, statements: Vec<Statement>) -> BoxFuture<'_, Result<bool, DbError>>;
    /// The schema: run once at start (idempotent).
    fn migrate(&self) -> BoxFuture<'_, Result<(), DbError>>;
}

/// The tables of the service. Integers are BIGINT (64-bit in both engines);
/// booleans are 0/1; times are Unix milliseconds; JSON is TEXT.
pub const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS datasets (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        owner TEXT NOT NULL,
        format TEXT NOT NULL,
        uri TEXT NOT NULL,
        row_count BIGINT NOT NULL,
        byte_count BIGINT NOT NULL,
        schema_json TEXT NOT NULL,
        shared BIGINT NOT NULL DEFAULT 0,
        source_job TEXT,
        created_ms BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS datasets_owner ON datasets (owner, created_ms)",
    "CREATE TABLE IF NOT EXISTS jobs (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        job_type TEXT NOT NULL,
        params TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts BIGINT NOT NULL DEFAULT 0,
        max_attempts BIGINT NOT NULL,
        time_limit_ms BIGINT NOT NULL,
        not_before_ms BIGINT NOT NULL,
        lease_owner TEXT,
        lease_expires_ms BIGINT,
        cancel_requested BIGINT NOT NULL DEFAULT 0,
        progress TEXT,
        error TEXT,
        outputs TEXT NOT NULL DEFAULT '[]',
        created_ms BIGINT NOT NULL,
        started_ms BIGINT,
        finished_ms BIGINT)",
    "CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, created_ms, id)",
    "CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_ms, id)",
    "CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, not_before_ms)",
    "CREATE TABLE IF NOT EXISTS job_events (
        job_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        at_ms BIGINT NOT NULL,
        kind TEXT NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (job_id, seq))",
    "CREATE TABLE IF NOT EXISTS audit (
        at_ms BIGINT NOT NULL,
        subject TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        detail TEXT NOT NULL)",
];

/// Opens the database a `--db` URL names: `sqlite:PATH` (or a path ending
/// in `.sqlite` / `.db`) or `postgres://…` / `postgresql://…`.
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Backend>, DbError> {
    let backend: std::sync::Arc<dyn Backend> =
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            std::sync::Arc::new(postgres::Postgres::connect(url).await?)
        } else if let Some(path) = url.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            std::sync::Arc::new(sqlite::Sqlite::open(std::path::Path::new(path))?)
        } else if url.ends_with(".sqlite") || url.ends_with(".db") {
            std::sync::Arc::new(sqlite::Sqlite::open(std::path::Path::new(url))?)
        } else {
            return Err(DbError::Config(format!(
                "--db '{url}' is neither sqlite:PATH nor postgres://USER@HOST:PORT/DB; \
                 fix: give one of those forms"
            )));
        };
    backend.migrate().await?;
    Ok(backend)
}
