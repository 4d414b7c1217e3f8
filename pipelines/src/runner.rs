//! Runs a pipeline: binds every task, orders them by `depends_on`, runs
//! independent tasks concurrently, retries retryable failures, enforces time
//! limits, and records every task's outcome in the run's event log.

use crate::checkpoint::{Checkpoint, Checkpoints};
use crate::config::LoadedConfig;
use crate::dag::TaskGraph;
use crate::events::{Event, EventLog, LogFormat, Notification, NotifiedTask};
use crate::history::History;
use crate::tasks::{self, Task, TaskContext, TaskOutcome};
use datafusion::object_store::ObjectStoreExt;
use kiln_engine::storage::{Lake, object_path};
use kiln_engine::{KilnError, KilnExtensions, KilnSession, Master, Result};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub master: Master,
    /// Overrides the pipeline name.
    pub name: Option<String>,
    /// `key=value` settings: `kiln.storage.root` or DataFusion settings.
    pub conf: Vec<(String, String)>,
    /// Run only this task (its inputs must exist).
    pub only: Option<String>,
    /// Run this task and everything downstream of it.
    pub from: Option<String>,
    /// Continue this run: skip tasks whose checkpoints are still valid.
    pub resume: Option<String>,
    /// Seconds after which the whole run is abandoned.
    pub time_limit: Option<f64>,
    /// How events are shown on stderr.
    pub log_format: LogFormat,
    /// A live progress display (text format; the CLI asks for it on a TTY).
    pub live_progress: bool,
}

/// A task's record in the run.
#[derive(Debug, Clone, Serialize)]
pub struct TaskRecord {
    pub task: String,
    pub state: String,
    pub attempts: u32,
    pub start_ms: u128,
    pub end_ms: u128,
    pub outcome: Option<TaskOutcome>,
    pub error: Option<String>,
}

/// The result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub pipeline: String,
    pub tasks: Vec<TaskRecord>,
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// A new run id: pipeline name, UTC time and a random suffix.
pub fn new_run_id(pipeline: &str) -> String {
    let ms = now_ms();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{pipeline}-{ms}-{:04x}",
        (nanos ^ std::process::id()) & 0xffff
    )
}

/// Binds all tasks and checks the graph, without running anything.
pub fn plan(loaded: &LoadedConfig) -> Result<(TaskGraph, Vec<Arc<dyn Task>>)> {
    let graph = TaskGraph::build(loaded)?;
    let bound = loaded
        .config
        .processing_tasks
        .iter()
        .map(|t| tasks::bind(loaded, t).map(Arc::from))
        .collect::<Result<Vec<Arc<dyn Task>>>>()?;
    Ok((graph, bound))
}

