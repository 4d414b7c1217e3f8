//! `kiln_histograms(task)`: one partition's integer histograms for one tree
//! level of a data-parallel fit ([`super::data_parallel`]), as little-endian
//! i64 bytes. The partition's file is read from the lake once per process
//! (within the cache budget of [`super::loaded`]); its rows' scores are kept
//! between levels, and recomputed from the trees where they are missing
//! (a [`TaskUdf`]).

use super::data_parallel::{LevelRequest, PartState, part_histograms};
use super::loaded::load;
use super::task_udf::{RemoteTask, TaskUdf};
use datafusion::logical_expr::ScalarUDF;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

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
    pub fn histograms(&self) -> kiln_engine::Result<Vec<i64>> {
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
        let (trees_behind, routed) = state.behind(&self.request);
        // Normal: mid-tree with the rows routed, or a new tree's first
        // level one finished tree behind.
        let kept = (trees_behind == 0 && routed)
            || (trees_behind == 1 && self.request.tree.nodes.len() == 1);
        if !kept {
            tracing::debug!(
                partition = %self.part_url,
                trees_behind,
                routed,
                "a partition's scores were recomputed (kept by another executor, or evicted)"
            );
        }
        let hist = part_histograms(&part, &mut state, &self.request)?;
        STATES
            .lock()
            .map_err(poisoned)?
            .insert(self.part_url.clone(), state);
        Ok(hist)
    }
}

impl RemoteTask for HistogramTask {
    const NAME: &'static str = "kiln_histograms";

    fn run(&self) -> kiln_engine::Result<Vec<u8>> {
        let hist = self.histograms()?;
        Ok(hist.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
}

/// `kiln_histograms(task)`.
pub fn histogram_udf() -> ScalarUDF {
    TaskUdf::<HistogramTask>::udf()
}
