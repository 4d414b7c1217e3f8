//! One session abstraction over a DataFusion `SessionContext`: in-process
//! (`local[N]`) or a remote Ballista cluster (`df://host:port`).

use crate::error::{KilnError, Result};
use crate::master::Master;
use crate::storage::LakeObjectStoreRegistry;
use ballista::prelude::SessionContextExt;
use ballista_core::extension::SessionConfigExt;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::{AggregateUDF, ScalarUDF};
use datafusion::prelude::{SessionConfig, SessionContext};
use std::sync::Arc;
use std::time::Duration;

/// Functions a kiln process adds to DataFusion. The same set is installed on
/// the client, the scheduler and every executor, so plans that use them can
/// be serialized by name and run anywhere.
#[derive(Debug, Clone, Default)]
pub struct KilnExtensions {
    pub scalar_udfs: Vec<Arc<ScalarUDF>>,
    pub aggregate_udfs: Vec<Arc<AggregateUDF>>,
}

impl KilnExtensions {
    pub fn with_udf(mut self, udf: ScalarUDF) -> Self {
        self.scalar_udfs.push(Arc::new(udf));
        self
    }

    pub fn with_udaf(mut self, udaf: AggregateUDF) -> Self {
        self.aggregate_udfs.push(Arc::new(udaf));
        self
    }

    pub fn extend(mut self, other: KilnExtensions) -> Self {
        self.scalar_udfs.extend(other.scalar_udfs);
        self.aggregate_udfs.extend(other.aggregate_udfs);
        self
    }

    pub(crate) fn install(&self, builder: SessionStateBuilder) -> SessionStateBuilder {
        let mut builder = builder;
        if let Some(fns) = builder.scalar_functions() {
            fns.extend(self.scalar_udfs.iter().cloned());
        }
        if let Some(fns) = builder.aggregate_functions() {
            fns.extend(self.aggregate_udfs.iter().cloned());
        }
        builder
    }

    /// Ballista's function registry with kiln's functions added.
    pub fn ballista_registry(&self) -> ballista_core::registry::BallistaFunctionRegistry {
        let mut registry = ballista_core::registry::BallistaFunctionRegistry::default();
        // Ballista's default registry lacks the nested (array) functions.
        for udf in datafusion::functions_nested::all_default_nested_functions() {
            registry
                .scalar_functions
                .entry(udf.name().to_string())
                .or_insert(udf);
        }
        for udf in &self.scalar_udfs {
            registry
                .scalar_functions
                .insert(udf.name().to_string(), Arc::clone(udf));
        }
        for udaf in &self.aggregate_udfs {
            registry
                .aggregate_functions
                .insert(udaf.name().to_string(), Arc::clone(udaf));
        }
        registry
    }
}

/// The runtime every kiln process uses: the lake object-store registry.
pub fn lake_runtime(
    stores: Arc<LakeObjectStoreRegistry>,
) -> datafusion::error::Result<Arc<RuntimeEnv>> {
    RuntimeEnvBuilder::new()
        .with_object_store_registry(stores)
        .build_arc()
}

/// A connected session.
#[derive(Clone)]
pub struct KilnSession {
    ctx: SessionContext,
    master: Master,
    stores: Arc<LakeObjectStoreRegistry>,
}

impl std::fmt::Debug for KilnSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KilnSession")
            .field("master", &self.master)
            .finish()
    }
}

