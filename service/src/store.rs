//! The service's records and the queue, over any [`Backend`].
//!
//! A job is leased by one worker at a time: the lease names the worker and
//! expires unless its heartbeat renews it. A job whose lease expired (its
//! worker or the whole server died) is leased again, so every job runs at
//! least once; its outputs are committed under ids derived from the job id
//! and recorded in the same transaction that marks the job done, guarded by
//! the lease, so a rerun never adds a second output.

use crate::db::{Backend, DbError, Dialect, Row, Statement, Value};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::TimedOut => "timed_out",
        }
    }
    pub fn parse(s: &str) -> Result<Self, DbError> {
        Ok(match s {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "succeeded" => JobState::Succeeded,
            "failed" => JobState::Failed,
            "cancelled" => JobState::Cancelled,
            "timed_out" => JobState::TimedOut,
            other => return Err(DbError::Shape(format!("unknown job state '{other}'"))),
        })
    }
    pub fn is_final(self) -> bool {
        !matches!(self, JobState::Queued | JobState::Running)
    }
}

/// What a running job is doing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Progress {
    /// The current stage, e.g. `generating`, `writing`, or a pipeline task.
    pub stage: String,
    /// Rows produced so far, when the stage counts them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
}

/// A dataset a job produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobOutput {
    pub dataset_id: String,
}

/// A column of a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Column {
    pub name: String,
    /// The Arrow type, e.g. `Float64`, `Utf8`, `Timestamp(Millisecond, None)`.
    #[serde(rename = "type")]
    pub data_type: String,
    pub nullable: bool,
}

impl Column {
    /// The columns of an Arrow schema.
    pub fn of_schema(schema: &arrow::datatypes::Schema) -> Vec<Column> {
        schema
            .fields()
            .iter()
            .map(|f| Column {
                name: f.name().clone(),
                data_type: f.data_type().to_string(),
                nullable: f.is_nullable(),
            })
            .collect()
    }
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub id: String,
    pub owner: String,
    pub job_type: String,
    pub params: serde_json::Value,
    pub state: JobState,
    pub attempts: i64,
    pub max_attempts: i64,
    pub time_limit_ms: i64,
    pub cancel_requested: bool,
    pub progress: Option<Progress>,
    pub error: Option<String>,
    pub outputs: Vec<JobOutput>,
    pub created_ms: i64,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
}

/// A dataset as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetRecord {
    pub id: String,
    pub name: String,
    pub owner: String,
    pub format: kiln_engine::io::FileFormat,
    /// The file or directory in the lake.
    pub uri: String,
    pub rows: i64,
    pub bytes: i64,
    pub schema: Vec<Column>,
    pub shared: bool,
    pub source_job: Option<String>,
    pub created_ms: i64,
}

/// One event of a job's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobEvent {
    pub seq: i64,
    pub at_ms: i64,
    pub kind: String,
    pub data: serde_json::Value,
}

/// Which datasets a listing shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The caller's own.
    Mine,
    /// Others' shared with everyone.
    Shared,
    /// The caller's and the shared ones.
    Visible,
    /// Everything (admins).
    All,
}

/// A job a worker holds.
#[derive(Debug, Clone)]
pub struct Lease {
    pub job: JobRecord,
    pub worker: String,
}

/// How a finished attempt ends.
#[derive(Debug, Clone)]
pub enum Outcome {
    Succeeded {
        outputs: Vec<DatasetRecord>,
    },
    Failed {
        error: String,
    },
    /// A retryable failure with attempts left: queued again after a pause.
    RetryAt {
        not_before_ms: i64,
        error: String,
    },
    Cancelled,
    TimedOut {
        error: String,
    },
}

const JOB_COLUMNS: &str = "id, owner, job_type, params, state, attempts, max_attempts, \
    time_limit_ms, cancel_requested, progress, error, outputs, created_ms, started_ms, finished_ms";
const DATASET_COLUMNS: &str = "id, name, owner, format, uri, row_count, byte_count, schema_json, \
    shared, source_job, created_ms";

fn json_err(what: &str, e: serde_json::Error) -> DbError {
    DbError::Shape(format!("{what}: {e}"))
}

