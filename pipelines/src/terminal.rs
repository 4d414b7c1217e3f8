//! The run on stderr: plain lines, JSON lines (`--log-format json`), or a
//! live display with one line per running task when stderr is a TTY.

use crate::observer::{RunEvent, RunObserver};
use crate::progress::TaskProgress;
use crate::task::TaskState;
use futures::future::BoxFuture;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// How run events are shown on stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines; a live progress display when stderr is a TTY.
    #[default]
    Text,
    /// One JSON object per event, as in the lake's event log.
    Json,
}

/// Shows a run on stderr.
pub struct Terminal {
    pipeline: String,
    format: LogFormat,
    progress: Option<MultiProgress>,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Terminal {
    /// `live` asks for the progress display (text format on a TTY only).
    pub fn new(pipeline: &str, format: LogFormat, live: bool) -> Self {
        let progress = (live && format == LogFormat::Text)
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Terminal {
            pipeline: pipeline.to_string(),
            format,
            progress,
            bars: Mutex::new(HashMap::new()),
        }
    }

    /// The progress handle of a task that is starting.
    pub fn task_progress(&self, task: &str) -> TaskProgress {
        let Some(mp) = &self.progress else {
            return TaskProgress::default();
        };
        let bar = mp.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix:.bold} {wide_msg} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(task.to_string());
        bar.set_message("running");
        bar.enable_steady_tick(Duration::from_millis(120));
        if let Ok(mut bars) = self.bars.lock() {
            bars.insert(task.to_string(), bar.clone());
        }
        TaskProgress::on(bar)
    }

    fn text(&self, event: &RunEvent) -> Vec<String> {
        let p = &self.pipeline;
        match event {
            // The runner prints `run_id:` before connecting.
            RunEvent::RunStarted(_) | RunEvent::RunFinished(_) => Vec::new(),
            RunEvent::TaskStarted { task } => vec![format!("[{p}] task {task} started")],
            RunEvent::TaskRetrying {
                task,
                attempt,
                error,
                delay_seconds,
            } => vec![format!(
                "    attempt {attempt} of task {task} failed ({error}); retrying in {delay_seconds:.1}s"
            )],
            RunEvent::TaskFinished(r) => match r.state {
                TaskState::Skipped => vec![format!(
                    "[{p}] task {} skipped: {}",
                    r.task,
                    r.reason.as_deref().unwrap_or_default()
                )],
                TaskState::Succeeded => std::iter::once(format!(
                    "[{p}] task {} succeeded in {:.1}s",
                    r.task, r.seconds
                ))
                .chain(
                    r.outcome
                        .iter()
                        .flat_map(|o| o.summary.iter().map(|l| format!("    {l}"))),
                )
                .collect(),
                TaskState::Failed => vec![format!(
                    "[{p}] task {} failed after {} attempt(s) in {:.1}s",
                    r.task, r.attempts, r.seconds
                )],
            },
        }
    }

    fn print(&self, line: &str) {
        match &self.progress {
            Some(mp) => {
                if mp.println(line).is_err() {
                    eprintln!("{line}");
                }
            }
            None => eprintln!("{line}"),
        }
    }
}

impl RunObserver for Terminal {
    fn observe<'a>(&'a self, event: &'a RunEvent, ts_ms: i64) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let RunEvent::TaskFinished(r) = event
                && let Some(bar) = self.bars.lock().ok().and_then(|mut b| b.remove(&r.task))
            {
                bar.finish_and_clear();
            }
            match self.format {
                LogFormat::Json => eprintln!("{}", crate::events::json_line(event, ts_ms)),
                LogFormat::Text => {
                    for line in self.text(event) {
                        self.print(&line);
                    }
                }
            }
            if let (RunEvent::RunFinished(_), Some(mp)) = (event, &self.progress)
                && let Err(e) = mp.clear()
            {
                tracing::debug!("progress display not cleared: {e}");
            }
        })
    }
}
