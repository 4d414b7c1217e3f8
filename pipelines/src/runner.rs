//! Runs a pipeline: binds every task, orders them by `depends_on`, runs
//! independent tasks concurrently with retries and time limits, and reports
//! every step once to the run's [`Observers`](crate::observer::Observers).

use crate::checkpoint::Checkpoints;
use crate::config::{LoadedConfig, TaskConfig};
use crate::dag::TaskGraph;
use crate::events::LakeLog;
use crate::history::{History, RunHistory};
use crate::notify::Notifier;
use crate::observer::{Observers, RunEvent, RunInfo, RunObserver, RunReport, RunState};
use crate::progress::ProgressBoard;
use crate::task::{RunIdentity, Task, TaskContext, TaskOutcome, TaskResult, TaskState, now_ms};
use crate::terminal::{LogFormat, Terminal};
use datafusion::dataframe::DataFrame;
use kiln_engine::storage::Lake;
use kiln_engine::{KilnError, KilnExtensions, KilnSession, Master, Result};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

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
    /// The id of a new run (default: [`new_run_id`]); a parent that starts
    /// the run as a child process uses it to find the run's log.
    pub run_id: Option<String>,
    /// `RUN_ID/TASK` of the run whose task started this one (drift-triggered
    /// retraining); recorded in the run's log and its models' lineage.
    pub triggered_by: Option<String>,
}

/// A new run id: pipeline name, UTC time and a random suffix.
pub fn new_run_id(pipeline: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{pipeline}-{}-{:04x}",
        now_ms(),
        (nanos ^ std::process::id()) & 0xffff
    )
}

/// A pipeline bound and checked, ready to run.
#[derive(Debug)]
pub struct Plan {
    pub graph: TaskGraph,
    /// The bound tasks, in file order (indices of `graph`).
    pub tasks: Vec<Arc<dyn Task>>,
}

/// Binds all tasks and checks the graph, without running anything.
pub fn plan(loaded: &LoadedConfig) -> Result<Plan> {
    let graph = TaskGraph::build(loaded)?;
    let tasks = loaded
        .config
        .processing_tasks
        .iter()
        .map(|t| crate::tasks::bind(loaded, t).map(Arc::from))
        .collect::<Result<Vec<Arc<dyn Task>>>>()?;
    Ok(Plan { graph, tasks })
}

/// Runs the pipeline. Prints `run_id: ID` on stderr at start (text logs).
pub async fn run(
    loaded: &LoadedConfig,
    options: &RunOptions,
    extensions: &KilnExtensions,
) -> Result<RunReport> {
    run_observed(loaded, options, extensions, Vec::new()).await
}

