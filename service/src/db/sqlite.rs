//! The embedded backend: one SQLite file in WAL mode, one connection
//! behind a mutex, queries on tokio's blocking pool. A `kill -9` loses no
//! committed transaction (WAL with `synchronous = NORMAL` is durable against
//! a process crash; only a power cut can lose the last commits).

use super::{Backend, DbError, Dialect, Row, SCHEMA, Statement, Value};
use futures::future::BoxFuture;
use rusqlite::types::ValueRef;
use std::borrow::Cow;
use std::path::Path;
use std::sync::{Arc, Mutex};

pub struct Sqlite {
    connection: Arc<Mutex<rusqlite::Connection>>,
}

impl Sqlite {
    pub fn open(path: &Path) -> Result<Self, DbError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| DbError::Config(format!("cannot create {}: {e}", dir.display())))?;
        }
        let connection = rusqlite::Connection::open(path)
            .map_err(|e| DbError::Config(format!("cannot open {}: {e}", path.display())))?;
        connection
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                 PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
            )
            .map_err(query_error)?;
        Ok(Sqlite {
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut rusqlite::Connection) -> Result<T, DbError> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, DbError>> {
        let connection = Arc::clone(&self.connection);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut guard = connection
                    .lock()
                    .map_err(|_| DbError::Query("the SQLite connection lock is poisoned".into()))?;
                work(&mut guard)
            })
            .await
            .map_err(|e| DbError::Query(format!("the database thread failed: {e}")))?
        })
    }
}

/// `$1` → `?1`: SQLite's numbered parameters, with the same numbers.
fn placeholders(sql: &str) -> Cow<'_, str> {
    if !sql.contains('$') {
        return Cow::Borrowed(sql);
    }
    Cow::Owned(sql.replace('$', "?"))
}

fn query_error(e: rusqlite::Error) -> DbError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            DbError::Unavailable(e.to_string())
        }
        _ => DbError::Query(e.to_string()),
    }
}

fn to_sql(v: &Value) -> rusqlite::types::Value {
    match v {
        Value::Null => rusqlite::types::Value::Null,
        Value::Int(i) => rusqlite::types::Value::Integer(*i),
        Value::Text(t) => rusqlite::types::Value::Text(t.clone()),
    }
}

fn query_rows(
    connection: &rusqlite::Connection,
    sql: &str,
    params: &[Value],
) -> Result<Vec<Row>, DbError> {
    let mut statement = connection
        .prepare_cached(&placeholders(sql))
        .map_err(query_error)?;
    let columns = statement.column_count();
    let params: Vec<rusqlite::types::Value> = params.iter().map(to_sql).collect();
    let mut rows = statement
        .query(rusqlite::params_from_iter(params))
        .map_err(query_error)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(query_error)? {
        let mut values = Vec::with_capacity(columns);
        for i in 0..columns {
            values.push(match row.get_ref(i).map_err(query_error)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(v) => Value::Int(v),
                ValueRef::Real(v) => Value::Int(v as i64),
                ValueRef::Text(t) | ValueRef::Blob(t) => {
                    Value::Text(String::from_utf8_lossy(t).into_owned())
                }
            });
        }
        out.push(Row(values));
    }
    Ok(out)
}

fn execute(connection: &rusqlite::Connection, sql: &str, params: &[Value]) -> Result<u64, DbError> {
    let mut statement = connection
        .prepare_cached(&placeholders(sql))
        .map_err(query_error)?;
    let params: Vec<rusqlite::types::Value> = params.iter().map(to_sql).collect();
    let changed = statement
        .execute(rusqlite::params_from_iter(params))
        .map_err(query_error)?;
    Ok(changed as u64)
}

impl Backend for Sqlite {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn query<'a>(
        &'a self,
        sql: &'a str,
        params: Vec<Value>,
    ) -> BoxFuture<'a, Result<Vec<Row>, DbError>> {
        let sql = sql.to_string();
        self.run(move |c| query_rows(c, &sql, &params))
    }

    fn execute<'a>(
        &'a self,
        sql: &'a str,
        params: Vec<Value>,
    ) -> BoxFuture<'a, Result<u64, DbError>> {
        let sql = sql.to_string();
        self.run(move |c| execute(c, &sql, &params))
    }

    fn transaction(&self, statements: Vec<Statement>) -> BoxFuture<'_, Result<bool, DbError>> {
        self.run(move |c| {
            let tx = c
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(query_error)?;
            for s in &statements {
                let changed = execute(&tx, s.sql, &s.params)?;
                if s.must_change && changed == 0 {
                    tx.rollback().map_err(query_error)?;
                    return Ok(false);
                }
            }
            tx.commit().map_err(query_error)?;
            Ok(true)
        })
    }

    fn migrate(&self) -> BoxFuture<'_, Result<(), DbError>> {
        self.run(|c| {
            for ddl in SCHEMA {
                c.execute_batch(ddl).map_err(query_error)?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_keep_their_numbers() {
        assert_eq!(
            placeholders("SELECT a FROM t WHERE b = $2 AND c = $1 AND d = $10"),
            "SELECT a FROM t WHERE b = ?2 AND c = ?1 AND d = ?10"
        );
    }
}
