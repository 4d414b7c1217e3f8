//! Notification hooks run when a run ends: a JSON POST of the run report to
//! a URL, or a shell command with the report on stdin and `KILN_RUN_ID`,
//! `KILN_PIPELINE`, `KILN_RUN_STATE`, `KILN_RUN_ERROR` in its environment.
//! A failing hook is a warning: it never changes the run's outcome.

use crate::config::{Hook, NotifyConfig};
use crate::observer::{RunEvent, RunObserver, RunReport, RunState};
use futures::future::BoxFuture;
use std::time::Duration;

/// Runs the config's hooks for the run's final state.
pub struct Notifier {
    config: NotifyConfig,
}

impl Notifier {
    pub fn new(config: &NotifyConfig) -> Self {
        Notifier {
            config: config.clone(),
        }
    }

    async fn notify(&self, report: &RunReport) {
        let hooks = if report.state == RunState::Succeeded {
            &self.config.on_success
        } else {
            &self.config.on_failure
        };
        if hooks.is_empty() {
            return;
        }
        let body = match serde_json::to_string(report) {
            Ok(body) => body,
            Err(e) => {
                eprintln!("warning: notification not sent: the run report did not serialize: {e}");
                return;
            }
        };
        for hook in hooks {
            let result = match hook {
                Hook::Webhook { webhook } => post(webhook, &body).await,
                Hook::Command { command } => run_command(command, report, &body).await,
            };
            if let Err(e) = result {
                eprintln!("warning: notification hook failed: {e}");
            }
        }
    }
}

impl RunObserver for Notifier {
    fn observe<'a>(&'a self, event: &'a RunEvent, _ts_ms: i64) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let RunEvent::RunFinished(report) = event {
                self.notify(report).await;
            }
        })
    }
}

async fn post(url: &str, body: &str) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("POST {url}: HTTP {}", response.status()))
    }
}

async fn run_command(command: &str, report: &RunReport, body: &str) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("KILN_RUN_ID", &report.run_id)
        .env("KILN_PIPELINE", &report.pipeline)
        .env("KILN_RUN_STATE", report.state.as_str())
        .env("KILN_RUN_ERROR", report.error.as_deref().unwrap_or(""))
        .stdin(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("{command}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine.
        if let Err(e) = stdin.write_all(body.as_bytes()).await {
            tracing::debug!("hook {command} did not read the report: {e}");
        }
    }
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .map_err(|_| format!("{command}: still running after 60 s"))?
        .map_err(|e| format!("{command}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{command}: exited with {status}"))
    }
}
