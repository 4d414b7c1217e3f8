//! # kiln-models
//!
//! Tree learners and everything around them:
//!
//! * [`data`] bins features into compact codes (quantiles; a byte per value
//!   up to 256 bins, two bytes up to 65,536; bin 0 = missing) in streamed
//!   passes, in a canonical row order, and
//!   [`frame`] streams a DataFrame through those passes;
//! * [`memory`] plans a training task's peak memory before it allocates it;
//! * [`tree`] grows histogram trees (rayon, sibling subtraction, learned
//!   default direction for missing values) for both learners;
//! * [`sampling`] draws a forest's bootstrap weights and node feature samples
//!   by hash of (seed, tree, row) and (seed, node path), independent of the
//!   order rows and nodes are visited in;
//! * [`gbt::GbtParams`] → [`gbt::GbtModel`] and [`rf::RfParams`] → [`rf::RfModel`]:
//!   validated params and fitted models are different types (linfa style),
//!   joined by [`model::Estimator`] / [`model::Classifier`] and listed once in
//!   [`model::ModelParams`];
//! * [`tuning`] expands grids and runs `CrossValidator` / `TrainValidationSplit`
//!   over several competing estimators (folds as row lists over one binned
//!   copy, ensembles scored by prefix, largest fits first);
//! * [`metrics`] computes Spark's classification metrics, named by [`metrics::Metric`];
//! * [`selection`] tunes competing estimators, evaluates them on the test set
//!   and chooses the winner;
//! * [`model::ModelArtifact`] is the versioned, deployable artifact;
//! * [`jobs`] are the unit of tuning work ([`jobs::FitJob`]) and where it
//!   runs ([`jobs::FitRunner`]: this process, or [`distributed`]: Ballista
//!   executors, with the same outcome);
//! * [`predict_udf`] is the `kiln_predict` UDF that runs on executors;
//! * [`drift`] keeps a reference profile of the training data with a model
//!   and measures how far a prediction batch has drifted from it (PSI, KS,
//!   JS, missing shares);
//! * [`registry`] lists, compares, promotes and rolls back model versions.

pub mod data;
pub mod distributed;
pub mod distribution;
pub mod drift;
pub mod frame;
pub mod gbt;
pub mod jobs;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod predict_udf;
pub mod registry;
pub mod report;
pub mod rf;
pub mod sampling;
pub mod selection;
pub mod tree;
pub mod tuning;

/// The functions this crate needs on every kiln process.
pub fn extensions() -> kiln_engine::KilnExtensions {
    kiln_engine::KilnExtensions::default()
        .with_udf(predict_udf::predict_udf())
        .with_udf(distributed::fit_udf::fit_udf())
        .with_udf(distributed::histogram_udf::histogram_udf())
}
