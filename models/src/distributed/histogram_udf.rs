//! `kiln_histograms(task)`: one partition's integer histograms for one
//! level of a data-parallel fit (a boosted tree's, [`super::data_parallel`],
//! or all trees' of a forest, [`super::forest`]), as the partition's index
//! (u64) then the histograms (i64), little-endian. The partition's file is
//! read from the lake once per process (within the cache budget of
//! [`super::loaded`]). For boosting, its rows' scores are kept between
//! levels, and recomputed from the trees where they are missing (a
//! [`TaskUdf`]); a forest level needs no state.
//!
//! Ballista places a level's tasks on whichever executor asks first, so a
//! boosting task may land where its partition's scores are not kept. Such a task
//! computes instead a partition whose scores this executor keeps and that
//! no task here computed at this level (see [`PartFiles::Swappable`]), so
//! every executor keeps working on its own partitions; the driver runs any
//! partition no reply covered again, without swapping. The histograms of a
//! partition do not depend on where they are computed, so neither does
//! the model.

use super::data_parallel::{LevelRequest, LevelWork, PartState, part_histograms};
use super::forest::forest_histograms;
use super::loaded::load;
use super::task_udf::{RemoteTask, TaskUdf};
use datafusion::logical_expr::ScalarUDF;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

/// One task: a partition (its index in the fit), the files it may
/// compute, their checksum, and the level's request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistogramTask {
    pub partition: usize,
    pub files: PartFiles,
    /// Hex, so no JSON number loses bits.
    pub checksum: String,
    pub request: LevelWork,
}

/// Which partition a task computes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartFiles {
    /// Exactly its own, in this file.
    Exactly(String),
    /// Every partition's file, in order: a boosting task may compute
    /// another one than its own (see the module docs).
    Swappable(Vec<String>),
}

impl PartFiles {
    /// The file of partition `p`.
    fn of(&self, p: usize) -> kiln_engine::Result<&String> {
        match self {
            PartFiles::Exactly(url) => Some(url),
            PartFiles::Swappable(all) => all.get(p),
        }
        .ok_or_else(|| {
            kiln_engine::KilnError::internal(
                "a histogram task",
                format!("no file for partition {p}"),
            )
        })
    }
}

/// A tree level of one fit: its finished trees and the growing tree's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Level {
    fit: u64,
    trees: usize,
    nodes: usize,
}

impl Level {
    fn of(req: &LevelRequest) -> Self {
        Level {
            fit: req.fit,
            trees: req.trees.len(),
            nodes: req.tree.nodes.len(),
        }
    }
}

/// What this process keeps of one partition.
#[derive(Default)]
struct Kept {
    /// Its scores; `None` while a task computes them.
    state: Option<PartState>,
    /// The level a task here last took it for.
    taken_for: Option<Level>,
}

/// Partitions kept per file (only those of the latest fit).
static KEPT: LazyLock<Mutex<HashMap<String, Kept>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// The partition (of `n`) a task for `nominal` computes here, the first
/// of: its own, if this process keeps its scores `current`; another whose
/// scores it keeps current; its own; any other; each among the partitions
/// `free` here (no task here took them at this level); else its own.
fn choose(
    nominal: usize,
    n: usize,
    free: impl Fn(usize) -> bool,
    current: impl Fn(usize) -> bool,
) -> usize {
    let others = (0..n).filter(|p| *p != nominal);
    std::iter::once(nominal)
        .filter(|p| free(*p) && current(*p))
        .chain(others.clone().filter(|p| free(*p) && current(*p)))
        .chain(std::iter::once(nominal).filter(|p| free(*p)))
        .chain(others.filter(|p| free(*p)))
        .next()
        .unwrap_or(nominal)
}

