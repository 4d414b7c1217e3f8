//! The shared backend for several server replicas: PostgreSQL through
//! tokio-postgres with a deadpool connection pool. Leases use
//! `FOR UPDATE SKIP LOCKED`, so replicas never hand out the same job.

use super::{Backend, DbError, Dialect, Row, SCHEMA, Statement, Value};
use bytes::BytesMut;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures::future::BoxFuture;
use tokio_postgres::NoTls;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

pub struct Postgres {
    pool: Pool,
}

impl Postgres {
    pub async fn connect(url: &str) -> Result<Self, DbError> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| DbError::Config(format!("invalid --db URL: {e}")))?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(16)
            .build()
            .map_err(|e| DbError::Config(format!("cannot create the connection pool: {e}")))?;
        let db = Postgres { pool };
        // Fail at start, with the reason, when the server is not there.
        let _connection = db.client().await?;
        Ok(db)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, DbError> {
        self.pool
            .get()
            .await
            .map_err(|e| DbError::Unavailable(format!("cannot connect to PostgreSQL: {e}")))
    }
}

fn query_error(e: tokio_postgres::Error) -> DbError {
    if e.is_closed() || e.as_db_error().is_none() {
        DbError::Unavailable(e.to_string())
    } else {
        DbError::Query(
            e.as_db_error()
                .map_or_else(|| e.to_string(), |d| d.message().to_string()),
        )
    }
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) if *ty == Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
            Value::Int(v) => v.to_sql(ty, out),
            Value::Text(v) => v.as_str().to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        matches!(
            *ty,
            Type::INT8 | Type::INT4 | Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::UNKNOWN
        )
    }

    to_sql_checked!();
}

fn convert(row: &tokio_postgres::Row) -> Result<Row, DbError> {
    let mut values = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let shape = |e: tokio_postgres::Error| DbError::Shape(format!("{}: {e}", column.name()));
        let value = match *column.type_() {
            Type::INT8 => row
                .try_get::<_, Option<i64>>(i)
                .map_err(shape)?
                .map(Value::Int),
            Type::INT4 => row
                .try_get::<_, Option<i32>>(i)
                .map_err(shape)?
                .map(|v| Value::Int(v.into())),
            _ => row
                .try_get::<_, Option<String>>(i)
                .map_err(shape)?
                .map(Value::Text),
        };
        values.push(value.unwrap_or(Value::Null));
    }
    Ok(Row(values))
}

fn params(values: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    values.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

impl Backend for Postgres {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn query<'a>(
        &'a self,
        sql: &'a str,
        values: Vec<Value>,
    ) -> BoxFuture<'a, Result<Vec<Row>, DbError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let statement = client.prepare_cached(sql).await.map_err(query_error)?;
            let rows = client
                .query(&statement, &params(&values))
                .await
                .map_err(query_error)?;
            rows.iter().map(convert).collect()
        })
    }

    fn execute<'a>(
        &'a self,
        sql: &'a str,
        values: Vec<Value>,
    ) -> BoxFuture<'a, Result<u64, DbError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let statement = client.prepare_cached(sql).await.map_err(query_error)?;
            client
                .execute(&statement, &params(&values))
                .await
                .map_err(query_error)
        })
    }

    fn transaction(&self, statements: Vec<Statement>) -> BoxFuture<'_, Result<bool, DbError>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(query_error)?;
            for s in &statements {
                let statement = tx.prepare_cached(s.sql).await.map_err(query_error)?;
                let changed = tx
                    .execute(&statement, &params(&s.params))
                    .await
                    .map_err(query_error)?;
                if s.must_change && changed == 0 {
                    tx.rollback().await.map_err(query_error)?;
                    return Ok(false);
                }
            }
            tx.commit().await.map_err(query_error)?;
            Ok(true)
        })
    }

    fn migrate(&self) -> BoxFuture<'_, Result<(), DbError>> {
        Box::pin(async move {
            let client = self.client().await?;
            // Replicas starting together must not race on CREATE TABLE.
            client
                .batch_execute("SELECT pg_advisory_lock(7203554)")
                .await
                .map_err(query_error)?;
            let mut result = Ok(());
            for ddl in SCHEMA {
                if let Err(e) = client.batch_execute(ddl).await {
                    result = Err(query_error(e));
                    break;
                }
            }
            client
                .batch_execute("SELECT pg_advisory_unlock(7203554)")
                .await
                .map_err(query_error)?;
            result
        })
    }
}
