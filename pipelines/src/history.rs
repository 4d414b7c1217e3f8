//! Run history in an embedded SQLite database (`$KILN_HOME/history.sqlite`,
//! default `~/.kiln`): runs and their [`TaskResult`]s (state, attempts,
//! times, rows, outputs, metrics, errors), for `kiln runs`.

use crate::observer::{RunEvent, RunInfo, RunObserver, RunReport, RunState};
use crate::task::{TaskOutcome, TaskResult, TaskState};
use futures::future::BoxFuture;
use kiln_engine::{KilnError, Result};
use rusqlite::{Connection, params};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Mutex;

/// The run history database.
pub struct History {
    conn: Mutex<Connection>,
    path: PathBuf,
}

/// One run as the history lists it.
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    pub run_id: String,
    pub pipeline: String,
    pub state: RunState,
    pub master: String,
    pub start_ms: i64,
    pub end_ms: Option<i64>,
}

/// kiln's own directory: `$KILN_HOME`, else `~/.kiln`.
pub fn kiln_home() -> PathBuf {
    std::env::var_os("KILN_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".kiln")))
        .unwrap_or_else(|| PathBuf::from(".kiln"))
}

/// Where the history database lives.
pub fn default_path() -> PathBuf {
    kiln_home().join("history.sqlite")
}

/// Columns added after the first release, created on open when missing.
const ADDED_COLUMNS: &[(&str, &str)] = &[("rows_in", "INTEGER"), ("outputs", "TEXT")];

impl History {
    pub fn open_default() -> Result<Self> {
        Self::open(default_path())
    }

    pub fn open(path: PathBuf) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| KilnError::io(dir.display(), e))?;
        }
        let db_err = |e: rusqlite::Error| KilnError::io(path.display(), e);
        let conn = Connection::open(&path).map_err(db_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(db_err)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS runs (run_id TEXT PRIMARY KEY, pipeline TEXT NOT NULL, state TEXT NOT NULL, master TEXT NOT NULL, start_ms INTEGER NOT NULL, end_ms INTEGER);
             CREATE TABLE IF NOT EXISTS tasks (run_id TEXT NOT NULL, task TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL, start_ms INTEGER NOT NULL, end_ms INTEGER NOT NULL, rows_out INTEGER, metrics TEXT, error TEXT, PRIMARY KEY (run_id, task));",
        )
        .map_err(db_err)?;
        for (column, kind) in ADDED_COLUMNS {
            if conn
                .prepare(&format!("SELECT {column} FROM tasks LIMIT 0"))
                .is_err()
            {
                conn.execute_batch(&format!("ALTER TABLE tasks ADD COLUMN {column} {kind}"))
                    .map_err(db_err)?;
            }
        }
        Ok(History {
            conn: Mutex::new(conn),
            path,
        })
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| KilnError::poisoned("the run history"))?;
        f(&conn).map_err(|e| KilnError::io(self.path.display(), e))
    }

    pub fn run_started(&self, run: &RunInfo) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO runs (run_id, pipeline, state, master, start_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(run_id) DO UPDATE SET state = ?3, master = ?4, end_ms = NULL",
                params![run.run_id, run.pipeline, RunState::Running.as_str(), run.master, run.start_ms],
            )
        })?;
        Ok(())
    }

    pub fn run_finished(&self, report: &RunReport) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE runs SET state = ?2, end_ms = ?3 WHERE run_id = ?1",
                params![report.run_id, report.state.as_str(), report.end_ms],
            )
        })?;
        Ok(())
    }

    pub fn task_finished(&self, run_id: &str, r: &TaskResult) -> Result<()> {
        let outcome = r.outcome.as_ref();
        let rows = |f: fn(&TaskOutcome) -> Option<u64>| outcome.and_then(f).map(|n| n as i64);
        let metrics = outcome
            .filter(|o| !o.metrics.is_null())
            .map(|o| o.metrics.to_string());
        let outputs = outcome
            .map(|o| serde_json::to_string(&o.outputs))
            .transpose()
            .map_err(|e| KilnError::internal("recording task outputs", e))?;
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO tasks (run_id, task, state, attempts, start_ms, end_ms, rows_in, rows_out, metrics, error, outputs) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    run_id,
                    r.task,
                    r.state.as_str(),
                    r.attempts,
                    r.start_ms,
                    r.end_ms,
                    rows(|o| o.rows_in),
                    rows(|o| o.rows_out),
                    metrics,
                    r.error,
                    outputs
                ],
            )
        })?;
        Ok(())
    }

    pub fn runs(&self, pipeline: Option<&str>) -> Result<Vec<RunRow>> {
        let rows = self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT run_id, pipeline, state, master, start_ms, end_ms FROM runs WHERE (?1 IS NULL OR pipeline = ?1) ORDER BY start_ms DESC",
            )?;
            let rows = stmt.query_map(params![pipeline], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                ))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        rows.into_iter()
            .map(|(run_id, pipeline, state, master, start_ms, end_ms)| {
                Ok(RunRow {
                    state: parse_run_state(&state)?,
                    run_id,
                    pipeline,
                    master,
                    start_ms,
                    end_ms,
                })
            })
            .collect()
    }

    /// The tasks of a run, as recorded (summaries are not kept).
    pub fn tasks(&self, run_id: &str) -> Result<Vec<TaskResult>> {
        type Row = (
            String,
            String,
            u32,
            i64,
            i64,
            Option<i64>,
            Option<i64>,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let rows: Vec<Row> = self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT task, state, attempts, start_ms, end_ms, rows_in, rows_out, metrics, error, outputs FROM tasks WHERE run_id = ?1 ORDER BY start_ms, task",
            )?;
            let rows = stmt.query_map(params![run_id], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                ))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        let corrupt = |what: &str, e: serde_json::Error| {
            KilnError::data(self.path.display(), format!("{what}: {e}"))
        };
        rows.into_iter()
            .map(
                |(
                    task,
                    state,
                    attempts,
                    start,
                    end,
                    rows_in,
                    rows_out,
                    metrics,
                    error,
                    outputs,
                )| {
                    let state: TaskState = state.parse()?;
                    let mut r = TaskResult::new(&task, state, attempts, start, end);
                    r.error = error;
                    if state != TaskState::Failed {
                        r.outcome = Some(TaskOutcome {
                            rows_in: rows_in.map(|n| n as u64),
                            rows_out: rows_out.map(|n| n as u64),
                            outputs: outputs
                                .map(|o| serde_json::from_str(&o))
                                .transpose()
                                .map_err(|e| corrupt("task outputs", e))?
                                .unwrap_or_default(),
                            metrics: metrics
                                .map(|m| serde_json::from_str(&m))
                                .transpose()
                                .map_err(|e| corrupt("task metrics", e))?
                                .unwrap_or_default(),
                            summary: Vec::new(),
                        });
                    }
                    Ok(r)
                },
            )
            .collect()
    }
}

fn parse_run_state(s: &str) -> Result<RunState> {
    match s {
        "running" => Ok(RunState::Running),
        "succeeded" => Ok(RunState::Succeeded),
        "failed" => Ok(RunState::Failed),
        other => Err(KilnError::data(
            "run history",
            format!("unknown run state '{other}'"),
        )),
    }
}

/// Records one run in the history, as its observer.
pub struct RunHistory {
    history: History,
    run_id: String,
}

impl RunHistory {
    pub fn new(history: History, run_id: &str) -> Self {
        RunHistory {
            history,
            run_id: run_id.to_string(),
        }
    }
}

impl RunObserver for RunHistory {
    fn observe<'a>(&'a self, event: &'a RunEvent, _ts_ms: i64) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let recorded = match event {
                RunEvent::RunStarted(run) => self.history.run_started(run),
                RunEvent::TaskFinished(r) => self.history.task_finished(&self.run_id, r),
                RunEvent::RunFinished(report) => self.history.run_finished(report),
                RunEvent::TaskStarted { .. } | RunEvent::TaskRetrying { .. } => Ok(()),
            };
            if let Err(e) = recorded {
                eprintln!("warning: run history: {e}");
            }
        })
    }
}
