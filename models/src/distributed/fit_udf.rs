//! `kiln_fit(task)`: runs one fit job ([`crate::jobs::FitJob`]) on the
//! executor that evaluates it, against the training set the task names
//! (read from the lake once per process), and returns its outcome as JSON
//! bytes.
//!
//! Volatile, so no optimizer folds it into a constant on the client.

use super::loaded::{load, off_runtime};
use crate::jobs::{FitJob, FitOutcome};
use crate::model::FittedModel;
use arrow::array::{Array, ArrayRef, AsArray, BinaryBuilder};
use arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

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
    pub fn run(&self) -> kiln_engine::Result<FitOutcome> {
        let checksum = u64::from_str_radix(&self.checksum, 16)
            .map_err(|e| kiln_engine::KilnError::internal("a fit task's checksum", e))?;
        let part = load(&self.set_url, checksum)?;
        self.job.run(&part.set)
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Fit {
    signature: Signature,
}

impl Default for Fit {
    fn default() -> Self {
        Fit {
            signature: Signature::exact(vec![DataType::Utf8], Volatility::Volatile),
        }
    }
}

pub fn fit_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(Fit::default())
}

impl ScalarUDFImpl for Fit {
    fn name(&self) -> &str {
        "kiln_fit"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Binary)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let tasks = args.args[0].to_array(args.number_rows)?;
        let tasks = tasks
            .as_string_opt::<i32>()
            .ok_or_else(|| DataFusionError::Execution("kiln_fit takes a Utf8 task".into()))?;
        let mut out = BinaryBuilder::new();
        for i in 0..tasks.len() {
            if tasks.is_null(i) {
                out.append_null();
                continue;
            }
            let task: FitTask = serde_json::from_str(tasks.value(i))
                .map_err(|e| DataFusionError::Execution(format!("kiln_fit task: {e}")))?;
            let outcome = off_runtime(|| task.run())
                .map_err(|e| DataFusionError::Execution(e.to_string()))?;
            let json = serde_json::to_vec(&WireOutcome::from(outcome))
                .map_err(|e| DataFusionError::Execution(format!("kiln_fit outcome: {e}")))?;
            out.append_value(json);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish()) as ArrayRef))
    }
}
