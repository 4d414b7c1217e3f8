//! `kiln_histograms(task)`: one partition's integer histograms for one tree
//! level of a data-parallel fit ([`super::data_parallel`]), as little-endian
//! i64 bytes. The partition's file is read from the lake once per process
//! (within the cache budget of [`super::loaded`]); its rows' scores are kept
//! between levels, and recomputed from the trees where they are missing.
//!
//! Volatile, so no optimizer folds it into a constant on the client.

use super::data_parallel::{LevelRequest, PartState, part_histograms};
use super::loaded::{load, off_runtime};
use arrow::array::{Array, ArrayRef, AsArray, BinaryBuilder};
use arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

/// One task: a partition's file and checksum, and the level's request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistogramTask {
    pub part_url: String,
    /// Hex, so no JSON number loses bits.
    pub checksum: String,
    pub request: LevelRequest,
}

/// Scores kept per partition file (only those of the latest fit).
static STATES: LazyLock<Mutex<HashMap<String, PartState>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

impl HistogramTask {
    pub fn run(&self) -> kiln_engine::Result<Vec<i64>> {
        use kiln_engine::KilnError;
        let checksum = u64::from_str_radix(&self.checksum, 16)
            .map_err(|e| KilnError::internal("a histogram task's checksum", e))?;
        let part = load(&self.part_url, checksum)?;
        let poisoned = |_| KilnError::internal("partition scores", "poisoned");
        // Taken out while computing, so partitions run concurrently.
        let mut state = {
            let mut states = STATES.lock().map_err(poisoned)?;
            states.retain(|_, s| s.fit() == self.request.fit);
            states.remove(&self.part_url).unwrap_or_default()
        };
        let hist = part_histograms(&part, &mut state, &self.request)?;
        STATES
            .lock()
            .map_err(poisoned)?
            .insert(self.part_url.clone(), state);
        Ok(hist)
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Histograms {
    signature: Signature,
}

impl Default for Histograms {
    fn default() -> Self {
        Histograms {
            signature: Signature::exact(vec![DataType::Utf8], Volatility::Volatile),
        }
    }
}

pub fn histogram_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(Histograms::default())
}

impl ScalarUDFImpl for Histograms {
    fn name(&self) -> &str {
        "kiln_histograms"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Binary)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let tasks = args.args[0].to_array(args.number_rows)?;
        let tasks = tasks.as_string_opt::<i32>().ok_or_else(|| {
            DataFusionError::Execution("kiln_histograms takes a Utf8 task".into())
        })?;
        let mut out = BinaryBuilder::new();
        for i in 0..tasks.len() {
            if tasks.is_null(i) {
                out.append_null();
                continue;
            }
            let task: HistogramTask = serde_json::from_str(tasks.value(i))
                .map_err(|e| DataFusionError::Execution(format!("kiln_histograms task: {e}")))?;
            let hist = off_runtime(|| task.run())
                .map_err(|e| DataFusionError::Execution(e.to_string()))?;
            let bytes: Vec<u8> = hist.iter().flat_map(|v| v.to_le_bytes()).collect();
            out.append_value(bytes);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish()) as ArrayRef))
    }
}
