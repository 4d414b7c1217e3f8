//! # kiln-pipelines
//!
//! The pipeline layer: the YAML format ([`config`]), the task graph
//! ([`dag`]), the task classes ([`tasks`]) and the runner ([`runner`]).
//! The CLI calls [`runner::run`] with a parsed [`config::LoadedConfig`];
//! [`events`] carries what happens to the lake log, the terminal and hooks.

pub mod checkpoint;
pub mod config;
pub mod dag;
pub mod events;
pub mod history;
pub mod runner;
pub mod schedule;
pub mod tasks;

pub use config::LoadedConfig;

/// The functions every kiln process installs (client, scheduler, executor).
pub fn extensions() -> kiln_engine::KilnExtensions {
    kiln_transformers::extensions().extend(kiln_models::extensions())
}
