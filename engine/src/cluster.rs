//! Ballista scheduler and executor processes that carry kiln's functions.
//!
//! kiln's defaults differ from Ballista's where Ballista's would let a job
//! hang or fail after losing one executor (see [`Recovery`]): executors
//! heartbeat every 5 s instead of 60 s, the scheduler declares an executor
//! dead after 30 s of silence instead of 180 s, and a stage may be re-run
//! 16 times instead of 4, because a stage that reads the outputs of several
//! map stages finds a lost executor's outputs missing one map stage at a
//! time.

use crate::error::{KilnError, Result};
use crate::session::{KilnExtensions, lake_runtime};
use crate::storage::LakeObjectStoreRegistry;
use ballista_core::config::TaskSchedulingPolicy;
use ballista_core::extension::SessionConfigExt;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_executor::health::{ExecutorHealth, spawn_health_server};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::{create_scheduler, start_grpc_service_with_listener};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::SessionConfig;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use std::sync::Arc;

/// Scheduler options.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    pub bind_host: String,
    /// 0 picks a free port; the bound address is printed on stdout.
    pub bind_port: u16,
    pub external_host: Option<String>,
    pub recovery: Recovery,
    pub scheduling: TaskScheduling,
}

/// How tasks reach executors; the scheduler and its executors must agree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TaskScheduling {
    /// Executors ask for work when they have a free slot (Spark's model).
    /// kiln's default: after an executor is lost, Ballista 55's push mode
    /// can leak the surviving executors' slots (a cancelled task's status
    /// is ignored, so its vcore is never refunded) and the job hangs; the
    /// same leak as apache/datafusion-ballista#2418.
    #[default]
    Pull,
    /// The scheduler assigns tasks to executor slots it tracks.
    Push,
}

impl From<TaskScheduling> for TaskSchedulingPolicy {
    fn from(t: TaskScheduling) -> Self {
        match t {
            TaskScheduling::Pull => TaskSchedulingPolicy::PullStaged,
            TaskScheduling::Push => TaskSchedulingPolicy::PushStaged,
        }
    }
}

/// How the scheduler notices lost executors and re-runs their work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Attempts of one task before its job fails.
    pub task_max_failures: usize,
    /// Re-runs of one stage (after lost shuffle outputs) before its job fails.
    pub stage_max_failures: usize,
    /// Seconds without a heartbeat after which an executor is dead and its
    /// tasks and shuffle outputs are scheduled again elsewhere. Must exceed
    /// the executors' heartbeat interval.
    pub executor_timeout_seconds: u64,
    /// How often the scheduler looks for dead executors.
    pub expire_dead_executor_interval_seconds: u64,
    /// Seconds a job waits for an executor to (re)register after the
    /// cluster has lost its last one, before it fails.
    pub no_executors_grace_period_seconds: u64,
    /// Resubmit jobs that have no task scheduled after this many ms (0: never).
    pub job_resubmit_interval_ms: u64,
}

impl Default for Recovery {
    fn default() -> Self {
        Recovery {
            task_max_failures: 4,
            stage_max_failures: 16,
            executor_timeout_seconds: 30,
            expire_dead_executor_interval_seconds: 5,
            no_executors_grace_period_seconds: 120,
            job_resubmit_interval_ms: 0,
        }
    }
}

impl Recovery {
    /// Rejects settings that could never work, naming the flag to change.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("--task-max-failures", self.task_max_failures as u64),
            ("--stage-max-failures", self.stage_max_failures as u64),
            ("--executor-timeout-seconds", self.executor_timeout_seconds),
            (
                "--expire-dead-executor-interval-seconds",
                self.expire_dead_executor_interval_seconds,
            ),
        ];
        for (flag, value) in positive {
            if value == 0 {
                return Err(KilnError::config_fix(
                    format!("{flag} must be at least 1"),
                    format!("pass {flag} 1 or more"),
                ));
            }
        }
        Ok(())
    }

    /// A warning when executors with kiln's default heartbeat would be
    /// declared dead while alive (the scheduler cannot know the executors'
    /// actual interval).
    pub fn heartbeat_warning(&self) -> Option<String> {
        (self.executor_timeout_seconds < 2 * DEFAULT_HEARTBEAT_SECONDS).then(|| {
            format!(
                "--executor-timeout-seconds {} leaves room for less than two heartbeats at the executors' default interval ({DEFAULT_HEARTBEAT_SECONDS} s): start executors with a shorter --heartbeat-interval-seconds",
                self.executor_timeout_seconds
            )
        })
    }
}

