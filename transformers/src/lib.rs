//! # kiln-transformers
//!
//! Spark-ML-style feature stages that extend a DataFusion plan lazily, so
//! the same stage runs in-process and on Ballista executors:
//!
//! * [`pipeline::StageSpec`] is a stage as written in YAML; its
//!   [`pipeline::StageParams`] are validated parameters; `fit` produces a
//!   [`pipeline::FittedStage`] (stateless stages are their own fitted form).
//! * [`pipeline::PipelineModel`] is a fitted chain with its input schema,
//!   saved as JSON in a versioned artifact and applied again at inference.
//! * [`stages`] holds one module per stage family; [`udf`] the scalar UDFs
//!   they use (one per file), installed on every kiln process via [`extensions`].
//!
//! Fitted state travels inside the plan as literals (CASE branches, surrogate
//! values), so no custom codec is needed for executors.

pub mod float_serde;
pub mod pipeline;
pub mod stages;
pub mod udf;

pub use pipeline::{FittedStage, PipelineFitter, PipelineModel, StageSpec};

/// The functions this crate needs on every kiln process.
pub fn extensions() -> kiln_engine::KilnExtensions {
    udf::all()
        .into_iter()
        .fold(kiln_engine::KilnExtensions::default(), |e, u| e.with_udf(u))
}
