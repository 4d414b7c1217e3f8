//! Runs read back from the lake: each run's event log
//! (`_kiln/runs/RUN_ID/events.jsonl`, written by [`crate::events`]) folded
//! into a [`RunRecord`]: what a history server shows, from nothing but the
//! lake.

use crate::observer::RunState;
use crate::progress::ProgressFile;
use futures::StreamExt;
use kiln_engine::storage::{Lake, object_path};
use kiln_engine::{KilnError, KilnSession, Result};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Where the runs' logs live, relative to the lake root.
pub const RUNS_DIR: &str = "_kiln/runs/";

/// One line of the event log, owned (the writer's [`crate::events::LogEvent`]
/// borrows). Keys added after the first release have defaults, so old logs
/// still read.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Recorded {
    RunStarted {
        run_id: String,
        pipeline: String,
        master: String,
        tasks: Vec<String>,
        #[serde(default)]
        classnames: Vec<String>,
        #[serde(default)]
        depends_on: Vec<Vec<String>>,
        #[serde(default)]
        config: String,
        #[serde(default)]
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
        error: String,
        delay_seconds: f64,
    },
    TaskSucceeded {
        task: String,
        seconds: f64,
        rows_in: Option<u64>,
        rows_out: Option<u64>,
        #[serde(default)]
        summary: Vec<String>,
        #[serde(default)]
        outputs: Vec<String>,
        #[serde(default)]
        metrics: serde_json::Value,
    },
    TaskFailed {
        task: String,
        seconds: f64,
        error: String,
    },
    RunFinished {
        state: RunState,
        seconds: f64,
        error: Option<String>,
    },
}

#[derive(Deserialize)]
struct Line {
    ts_ms: i64,
    #[serde(flatten)]
    event: Recorded,
}

/// What became of a task in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Not started (yet, or ever: an upstream task failed or `--only`).
    Pending,
    Running,
    Succeeded,
    Failed,
    /// Skipped by a resume: its checkpoint was reused.
    Skipped,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Running => "running",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
            TaskStatus::Skipped => "skipped",
        }
    }
}

/// How one attempt of a task ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum AttemptOutcome {
    Running,
    Succeeded,
    /// Failed, and another attempt followed.
    Retried {
        error: String,
    },
    Failed {
        error: String,
    },
}

/// One attempt of a task, in milliseconds since the epoch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attempt {
    pub start_ms: i64,
    pub end_ms: Option<i64>,
    #[serde(flatten)]
    pub outcome: AttemptOutcome,
}

/// A task of a run, as its events tell it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskRecord {
    pub name: String,
    pub classname: String,
    pub depends_on: Vec<String>,
    pub status: TaskStatus,
    pub attempts: Vec<Attempt>,
    pub seconds: Option<f64>,
    pub rows_in: Option<u64>,
    pub rows_out: Option<u64>,
    /// The task's own summary lines (outputs, metrics).
    pub summary: Vec<String>,
    /// Its metrics (null when it reported none).
    pub metrics: serde_json::Value,
    /// What it wrote (URIs), in the task's order.
    pub outputs: Vec<String>,
    pub error: Option<String>,
    /// Why a resume skipped it, with the time it was skipped.
    pub skipped: Option<(i64, String)>,
}

/// A run, as its event log tells it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRecord {
    pub run_id: String,
    pub pipeline: String,
    pub master: String,
    pub resumed: bool,
    /// `Running` until the log has its `run_finished` line: also a run
    /// whose process died (the log cannot tell the two apart).
    pub state: RunState,
    pub start_ms: i64,
    pub end_ms: Option<i64>,
    pub seconds: Option<f64>,
    pub error: Option<String>,
    /// The configuration file as written (empty in logs from before it
    /// was recorded).
    pub config: String,
    /// In file order.
    pub tasks: Vec<TaskRecord>,
    /// Lines that did not parse (a log cut short by a killed process).
    pub unreadable_lines: usize,
    /// Non-empty lines of the log read, so a live page follows from there.
    pub event_lines: usize,
}

