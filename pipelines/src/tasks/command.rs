//! `ShellCommand`: runs an external program as a task (Airflow's
//! BashOperator). A non-zero exit is a retryable failure; its stderr tail is
//! part of the error.

use crate::config::{LoadedConfig, TaskConfig};
use crate::task::{Task, TaskContext, TaskFuture, TaskOutcome};
use kiln_engine::{KilnError, Result};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ShellCommandInit")]
pub struct Init {
    /// Program and arguments (no shell unless you call one).
    command: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// Working directory (default: kiln's).
    #[serde(default)]
    cwd: Option<String>,
}

#[derive(Debug)]
pub struct ShellCommand {
    init: Init,
}

impl ShellCommand {
    pub fn bind(loaded: &LoadedConfig, task: &TaskConfig) -> Result<Self> {
        let (init, super::NoParams {}): (Init, super::NoParams) = loaded.task_params(task)?;
        if init.command.is_empty() {
            return Err(KilnError::config(format!(
                "{}: command is empty",
                loaded.at(task, "command")
            )));
        }
        Ok(ShellCommand { init })
    }
}

impl Task for ShellCommand {
    fn run<'a>(&'a self, ctx: &'a TaskContext) -> TaskFuture<'a> {
        Box::pin(async move {
            let mut cmd = tokio::process::Command::new(&self.init.command[0]);
            cmd.args(&self.init.command[1..])
                .envs(&self.init.env)
                .env("KILN_LAKE_ROOT", ctx.lake.root().as_str())
                .kill_on_drop(true);
            if let Some(dir) = &self.init.cwd {
                cmd.current_dir(dir);
            }
            let what = format!("command {:?}", self.init.command);
            ctx.progress
                .stage(format!("running {}", self.init.command[0]));
            let out = cmd.output().await.map_err(|e| {
                KilnError::config_fix(
                    format!("cannot start {what}: {e}"),
                    "check the program path",
                )
            })?;
            if !out.status.success() {
                let stderr = String::from_utf8_lossy(&out.stderr);
                let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
                return Err(KilnError::io(
                    &what,
                    format!(
                        "exited with {}: {}",
                        out.status,
                        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                    ),
                ));
            }
            let stdout = String::from_utf8_lossy(&out.stdout);
            Ok(TaskOutcome {
                summary: stdout
                    .lines()
                    .rev()
                    .take(3)
                    .map(str::to_string)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect(),
                ..Default::default()
            })
        })
    }
}