impl KilnSession {
    /// Creates a session for `master`. For a Ballista master this first
    /// checks that the scheduler answers, so a wrong address fails fast.
    pub async fn connect(master: &Master, extensions: &KilnExtensions) -> Result<Self> {
        let stores = Arc::new(LakeObjectStoreRegistry::new());
        let runtime = lake_runtime(Arc::clone(&stores))?;
        let ctx = match master {
            Master::Local { partitions } => {
                let config = SessionConfig::new()
                    .with_target_partitions(*partitions)
                    .with_information_schema(true);
                let builder = SessionStateBuilder::new()
                    .with_default_features()
                    .with_config(config)
                    .with_runtime_env(runtime);
                SessionContext::new_with_state(extensions.install(builder).build())
            }
            Master::Ballista { host, port } => {
                check_reachable(host, *port).await?;
                // Ballista's adaptive planner cannot re-run the stages of
                // a lost executor (apache/datafusion-ballista#1986): a job
                // hangs, then fails. The static planner recovers; it stays
                // the default until upstream fixes that (`--conf
                // ballista.planner.adaptive.enabled=true` opts back in).
                let config = SessionConfig::new_with_ballista()
                    .with_information_schema(true)
                    .with_ballista_adaptive_query_planner(false);
                let builder = SessionStateBuilder::new()
                    .with_default_features()
                    .with_config(config)
                    .with_runtime_env(runtime);
                let state = extensions.install(builder).build();
                SessionContext::remote_with_state(&format!("df://{host}:{port}"), state)
                    .await
                    .map_err(|e| KilnError::Cluster {
                        message: format!("cannot connect to {master}: {e}"),
                        fix: None,
                    })?
            }
        };
        Ok(KilnSession {
            ctx,
            master: master.clone(),
            stores,
        })
    }

    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    pub fn master(&self) -> &Master {
        &self.master
    }

    pub fn stores(&self) -> &LakeObjectStoreRegistry {
        &self.stores
    }

    /// After a cluster error: waits until the scheduler accepts
    /// connections again, polling with exponential backoff (0.5 s doubling
    /// to 8 s) for at most `patience`. Returns how long it waited; a local
    /// session returns at once. A scheduler that stays away is an error.
    pub async fn wait_for_scheduler(&self, patience: Duration) -> Result<Duration> {
        let Master::Ballista { host, port } = &self.master else {
            return Ok(Duration::ZERO);
        };
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(500);
        loop {
            match check_reachable(host, *port).await {
                Ok(()) => return Ok(started.elapsed()),
                Err(e) if started.elapsed() + pause > patience => {
                    return Err(KilnError::Cluster {
                        message: format!(
                            "{e}; it did not come back within {:.0} s",
                            patience.as_secs_f64()
                        ),
                        fix: Some(format!(
                            "restart the scheduler on {host}:{port}, then continue with `kiln submit --resume RUN_ID`"
                        )),
                    });
                }
                Err(_) => {
                    tracing::warn!(
                        "scheduler df://{host}:{port} unreachable; trying again in {:.1} s",
                        pause.as_secs_f64()
                    );
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(8));
                }
            }
        }
    }
}

/// What a scheduler's `/readyz` says about its executors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecutorReadiness {
    /// This many executors are alive.
    Ready(usize),
    /// None yet; the scheduler's own words.
    NotReady(String),
    /// The scheduler has no readiness probe (another build of Ballista).
    Unknown,
}

/// The executors a scheduler has registered, from Ballista's REST API
/// (`/api/executors`, served on the gRPC port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterCapacity {
    pub executors: usize,
    /// Task slots over all executors (each executor's `--vcores`).
    pub vcores: u64,
}

/// One entry of `/api/executors`, as far as kiln reads it.
#[derive(serde::Deserialize)]
struct RegisteredExecutor {
    specification: RegisteredSpecification,
}

#[derive(serde::Deserialize)]
struct RegisteredSpecification {
    vcores: u64,
}

