//! Fit jobs: the unit of work of tuning and final fits, wherever it runs.
//!
//! A [`FitJob`] names params, the rows it trains on (all, or all but one
//! stratified fold) and the ensemble sizes it scores on the held-out fold.
//! It carries no data: it runs against the one binned [`TrainingSet`] of the
//! process that runs it, so the same job gives the same outcome in the
//! driver's thread pool ([`LocalFits`]) or in a Ballista executor
//! ([`crate::distributed::ClusterFits`]).

use crate::data::TrainingSet;
use crate::metrics::{Metric, Metrics};
use crate::model::{FittedModel, ModelParams};
use crate::tuning::stratified_folds;
use kiln_engine::{KilnError, Result};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Which rows a fit trains on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FitRows {
    /// Every row of the set (a final fit).
    All,
    /// Every row outside fold `held_out` of `k` stratified folds drawn with
    /// `seed`; the held-out fold is scored.
    Fold {
        k: usize,
        seed: u64,
        held_out: usize,
    },
}

/// One fit and what to report of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitJob {
    pub params: ModelParams,
    pub rows: FitRows,
    /// Ensemble sizes scored on the held-out fold (`None`: as fitted); a
    /// grid over `numTrees` or `maxIter` is one fit scored by prefix.
    pub score_sizes: Vec<Option<usize>>,
    pub metric: Metric,
    /// Return the fitted model (final fits), not only scores.
    pub keep_model: bool,
}

/// What a job returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitOutcome {
    /// One validation score per entry of [`FitJob::score_sizes`].
    pub scores: Vec<f64>,
    pub model: Option<FittedModel>,
    /// Wall time of the fit and scoring where the job ran.
    pub seconds: f64,
    /// How the runner fitted it (data-parallel round trips), for reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

impl FitJob {
    /// Relative cost, for scheduling the largest first.
    pub fn cost(&self) -> f64 {
        self.params.fit_cost()
    }

    /// Fits and scores against `data` (the same set wherever it runs).
    pub fn run(&self, data: &TrainingSet) -> Result<FitOutcome> {
        let started = Instant::now();
        let (train, valid) = match &self.rows {
            FitRows::All => (data.all_rows(), Vec::new()),
            FitRows::Fold { k, seed, held_out } => {
                if held_out >= k {
                    return Err(KilnError::internal(
                        "a fit job",
                        format!("fold {held_out} of {k} does not exist"),
                    ));
                }
                let folds = stratified_folds(&data.labels, *k, *seed);
                let (mut train, mut valid) = (Vec::new(), Vec::new());
                for (r, fold) in folds.iter().enumerate() {
                    if fold == held_out {
                        valid.push(r as u32);
                    } else {
                        train.push(r as u32);
                    }
                }
                (train, valid)
            }
        };
        let model = self.params.fit(data, &train)?;
        let scores = if self.score_sizes.is_empty() {
            Vec::new()
        } else {
            let binned = data.binned(self.params.max_bins())?;
            let labels: Vec<u32> = valid.iter().map(|r| data.labels[*r as usize]).collect();
            self.score_sizes
                .iter()
                .map(|size| {
                    let predicted = match size {
                        Some(s) if Some(*s) != self.params.ensemble_size() => {
                            model.truncated(*s).predict_binned(binned, &valid)
                        }
                        _ => model.predict_binned(binned, &valid),
                    };
                    Metrics::compute(&labels, &predicted).get(self.metric)
                })
                .collect()
        };
        Ok(FitOutcome {
            scores,
            model: self.keep_model.then_some(model),
            seconds: started.elapsed().as_secs_f64(),
            details: None,
        })
    }
}

/// Runs a batch of fit jobs against one training set; outcomes in job order.
pub trait FitRunner: Send + Sync {
    fn run_all(&self, data: &TrainingSet, jobs: &[FitJob]) -> Result<Vec<FitOutcome>>;

    /// Where the fits run, for reports (`local, 2 at a time`).
    fn describe(&self) -> String;
}

/// Jobs in this process, `parallelism` at a time, the largest first.
#[derive(Debug, Clone)]
pub struct LocalFits {
    pub parallelism: usize,
}

impl FitRunner for LocalFits {
    fn run_all(&self, data: &TrainingSet, jobs: &[FitJob]) -> Result<Vec<FitOutcome>> {
        let order = largest_first_order(jobs);
        let ordered: Vec<&FitJob> = order.iter().map(|i| &jobs[*i]).collect();
        let outcomes = largest_first(&ordered, self.parallelism, |job| job.run(data))?;
        let mut by_job: Vec<Option<FitOutcome>> = (0..jobs.len()).map(|_| None).collect();
        for (i, outcome) in order.into_iter().zip(outcomes) {
            by_job[i] = Some(outcome);
        }
        by_job
            .into_iter()
            .map(|o| o.ok_or_else(|| KilnError::internal("tuning", "a fit job did not report")))
            .collect()
    }

    fn describe(&self) -> String {
        format!(
            "in this process, {} fit(s) at a time",
            self.parallelism.max(1)
        )
    }
}

/// Job indices, the most expensive first (ties in job order).
pub fn largest_first_order(jobs: &[FitJob]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by(|a, b| jobs[*b].cost().total_cmp(&jobs[*a].cost()));
    order
}

/// Runs `jobs` in order on `parallelism` workers that each take the next
/// job when done (jobs sorted largest first keep every worker busy to the
/// end); results in job order. The pool has at least as many threads as
/// the machine's (the global pool's), so that fewer concurrent fits than
/// cores still use every core inside each fit (histogram blocks, trees of
/// a forest); the models do not depend on the thread count.
fn largest_first<J: Sync, T: Send>(
    jobs: &[J],
    parallelism: usize,
    run: impl Fn(&J) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(parallelism.max(rayon::current_num_threads()).max(1))
        .thread_name(|i| format!("kiln-fit-{i}"))
        .build()
        .map_err(|e| KilnError::internal("starting the tuning thread pool", e))?;
    let next = AtomicUsize::new(0);
    let (sender, receiver) = std::sync::mpsc::channel();
    pool.install(|| {
        rayon::scope(|s| {
            for _ in 0..parallelism.max(1) {
                let sender = sender.clone();
                let (next, run) = (&next, &run);
                s.spawn(move |_| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(job) = jobs.get(i) else { break };
                        let result = run(job);
                        let failed = result.is_err();
                        if sender.send((i, result)).is_err() || failed {
                            // Stop handing out jobs after a failure.
                            next.store(jobs.len(), Ordering::Relaxed);
                            break;
                        }
                    }
                });
            }
        })
    });
    drop(sender);
    let mut results: Vec<Option<T>> = (0..jobs.len()).map(|_| None).collect();
    for (i, result) in receiver {
        results[i] = Some(result?);
    }
    results
        .into_iter()
        .map(|r| r.ok_or_else(|| KilnError::internal("tuning", "a tuning job did not report")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::largest_first;

    /// One fit at a time still has every core for its own parallel work
    /// (before, a single untuned GBT grew its histograms on one thread).
    #[test]
    fn one_fit_at_a_time_keeps_every_core() {
        let machine = rayon::current_num_threads();
        let seen = largest_first(&[(), ()], 1, |_| Ok(rayon::current_num_threads())).expect("jobs");
        assert_eq!(seen, vec![machine.max(1); 2]);
        let seen = largest_first(&[(); 3], machine + 2, |_| Ok(rayon::current_num_threads()))
            .expect("jobs");
        assert_eq!(seen, vec![machine + 2; 3]);
    }
}