/// [`run`], with more observers after kiln's own (a service following its
/// jobs' tasks).
pub async fn run_observed(
    loaded: &LoadedConfig,
    options: &RunOptions,
    extensions: &KilnExtensions,
    extra: Vec<Arc<dyn RunObserver>>,
) -> Result<RunReport> {
    let plan = plan(loaded)?;
    let config = &loaded.config;
    let selected = select(loaded, &plan.graph, options)?;
    let pipeline = options.name.clone().unwrap_or_else(|| config.name.clone());
    let root = options
        .conf
        .iter()
        .rev()
        .find(|(k, _)| k == "kiln.storage.root")
        .map_or(config.storage.root.as_str(), |(_, v)| v.as_str());
    let lake = Lake::new(root)?;
    if options.resume.is_some() && options.run_id.is_some() {
        return Err(KilnError::config_fix(
            "a resumed run keeps its id",
            "give either --resume RUN_ID or --run-id, not both",
        ));
    }
    let run_id = match options.resume.clone().or_else(|| options.run_id.clone()) {
        Some(id) if crate::run_log::is_run_id(&id) => id,
        Some(id) => {
            return Err(KilnError::config_fix(
                format!("invalid run id '{id}'"),
                "use letters, digits, '-', '_' and '.' only",
            ));
        }
        None => new_run_id(&pipeline),
    };
    if options.log_format == LogFormat::Text {
        eprintln!("run_id: {run_id}");
    }
    let session = connect(options, extensions).await?;
    let checkpoints = Arc::new(Checkpoints::open(&session, &lake, &run_id)?);
    if options.resume.is_some() && !checkpoints.exists().await {
        return Err(KilnError::config_fix(
            format!(
                "run {run_id} has no checkpoints under {}_kiln/runs/{run_id}/",
                lake.root()
            ),
            "check the run id (`kiln runs`) and that --conf kiln.storage.root matches the original run",
        ));
    }
    let terminal = Arc::new(Terminal::new(
        &pipeline,
        options.log_format,
        options.live_progress,
    ));
    let board = ProgressBoard::default();
    let mut observers = Observers::default()
        .with(Arc::new(
            LakeLog::new(&session, &lake, &run_id).publishing(&board),
        ))
        .with(terminal.clone())
        .with(checkpoints.clone());
    match History::open_default() {
        Ok(history) => observers = observers.with(Arc::new(RunHistory::new(history, &run_id))),
        Err(e) => eprintln!("warning: run history unavailable: {e}"),
    }
    let mut observers = observers.with(Arc::new(Notifier::new(&config.notify)));
    for observer in extra {
        observers = observers.with(observer);
    }

    let info = RunInfo {
        run_id: run_id.clone(),
        pipeline: pipeline.clone(),
        master: options.master.to_string(),
        tasks: config
            .processing_tasks
            .iter()
            .map(|t| t.name.clone())
            .collect(),
        classnames: config
            .processing_tasks
            .iter()
            .map(|t| t.classname.clone())
            .collect(),
        depends_on: config
            .processing_tasks
            .iter()
            .map(|t| t.depends_on.clone())
            .collect(),
        config: loaded.source.clone(),
        triggered_by: options.triggered_by.clone(),
        resumed: options.resume.is_some(),
        start_ms: now_ms(),
    };
    observers.emit(RunEvent::RunStarted(info.clone())).await;
    let identity = Arc::new(RunIdentity {
        run_id: run_id.clone(),
        pipeline: pipeline.clone(),
        master: options.master.to_string(),
        conf: options.conf.clone(),
        triggered_by: options.triggered_by.clone(),
    });
    let mut run = RunLoop {
        identity,
        loaded,
        plan: &plan,
        selected,
        resume: options.resume.is_some(),
        session,
        lake,
        checkpoints,
        terminal,
        board,
        observers: observers.clone(),
        returned: Arc::default(),
        results: HashMap::new(),
        fingerprints: HashMap::new(),
        started: HashSet::new(),
        running: JoinSet::new(),
    };
    let deadline = options
        .time_limit
        .map(|s| Instant::now() + Duration::from_secs_f64(s));
    let failure = run.drive(deadline, &run_id, options.time_limit).await;
    let tasks: Vec<TaskResult> = plan
        .graph
        .order
        .iter()
        .filter_map(|i| run.results.remove(i))
        .collect();
    let end_ms = now_ms();
    let report = RunReport {
        run_id,
        pipeline,
        master: info.master,
        state: if failure.is_some() {
            RunState::Failed
        } else {
            RunState::Succeeded
        },
        start_ms: info.start_ms,
        end_ms,
        seconds: (end_ms - info.start_ms) as f64 / 1000.0,
        error: failure.as_ref().map(ToString::to_string),
        tasks,
    };
    observers.emit(RunEvent::RunFinished(report.clone())).await;
    match failure {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

/// Connects to the master and applies the DataFusion `--conf` settings.
/// How long a run waits for a cluster's first executor by default
/// (`--conf kiln.cluster.executor_wait_seconds=N`).
const EXECUTOR_WAIT_SECONDS: f64 = 120.0;

/// kiln's own `--conf` keys (every other key is a DataFusion setting).
pub const KILN_CONF_KEYS: [&str; 2] = ["kiln.storage.root", "kiln.cluster.executor_wait_seconds"];

async fn connect(options: &RunOptions, extensions: &KilnExtensions) -> Result<KilnSession> {
    for (k, _) in &options.conf {
        if k.starts_with("kiln.") && !KILN_CONF_KEYS.contains(&k.as_str()) {
            let hint = kiln_engine::suggest::closest(k, &KILN_CONF_KEYS)
                .map(|n| format!("did you mean {n}? "))
                .unwrap_or_default();
            return Err(KilnError::config_fix(
                format!("--conf {k}: kiln has no such setting"),
                format!("{hint}kiln's settings are {}", KILN_CONF_KEYS.join(", ")),
            ));
        }
    }
    let session = KilnSession::connect(&options.master, extensions).await?;
    let key = "kiln.cluster.executor_wait_seconds";
    let wait = match options.conf.iter().rev().find(|(k, _)| k == key) {
        Some((_, v)) => v
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .ok_or_else(|| {
                KilnError::config_fix(
                    format!("--conf {key}={v} is not a number of seconds"),
                    format!("give e.g. --conf {key}=300"),
                )
            })?,
        None => EXECUTOR_WAIT_SECONDS,
    };
    session
        .wait_for_executors(Duration::from_secs_f64(wait))
        .await?;
    for (k, v) in &options.conf {
        if !k.starts_with("kiln.") {
            session
                .context()
                .sql(&format!("SET {k} = '{}'", v.replace('\'', "''")))
                .await
                .map_err(|e| KilnError::config(format!("--conf {k}={v}: {e}")))?;
        }
    }
    Ok(session)
}

/// The tasks `--only` / `--from` select (all by default).
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

/// What a finished attempt loop hands back to the run loop.
struct Finished {
    index: usize,
    start_ms: i64,
    attempts: u32,
    result: Result<TaskOutcome>,
}

/// The state of one run while it goes.
struct RunLoop<'a> {
    identity: Arc<RunIdentity>,
    loaded: &'a LoadedConfig,
    plan: &'a Plan,
    selected: HashSet<usize>,
    resume: bool,
    session: KilnSession,
    lake: Lake,
    checkpoints: Arc<Checkpoints>,
    terminal: Arc<Terminal>,
    /// The running tasks' progress, published for the web UI.
    board: ProgressBoard,
    observers: Observers,
    returned: Arc<Mutex<HashMap<String, DataFrame>>>,
    results: HashMap<usize, TaskResult>,
    fingerprints: HashMap<usize, String>,
    started: HashSet<usize>,
    running: JoinSet<Finished>,
}

impl RunLoop<'_> {
    fn config(&self, i: usize) -> &TaskConfig {
        &self.loaded.config.processing_tasks[i]
    }

    /// Starts ready tasks and collects finished ones until nothing runs;
    /// returns the first failure.
    async fn drive(
        &mut self,
        deadline: Option<Instant>,
        run_id: &str,
        time_limit: Option<f64>,
    ) -> Option<KilnError> {
        let mut failure: Option<KilnError> = None;
        loop {
            if failure.is_none()
                && let Err(e) = self.start_ready().await
            {
                failure = Some(e);
            }
            let next = match deadline {
                Some(d) => {
                    match tokio::time::timeout_at(d.into(), self.running.join_next()).await {
                        Ok(next) => next,
                        Err(_) => {
                            self.running.abort_all();
                            return failure.or(Some(KilnError::Timeout {
                                what: format!("run {run_id} (time limit)"),
                                seconds: time_limit.unwrap_or_default(),
                            }));
                        }
                    }
                }
                None => self.running.join_next().await,
            };
            let Some(joined) = next else {
                return failure;
            };
            let finished = match joined {
                Ok(finished) => finished,
                Err(e) => {
                    failure.get_or_insert(KilnError::internal("running a task", e));
                    continue;
                }
            };
            if let Err(e) = self.record(finished).await {
                failure.get_or_insert(e);
            }
        }
    }

    /// Starts (or, on resume, skips) every selected task whose dependencies
    /// are done, until no more become ready.
    async fn start_ready(&mut self) -> Result<()> {
        loop {
            let ready: Vec<usize> = self
                .plan
                .graph
                .order
                .iter()
                .copied()
                .filter(|i| self.selected.contains(i) && !self.started.contains(i))
                .filter(|&i| {
                    self.plan.graph.deps[i].iter().all(|d| {
                        !self.selected.contains(d)
                            || self.results.get(d).is_some_and(|r| r.state.is_done())
                    })
                })
                .collect();
            if ready.is_empty() {
                return Ok(());
            }
            for i in ready {
                self.started.insert(i);
                self.start(i).await?;
            }
        }
    }

    async fn start(&mut self, i: usize) -> Result<()> {
        let task_cfg = self.config(i).clone();
        let upstream: Vec<String> = self.plan.graph.deps[i]
            .iter()
            .filter_map(|d| self.fingerprints.get(d).cloned())
            .collect();
        let fingerprint = self
            .checkpoints
            .fingerprint(&task_cfg, &self.plan.tasks[i].inputs(), &upstream)
            .await?;
        self.fingerprints.insert(i, fingerprint.clone());
        if self.resume
            && let Some(cp) = self.checkpoints.valid(&task_cfg.name, &fingerprint).await
        {
            let now = now_ms();
            let mut skipped = TaskResult::new(&task_cfg.name, TaskState::Skipped, 0, now, now);
            skipped.outcome = Some(cp.outcome);
            skipped.reason = Some("completed in this run before and still valid".into());
            skipped.fingerprint = Some(fingerprint);
            self.finish(i, skipped).await;
            return Ok(());
        }
        self.observers
            .emit(RunEvent::TaskStarted {
                task: task_cfg.name.clone(),
            })
            .await;
        tracing::info!(task = %task_cfg.name, "task started");
        let ctx = TaskContext {
            session: self.session.clone(),
            lake: self.lake.clone(),
            task_name: task_cfg.name.clone(),
            run: Arc::clone(&self.identity),
            returned: Arc::clone(&self.returned),
            progress: self
                .terminal
                .task_progress(&task_cfg.name)
                .posting_to(&self.board, &task_cfg.name),
        };
        let task = Arc::clone(&self.plan.tasks[i]);
        let observers = self.observers.clone();
        self.running.spawn(async move {
            let start_ms = now_ms();
            let (result, attempts) =
                run_with_retries(task.as_ref(), &ctx, &task_cfg, &observers).await;
            Finished {
                index: i,
                start_ms,
                attempts,
                result,
            }
        });
        Ok(())
    }

    /// Records a finished task; returns its error (with the task named).
    async fn record(&mut self, f: Finished) -> Result<()> {
        let name = self.config(f.index).name.clone();
        let state = match &f.result {
            Ok(_) => TaskState::Succeeded,
            Err(_) => TaskState::Failed,
        };
        let mut result = TaskResult::new(&name, state, f.attempts, f.start_ms, now_ms());
        result.fingerprint = self.fingerprints.get(&f.index).cloned();
        let outcome = match f.result {
            Ok(outcome) => {
                result.outcome = Some(outcome);
                Ok(())
            }
            Err(e) => {
                result.error = Some(e.to_string());
                Err(e.context(format!("task '{name}'")))
            }
        };
        self.finish(f.index, result).await;
        outcome
    }

    async fn finish(&mut self, i: usize, result: TaskResult) {
        self.observers
            .emit(RunEvent::TaskFinished(result.clone()))
            .await;
        self.results.insert(i, result);
    }
}

/// How long a retry waits for an unreachable scheduler to come back.
const SCHEDULER_PATIENCE: Duration = Duration::from_secs(300);

/// Runs one task with its retry policy; returns the last result and the
/// number of attempts.
async fn run_with_retries(
    task: &dyn Task,
    ctx: &TaskContext,
    cfg: &TaskConfig,
    observers: &Observers,
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
                if matches!(e, KilnError::Cluster { .. }) {
                    // A restarting scheduler: retrying before it is back
                    // would spend the attempt for nothing.
                    if let Err(gone) = ctx.session.wait_for_scheduler(SCHEDULER_PATIENCE).await {
                        return (Err(gone), attempt);
                    }
                }
                observers
                    .emit(RunEvent::TaskRetrying {
                        task: cfg.name.clone(),
                        attempt,
                        error: e.to_string(),
                        delay_seconds: delay,
                    })
                    .await;
                tokio::time::sleep(Duration::from_secs_f64(delay)).await;
                if cfg.retry_exponential_backoff {
                    delay = (delay * 2.0).min(cfg.max_retry_delay);
                }
            }
            other => return (other, attempt),
        }
    }
}
