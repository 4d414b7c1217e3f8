//! `kiln_fit(task)`: runs one fit job ([`crate::jobs::FitJob`]) on the
//! executor that evaluates it, against the training set the task names
//! (read from the lake once per process), and returns its outcome as JSON
//! bytes (a [`TaskUdf`]).

use super::loaded::load;
use super::task_udf::{RemoteTask, TaskUdf};
use crate::jobs::{FitJob, FitOutcome};
use crate::model::FittedModel;
use datafusion::logical_expr::ScalarUDF;
use serde::{Deserialize, Serialize};

/// One task: the set's file and checksum, and the job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FitTask {
    pub set_url: String,
    /// Hex, so no JSON number loses bits.
    pub checksum: String,
    pub job: FitJob,
}

/// The outcome on the wire: scores as their bits (NaN has no JSON number).
#[derive(Debug, Serialize, Deserialize)]
pub struct WireOutcome {
    score_bits: Vec<u64>,
    model: Option<FittedModel>,
    seconds: f64,
}

impl From<FitOutcome> for WireOutcome {
    fn from(o: FitOutcome) -> Self {
        WireOutcome {
            score_bits: o.scores.iter().map(|s| s.to_bits()).collect(),
            model: o.model,
            seconds: o.seconds,
        }
    }
}

impl From<WireOutcome> for FitOutcome {
    fn from(w: WireOutcome) -> Self {
        FitOutcome {
            scores: w.score_bits.into_iter().map(f64::from_bits).collect(),
            model: w.model,
            seconds: w.seconds,
            details: None,
        }
    }
}

impl FitTask {
    /// Runs the job against the set (read on first use).
    pub fn outcome(&self) -> kiln_engine::Result<FitOutcome> {
        let checksum = u64::from_str_radix(&self.checksum, 16)
            .map_err(|e| kiln_engine::KilnError::internal("a fit task's checksum", e))?;
        let part = load(&self.set_url, checksum)?;
        self.job.run(&part.set)
    }
}

impl RemoteTask for FitTask {
    const NAME: &'static str = "kiln_fit";

    fn run(&self) -> kiln_engine::Result<Vec<u8>> {
        let outcome = self.outcome()?;
        serde_json::to_vec(&WireOutcome::from(outcome))
            .map_err(|e| kiln_engine::KilnError::internal("serializing a fit outcome", e))
    }
}

/// `kiln_fit(task)`.
pub fn fit_udf() -> ScalarUDF {
    TaskUdf::<FitTask>::udf()
}
