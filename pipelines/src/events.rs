//! The run's record in the lake: a JSON Lines event log
//! (`_kiln/runs/RUN_ID/events.jsonl`, one [`LogEvent`] per line with
//! `ts_ms`) and, when the run ends, its report (`report.json`).

use crate::observer::{RunEvent, RunObserver};
use crate::progress::ProgressBoard;
use crate::task::TaskState;
use datafusion::object_store::ObjectStoreExt;
use futures::future::BoxFuture;
use kiln_engine::storage::{Lake, local_path, object_path};
use kiln_engine::{KilnError, KilnSession};
use serde::Serialize;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The running tasks' progress, beside the event log.
pub const PROGRESS_FILE: &str = "progress.json";

/// The event log's line format (its schema is part of kiln's interface).
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum LogEvent<'a> {
    RunStarted {
        run_id: &'a str,
        pipeline: &'a str,
        master: &'a str,
        tasks: &'a [String],
        classnames: &'a [String],
        depends_on: &'a [Vec<String>],
        config: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        triggered_by: Option<&'a str>,
        resumed: bool,
    },
    TaskStarted {
        task: &'a str,
    },
    TaskSkipped {
        task: &'a str,
        reason: &'a str,
    },
    TaskRetrying {
        task: &'a str,
        attempt: u32,
        error: &'a str,
        delay_seconds: f64,
    },
    TaskSucceeded {
        task: &'a str,
        attempts: u32,
        seconds: f64,
        rows_in: Option<u64>,
        rows_out: Option<u64>,
        summary: &'a [String],
        outputs: &'a [String],
        /// The task's metrics (a training winner's, a batch's drift).
        #[serde(skip_serializing_if = "Option::is_none")]
        metrics: Option<&'a serde_json::Value>,
    },
    TaskFailed {
        task: &'a str,
        attempts: u32,
        seconds: f64,
        error: &'a str,
    },
    RunFinished {
        run_id: &'a str,
        pipeline: &'a str,
        state: &'a str,
        seconds: f64,
        error: Option<&'a str>,
    },
}

impl<'a> From<&'a RunEvent> for LogEvent<'a> {
    fn from(event: &'a RunEvent) -> Self {
        match event {
            RunEvent::RunStarted(run) => LogEvent::RunStarted {
                run_id: &run.run_id,
                pipeline: &run.pipeline,
                master: &run.master,
                tasks: &run.tasks,
                classnames: &run.classnames,
                depends_on: &run.depends_on,
                config: &run.config,
                triggered_by: run.triggered_by.as_deref(),
                resumed: run.resumed,
            },
            RunEvent::TaskStarted { task } => LogEvent::TaskStarted { task },
            RunEvent::TaskRetrying {
                task,
                attempt,
                error,
                delay_seconds,
            } => LogEvent::TaskRetrying {
                task,
                attempt: *attempt,
                error,
                delay_seconds: *delay_seconds,
            },
            RunEvent::TaskFinished(r) => match r.state {
                TaskState::Skipped => LogEvent::TaskSkipped {
                    task: &r.task,
                    reason: r.reason.as_deref().unwrap_or_default(),
                },
                TaskState::Succeeded => LogEvent::TaskSucceeded {
                    task: &r.task,
                    attempts: r.attempts,
                    seconds: r.seconds,
                    rows_in: r.outcome.as_ref().and_then(|o| o.rows_in),
                    rows_out: r.outcome.as_ref().and_then(|o| o.rows_out),
                    summary: r.outcome.as_ref().map(|o| &o.summary[..]).unwrap_or(&[]),
                    outputs: r.outcome.as_ref().map(|o| &o.outputs[..]).unwrap_or(&[]),
                    metrics: r
                        .outcome
                        .as_ref()
                        .map(|o| &o.metrics)
                        .filter(|m| !m.is_null()),
                },
                TaskState::Failed => LogEvent::TaskFailed {
                    task: &r.task,
                    attempts: r.attempts,
                    seconds: r.seconds,
                    error: r.error.as_deref().unwrap_or_default(),
                },
            },
            RunEvent::RunFinished(report) => LogEvent::RunFinished {
                run_id: &report.run_id,
                pipeline: &report.pipeline,
                state: report.state.as_str(),
                seconds: report.seconds,
                error: report.error.as_deref(),
            },
        }
    }
}

#[derive(Serialize)]
struct Stamped<'a> {
    ts_ms: i64,
    #[serde(flatten)]
    event: LogEvent<'a>,
}

/// `event` as one line of the event log.
pub fn json_line(event: &RunEvent, ts_ms: i64) -> String {
    let stamped = Stamped {
        ts_ms,
        event: event.into(),
    };
    // The line has only strings, numbers and lists: it always serializes.
    serde_json::to_string(&stamped)
        .unwrap_or_else(|e| format!("{{\"serialization_error\":\"{e}\"}}"))
}

