//! Who hears about a run: the runner reports every step once, as a
//! [`RunEvent`], to each [`RunObserver`] in turn: the lake's event log and
//! run report ([`crate::events::LakeLog`]), the terminal
//! ([`crate::terminal::Terminal`]), the run history ([`crate::history::History`]),
//! checkpoints ([`crate::checkpoint::Checkpoints`]) and notification hooks
//! ([`crate::notify::Notifier`]). A failing observer warns; it never fails
//! the run.

use crate::task::TaskResult;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A run as it starts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunInfo {
    pub run_id: String,
    pub pipeline: String,
    pub master: String,
    /// Every task of the pipeline, in file order.
    pub tasks: Vec<String>,
    /// Each task's classname, in the order of `tasks`.
    pub classnames: Vec<String>,
    /// Each task's `depends_on`, in the order of `tasks`.
    pub depends_on: Vec<Vec<String>>,
    /// The configuration file as written (before `${VAR}` interpolation).
    pub config: String,
    /// `RUN_ID/TASK` of the run whose task started this one (drift).
    pub triggered_by: Option<String>,
    pub resumed: bool,
    pub start_ms: i64,
}

/// The state of a whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Running,
    Succeeded,
    Failed,
}

impl RunState {
    pub const ALL: [RunState; 3] = [RunState::Running, RunState::Succeeded, RunState::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
        }
    }
}

/// A finished run: what `report.json` holds, what hooks receive and what
/// `kiln submit` summarizes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub pipeline: String,
    pub master: String,
    pub state: RunState,
    pub start_ms: i64,
    pub end_ms: i64,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The tasks that ran or were skipped, in execution order.
    pub tasks: Vec<TaskResult>,
}

/// One step of a run.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent {
    RunStarted(RunInfo),
    TaskStarted {
        task: String,
    },
    TaskRetrying {
        task: String,
        attempt: u32,
        error: String,
        delay_seconds: f64,
    },
    /// Succeeded, failed or skipped.
    TaskFinished(TaskResult),
    RunFinished(RunReport),
}

/// Something that follows a run. Object safe; `observe` is awaited before
/// the runner goes on, so an observer sees events in order.
pub trait RunObserver: Send + Sync {
    /// Handles `event`, stamped `ts_ms`. Failures are warnings.
    fn observe<'a>(&'a self, event: &'a RunEvent, ts_ms: i64) -> BoxFuture<'a, ()>;
}

/// The observers of one run, in the order they hear of each event.
#[derive(Clone, Default)]
pub struct Observers(Vec<Arc<dyn RunObserver>>);

impl Observers {
    pub fn with(mut self, observer: Arc<dyn RunObserver>) -> Self {
        self.0.push(observer);
        self
    }

    /// Tells every observer about `event`.
    pub async fn emit(&self, event: RunEvent) {
        let ts_ms = crate::task::now_ms();
        for o in &self.0 {
            o.observe(&event, ts_ms).await;
        }
    }
}
