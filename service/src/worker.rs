//! Workers: each leases a job, runs it with a heartbeat that renews the
//! lease and notices cancels, and ends the attempt (succeeded, failed,
//! retried later with backoff, timed out or cancelled).

use crate::jobs::{self, JobContext, ProgressCell};
use crate::store::{Lease, Outcome, Store, now_ms};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// The kinds of a job's events, as its event stream names them.
pub const EVENT_KINDS: [&str; 8] = [
    "queued",
    "started",
    "result",
    "succeeded",
    "failed",
    "retry",
    "cancelled",
    "timed_out",
];

/// How the workers behave.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Jobs this process runs at once.
    pub workers: usize,
    /// A lease lasts this long without a heartbeat.
    pub lease: Duration,
    /// Heartbeats (and cancel checks) this often.
    pub heartbeat: Duration,
    /// An idle worker looks for work this often (a submission in this
    /// process wakes it at once).
    pub poll: Duration,
    /// Jobs one user may have running at once, over all replicas.
    pub per_user_running: i64,
    /// First pause before a retry; doubles per attempt.
    pub retry_backoff: Duration,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            workers: 2,
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(2),
            poll: Duration::from_secs(1),
            per_user_running: 4,
            retry_backoff: Duration::from_secs(5),
        }
    }
}

/// The worker pool of one server process.
pub struct Workers {
    store: Store,
    context: Arc<JobContext>,
    settings: WorkerSettings,
    wake: Arc<Notify>,
    process_id: String,
    stop: tokio_util::sync::CancellationToken,
    /// The jobs' own runtime, whose threads run at the lowest priority.
    runtime: std::sync::Mutex<Option<tokio::runtime::Runtime>>,
}

/// Lowers the calling thread's CPU priority (Linux: niceness 19). Job
/// threads call it, so CPU-bound jobs (generation, training) yield to the
/// threads that answer requests: on a small machine two running jobs
/// would otherwise take every core from the API.
pub fn lower_thread_priority() {
    static WARNED: std::sync::Once = std::sync::Once::new();
    if let Err(e) =
        thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Min)
    {
        WARNED.call_once(|| {
            tracing::warn!(
                "cannot lower the priority of job threads ({e:?}); jobs compete with requests"
            );
        });
    }
}

enum Interrupt {
    Cancelled,
    LeaseLost,
}

impl Workers {
    pub fn new(store: Store, context: Arc<JobContext>, settings: WorkerSettings) -> Self {
        Workers {
            store,
            context,
            settings,
            wake: Arc::new(Notify::new()),
            process_id: uuid::Uuid::new_v4().simple().to_string(),
            stop: tokio_util::sync::CancellationToken::new(),
            runtime: std::sync::Mutex::new(None),
        }
    }

    /// Wakes idle workers (a job was submitted).
    pub fn waker(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// Starts the workers on their own low-priority runtime (DataFusion
    /// and the generator spawn their work there too); they run until
    /// [`Workers::stop`]. A job a stopped worker held is run again once its
    /// lease expires.
    pub fn start(self: &Arc<Self>) -> kiln_engine::Result<()> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name("kiln-job")
            .on_thread_start(lower_thread_priority)
            .enable_all()
            .build()
            .map_err(|e| kiln_engine::KilnError::internal("starting the job runtime", e))?;
        for n in 0..self.settings.workers {
            let me = Arc::clone(self);
            let stop = self.stop.clone();
            runtime.spawn(async move {
                tokio::select! {
                    _ = me.work(n) => {},
                    _ = stop.cancelled() => {},
                }
            });
        }
        let mut slot = self
            .runtime
            .lock()
            .map_err(|_| kiln_engine::KilnError::poisoned("the job runtime"))?;
        *slot = Some(runtime);
        Ok(())
    }

    /// Stops the workers (at shutdown); running jobs are abandoned to
    /// their leases.
    pub fn stop(&self) {
        self.stop.cancel();
        if let Ok(mut slot) = self.runtime.lock()
            && let Some(runtime) = slot.take()
        {
            runtime.shutdown_background();
        }
    }

