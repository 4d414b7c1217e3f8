//! Run events and where they go: the run's JSON Lines log in the lake
//! (`_kiln/runs/RUN_ID/events.jsonl`), the terminal (plain lines, JSON
//! lines, or a live progress display on a TTY) and notification hooks.

use crate::config::{Hook, NotifyConfig};
use datafusion::object_store::ObjectStoreExt;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln_engine::KilnSession;
use kiln_engine::storage::{Lake, local_path, object_path};
use serde::Serialize;
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How run events are shown on stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines; a live progress display when stderr is a TTY.
    #[default]
    Text,
    /// One JSON object per event.
    Json,
}

/// Something that happened in a run.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        run_id: String,
        pipeline: String,
        master: String,
        tasks: Vec<String>,
        resumed: bool,
    },
    TaskStarted {
        task: String,
    },
    TaskSkipped {
        task: String,
        reason: String,
    },
    TaskRetrying {
        task: String,
        attempt: u32,
        error: String,
        delay_seconds: f64,
    },
    TaskSucceeded {
        task: String,
        attempts: u32,
        seconds: f64,
        rows_in: Option<u64>,
        rows_out: Option<u64>,
        summary: Vec<String>,
    },
    TaskFailed {
        task: String,
        attempts: u32,
        seconds: f64,
        error: String,
    },
    RunFinished {
        run_id: String,
        pipeline: String,
        state: String,
        seconds: f64,
        error: Option<String>,
    },
}

#[derive(Serialize)]
struct Stamped<'a> {
    ts_ms: u128,
    #[serde(flatten)]
    event: &'a Event,
}

/// A running task's line in the progress display.
#[derive(Clone, Default)]
pub struct TaskProgress {
    bar: Option<ProgressBar>,
    state: Arc<Mutex<(String, u64)>>,
}

impl TaskProgress {
    /// Shows what the task is doing now.
    pub fn stage(&self, stage: impl Into<String>) {
        if let Ok(mut s) = self.state.lock() {
            s.0 = stage.into();
            self.redraw(&s);
        }
    }

    /// Adds `rows` to the rows processed.
    pub fn add_rows(&self, rows: u64) {
        if let Ok(mut s) = self.state.lock() {
            s.1 += rows;
            self.redraw(&s);
        }
    }

    fn redraw(&self, (stage, rows): &(String, u64)) {
        if let Some(bar) = &self.bar {
            bar.set_message(if *rows > 0 {
                format!("{stage} · {rows} rows")
            } else {
                stage.clone()
            });
        }
    }
}

/// Where a run's events go.
pub struct EventLog {
    pipeline: String,
    format: LogFormat,
    progress: Option<MultiProgress>,
    bars: Mutex<HashMap<String, ProgressBar>>,
    lines: Mutex<Vec<String>>,
    session: KilnSession,
    url: Option<url::Url>,
}