fn job_from(row: &Row) -> Result<JobRecord, DbError> {
    let params = serde_json::from_str(&row.text(3)?).map_err(|e| json_err("params", e))?;
    let progress = row
        .opt_text(9)?
        .map(|p| serde_json::from_str(&p))
        .transpose()
        .map_err(|e| json_err("progress", e))?;
    let outputs = serde_json::from_str(&row.text(11)?).map_err(|e| json_err("outputs", e))?;
    Ok(JobRecord {
        id: row.text(0)?,
        owner: row.text(1)?,
        job_type: row.text(2)?,
        params,
        state: JobState::parse(&row.text(4)?)?,
        attempts: row.int(5)?,
        max_attempts: row.int(6)?,
        time_limit_ms: row.int(7)?,
        cancel_requested: row.int(8)? != 0,
        progress,
        error: row.opt_text(10)?,
        outputs,
        created_ms: row.int(12)?,
        started_ms: row.opt_int(13)?,
        finished_ms: row.opt_int(14)?,
    })
}

fn dataset_from(row: &Row) -> Result<DatasetRecord, DbError> {
    let format = match row.text(3)?.as_str() {
        "csv" => kiln_engine::io::FileFormat::Csv,
        "parquet" => kiln_engine::io::FileFormat::Parquet,
        other => return Err(DbError::Shape(format!("unknown dataset format '{other}'"))),
    };
    Ok(DatasetRecord {
        id: row.text(0)?,
        name: row.text(1)?,
        owner: row.text(2)?,
        format,
        uri: row.text(4)?,
        rows: row.int(5)?,
        bytes: row.int(6)?,
        schema: serde_json::from_str(&row.text(7)?).map_err(|e| json_err("schema", e))?,
        shared: row.int(8)? != 0,
        source_job: row.opt_text(9)?,
        created_ms: row.int(10)?,
    })
}

fn to_json(value: &impl Serialize) -> Result<String, DbError> {
    serde_json::to_string(value).map_err(|e| json_err("serializing", e))
}

/// The typed face of the database.
#[derive(Clone)]
pub struct Store {
    db: Arc<dyn Backend>,
}

impl Store {
    pub fn new(db: Arc<dyn Backend>) -> Self {
        Store { db }
    }

    pub fn dialect(&self) -> Dialect {
        self.db.dialect()
    }

    /// Readiness: the database answers.
    pub async fn ping(&self) -> Result<(), DbError> {
        self.db.query("SELECT 1", vec![]).await.map(|_| ())
    }

    // ---- datasets ----

    fn insert_dataset_statement(d: &DatasetRecord) -> Result<Statement, DbError> {
        Ok(Statement::new(
            "INSERT INTO datasets (id, name, owner, format, uri, row_count, byte_count, \
             schema_json, shared, source_job, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (id) DO NOTHING",
            vec![
                d.id.clone().into(),
                d.name.clone().into(),
                d.owner.clone().into(),
                d.format.extension().into(),
                d.uri.clone().into(),
                d.rows.into(),
                d.bytes.into(),
                to_json(&d.schema)?.into(),
                d.shared.into(),
                d.source_job.clone().into(),
                d.created_ms.into(),
            ],
        ))
    }

    pub async fn insert_dataset(&self, d: &DatasetRecord) -> Result<(), DbError> {
        let s = Self::insert_dataset_statement(d)?;
        self.db.execute(s.sql, s.params).await.map(|_| ())
    }

    pub async fn dataset(&self, id: &str) -> Result<Option<DatasetRecord>, DbError> {
        let sql = format!("SELECT {DATASET_COLUMNS} FROM datasets WHERE id = $1");
        let rows = self.db.query(&sql, vec![id.into()]).await?;
        rows.first().map(dataset_from).transpose()
    }