/// GETs `path` from the scheduler's HTTP routes at `host:port`: the status
/// and the body.
async fn scheduler_get(host: &str, port: u16, path: &str) -> Result<(u16, String)> {
    let url = format!("http://{host}:{port}{path}");
    let unreachable = |e: reqwest::Error| KilnError::Cluster {
        message: format!("cannot ask the scheduler at df://{host}:{port} for {path}: {e}"),
        fix: Some(format!(
            "start one with `kiln scheduler --bind-port {port}` or correct --master"
        )),
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(unreachable)?;
    let response = client.get(&url).send().await.map_err(unreachable)?;
    let status = response.status().as_u16();
    let text = response.text().await.map_err(unreachable)?;
    Ok((status, text))
}

/// Asks the scheduler at `host:port` whether executors are alive (its
/// `/readyz`, served on the gRPC port).
pub async fn executor_readiness(host: &str, port: u16) -> Result<ExecutorReadiness> {
    let (status, text) = scheduler_get(host, port, "/readyz").await?;
    let text = text.trim().to_string();
    Ok(match status {
        200 => ExecutorReadiness::Ready(
            text.strip_prefix("ready: ")
                .and_then(|t| t.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(1),
        ),
        503 => ExecutorReadiness::NotReady(text),
        _ => ExecutorReadiness::Unknown,
    })
}

/// Asks the scheduler at `host:port` for its executors and their task
/// slots; `None` from a scheduler without Ballista's REST API (another
/// build, or one started with the API disabled).
pub async fn cluster_capacity(host: &str, port: u16) -> Result<Option<ClusterCapacity>> {
    let (status, text) = scheduler_get(host, port, "/api/executors").await?;
    if status != 200 {
        return Ok(None);
    }
    let executors: Vec<RegisteredExecutor> =
        serde_json::from_str(&text).map_err(|e| KilnError::Cluster {
            message: format!(
                "the scheduler at df://{host}:{port} answered /api/executors with JSON kiln cannot read ({e})"
            ),
            fix: Some("run a kiln scheduler of the same version as this client".into()),
        })?;
    Ok(Some(ClusterCapacity {
        executors: executors.len(),
        vcores: executors.iter().map(|e| e.specification.vcores).sum(),
    }))
}

impl KilnSession {
    /// The cluster's executors and task slots; `None` for a local master or
    /// a scheduler that does not say.
    pub async fn cluster_capacity(&self) -> Result<Option<ClusterCapacity>> {
        match &self.master {
            Master::Local { .. } => Ok(None),
            Master::Ballista { host, port } => cluster_capacity(host, *port).await,
        }
    }

    /// Waits until the scheduler has a live executor, for at most
    /// `patience`, saying every 10 s that it waits: a job submitted to a
    /// cluster without executors would otherwise wait silently (Ballista
    /// queues it for executors to come, as an autoscaler would add them).
    /// A local session, or a scheduler without the probe, returns at once.
    pub async fn wait_for_executors(&self, patience: Duration) -> Result<()> {
        let Master::Ballista { host, port } = &self.master else {
            return Ok(());
        };
        let started = std::time::Instant::now();
        let mut told = Duration::ZERO;
        loop {
            match executor_readiness(host, *port).await? {
                ExecutorReadiness::Ready(_) | ExecutorReadiness::Unknown => return Ok(()),
                ExecutorReadiness::NotReady(said) => {
                    let waited = started.elapsed();
                    if waited >= patience {
                        return Err(KilnError::Cluster {
                            message: format!(
                                "the scheduler at df://{host}:{port} has no live executor after {:.0} s ({said})",
                                waited.as_secs_f64()
                            ),
                            fix: Some(format!(
                                "start executors with `kiln executor --scheduler-host {host} --scheduler-port {port}`, or wait longer with --conf kiln.cluster.executor_wait_seconds=N"
                            )),
                        });
                    }
                    if waited >= told {
                        eprintln!(
                            "waiting for executors of df://{host}:{port} ({said}); giving up after {:.0} s",
                            patience.as_secs_f64()
                        );
                        told = waited + Duration::from_secs(10);
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}

async fn check_reachable(host: &str, port: u16) -> Result<()> {
    let addr = format!("{host}:{port}");
    let attempt = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(&addr),
    )
    .await;
    let reason = match attempt {
        Ok(Ok(_)) => return Ok(()),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "no answer within 5 s".to_string(),
    };
    Err(KilnError::Cluster {
        message: format!("cannot reach the Ballista scheduler at df://{addr}: {reason}"),
        fix: Some(format!(
            "start one with `kiln scheduler --bind-port {port}` or correct --master"
        )),
    })
}