impl RunRecord {
    /// Folds an event log; `None` when it has no `run_started` line.
    pub fn from_log(text: &str) -> Option<RunRecord> {
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let mut unreadable = 0;
        let mut run = loop {
            let line = lines.next()?;
            match serde_json::from_str::<Line>(line) {
                Ok(Line {
                    ts_ms,
                    event:
                        Recorded::RunStarted {
                            run_id,
                            pipeline,
                            master,
                            tasks,
                            classnames,
                            depends_on,
                            config,
                            resumed,
                        },
                }) => {
                    let tasks = tasks
                        .into_iter()
                        .enumerate()
                        .map(|(i, name)| TaskRecord {
                            name,
                            classname: classnames.get(i).cloned().unwrap_or_default(),
                            depends_on: depends_on.get(i).cloned().unwrap_or_default(),
                            status: TaskStatus::Pending,
                            attempts: Vec::new(),
                            seconds: None,
                            rows_in: None,
                            rows_out: None,
                            summary: Vec::new(),
                            metrics: serde_json::Value::Null,
                            outputs: Vec::new(),
                            error: None,
                            skipped: None,
                        })
                        .collect();
                    break RunRecord {
                        run_id,
                        pipeline,
                        master,
                        resumed,
                        state: RunState::Running,
                        start_ms: ts_ms,
                        end_ms: None,
                        seconds: None,
                        error: None,
                        config,
                        tasks,
                        unreadable_lines: unreadable,
                        event_lines: 0,
                    };
                }
                _ => unreadable += 1,
            }
        };
        for line in lines {
            match serde_json::from_str::<Line>(line) {
                Ok(line) => run.apply(line.ts_ms, line.event),
                Err(_) => run.unreadable_lines += 1,
            }
        }
        run.event_lines = text.lines().filter(|l| !l.trim().is_empty()).count();
        Some(run)
    }

    fn task(&mut self, name: &str) -> Option<&mut TaskRecord> {
        self.tasks.iter_mut().find(|t| t.name == name)
    }

    fn apply(&mut self, ts_ms: i64, event: Recorded) {
        match event {
            // A resume appends to the same log: the run goes on.
            Recorded::RunStarted { resumed: true, .. } => {
                self.resumed = true;
                self.state = RunState::Running;
                (self.end_ms, self.seconds, self.error) = (None, None, None);
            }
            Recorded::RunStarted { .. } => self.unreadable_lines += 1,
            Recorded::TaskStarted { task } => {
                if let Some(t) = self.task(&task) {
                    t.status = TaskStatus::Running;
                    t.attempts.push(Attempt {
                        start_ms: ts_ms,
                        end_ms: None,
                        outcome: AttemptOutcome::Running,
                    });
                }
            }
            Recorded::TaskRetrying {
                task,
                error,
                delay_seconds,
            } => {
                if let Some(t) = self.task(&task) {
                    t.close_attempt(ts_ms, AttemptOutcome::Retried { error });
                    // The next attempt starts after the back-off.
                    t.attempts.push(Attempt {
                        start_ms: ts_ms + (delay_seconds * 1000.0).round() as i64,
                        end_ms: None,
                        outcome: AttemptOutcome::Running,
                    });
                }
            }
            Recorded::TaskSucceeded {
                task,
                seconds,
                rows_in,
                rows_out,
                summary,
                outputs,
                metrics,
            } => {
                if let Some(t) = self.task(&task) {
                    t.finish(ts_ms, seconds, AttemptOutcome::Succeeded);
                    t.status = TaskStatus::Succeeded;
                    (t.rows_in, t.rows_out, t.summary, t.metrics, t.outputs) =
                        (rows_in, rows_out, summary, metrics, outputs);
                }
            }
            Recorded::TaskFailed {
                task,
                seconds,
                error,
            } => {
                if let Some(t) = self.task(&task) {
                    t.finish(
                        ts_ms,
                        seconds,
                        AttemptOutcome::Failed {
                            error: error.clone(),
                        },
                    );
                    t.status = TaskStatus::Failed;
                    t.error = Some(error);
                }
            }
            Recorded::TaskSkipped { task, reason } => {
                if let Some(t) = self.task(&task) {
                    t.status = TaskStatus::Skipped;
                    t.skipped = Some((ts_ms, reason));
                }
            }
            Recorded::RunFinished {
                state,
                seconds,
                error,
            } => {
                (self.state, self.seconds, self.error) = (state, Some(seconds), error);
                self.end_ms = Some(ts_ms);
            }
        }
    }