impl HistogramTask {
    /// The partition computed (its index) and its histograms.
    pub fn histograms(&self) -> kiln_engine::Result<(usize, Vec<i64>)> {
        let checksum = u64::from_str_radix(&self.checksum, 16)
            .map_err(|e| kiln_engine::KilnError::internal("a histogram task's checksum", e))?;
        match &self.request {
            // A forest level keeps no state: any process computes any
            // partition alike.
            LevelWork::Forest(req) => {
                let part = load(self.files.of(self.partition)?, checksum)?;
                Ok((self.partition, forest_histograms(&part, req)?))
            }
            LevelWork::Boosting(req) => self.boosting(req, checksum),
        }
    }

    /// A boosting level: the partition whose scores this process keeps.
    fn boosting(
        &self,
        request: &LevelRequest,
        checksum: u64,
    ) -> kiln_engine::Result<(usize, Vec<i64>)> {
        use kiln_engine::KilnError;
        let poisoned = |_| KilnError::internal("partition scores", "poisoned");
        // Taken out while computing, so partitions run concurrently.
        let (partition, url, mut state) = {
            let mut kept = KEPT.lock().map_err(poisoned)?;
            // Scores of another fit, or a tree or more behind (another
            // executor has computed that partition since), are dropped:
            // an executor holds the states of its own partitions only.
            kept.retain(|_, k| {
                k.state
                    .as_ref()
                    .is_none_or(|s| s.fit() == request.fit && s.behind(request).0 <= 1)
            });
            let (partition, url) = match &self.files {
                PartFiles::Exactly(url) => (self.partition, url),
                PartFiles::Swappable(all) => {
                    let level = Level::of(request);
                    let kept_of = |p: usize| all.get(p).and_then(|url| kept.get(url));
                    let p = choose(
                        self.partition,
                        all.len(),
                        |p| kept_of(p).is_none_or(|k| k.taken_for != Some(level)),
                        |p| {
                            kept_of(p)
                                .and_then(|k| k.state.as_ref())
                                .is_some_and(|s| s.is_current(request))
                        },
                    );
                    (p, self.files.of(p)?)
                }
            };
            let entry = kept.entry(url.clone()).or_default();
            entry.taken_for = Some(Level::of(request));
            (
                partition,
                url.clone(),
                entry.state.take().unwrap_or_default(),
            )
        };
        if !state.is_current(request) {
            let (trees_behind, routed) = state.behind(request);
            tracing::debug!(
                partition = %url,
                trees_behind,
                routed,
                "a partition's scores were recomputed (kept by another executor, or evicted)"
            );
        }
        let part = load(&url, checksum)?;
        let hist = part_histograms(&part, &mut state, request)?;
        KEPT.lock().map_err(poisoned)?.entry(url).or_default().state = Some(state);
        Ok((partition, hist))
    }
}

impl RemoteTask for HistogramTask {
    const NAME: &'static str = "kiln_histograms";

    fn run(&self) -> kiln_engine::Result<Vec<u8>> {
        let (partition, hist) = self.histograms()?;
        Ok((partition as u64)
            .to_le_bytes()
            .into_iter()
            .chain(hist.iter().flat_map(|v| v.to_le_bytes()))
            .collect())
    }
}

/// `kiln_histograms(task)`.
pub fn histogram_udf() -> ScalarUDF {
    TaskUdf::<HistogramTask>::udf()
}

#[cfg(test)]
mod tests {
    use super::choose;

    #[test]
    fn a_task_computes_a_partition_this_process_keeps_current() {
        let all = |_: usize| true;
        let none = |_: usize| false;
        // Its own partition, when kept current here, or when none is.
        assert_eq!(choose(1, 3, all, |p| p == 1), 1);
        assert_eq!(choose(1, 3, all, none), 1);
        // Another kept current here, rather than its own recomputed.
        assert_eq!(choose(0, 3, all, |p| p == 2), 2);
        // Not one this process already took at this level.
        assert_eq!(choose(0, 3, |p| p != 2, |p| p == 2), 0);
        assert_eq!(choose(0, 3, |p| p == 1, |p| p == 0), 1);
        // Every partition taken here: its own (the driver keeps one reply).
        assert_eq!(choose(2, 3, none, all), 2);
    }
}
