//! Ballista scheduler and executor processes that carry kiln's functions.

use crate::error::{KilnError, Result};
use crate::session::{KilnExtensions, lake_runtime};
use crate::storage::LakeObjectStoreRegistry;
use ballista_core::extension::SessionConfigExt;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
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
}

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
}

fn cluster_err(what: &str, e: impl std::fmt::Display) -> KilnError {
    KilnError::Cluster {
        message: format!("{what}: {e}"),
        fix: None,
    }
}

/// Runs a Ballista scheduler until the process ends.
pub async fn run_scheduler(options: SchedulerOptions, extensions: KilnExtensions) -> Result<()> {
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
    let mut config = SchedulerConfig {
        bind_host: options.bind_host.clone(),
        bind_port: addr.port(),
        external_host: options
            .external_host
            .clone()
            .unwrap_or_else(|| addr.ip().to_string()),
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
    let mut config = ExecutorProcessConfig {
        bind_host: options.bind_host.clone(),
        port: options.bind_port,
        grpc_port: options.grpc_port,
        scheduler_host: options.scheduler_host.clone(),
        scheduler_port: options.scheduler_port,
        external_host: options.external_host.clone(),
        vcores: options.vcores,
        work_dir: options.work_dir.clone(),
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
    start_executor_process(Arc::new(config))
        .await
        .map_err(|e| cluster_err("executor stopped", e))
}