/// Writes the event log and the run report of one run into the lake. A
/// local log is appended to at every event; an object store (which cannot
/// append) gets the whole log at the end of the run.
pub struct LakeLog {
    session: KilnSession,
    events: Option<url::Url>,
    report: Option<url::Url>,
    /// The running tasks' progress, published to `progress.json` about once
    /// a second while the run goes.
    progress: Option<(ProgressBoard, url::Url)>,
    /// The board's version last published; `u64::MAX` once the run ended.
    published: Arc<AtomicU64>,
    lines: Mutex<Vec<String>>,
    /// Lines a remote log already holds: an older body never overwrites a
    /// newer one.
    remote_lines: Arc<tokio::sync::Mutex<usize>>,
}

impl LakeLog {
    pub fn new(session: &KilnSession, lake: &Lake, run_id: &str) -> Self {
        let at = |file: &str| lake.resolve(&format!("_kiln/runs/{run_id}/{file}")).ok();
        LakeLog {
            session: session.clone(),
            events: at("events.jsonl"),
            report: at("report.json"),
            progress: None,
            published: Default::default(),
            lines: Mutex::new(Vec::new()),
            remote_lines: Default::default(),
        }
    }

    /// Also publishes `board` as the run's `progress.json`.
    pub fn publishing(mut self, board: &ProgressBoard) -> Self {
        self.progress = self
            .events
            .as_ref()
            .and_then(|e| e.join(PROGRESS_FILE).ok())
            .map(|url| (board.clone(), url));
        self
    }

    /// Publishes the board every second until the run ends.
    fn start_publishing(&self) {
        let Some((board, url)) = self.progress.clone() else {
            return;
        };
        let (session, published) = (self.session.clone(), Arc::clone(&self.published));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                if published.load(Ordering::Acquire) == u64::MAX {
                    return;
                }
                publish_progress(&session, &board, &url, &published).await;
            }
        });
    }

    /// The last publication, when the run ends.
    async fn stop_publishing(&self) {
        if let Some((board, url)) = &self.progress {
            publish_progress(&self.session, board, url, &self.published).await;
        }
        self.published.store(u64::MAX, Ordering::Release);
    }

    fn append_local(&self, line: &str) {
        let Some(path) = self.events.as_ref().and_then(local_path) else {
            return;
        };
        let result = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
            })
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = result {
            tracing::warn!("event log {} not written: {e}", path.display());
        }
    }

    async fn put(&self, url: &url::Url, body: Vec<u8>) {
        let stored = match (self.session.stores().store_for(url), object_path(url)) {
            (Ok(store), Ok(path)) => store
                .put(&path, body.into())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            (Err(e), _) | (_, Err(e)) => Err(e.to_string()),
        };
        if let Err(e) = stored {
            eprintln!("warning: {url} not written: {e}");
        }
    }
}

/// Writes the board to `url` (one put) when it changed since the last time.
async fn publish_progress(
    session: &KilnSession,
    board: &ProgressBoard,
    url: &url::Url,
    published: &AtomicU64,
) {
    let (version, file) = board.snapshot();
    let last = published.load(Ordering::Acquire);
    if version == 0 || version <= last {
        return;
    }
    let written = match serde_json::to_vec(&file) {
        Ok(body) => session.stores().write_object(url, body).await,
        Err(e) => Err(KilnError::internal("serializing the progress", e)),
    };
    match written {
        Ok(()) => {
            let _ = published.compare_exchange(last, version, Ordering::AcqRel, Ordering::Acquire);
        }
        Err(e) => tracing::warn!("progress not published: {e}"),
    }
}

impl RunObserver for LakeLog {
    fn observe<'a>(&'a self, event: &'a RunEvent, ts_ms: i64) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if matches!(event, RunEvent::RunStarted(_)) {
                self.start_publishing();
            }
            let line = json_line(event, ts_ms);
            self.append_local(&line);
            let (count, body): (usize, Vec<u8>) = match self.lines.lock() {
                Ok(mut lines) => {
                    lines.push(line);
                    let body = lines.iter().flat_map(|s| format!("{s}\n").into_bytes());
                    (lines.len(), body.collect())
                }
                Err(_) => (0, Vec::new()),
            };
            let remote = self.events.as_ref().filter(|u| local_path(u).is_none());
            let RunEvent::RunFinished(report) = event else {
                // Keep a remote log current in the background, so a killed
                // run leaves most of its log behind.
                if let Some(url) = remote
                    && let (Ok(store), Ok(path)) =
                        (self.session.stores().store_for(url), object_path(url))
                {
                    let written = Arc::clone(&self.remote_lines);
                    tokio::spawn(async move {
                        let mut written = written.lock().await;
                        if *written >= count {
                            return;
                        }
                        match store.put(&path, body.into()).await {
                            Ok(_) => *written = count,
                            Err(e) => tracing::warn!("event log {path} not updated: {e}"),
                        }
                    });
                }
                return;
            };
            self.stop_publishing().await;
            if let Some(url) = remote {
                let mut written = self.remote_lines.lock().await;
                self.put(url, body).await;
                *written = count;
            }
            if let Some(url) = &self.report {
                match serde_json::to_vec_pretty(report) {
                    Ok(body) => self.put(url, body).await,
                    Err(e) => eprintln!("warning: run report not serialized: {e}"),
                }
            }
        })
    }
}