    pub async fn datasets(
        &self,
        scope: Scope,
        caller: &str,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<DatasetRecord>, DbError> {
        let filter = match scope {
            Scope::Mine => "owner = $1",
            Scope::Shared => "shared = 1 AND owner <> $1",
            Scope::Visible => "(owner = $1 OR shared = 1)",
            Scope::All => "(owner = $1 OR 1 = 1)",
        };
        let sql = format!(
            "SELECT {DATASET_COLUMNS} FROM datasets WHERE {filter} \
             ORDER BY created_ms DESC, id LIMIT $2 OFFSET $3"
        );
        let rows = self
            .db
            .query(&sql, vec![caller.into(), limit.into(), offset.into()])
            .await?;
        rows.iter().map(dataset_from).collect()
    }

    pub async fn set_shared(&self, id: &str, shared: bool) -> Result<bool, DbError> {
        let n = self
            .db
            .execute(
                "UPDATE datasets SET shared = $2 WHERE id = $1",
                vec![id.into(), shared.into()],
            )
            .await?;
        Ok(n > 0)
    }

    pub async fn delete_dataset(&self, id: &str) -> Result<bool, DbError> {
        let n = self
            .db
            .execute("DELETE FROM datasets WHERE id = $1", vec![id.into()])
            .await?;
        Ok(n > 0)
    }

    // ---- jobs ----

    /// Inserts a queued job with its first event, `queued` (seq 1), in one
    /// transaction: a worker that leases the job at once records `started`
    /// after it.
    pub async fn insert_job(&self, j: &JobRecord) -> Result<(), DbError> {
        let queued = serde_json::json!({"type": j.job_type});
        self.db
            .transaction(vec![
                Statement::new(
                    "INSERT INTO jobs (id, owner, job_type, params, state, attempts, max_attempts, \
                     time_limit_ms, not_before_ms, created_ms) \
                     VALUES ($1, $2, $3, $4, 'queued', 0, $5, $6, $7, $7)",
                    vec![
                        j.id.clone().into(),
                        j.owner.clone().into(),
                        j.job_type.clone().into(),
                        to_json(&j.params)?.into(),
                        j.max_attempts.into(),
                        j.time_limit_ms.into(),
                        j.created_ms.into(),
                    ],
                ),
                Statement::new(
                    "INSERT INTO job_events (job_id, seq, at_ms, kind, data) \
                     VALUES ($1, 1, $2, 'queued', $3)",
                    vec![
                        j.id.clone().into(),
                        j.created_ms.into(),
                        to_json(&queued)?.into(),
                    ],
                ),
            ])
            .await
            .map(|_| ())
    }

    pub async fn job(&self, id: &str) -> Result<Option<JobRecord>, DbError> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1");
        let rows = self.db.query(&sql, vec![id.into()]).await?;
        rows.first().map(job_from).transpose()
    }