/// kiln's executor heartbeat interval (Ballista's is 60 s).
pub const DEFAULT_HEARTBEAT_SECONDS: u64 = 5;

/// Executor options.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    pub scheduler_host: String,
    pub scheduler_port: u16,
    pub bind_host: String,
    pub bind_port: u16,
    pub grpc_port: u16,
    pub external_host: Option<String>,
    pub vcores: usize,
    pub work_dir: Option<String>,
    /// Seconds between heartbeats to the scheduler.
    pub heartbeat_interval_seconds: u64,
    /// Serve `/healthz` (alive) and `/readyz` (last heartbeat succeeded)
    /// over HTTP on this port.
    pub health_port: Option<u16>,
    pub scheduling: TaskScheduling,
    /// How long to wait at start for the scheduler to accept connections
    /// (pods start in any order); 0 tries once.
    pub scheduler_wait: std::time::Duration,
}

fn cluster_err(what: &str, e: impl std::fmt::Display) -> KilnError {
    KilnError::Cluster {
        message: format!("{what}: {e}"),
        fix: None,
    }
}

/// Runs a Ballista scheduler until the process ends.
pub async fn run_scheduler(options: SchedulerOptions, extensions: KilnExtensions) -> Result<()> {
    options.recovery.validate()?;
    if let Some(warning) = options.recovery.heartbeat_warning() {
        tracing::warn!("{warning}");
    }
    let listener = tokio::net::TcpListener::bind((options.bind_host.as_str(), options.bind_port))
        .await
        .map_err(|e| {
            KilnError::config(format!(
                "cannot bind scheduler to {}:{}: {e}",
                options.bind_host, options.bind_port
            ))
        })?;
    let addr = listener
        .local_addr()
        .map_err(|e| cluster_err("scheduler address", e))?;
    let ext = extensions.clone();
    let session_builder = Arc::new(move |config: SessionConfig| {
        let stores = Arc::new(LakeObjectStoreRegistry::new());
        let builder = SessionStateBuilder::new()
            .with_default_features()
            .with_config(config)
            .with_runtime_env(lake_runtime(stores)?);
        Ok(ext.install(builder).build())
    });
    let recovery = &options.recovery;
    let mut config = SchedulerConfig {
        bind_host: options.bind_host.clone(),
        bind_port: addr.port(),
        external_host: options
            .external_host
            .clone()
            .unwrap_or_else(|| addr.ip().to_string()),
        task_max_failures: recovery.task_max_failures,
        stage_max_failures: recovery.stage_max_failures,
        executor_timeout_seconds: recovery.executor_timeout_seconds,
        expire_dead_executor_interval_seconds: recovery.expire_dead_executor_interval_seconds,
        no_executors_grace_period_seconds: recovery.no_executors_grace_period_seconds,
        job_resubmit_interval_ms: (recovery.job_resubmit_interval_ms > 0)
            .then_some(recovery.job_resubmit_interval_ms),
        scheduling_policy: options.scheduling.into(),
        ..SchedulerConfig::default()
    };
    config.override_session_builder = Some(session_builder);
    let config = Arc::new(config);
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(|e| cluster_err("scheduler state", e))?;
    let scheduler = create_scheduler::<LogicalPlanNode, PhysicalPlanNode>(cluster, config)
        .await
        .map_err(|e| cluster_err("starting scheduler", e))?;
    println!("kiln scheduler listening on {addr}");
    start_grpc_service_with_listener(listener, scheduler)
        .await
        .map_err(|e| cluster_err("scheduler stopped", e))
}

