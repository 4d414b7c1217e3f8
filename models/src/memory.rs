//! The memory plan of a training task: what the binned sets, the loading
//! passes and the concurrent fits will hold, known after the first pass and
//! checked against a limit before any codes are allocated or minutes spent.

use crate::data::{loading_bytes, set_bytes};
use crate::frame::Sizes;
use crate::model::ModelParams;
use bytesize::ByteSize;
use kiln_engine::{KilnError, Result};

/// Peak bytes of a training task, by part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Codes and labels of the training and test sets.
    pub sets: u64,
    /// Sorted hashes and positions while the passes run (freed after).
    pub loading: u64,
    /// Working memory of the fits that run at once.
    pub fitting: u64,
    pub concurrent_fits: usize,
    /// What the process holds already when the plan is made (its resident
    /// set: the binary, the engine, the first pass's buffers), so the plan
    /// speaks of the process's peak resident memory, the figure a
    /// container limit or `memory_limit` is about.
    pub process: u64,
}

impl MemoryPlan {
    /// The plan for `sizes` binned once per `max_bins`, fitting
    /// `candidates` `parallelism` at a time.
    pub fn new(
        sizes: Sizes,
        max_bins: &[usize],
        candidates: &[ModelParams],
        parallelism: usize,
    ) -> Self {
        let classes = sizes.classes;
        let rows = sizes.train_rows + sizes.test_rows;
        let per_fit = candidates
            .iter()
            .map(|c| c.working_bytes(sizes.train_rows, classes))
            .max()
            .unwrap_or(0)
            // A fold's training and validation row lists and predictions.
            + sizes.train_rows as u64 * 4
            + sizes.train_rows as u64 * 2;
        let concurrent_fits = parallelism.max(1);
        MemoryPlan {
            sets: set_bytes(rows, sizes.features, max_bins),
            loading: loading_bytes(rows),
            fitting: per_fit * concurrent_fits as u64,
            concurrent_fits,
            process: 0,
        }
    }

    /// The plan on top of a process already holding `resident` bytes.
    pub fn in_process(self, resident: u64) -> Self {
        MemoryPlan {
            process: resident,
            ..self
        }
    }

    /// The task's own peak: the sets plus the larger of loading and fitting.
    pub fn peak(&self) -> u64 {
        self.sets + self.loading.max(self.fitting)
    }

    /// The process's peak resident memory: what it holds plus the task's
    /// peak.
    pub fn peak_resident(&self) -> u64 {
        self.process + self.peak()
    }

    /// One line for the log.
    pub fn describe(&self) -> String {
        format!(
            "memory plan: process {} + binned sets {} + max(loading {}, {} fit(s) at a time {}) = {} peak resident",
            ByteSize(self.process),
            ByteSize(self.sets),
            ByteSize(self.loading),
            self.concurrent_fits,
            ByteSize(self.fitting),
            ByteSize(self.peak_resident())
        )
    }

    /// Refuses a plan whose peak resident memory is above `limit`, with
    /// what to change.
    pub fn check(&self, limit: u64, limit_source: &str) -> Result<()> {
        if self.peak_resident() <= limit {
            return Ok(());
        }
        Err(KilnError::config_fix(
            format!(
                "training needs about {} but {limit_source} is {} ({})",
                ByteSize(self.peak_resident()),
                ByteSize(limit),
                self.describe()
            ),
            "raise memory_limit (or run on a machine with more memory), lower the tuning parallelism, \
             use one maxBins for all estimators, or train on a sample of the rows (e.g. a test_condition \
             or a SQLTransformer upstream)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gbt::GbtParams;
    use crate::rf::RfParams;

    #[test]
    fn the_plan_grows_linearly_and_refuses_what_does_not_fit() {
        let candidates = [
            ModelParams::GBTClassifier(GbtParams::default()),
            ModelParams::RandomForestClassifier(RfParams::default()),
        ];
        let sizes = |rows: usize| Sizes {
            train_rows: rows,
            test_rows: rows / 4,
            features: 58,
            classes: 2,
        };
        let small = MemoryPlan::new(sizes(1_000_000), &[32], &candidates, 2);
        let large = MemoryPlan::new(sizes(38_000_000), &[32], &candidates, 2);
        assert_eq!(large.peak(), small.peak() * 38);
        // 58 codes and a label per row: 62 B for 1.25M rows.
        assert_eq!(small.sets, 1_250_000 * 62);
        assert!(small.check(small.peak(), "the limit").is_ok());
        let err = large
            .check(4 << 30, "memory_limit")
            .expect_err("38M rows with two fits at a time do not fit in 4 GiB")
            .to_string();
        assert!(err.contains("training needs about"), "{err}");
        assert!(err.contains("memory_limit is 4.0 GiB"), "{err}");
        assert!(err.contains("fix: raise memory_limit"), "{err}");
        // What the process holds already counts: a plan that just fits
        // alone does not on top of a 200 MiB process.
        let held = small.in_process(200 << 20);
        assert_eq!(held.peak_resident(), small.peak() + (200 << 20));
        assert!(held.check(small.peak(), "the limit").is_err());
        assert!(
            held.describe().contains("process 200.0 MiB"),
            "{}",
            held.describe()
        );
    }
}