    /// Jobs newest first; `owner` None lists everyone's (admins).
    pub async fn jobs(
        &self,
        owner: Option<&str>,
        state: Option<JobState>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<JobRecord>, DbError> {
        // Only the filters given, so the (owner, created_ms, id) index
        // serves the common listing without a scan.
        let mut params: Vec<Value> = Vec::new();
        let mut filters = Vec::new();
        if let Some(owner) = owner {
            params.push(owner.into());
            filters.push(format!("owner = ${}", params.len()));
        }
        if let Some(state) = state {
            params.push(state.as_str().into());
            filters.push(format!("state = ${}", params.len()));
        }
        let filter = if filters.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", filters.join(" AND "))
        };
        params.push(limit.into());
        params.push(offset.into());
        let (l, o) = (params.len() - 1, params.len());
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs {filter} \
             ORDER BY created_ms DESC, id DESC LIMIT ${l} OFFSET ${o}"
        );
        let rows = self.db.query(&sql, params).await?;
        rows.iter().map(job_from).collect()
    }

    /// How many jobs there are of each type in each state (for metrics).
    pub async fn job_counts(&self) -> Result<Vec<(String, String, i64)>, DbError> {
        let rows = self
            .db
            .query(
                "SELECT job_type, state, COUNT(*) FROM jobs GROUP BY job_type, state \
                 ORDER BY job_type, state",
                vec![],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((r.text(0)?, r.text(1)?, r.int(2)?)))
            .collect()
    }

    /// Finished jobs' run times (type, state, seconds from the start of
    /// their last attempt to their end): the job duration histogram.
    pub async fn job_durations(&self) -> Result<Vec<(String, String, f64)>, DbError> {
        let rows = self
            .db
            .query(
                "SELECT job_type, state, finished_ms - started_ms FROM jobs \
                 WHERE finished_ms IS NOT NULL AND started_ms IS NOT NULL",
                vec![],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((r.text(0)?, r.text(1)?, r.int(2)? as f64 / 1000.0)))
            .collect()
    }

    /// Jobs of `owner` queued or running: the per-user submission limit.
    pub async fn open_jobs(&self, owner: &str) -> Result<i64, DbError> {
        let rows = self
            .db
            .query(
                "SELECT COUNT(*) FROM jobs WHERE owner = $1 AND state IN ('queued', 'running')",
                vec![owner.into()],
            )
            .await?;
        rows.first().map_or(Ok(0), |r| r.int(0))
    }

    /// Takes the oldest runnable job: queued and due, or running with an
    /// expired lease (its worker died). Owners already running
    /// `per_user_running` jobs wait their turn.
    pub async fn lease(
        &self,
        worker: &str,
        lease_ms: i64,
        per_user_running: i64,
    ) -> Result<Option<Lease>, DbError> {
        let now = now_ms();
        let sql = match self.dialect() {
            Dialect::Postgres => LEASE_POSTGRES,
            Dialect::Sqlite => LEASE_SQLITE,
        };
        let rows = self
            .db
            .query(
                sql,
                vec![
                    worker.into(),
                    now.into(),
                    (now + lease_ms).into(),
                    per_user_running.into(),
                ],
            )
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        Ok(Some(Lease {
            job: job_from(row)?,
            worker: worker.to_string(),
        }))
    }

    /// Renews the lease and records progress. `None` when the lease is no
    /// longer ours (another worker took the job over): stop working on it.
    /// `Some(true)` when a cancel was requested.
    pub async fn heartbeat(
        &self,
        lease: &Lease,
        lease_ms: i64,
        progress: &Progress,
    ) -> Result<Option<bool>, DbError> {
        let rows = self
            .db
            .query(
                "UPDATE jobs SET lease_expires_ms = $3, progress = $4 \
                 WHERE id = $1 AND lease_owner = $2 AND state = 'running' \
                 RETURNING cancel_requested",
                vec![
                    lease.job.id.clone().into(),
                    lease.worker.clone().into(),
                    (now_ms() + lease_ms).into(),
                    to_json(progress)?.into(),
                ],
            )
            .await?;
        rows.first().map(|r| r.int(0).map(|c| c != 0)).transpose()
    }

    /// Ends an attempt. Outputs are recorded in the same transaction,
    /// guarded by the lease: `false` when the lease was lost and nothing
    /// changed.
    pub async fn finish(
        &self,
        lease: &Lease,
        outcome: Outcome,
        progress: &Progress,
    ) -> Result<bool, DbError> {
        let now = now_ms();
        let id: Value = lease.job.id.clone().into();
        let worker: Value = lease.worker.clone().into();
        let mut statements = vec![Statement::guard(
            "UPDATE jobs SET progress = $3 WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
            vec![id.clone(), worker.clone(), to_json(progress)?.into()],
        )];
        match outcome {
            Outcome::Succeeded { outputs } => {
                let refs: Vec<JobOutput> = outputs
                    .iter()
                    .map(|d| JobOutput {
                        dataset_id: d.id.clone(),
                    })
                    .collect();
                statements.push(Statement::guard(
                    "UPDATE jobs SET state = 'succeeded', outputs = $3, finished_ms = $4, \
                     error = NULL, lease_owner = NULL \
                     WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
                    vec![id, worker, to_json(&refs)?.into(), now.into()],
                ));
                for d in &outputs {
                    statements.push(Self::insert_dataset_statement(d)?);
                }
            }
            Outcome::RetryAt {
                not_before_ms,
                error,
            } => statements.push(Statement::guard(
                "UPDATE jobs SET state = 'queued', not_before_ms = $3, error = $4, \
                 lease_owner = NULL, lease_expires_ms = NULL \
                 WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
                vec![id, worker, not_before_ms.into(), error.into()],
            )),
            Outcome::Failed { error } => {
                statements.push(Self::end(id, worker, JobState::Failed, Some(error), now))
            }
            Outcome::TimedOut { error } => {
                statements.push(Self::end(id, worker, JobState::TimedOut, Some(error), now))
            }
            Outcome::Cancelled => {
                statements.push(Self::end(id, worker, JobState::Cancelled, None, now))
            }
        }
        self.db.transaction(statements).await
    }

    fn end(
        id: Value,
        worker: Value,
        state: JobState,
        error: Option<String>,
        now: i64,
    ) -> Statement {
        Statement::guard(
            "UPDATE jobs SET state = $5, error = $3, finished_ms = $4, lease_owner = NULL \
             WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
            vec![id, worker, error.into(), now.into(), state.as_str().into()],
        )
    }

    /// Asks a job to stop: a queued job is cancelled at once, a running one
    /// at its worker's next heartbeat. Returns the state after the request.
    pub async fn request_cancel(&self, id: &str) -> Result<Option<JobState>, DbError> {
        let now = now_ms();
        self.db
            .execute(
                "UPDATE jobs SET state = 'cancelled', finished_ms = $2 \
                 WHERE id = $1 AND state = 'queued'",
                vec![id.into(), now.into()],
            )
            .await?;
        self.db
            .execute(
                "UPDATE jobs SET cancel_requested = 1 WHERE id = $1 AND state = 'running'",
                vec![id.into()],
            )
            .await?;
        Ok(self.job(id).await?.map(|j| j.state))
    }

    /// Ends jobs whose lease expired and that must not run again: out of
    /// attempts (failed) or cancelled while their worker was gone.
    pub async fn sweep(&self) -> Result<u64, DbError> {
        let now = now_ms();
        let cancelled = self
            .db
            .execute(
                "UPDATE jobs SET state = 'cancelled', finished_ms = $1, lease_owner = NULL \
                 WHERE state = 'running' AND lease_expires_ms < $1 AND cancel_requested = 1",
                vec![now.into()],
            )
            .await?;
        let failed = self
            .db
            .execute(
                "UPDATE jobs SET state = 'failed', finished_ms = $1, lease_owner = NULL, \
                 error = 'the worker running this job was lost on every attempt (' || attempts || ')' \
                 WHERE state = 'running' AND lease_expires_ms < $1 AND attempts >= max_attempts",
                vec![now.into()],
            )
            .await?;
        Ok(cancelled + failed)
    }

    pub async fn delete_job(&self, id: &str) -> Result<bool, DbError> {
        let deleted = self
            .db
            .transaction(vec![
                Statement::guard(
                    "DELETE FROM jobs WHERE id = $1 AND state NOT IN ('queued', 'running')",
                    vec![id.into()],
                ),
                Statement::new("DELETE FROM job_events WHERE job_id = $1", vec![id.into()]),
            ])
            .await?;
        Ok(deleted)
    }

    // ---- events and audit ----

    pub async fn add_event(
        &self,
        job_id: &str,
        kind: &str,
        data: &serde_json::Value,
    ) -> Result<(), DbError> {
        self.db
            .execute(
                "INSERT INTO job_events (job_id, seq, at_ms, kind, data) \
                 SELECT CAST($1 AS TEXT), COALESCE(MAX(seq), 0) + 1, CAST($2 AS BIGINT), CAST($3 AS TEXT), \
                 CAST($4 AS TEXT) FROM job_events WHERE job_id = $1",
                vec![
                    job_id.into(),
                    now_ms().into(),
                    kind.into(),
                    to_json(data)?.into(),
                ],
            )
            .await
            .map(|_| ())
    }

    pub async fn events(&self, job_id: &str, after_seq: i64) -> Result<Vec<JobEvent>, DbError> {
        let rows = self
            .db
            .query(
                "SELECT seq, at_ms, kind, data FROM job_events \
                 WHERE job_id = $1 AND seq > $2 ORDER BY seq",
                vec![job_id.into(), after_seq.into()],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(JobEvent {
                    seq: r.int(0)?,
                    at_ms: r.int(1)?,
                    kind: r.text(2)?,
                    data: serde_json::from_str(&r.text(3)?).map_err(|e| json_err("event", e))?,
                })
            })
            .collect()
    }

    /// Records a write: who, what, when.
    pub async fn audit(
        &self,
        subject: &str,
        action: &str,
        target: &str,
        detail: &serde_json::Value,
    ) -> Result<(), DbError> {
        self.db
            .execute(
                "INSERT INTO audit (at_ms, subject, action, target, detail) VALUES ($1, $2, $3, $4, $5)",
                vec![
                    now_ms().into(),
                    subject.into(),
                    action.into(),
                    target.into(),
                    to_json(detail)?.into(),
                ],
            )
            .await
            .map(|_| ())
    }

    /// The audit log, newest first.
    pub async fn audit_log(&self, limit: i64) -> Result<Vec<serde_json::Value>, DbError> {
        let rows = self
            .db
            .query(
                "SELECT at_ms, subject, action, target, detail FROM audit \
                 ORDER BY at_ms DESC LIMIT $1",
                vec![limit.into()],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(serde_json::json!({
                    "at_ms": r.int(0)?,
                    "subject": r.text(1)?,
                    "action": r.text(2)?,
                    "target": r.text(3)?,
                    "detail": serde_json::from_str::<serde_json::Value>(&r.text(4)?)
                        .map_err(|e| json_err("audit", e))?,
                }))
            })
            .collect()
    }
}

