//! # kiln-pipelines
//!
//! The pipeline layer: the YAML format ([`config`]), the task graph
//! ([`dag`]), the task classes ([`tasks`]) behind the [`task::Task`] trait,
//! and the runner ([`runner`]), which reports every step of a run once, as
//! an [`observer::RunEvent`], to its observers: the lake's event log and
//! report ([`events`]), the terminal ([`terminal`]), the run history
//! ([`history`]), checkpoints ([`checkpoint`]) and hooks ([`notify`]).
//! [`run_log`] reads the runs back from the lake for the history pages.
//! [`schedule`] starts runs from cron expressions; [`deploy`] turns the
//! same schedules into Kubernetes CronJobs.
//!
//! Modules depend one way: `config` and `progress` → `task` → `observer` →
//! the observers → `runner` → `schedule` → `deploy`.

pub mod checkpoint;
pub mod config;
pub mod dag;
pub mod deploy;
pub mod events;
pub mod history;
pub mod notify;
pub mod observer;
pub mod progress;
pub mod run_log;
pub mod runner;
pub mod schedule;
pub mod schema;
pub mod task;
pub mod tasks;
pub mod terminal;
pub mod validate;

pub use config::LoadedConfig;

/// The functions every kiln process installs (client, scheduler, executor).
pub fn extensions() -> kiln_engine::KilnExtensions {
    kiln_transformers::extensions()
        .extend(kiln_models::extensions())
        .extend(kiln_synth::extensions())
}
