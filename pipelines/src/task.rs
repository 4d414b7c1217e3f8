//! What a task is to the runner: the object-safe [`Task`] trait, the
//! [`TaskContext`] it runs in and the [`TaskOutcome`] it reports; and what
//! the runner records of it, [`TaskResult`] with its [`TaskState`], the one
//! shape the event log, the run history, the run report and notifications
//! all use.

use crate::progress::TaskProgress;
use datafusion::dataframe::DataFrame;
use kiln_engine::io::{FileFormat, read_table};
use kiln_engine::storage::Lake;
use kiln_engine::{KilnError, KilnSession, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

/// Who is running: what a task records in lineage or passes to a run it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunIdentity {
    pub run_id: String,
    pub pipeline: String,
    /// The master, as `kiln submit --master` takes it.
    pub master: String,
    /// The run's `--conf` settings.
    pub conf: Vec<(String, String)>,
    /// `RUN_ID/TASK` of the run that started this one, if any.
    pub triggered_by: Option<String>,
}

/// What a running task can reach.
#[derive(Clone)]
pub struct TaskContext {
    pub session: KilnSession,
    pub lake: Lake,
    pub task_name: String,
    /// The run this task belongs to.
    pub run: Arc<RunIdentity>,
    /// DataFrames that upstream tasks in `mode: return` handed over.
    pub returned: Arc<Mutex<HashMap<String, DataFrame>>>,
    /// The task's line in the live progress display.
    pub progress: TaskProgress,
}

impl TaskContext {
    /// Reads an input: `task:NAME` for a returned DataFrame, else a lake path.
    pub async fn input(&self, location: &str, format: FileFormat) -> Result<DataFrame> {
        if let Some(name) = location.strip_prefix("task:") {
            let returned = self
                .returned
                .lock()
                .map_err(|_| KilnError::poisoned("the returned DataFrames"))?;
            return returned.get(name).cloned().ok_or_else(|| {
                KilnError::config(format!(
                    "task '{}': input 'task:{name}' has no returned DataFrame (is '{name}' upstream and in mode: return?)",
                    self.task_name
                ))
            });
        }
        let url = self.lake.resolve(location)?;
        // The runner prefixes the task's name to its errors.
        read_table(&self.session, &url, format).await
    }
}

/// What a finished task reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskOutcome {
    /// Rows the task read, where it knows.
    #[serde(default)]
    pub rows_in: Option<u64>,
    pub rows_out: Option<u64>,
    /// URLs of what it wrote.
    pub outputs: Vec<String>,
    pub metrics: serde_json::Value,
    /// Lines for the terminal and the run summary.
    pub summary: Vec<String>,
}

pub type TaskFuture<'a> = Pin<Box<dyn Future<Output = Result<TaskOutcome>> + Send + 'a>>;

/// A task class bound to its parameters.
pub trait Task: Send + Sync + std::fmt::Debug {
    /// Lake paths (or `task:NAME`) this task reads: fingerprinted for
    /// checkpoints, checked by `kiln validate`.
    fn inputs(&self) -> Vec<String> {
        Vec::new()
    }

    /// Lake paths this task writes (relative to the lake root, as in the
    /// config): `kiln validate` matches them against other tasks' inputs
    /// and refuses two tasks writing one place.
    fn outputs(&self) -> Vec<String> {
        Vec::new()
    }

    fn run<'a>(&'a self, ctx: &'a TaskContext) -> TaskFuture<'a>;
}

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Succeeded,
    Failed,
    /// Not run: a resumed run found its checkpoint still valid.
    Skipped,
}

impl TaskState {
    /// Whether downstream tasks may start (a skipped task's outputs exist).
    pub fn is_done(self) -> bool {
        matches!(self, TaskState::Succeeded | TaskState::Skipped)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Skipped => "skipped",
        }
    }
}

impl std::str::FromStr for TaskState {
    type Err = KilnError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "succeeded" => Ok(TaskState::Succeeded),
            "failed" => Ok(TaskState::Failed),
            "skipped" => Ok(TaskState::Skipped),
            other => Err(KilnError::data(
                "run history",
                format!("unknown task state '{other}'"),
            )),
        }
    }
}

/// A task's record in a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    pub task: String,
    pub state: TaskState,
    /// Attempts made (0 when skipped).
    pub attempts: u32,
    pub start_ms: i64,
    pub end_ms: i64,
    pub seconds: f64,
    /// What the task reported (also for a skipped task: its checkpoint's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<TaskOutcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why the task was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The fingerprint of its config and inputs (see `checkpoint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

impl TaskResult {
    /// A result of `task` between `start_ms` and `end_ms`.
    pub fn new(task: &str, state: TaskState, attempts: u32, start_ms: i64, end_ms: i64) -> Self {
        TaskResult {
            task: task.to_string(),
            state,
            attempts,
            start_ms,
            end_ms,
            seconds: (end_ms - start_ms).max(0) as f64 / 1000.0,
            outcome: None,
            error: None,
            reason: None,
            fingerprint: None,
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