/// The lease, with `$1` worker, `$2` now, `$3` lease expiry, `$4` the
/// per-user limit. The outer `WHERE` repeats the runnable condition, so a
/// job another worker took between the two reads is not taken twice.
const LEASE_SQLITE: &str = "UPDATE jobs SET state = 'running', lease_owner = $1, \
    lease_expires_ms = $3, attempts = attempts + 1, started_ms = $2, progress = NULL \
    WHERE id = (SELECT j.id FROM jobs j \
        WHERE ((j.state = 'queued' AND j.not_before_ms <= $2) \
            OR (j.state = 'running' AND j.lease_expires_ms < $2)) \
          AND j.attempts < j.max_attempts AND j.cancel_requested = 0 \
          AND (SELECT COUNT(*) FROM jobs r WHERE r.owner = j.owner AND r.state = 'running' \
               AND r.lease_expires_ms >= $2) < $4 \
        ORDER BY j.created_ms, j.id LIMIT 1) \
      AND ((state = 'queued' AND not_before_ms <= $2) OR (state = 'running' AND lease_expires_ms < $2)) \
    RETURNING id, owner, job_type, params, state, attempts, max_attempts, \
    time_limit_ms, cancel_requested, progress, error, outputs, created_ms, started_ms, finished_ms";

/// As [`LEASE_SQLITE`], with the candidate row locked and rows other
/// replicas are leasing skipped.
const LEASE_POSTGRES: &str = "UPDATE jobs SET state = 'running', lease_owner = $1, \
    lease_expires_ms = $3, attempts = attempts + 1, started_ms = $2, progress = NULL \
    WHERE id = (SELECT j.id FROM jobs j \
        WHERE ((j.state = 'queued' AND j.not_before_ms <= $2) \
            OR (j.state = 'running' AND j.lease_expires_ms < $2)) \
          AND j.attempts < j.max_attempts AND j.cancel_requested = 0 \
          AND (SELECT COUNT(*) FROM jobs r WHERE r.owner = j.owner AND r.state = 'running' \
               AND r.lease_expires_ms >= $2) < $4 \
        ORDER BY j.created_ms, j.id LIMIT 1 FOR UPDATE SKIP LOCKED) \
      AND ((state = 'queued' AND not_before_ms <= $2) OR (state = 'running' AND lease_expires_ms < $2)) \
    RETURNING id, owner, job_type, params, state, attempts, max_attempts, \
    time_limit_ms, cancel_requested, progress, error, outputs, created_ms, started_ms, finished_ms";