impl EventLog {
    /// Events of run `run_id`, logged under the run's directory in `lake`.
    /// `live` asks for the progress display (text format on a TTY only).
    pub fn new(
        session: &KilnSession,
        lake: &Lake,
        run_id: &str,
        pipeline: &str,
        format: LogFormat,
        live: bool,
    ) -> Self {
        let progress = (live && format == LogFormat::Text)
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        EventLog {
            pipeline: pipeline.to_string(),
            format,
            progress,
            bars: Mutex::new(HashMap::new()),
            lines: Mutex::new(Vec::new()),
            session: session.clone(),
            url: lake
                .resolve(&format!("_kiln/runs/{run_id}/events.jsonl"))
                .ok(),
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
        TaskProgress {
            bar: Some(bar),
            state: Arc::default(),
        }
    }

    /// Records `event`: appends it to the lake log and shows it.
    pub fn emit(&self, event: Event) {
        let ts_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let json = serde_json::to_string(&Stamped {
            ts_ms,
            event: &event,
        })
        .unwrap_or_default();
        if let Ok(mut lines) = self.lines.lock() {
            lines.push(json.clone());
        }
        self.persist(&json);
        match self.format {
            LogFormat::Json => eprintln!("{json}"),
            LogFormat::Text => {
                let task = match &event {
                    Event::TaskSucceeded { task, .. } | Event::TaskFailed { task, .. } => {
                        Some(task.clone())
                    }
                    _ => None,
                };
                if let Some(bar) = task.and_then(|t| self.bars.lock().ok()?.remove(&t)) {
                    bar.finish_and_clear();
                }
                for line in self.text(&event) {
                    match &self.progress {
                        Some(mp) => {
                            let _ = mp.println(&line);
                        }
                        None => eprintln!("{line}"),
                    }
                }
            }
        }
    }

    fn text(&self, event: &Event) -> Vec<String> {
        let p = &self.pipeline;
        match event {
            // The runner prints `run_id:` before connecting.
            Event::RunStarted { .. } => Vec::new(),
            Event::TaskStarted { task } => vec![format!("[{p}] task {task} started")],
            Event::TaskSkipped { task, reason } => {
                vec![format!("[{p}] task {task} skipped: {reason}")]
            }
            Event::TaskRetrying {
                task,
                attempt,
                error,
                delay_seconds,
            } => vec![format!(
                "    attempt {attempt} of task {task} failed ({error}); retrying in {delay_seconds:.1}s"
            )],
            Event::TaskSucceeded {
                task,
                seconds,
                summary,
                ..
            } => std::iter::once(format!("[{p}] task {task} succeeded in {seconds:.1}s"))
                .chain(summary.iter().map(|l| format!("    {l}")))
                .collect(),
            Event::TaskFailed {
                task,
                attempts,
                seconds,
                ..
            } => vec![format!(
                "[{p}] task {task} failed after {attempts} attempt(s) in {seconds:.1}s"
            )],
            Event::RunFinished { .. } => Vec::new(),
        }
    }

    /// Appends to a local log at once; object stores get the whole log
    /// rewritten (they cannot append) in the background.
    fn persist(&self, json: &str) {
        let Some(url) = &self.url else {
            return;
        };
        if let Some(path) = local_path(url) {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
            {
                let _ = writeln!(f, "{json}");
            }
            return;
        }
        let body = self.body();
        let (Ok(store), Ok(path)) = (self.session.stores().store_for(url), object_path(url)) else {
            return;
        };
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = store.put(&path, body.into()).await;
            });
        }
    }

    fn body(&self) -> Vec<u8> {
        self.lines
            .lock()
            .map(|l| {
                l.iter()
                    .flat_map(|s| format!("{s}\n").into_bytes())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Writes the complete log (object stores) and clears the display.
    pub async fn finish(&self) {
        if let Some(mp) = &self.progress {
            let _ = mp.clear();
        }
        let Some(url) = &self.url else {
            return;
        };
        if local_path(url).is_some() {
            return;
        }
        if let (Ok(store), Ok(path)) = (self.session.stores().store_for(url), object_path(url))
            && let Err(e) = store.put(&path, self.body().into()).await
        {
            eprintln!("warning: event log {url} not written: {e}");
        }
    }
}

/// What hooks receive: the run's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Notification {
    pub run_id: String,
    pub pipeline: String,
    pub state: String,
    pub seconds: f64,
    pub error: Option<String>,
    pub tasks: Vec<NotifiedTask>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NotifiedTask {
    pub task: String,
    pub state: String,
    pub attempts: u32,
    pub seconds: f64,
    pub error: Option<String>,
}

/// Runs the hooks for the run's final state. A failing hook is a warning:
/// it never changes the run's outcome.
pub async fn notify(config: &NotifyConfig, note: &Notification) {
    let hooks = if note.state == "succeeded" {
        &config.on_success
    } else {
        &config.on_failure
    };
    let body = serde_json::to_string(note).unwrap_or_default();
    for hook in hooks {
        let result = match hook {
            Hook::Webhook { webhook } => post(webhook, &body).await,
            Hook::Command { command } => run_command(command, note, &body).await,
        };
        if let Err(e) = result {
            eprintln!("warning: notification hook failed: {e}");
        }
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

async fn run_command(command: &str, note: &Notification, body: &str) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("KILN_RUN_ID", &note.run_id)
        .env("KILN_PIPELINE", &note.pipeline)
        .env("KILN_RUN_STATE", &note.state)
        .env("KILN_RUN_ERROR", note.error.as_deref().unwrap_or(""))
        .stdin(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("{command}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(body.as_bytes()).await;
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