    async fn work(&self, n: usize) {
        let name = format!("{}-{n}", self.process_id);
        loop {
            if let Err(e) = self.store.sweep().await {
                tracing::warn!("sweeping expired jobs: {e}");
            }
            let lease = self
                .store
                .lease(
                    &name,
                    self.settings.lease.as_millis() as i64,
                    self.settings.per_user_running,
                )
                .await;
            match lease {
                Ok(Some(lease)) => self.run(lease).await,
                Ok(None) => {
                    let _woken =
                        tokio::time::timeout(self.settings.poll, self.wake.notified()).await;
                }
                Err(e) => {
                    tracing::warn!("leasing a job: {e}");
                    tokio::time::sleep(self.settings.poll).await;
                }
            }
        }
    }

    async fn event(&self, job_id: &str, kind: &str, data: serde_json::Value) {
        if let Err(e) = self.store.add_event(job_id, kind, &data).await {
            tracing::warn!("recording event {kind} of job {job_id}: {e}");
        }
    }

    async fn run(&self, lease: Lease) {
        let job = &lease.job;
        tracing::info!(job = job.id, attempt = job.attempts, "job started");
        self.event(
            &job.id,
            "started",
            serde_json::json!({"attempt": job.attempts, "worker": lease.worker}),
        )
        .await;
        let progress = ProgressCell::default();
        let limit = Duration::from_millis(u64::try_from(job.time_limit_ms).unwrap_or(0));
        let result = tokio::select! {
            r = jobs::run(job, &self.context, &progress) => Ok(r),
            _ = tokio::time::sleep(limit) => Err(None),
            i = self.heartbeats(&lease, &progress) => Err(Some(i)),
        };
        let outcome = match result {
            Ok(Ok((outputs, detail))) => {
                let ids: Vec<&str> = outputs.iter().map(|d| d.id.as_str()).collect();
                self.event(
                    &job.id,
                    "result",
                    serde_json::json!({"outputs": ids, "detail": detail}),
                )
                .await;
                Outcome::Succeeded { outputs }
            }
            Ok(Err(e)) if e.is_retryable() && job.attempts < job.max_attempts => {
                let pause = self.settings.retry_backoff.as_millis() as i64
                    * (1i64 << (job.attempts - 1).clamp(0, 10));
                Outcome::RetryAt {
                    not_before_ms: now_ms() + pause,
                    error: e.to_string(),
                }
            }
            Ok(Err(e)) => Outcome::Failed {
                error: e.to_string(),
            },
            Err(None) => Outcome::TimedOut {
                error: format!(
                    "the job ran longer than its time limit of {:.0} s",
                    limit.as_secs_f64()
                ),
            },
            Err(Some(Interrupt::Cancelled)) => Outcome::Cancelled,
            Err(Some(Interrupt::LeaseLost)) => {
                tracing::warn!(job = job.id, "lease lost; another worker runs the job");
                return;
            }
        };
        let kind = match &outcome {
            Outcome::Succeeded { .. } => "succeeded",
            Outcome::Failed { .. } => "failed",
            Outcome::RetryAt { .. } => "retry",
            Outcome::Cancelled => "cancelled",
            Outcome::TimedOut { .. } => "timed_out",
        };
        let detail = match &outcome {
            Outcome::Failed { error }
            | Outcome::TimedOut { error }
            | Outcome::RetryAt { error, .. } => serde_json::json!({"error": error}),
            _ => serde_json::json!({}),
        };
        match self.store.finish(&lease, outcome, &progress.get()).await {
            Ok(true) => self.event(&job.id, kind, detail).await,
            Ok(false) => tracing::warn!(job = job.id, "lease lost before the job was recorded"),
            Err(e) => tracing::error!(job = job.id, "recording the end of the job: {e}"),
        }
        tracing::info!(job = job.id, state = kind, "job ended");
    }

    /// Renews the lease until the job is cancelled or the lease is lost.
    async fn heartbeats(&self, lease: &Lease, progress: &ProgressCell) -> Interrupt {
        let lease_ms = self.settings.lease.as_millis() as i64;
        let mut last_ok = std::time::Instant::now();
        loop {
            tokio::time::sleep(self.settings.heartbeat).await;
            match self.store.heartbeat(lease, lease_ms, &progress.get()).await {
                Ok(Some(true)) => return Interrupt::Cancelled,
                Ok(Some(false)) => last_ok = std::time::Instant::now(),
                Ok(None) => return Interrupt::LeaseLost,
                Err(e) => {
                    tracing::warn!(job = lease.job.id, "heartbeat failed: {e}");
                    // Past the lease another worker may have the job.
                    if last_ok.elapsed() >= self.settings.lease {
                        return Interrupt::LeaseLost;
                    }
                }
            }
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop();
    }
}