/// Runs the pipeline. Prints `run_id: ID` on stderr at start.
pub async fn run(
    loaded: &LoadedConfig,
    options: &RunOptions,
    extensions: &KilnExtensions,
) -> Result<RunReport> {
    let (graph, bound) = plan(loaded)?;
    let config = &loaded.config;
    let pipeline = options.name.clone().unwrap_or_else(|| config.name.clone());
    let mut root = config.storage.root.clone();
    for (k, v) in &options.conf {
        if k == "kiln.storage.root" {
            root = v.clone();
        }
    }
    let lake = Lake::new(&root)?;
    let run_id = options
        .resume
        .clone()
        .unwrap_or_else(|| new_run_id(&pipeline));
    if options.log_format == LogFormat::Text {
        eprintln!("run_id: {run_id}");
    }
    let session = KilnSession::connect(&options.master, extensions).await?;
    for (k, v) in &options.conf {
        if !k.starts_with("kiln.") {
            session
                .context()
                .sql(&format!("SET {k} = '{}'", v.replace('\'', "''")))
                .await
                .map_err(|e| KilnError::config(format!("--conf {k}={v}: {e}")))?;
        }
    }
    let checkpoints = Checkpoints::open(&session, &lake, &run_id)?;
    if options.resume.is_some() && !checkpoints.exists().await {
        return Err(KilnError::config_fix(
            format!(
                "run {run_id} has no checkpoints under {}_kiln/runs/{run_id}/",
                lake.root()
            ),
            "check the run id (`kiln runs`) and that --conf kiln.storage.root matches the original run",
        ));
    }
    let history = match History::open_default() {
        Ok(h) => Some(h),
        Err(e) => {
            eprintln!("warning: run history unavailable: {e}");
            None
        }
    };
    let record_history = |f: &dyn Fn(&History) -> Result<()>| {
        if let Some(h) = &history
            && let Err(e) = f(h)
        {
            eprintln!("warning: run history: {e}");
        }
    };
    let events = Arc::new(EventLog::new(
        &session,
        &lake,
        &run_id,
        &pipeline,
        options.log_format,
        options.live_progress,
    ));
    events.emit(Event::RunStarted {
        run_id: run_id.clone(),
        pipeline: pipeline.clone(),
        master: options.master.to_string(),
        tasks: config
            .processing_tasks
            .iter()
            .map(|t| t.name.clone())
            .collect(),
        resumed: options.resume.is_some(),
    });
    let run_start = now_ms() as i64;
    record_history(&|h| h.run_started(&run_id, &pipeline, &options.master.to_string(), run_start));
    let deadline = options
        .time_limit
        .map(|s| Instant::now() + Duration::from_secs_f64(s));

    let selected = select(loaded, &graph, options)?;
    let names: Vec<String> = config
        .processing_tasks
        .iter()
        .map(|t| t.name.clone())
        .collect();
    let returned = Arc::new(Mutex::new(HashMap::new()));
    let mut records: HashMap<usize, TaskRecord> = HashMap::new();
    let mut fingerprints: HashMap<usize, String> = HashMap::new();
    let mut running = tokio::task::JoinSet::new();
    let mut started: HashSet<usize> = HashSet::new();
    let mut failed: Option<KilnError> = None;
    loop {
        // Start (or skip, on resume) every task whose dependencies are done.
        let mut changed = true;
        while changed && failed.is_none() {
            changed = false;
            for &i in &graph.order {
                if started.contains(&i) || !selected.contains(&i) {
                    continue;
                }
                let ready = graph.deps[i].iter().all(|d| {
                    !selected.contains(d) || records.get(d).is_some_and(|r| r.state == "succeeded")
                });
                if !ready {
                    continue;
                }
                started.insert(i);
                changed = true;
                let task_cfg = config.processing_tasks[i].clone();
                let upstream: Vec<String> = graph.deps[i]
                    .iter()
                    .filter_map(|d| fingerprints.get(d).cloned())
                    .collect();
                let fingerprint = checkpoints
                    .fingerprint(&task_cfg, &bound[i].inputs(), &upstream)
                    .await?;
                fingerprints.insert(i, fingerprint.clone());
                if options.resume.is_some()
                    && let Some(cp) = checkpoints.valid(&names[i], &fingerprint).await
                {
                    events.emit(Event::TaskSkipped {
                        task: names[i].clone(),
                        reason: format!("completed in run {run_id} and still valid"),
                    });
                    let now = now_ms();
                    let record = TaskRecord {
                        task: names[i].clone(),
                        state: "succeeded".into(),
                        attempts: 0,
                        start_ms: now,
                        end_ms: now,
                        outcome: Some(cp.outcome),
                        error: None,
                    };
                    record_history(&|h| {
                        h.task_finished(
                            &run_id, &names[i], "skipped", 0, now as i64, now as i64, None, None,
                            None, None,
                        )
                    });
                    records.insert(i, record);
                    continue;
                }
                events.emit(Event::TaskStarted {
                    task: names[i].clone(),
                });
                let ctx = TaskContext {
                    session: session.clone(),
                    lake: lake.clone(),
                    task_name: names[i].clone(),
                    returned: Arc::clone(&returned),
                    progress: events.task_progress(&names[i]),
                };
                let task = Arc::clone(&bound[i]);
                tracing::info!(task = %names[i], "task started");
                let task_events = Arc::clone(&events);
                running.spawn(async move {
                    let start = now_ms();
                    let (result, attempts) =
                        run_with_retries(task.as_ref(), &ctx, &task_cfg, &task_events).await;
                    (i, start, attempts, result)
                });
            }
        }
        let next = match deadline {
            Some(d) => match tokio::time::timeout_at(d.into(), running.join_next()).await {
                Ok(n) => n,
                Err(_) => {
                    running.abort_all();
                    failed.get_or_insert(KilnError::Timeout {
                        what: format!("run {run_id} (time limit)"),
                        seconds: options.time_limit.unwrap_or_default(),
                    });
                    break;
                }
            },
            None => running.join_next().await,
        };
        let Some(joined) = next else {
            break;
        };
        let (i, start_ms, attempts, result) =
            joined.map_err(|e| KilnError::config(format!("task runner panicked: {e}")))?;
        let end_ms = now_ms();
        let secs = (end_ms - start_ms) as f64 / 1000.0;
        let record = match result {
            Ok(outcome) => {
                events.emit(Event::TaskSucceeded {
                    task: names[i].clone(),
                    attempts,
                    seconds: secs,
                    rows_in: outcome.rows_in,
                    rows_out: outcome.rows_out,
                    summary: outcome.summary.clone(),
                });
                let fingerprint = fingerprints.get(&i).cloned().unwrap_or_default();
                if let Err(e) = checkpoints
                    .save(
                        &names[i],
                        &Checkpoint {
                            fingerprint,
                            outcome: outcome.clone(),
                        },
                    )
                    .await
                {
                    eprintln!("warning: checkpoint of task {} not saved: {e}", names[i]);
                }
                let metrics = (!outcome.metrics.is_null()).then(|| outcome.metrics.to_string());
                record_history(&|h| {
                    h.task_finished(
                        &run_id,
                        &names[i],
                        "succeeded",
                        attempts,
                        start_ms as i64,
                        end_ms as i64,
                        outcome.rows_in,
                        outcome.rows_out,
                        metrics.clone(),
                        None,
                    )
                });
                TaskRecord {
                    task: names[i].clone(),
                    state: "succeeded".into(),
                    attempts,
                    start_ms,
                    end_ms,
                    outcome: Some(outcome),
                    error: None,
                }
            }
            Err(e) => {
                events.emit(Event::TaskFailed {
                    task: names[i].clone(),
                    attempts,
                    seconds: secs,
                    error: e.to_string(),
                });
                record_history(&|h| {
                    h.task_finished(
                        &run_id,
                        &names[i],
                        "failed",
                        attempts,
                        start_ms as i64,
                        end_ms as i64,
                        None,
                        None,
                        None,
                        Some(e.to_string()),
                    )
                });
                let rec = TaskRecord {
                    task: names[i].clone(),
                    state: "failed".into(),
                    attempts,
                    start_ms,
                    end_ms,
                    outcome: None,
                    error: Some(e.to_string()),
                };
                if failed.is_none() {
                    failed = Some(e.context(format!("task '{}'", names[i])));
                }
                rec
            }
        };
        records.insert(i, record);
    }
    let tasks: Vec<TaskRecord> = graph
        .order
        .iter()
        .filter_map(|i| records.remove(i))
        .collect();
    let report = RunReport {
        run_id: run_id.clone(),
        pipeline: pipeline.clone(),
        tasks,
    };
    write_event_log(&session, &lake, &report).await;
    let state = if failed.is_some() {
        "failed"
    } else {
        "succeeded"
    };
    let end = now_ms() as i64;
    record_history(&|h| h.run_finished(&run_id, state, end));
    let seconds = (end - run_start) as f64 / 1000.0;
    let error = failed.as_ref().map(ToString::to_string);
    events.emit(Event::RunFinished {
        run_id: run_id.clone(),
        pipeline: pipeline.clone(),
        state: state.into(),
        seconds,
        error: error.clone(),
    });
    events.finish().await;
    crate::events::notify(
        &config.notify,
        &Notification {
            run_id: run_id.clone(),
            pipeline,
            state: state.into(),
            seconds,
            error,
            tasks: report
                .tasks
                .iter()
                .map(|t| NotifiedTask {
                    task: t.task.clone(),
                    state: t.state.clone(),
                    attempts: t.attempts,
                    seconds: (t.end_ms.saturating_sub(t.start_ms)) as f64 / 1000.0,
                    error: t.error.clone(),
                })
                .collect(),
        },
    )
    .await;
    match failed {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

fn select(
    loaded: &LoadedConfig,
    graph: &TaskGraph,
    options: &RunOptions,
) -> Result<HashSet<usize>> {
    let find = |name: &str| {
        loaded
            .config
            .processing_tasks
            .iter()
            .position(|t| t.name == name)
            .ok_or_else(|| KilnError::config(format!("no task named '{name}' in {}", loaded.file)))
    };
    Ok(match (&options.only, &options.from) {
        (Some(_), Some(_)) => {
            return Err(KilnError::config("--only and --from cannot be combined"));
        }
        (Some(only), None) => HashSet::from([find(only)?]),
        (None, Some(from)) => graph.downstream(find(from)?),
        (None, None) => graph.order.iter().copied().collect(),
    })
}

async fn run_with_retries(
    task: &dyn Task,
    ctx: &TaskContext,
    cfg: &crate::config::TaskConfig,
    events: &EventLog,
) -> (Result<TaskOutcome>, u32) {
    let mut attempt = 0;
    let mut delay = cfg.retry_delay.max(0.0);
    loop {
        attempt += 1;
        let fut = task.run(ctx);
        let result = match cfg.execution_timeout {
            Some(limit) => match tokio::time::timeout(Duration::from_secs_f64(limit), fut).await {
                Ok(r) => r,
                Err(_) => Err(KilnError::Timeout {
                    what: format!("task '{}' (execution_timeout)", cfg.name),
                    seconds: limit,
                }),
            },
            None => fut.await,
        };
        match result {
            Err(e) if e.is_retryable() && attempt <= cfg.retries => {
                events.emit(Event::TaskRetrying {
                    task: cfg.name.clone(),
                    attempt,
                    error: e.to_string(),
                    delay_seconds: delay,
                });
                tokio::time::sleep(Duration::from_secs_f64(delay)).await;
                if cfg.retry_exponential_backoff {
                    delay = (delay * 2.0).min(cfg.max_retry_delay);
                }
            }
            other => return (other, attempt),
        }
    }
}

/// Writes `_kiln/runs/RUN_ID/report.json` into the lake (best effort).
async fn write_event_log(session: &KilnSession, lake: &Lake, report: &RunReport) {
    let Ok(url) = lake.resolve(&format!("_kiln/runs/{}/report.json", report.run_id)) else {
        return;
    };
    let (Ok(store), Ok(path)) = (session.stores().store_for(&url), object_path(&url)) else {
        return;
    };
    if let Ok(json) = serde_json::to_vec_pretty(report) {
        let started = Instant::now();
        if let Err(e) = store.put(&path, json.into()).await {
            tracing::warn!(
                "could not write run report {url}: {e} ({:?})",
                started.elapsed()
            );
        }
    }
}