    /// Where the run ends on a timeline: its end, or the last thing it did.
    pub fn last_ms(&self) -> i64 {
        let task_ends = self.tasks.iter().flat_map(|t| {
            t.attempts
                .iter()
                .flat_map(|a| [Some(a.start_ms), a.end_ms])
                .chain([t.skipped.as_ref().map(|s| s.0)])
                .flatten()
        });
        self.end_ms
            .into_iter()
            .chain(task_ends)
            .fold(self.start_ms, i64::max)
    }
}

impl TaskRecord {
    fn close_attempt(&mut self, ts_ms: i64, outcome: AttemptOutcome) {
        match self.attempts.last_mut() {
            Some(a) if a.end_ms.is_none() => {
                a.end_ms = Some(ts_ms);
                a.outcome = outcome;
            }
            _ => self.attempts.push(Attempt {
                start_ms: ts_ms,
                end_ms: Some(ts_ms),
                outcome,
            }),
        }
    }

    /// Ends the last attempt; a log without its start (written by an older
    /// kiln) gets one from the task's duration.
    fn finish(&mut self, ts_ms: i64, seconds: f64, outcome: AttemptOutcome) {
        if self.attempts.is_empty() {
            self.attempts.push(Attempt {
                start_ms: ts_ms - (seconds * 1000.0).round() as i64,
                end_ms: None,
                outcome: AttemptOutcome::Running,
            });
        }
        self.close_attempt(ts_ms, outcome);
        self.seconds = Some(seconds);
    }
}