/// Runs a Ballista executor until the process ends.
pub async fn run_executor(options: ExecutorOptions, extensions: KilnExtensions) -> Result<()> {
    if options.heartbeat_interval_seconds == 0 {
        return Err(KilnError::config_fix(
            "--heartbeat-interval-seconds must be at least 1",
            format!("use the default, {DEFAULT_HEARTBEAT_SECONDS}"),
        ));
    }
    let health = ExecutorHealth::new();
    let mut config = ExecutorProcessConfig {
        bind_host: options.bind_host.clone(),
        port: options.bind_port,
        grpc_port: options.grpc_port,
        scheduler_host: options.scheduler_host.clone(),
        scheduler_port: options.scheduler_port,
        external_host: options.external_host.clone(),
        vcores: options.vcores,
        work_dir: options.work_dir.clone(),
        executor_heartbeat_interval_seconds: options.heartbeat_interval_seconds,
        task_scheduling_policy: options.scheduling.into(),
        health: health.clone(),
        ..ExecutorProcessConfig::default()
    };
    config.override_function_registry = Some(Arc::new(extensions.ballista_registry()));
    config.override_config_producer = Some(Arc::new(SessionConfig::new_with_ballista));
    config.override_runtime_producer = Some(Arc::new(|_config: &SessionConfig| {
        lake_runtime(Arc::new(LakeObjectStoreRegistry::new()))
    }));
    println!(
        "kiln executor on {}:{} (grpc {}) -> scheduler {}:{}",
        options.bind_host,
        options.bind_port,
        options.grpc_port,
        options.scheduler_host,
        options.scheduler_port
    );
    // Held until the executor stops; dropping it stops the health server.
    let _stop_health = match options.health_port {
        Some(port) => {
            let addr = std::net::SocketAddr::new(bind_ip(&options.bind_host)?, port);
            let (stop, stopped) = tokio::sync::oneshot::channel();
            spawn_health_server(addr, health, stopped);
            println!("kiln executor health on http://{addr}/healthz and /readyz");
            Some(stop)
        }
        None => None,
    };
    wait_for_scheduler(
        &options.scheduler_host,
        options.scheduler_port,
        options.scheduler_wait,
    )
    .await?;
    // Ballista returns Ok both when it was asked to stop (SIGTERM, ctrl-c)
    // and when one of its services failed or the scheduler stopped it: only
    // the first is a clean exit.
    let signalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = tokio::spawn(watch_stop_signals(Arc::clone(&signalled)));
    let stopped = start_executor_process(Arc::new(config)).await;
    if stopped.is_ok() && !signalled.load(std::sync::atomic::Ordering::SeqCst) {
        // The watcher may not have run since the signal arrived.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    watcher.abort();
    match stopped {
        Err(e) => Err(cluster_err("executor stopped", e)),
        Ok(()) if signalled.load(std::sync::atomic::Ordering::SeqCst) => Ok(()),
        Ok(()) => Err(KilnError::Cluster {
            message: "the executor stopped without being asked to: one of its services failed or the scheduler stopped it (see the log above)".into(),
            fix: Some("restart the executor; if it keeps stopping, check that the scheduler is up and reachable".into()),
        }),
    }
}

/// Sets `signalled` on SIGTERM or ctrl-c (the stops that are clean).
async fn watch_stop_signals(signalled: Arc<std::sync::atomic::AtomicBool>) {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return;
        };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    signalled.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Waits until the scheduler accepts TCP connections, at most `wait`.
/// (Ballista's own `scheduler_connect_timeout_seconds` never times out:
/// it measures `Instant::now().elapsed()`.)
async fn wait_for_scheduler(host: &str, port: u16, wait: std::time::Duration) -> Result<()> {
    let started = std::time::Instant::now();
    let mut told = false;
    loop {
        match tokio::net::TcpStream::connect((host, port)).await {
            Ok(_) => return Ok(()),
            Err(e) if started.elapsed() < wait => {
                if !told {
                    eprintln!("waiting for the scheduler at {host}:{port} ({e})");
                    told = true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            Err(e) => {
                return Err(KilnError::Cluster {
                    message: format!(
                        "cannot reach the scheduler at {host}:{port} after {:.0} s: {e}",
                        wait.as_secs_f64()
                    ),
                    fix: Some(
                        "start `kiln scheduler`, check --scheduler-host and --scheduler-port, or raise --scheduler-wait-seconds".into(),
                    ),
                });
            }
        }
    }
}

fn bind_ip(host: &str) -> Result<std::net::IpAddr> {
    match host {
        "localhost" => Ok(std::net::Ipv4Addr::LOCALHOST.into()),
        _ => host.parse().map_err(|e| {
            KilnError::config_fix(
                format!("--bind-host '{host}' is not an IP address: {e}"),
                "use an address such as 0.0.0.0 or 127.0.0.1",
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_settings_that_cannot_work_name_the_flag() {
        assert!(Recovery::default().validate().is_ok());
        assert!(Recovery::default().heartbeat_warning().is_none());
        let short = Recovery {
            executor_timeout_seconds: 5,
            ..Recovery::default()
        };
        assert!(short.validate().is_ok());
        let warning = short.heartbeat_warning();
        assert!(
            warning
                .as_deref()
                .is_some_and(|w| w.contains("--heartbeat-interval-seconds")),
            "{warning:?}"
        );
        let none = Recovery {
            stage_max_failures: 0,
            ..Recovery::default()
        };
        let err = none.validate().err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("--stage-max-failures")),
            "{err:?}"
        );
        assert_eq!(
            TaskSchedulingPolicy::from(TaskScheduling::default()).to_string(),
            "pull-staged"
        );
    }
}
