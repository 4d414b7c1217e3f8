//! Task classes: each `classname` binds its typed parameters and runs
//! against a session and the lake.

mod command;
mod extract;
mod features;
mod generate;
mod predict;
mod train;

use crate::config::{LoadedConfig, TaskConfig, suggest};
use datafusion::dataframe::DataFrame;
use kiln_engine::io::{FileFormat, read_table};
use kiln_engine::storage::Lake;
use kiln_engine::{KilnError, KilnSession, Result};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

pub use command::ShellCommand;
pub use extract::{ExtractorPrediction, ExtractorTraining, SaveMode};
pub use features::{FeaturePipeline, load_pipeline_model};
pub use generate::RuleBasedGenerator;
pub use predict::{BatchPrediction, load_model};
pub use train::ModelTraining;

/// What a running task can reach.
#[derive(Clone)]
pub struct TaskContext {
    pub session: KilnSession,
    pub lake: Lake,
    pub task_name: String,
    /// DataFrames that upstream tasks in `mode: return` handed over.
    pub returned: Arc<Mutex<HashMap<String, DataFrame>>>,
    /// The task's line in the live progress display.
    pub progress: crate::events::TaskProgress,
}

impl TaskContext {
    /// Reads an input: `task:NAME` for a returned DataFrame, else a lake path.
    pub async fn input(&self, location: &str, format: FileFormat) -> Result<DataFrame> {
        if let Some(name) = location.strip_prefix("task:") {
            let returned = self
                .returned
                .lock()
                .map_err(|_| KilnError::config("poisoned"))?;
            return returned.get(name).cloned().ok_or_else(|| {
                KilnError::config(format!(
                    "task '{}': input 'task:{name}' has no returned DataFrame (is '{name}' upstream and in mode: return?)",
                    self.task_name
                ))
            });
        }
        let url = self.lake.resolve(location)?;
        read_table(&self.session, &url, format)
            .await
            .map_err(|e| e.context(format!("task '{}'", self.task_name)))
    }
}

/// What a finished task reports.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct TaskOutcome {
    /// Rows the task read, where it knows.
    #[serde(default)]
    pub rows_in: Option<u64>,
    pub rows_out: Option<u64>,
    pub outputs: Vec<String>,
    pub metrics: serde_json::Value,
    pub summary: Vec<String>,
}

pub type TaskFuture<'a> = Pin<Box<dyn Future<Output = Result<TaskOutcome>> + Send + 'a>>;

/// A task class bound to its parameters.
pub trait Task: Send + Sync + std::fmt::Debug {
    /// Lake paths this task reads (checked by `kiln validate`).
    fn inputs(&self) -> Vec<String> {
        Vec::new()
    }
    fn run<'a>(&'a self, ctx: &'a TaskContext) -> TaskFuture<'a>;
}

type Binder = fn(&LoadedConfig, &TaskConfig) -> Result<Box<dyn Task>>;

/// Every task class, by `classname`.
pub fn registry() -> Vec<(&'static str, Binder)> {
    vec![
        ("ExtractorTraining", |l, t| {
            Ok(Box::new(ExtractorTraining::bind(l, t)?))
        }),
        ("ExtractorPrediction", |l, t| {
            Ok(Box::new(ExtractorPrediction::bind(l, t)?))
        }),
        ("RuleBasedGenerator", |l, t| {
            Ok(Box::new(RuleBasedGenerator::bind(l, t)?))
        }),
        ("FeaturePipeline", |l, t| {
            Ok(Box::new(FeaturePipeline::bind(l, t)?))
        }),
        ("ModelTraining", |l, t| {
            Ok(Box::new(ModelTraining::bind(l, t)?))
        }),
        ("BatchPrediction", |l, t| {
            Ok(Box::new(BatchPrediction::bind(l, t)?))
        }),
        ("ShellCommand", |l, t| {
            Ok(Box::new(ShellCommand::bind(l, t)?))
        }),
    ]
}

pub fn classnames() -> Vec<&'static str> {
    registry().into_iter().map(|(n, _)| n).collect()
}

/// Binds a task config to its class and typed parameters.
pub fn bind(loaded: &LoadedConfig, task: &TaskConfig) -> Result<Box<dyn Task>> {
    let reg = registry();
    match reg.iter().find(|(n, _)| *n == task.classname) {
        Some((_, binder)) => binder(loaded, task),
        None => {
            let names: Vec<&str> = reg.iter().map(|(n, _)| *n).collect();
            Err(KilnError::Config {
                message: format!(
                    "{}: task '{}': unknown classname '{}'",
                    loaded.locate(&task.name, "classname"),
                    task.name,
                    task.classname
                ),
                fix: Some(match suggest(&task.classname, &names) {
                    Some(s) => format!("did you mean {s}?"),
                    None => format!("use one of: {}", names.join(", ")),
                }),
            })
        }
    }
}