/// A run id as kiln makes them: letters, digits, `-`, `_` and `.`, so it
/// can name a directory and nothing else.
pub fn is_run_id(text: &str) -> bool {
    !text.is_empty()
        && !text.starts_with('.')
        && text.len() <= 200
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Reads one run's log; `None` when the lake has no such run.
pub async fn read_run(
    session: &KilnSession,
    lake: &Lake,
    run_id: &str,
) -> Result<Option<RunRecord>> {
    Ok(read_events(session, lake, run_id)
        .await?
        .and_then(|text| RunRecord::from_log(&text)))
}

/// The raw event log of a run (`None` when there is none).
pub async fn read_events(
    session: &KilnSession,
    lake: &Lake,
    run_id: &str,
) -> Result<Option<String>> {
    if !is_run_id(run_id) {
        return Ok(None);
    }
    read_text(session, lake, &format!("{RUNS_DIR}{run_id}/events.jsonl")).await
}

/// The running tasks' last reported progress (`None` when the run
/// published none).
pub async fn read_progress(
    session: &KilnSession,
    lake: &Lake,
    run_id: &str,
) -> Result<Option<ProgressFile>> {
    if !is_run_id(run_id) {
        return Ok(None);
    }
    let Some(text) = read_text(
        session,
        lake,
        &format!("{RUNS_DIR}{run_id}/{}", crate::events::PROGRESS_FILE),
    )
    .await?
    else {
        return Ok(None);
    };
    // A file from a newer kiln, or cut short: no progress rather than no page.
    Ok(serde_json::from_str(&text).ok())
}

/// A run's event log as listed: its size and time, which change whenever
/// a line is added.
#[derive(Debug, Clone, PartialEq)]
struct LogVersion {
    size: u64,
    modified_ms: i64,
}

/// Every run's event log in the lake, with its version.
async fn list_logs(session: &KilnSession, lake: &Lake) -> Result<Vec<(String, LogVersion)>> {
    let dir = lake.resolve(RUNS_DIR)?;
    let store = session.stores().store_for(&dir)?;
    let prefix = object_path(&dir)?;
    let mut listing = store.list(Some(&prefix));
    let mut logs = Vec::new();
    while let Some(meta) = listing.next().await {
        let meta = meta.map_err(|e| KilnError::io(&dir, e))?;
        if let Some(run_dir) = meta.location.as_ref().strip_suffix("/events.jsonl")
            && let Some((_, run_id)) = run_dir.rsplit_once('/')
        {
            let version = LogVersion {
                size: meta.size,
                modified_ms: meta.last_modified.timestamp_millis(),
            };
            logs.push((run_id.to_string(), version));
        }
    }
    Ok(logs)
}

fn newest_first(runs: &mut [Arc<RunRecord>]) {
    runs.sort_by(|a, b| (b.start_ms, &b.run_id).cmp(&(a.start_ms, &a.run_id)));
}

/// The runs of a lake, each log read and folded again only when its
/// listing (size, time) changed: a history server lists thousands of runs
/// at the cost of one listing.
#[derive(Default)]
pub struct RunCache {
    runs: std::sync::Mutex<HashMap<String, (LogVersion, Arc<RunRecord>)>>,
}

impl RunCache {
    /// Every run in the lake, newest first.
    pub async fn list(&self, session: &KilnSession, lake: &Lake) -> Result<Vec<Arc<RunRecord>>> {
        let logs = list_logs(session, lake).await?;
        let mut runs = Vec::with_capacity(logs.len());
        let mut live = HashSet::with_capacity(logs.len());
        for (run_id, version) in logs {
            let cached = self.cached(&run_id, &version);
            let run = match cached {
                Some(run) => Some(run),
                None => self.read(session, lake, &run_id, version).await?,
            };
            runs.extend(run);
            live.insert(run_id);
        }
        if let Ok(mut cache) = self.runs.lock() {
            cache.retain(|run_id, _| live.contains(run_id));
        }
        newest_first(&mut runs);
        Ok(runs)
    }

    fn cached(&self, run_id: &str, version: &LogVersion) -> Option<Arc<RunRecord>> {
        let cache = self.runs.lock().ok()?;
        let (seen, run) = cache.get(run_id)?;
        (seen == version).then(|| Arc::clone(run))
    }

    async fn read(
        &self,
        session: &KilnSession,
        lake: &Lake,
        run_id: &str,
        version: LogVersion,
    ) -> Result<Option<Arc<RunRecord>>> {
        let Some(run) = read_run(session, lake, run_id).await? else {
            return Ok(None);
        };
        let run = Arc::new(run);
        if let Ok(mut cache) = self.runs.lock() {
            cache.insert(run_id.to_string(), (version, Arc::clone(&run)));
        }
        Ok(Some(run))
    }
}

async fn read_text(session: &KilnSession, lake: &Lake, relative: &str) -> Result<Option<String>> {
    let url = lake.resolve(relative)?;
    Ok(session
        .stores()
        .read_object(&url)
        .await?
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = r#"{"ts_ms":1000,"event":"run_started","run_id":"p-1","pipeline":"p","master":"local[2]","tasks":["a","b","c"],"classnames":["X","Y","Z"],"depends_on":[[],["a"],["b"]],"config":"name: p\n","resumed":true}
{"ts_ms":1000,"event":"task_skipped","task":"a","reason":"checkpoint reused"}
{"ts_ms":1100,"event":"task_started","task":"b"}
{"ts_ms":1500,"event":"task_retrying","task":"b","attempt":1,"error":"timed out after 0.4s: b","delay_seconds":0.5}
{"ts_ms":3000,"event":"task_succeeded","task":"b","attempts":2,"seconds":1.9,"rows_in":10,"rows_out":7,"summary":["wrote out/"]}
{"ts_ms":3001,"event":"task_started","task":"c"}
{"ts_ms":3200,"event":"task_failed","task":"c","attempts":1,"seconds":0.2,"error":"data error: bad"}
{"ts_ms":3300,"event":"run_finished","run_id":"p-1","pipeline":"p","state":"failed","seconds":2.3,"error":"task c failed"}
"#;

    #[test]
    fn a_log_folds_into_tasks_with_attempts_skips_and_errors() {
        let run = RunRecord::from_log(LOG).expect("a run");
        assert_eq!(
            (run.state, run.end_ms, run.resumed),
            (RunState::Failed, Some(3300), true)
        );
        let [a, b, c] = &run.tasks[..] else {
            panic!("three tasks: {:?}", run.tasks)
        };
        assert_eq!(a.status, TaskStatus::Skipped);
        assert_eq!(a.skipped, Some((1000, "checkpoint reused".into())));
        assert_eq!(
            (b.status, b.rows_in, b.rows_out),
            (TaskStatus::Succeeded, Some(10), Some(7))
        );
        assert_eq!(b.depends_on, ["a"]);
        assert_eq!(
            b.attempts,
            [
                Attempt {
                    start_ms: 1100,
                    end_ms: Some(1500),
                    outcome: AttemptOutcome::Retried {
                        error: "timed out after 0.4s: b".into()
                    }
                },
                Attempt {
                    start_ms: 2000,
                    end_ms: Some(3000),
                    outcome: AttemptOutcome::Succeeded
                },
            ]
        );
        assert_eq!(c.status, TaskStatus::Failed);
        assert_eq!(c.error.as_deref(), Some("data error: bad"));
        assert_eq!(run.last_ms(), 3300);
        assert_eq!((run.unreadable_lines, run.event_lines), (0, 8));
    }

    #[test]
    fn a_log_cut_short_is_a_running_run_and_old_logs_still_read() {
        // No run_finished, a torn last line, no classnames/depends_on/config.
        let log = "{\"ts_ms\":5,\"event\":\"run_started\",\"run_id\":\"q\",\"pipeline\":\"q\",\"master\":\"local[1]\",\"tasks\":[\"t\"],\"resumed\":false}\n{\"ts_ms\":6,\"event\":\"task_started\",\"task\":\"t\"}\n{\"ts_ms\":7,\"ev";
        let run = RunRecord::from_log(log).expect("a run");
        assert_eq!(run.state, RunState::Running);
        assert_eq!(run.tasks[0].status, TaskStatus::Running);
        assert_eq!(run.tasks[0].classname, "");
        assert_eq!(run.unreadable_lines, 1);
        assert!(RunRecord::from_log("not json\n").is_none());
    }

    #[test]
    fn run_ids_cannot_leave_the_runs_directory() {
        assert!(is_run_id("indoor_outdoor-1795988886420-94b3"));
        for bad in ["", "..", "../x", "a/b", ".hidden", "a b", "a%2f"] {
            assert!(!is_run_id(bad), "{bad}");
        }
    }

    /// The cache lists new runs, reads a log again when it grew, and
    /// forgets a deleted run.
    #[tokio::test]
    async fn the_run_cache_follows_the_logs() -> Result<()> {
        let root = std::env::temp_dir().join(format!("kiln-run-cache-{}", std::process::id()));
        let dir = root.join("_kiln/runs/p-1");
        std::fs::create_dir_all(&dir).expect("dir");
        let log = dir.join("events.jsonl");
        let (running, _) = LOG.split_at(LOG.find("{\"ts_ms\":3300").unwrap_or(LOG.len()));
        std::fs::write(&log, running).expect("log");
        let session = KilnSession::connect(
            &"local[1]".parse()?,
            &kiln_engine::KilnExtensions::default(),
        )
        .await?;
        let lake = Lake::new(&root.to_string_lossy())?;
        let cache = RunCache::default();
        let runs = cache.list(&session, &lake).await?;
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].state, RunState::Running);
        // Unchanged: the same folded record, not read again.
        let again = cache.list(&session, &lake).await?;
        assert!(Arc::ptr_eq(&runs[0], &again[0]));
        // The log grew: read again.
        std::fs::write(&log, LOG).expect("log");
        let finished = cache.list(&session, &lake).await?;
        assert_eq!(finished[0].state, RunState::Failed);
        std::fs::remove_dir_all(&dir).expect("dir");
        assert!(cache.list(&session, &lake).await?.is_empty());
        assert!(cache.runs.lock().map(|c| c.is_empty()).unwrap_or(false));
        std::fs::remove_dir_all(&root).expect("root");
        Ok(())
    }
}
