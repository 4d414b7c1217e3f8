//! Model selection: each competing estimator is tuned on the training rows,
//! its best params are fitted on all of them and evaluated on the test set;
//! the winner is chosen by one [`Metric`] with the rule of
//! [`Metric::better`] (a number beats NaN, the first of equals wins).

use crate::data::TrainingSet;
use crate::jobs::{FitJob, FitOutcome, FitRows, FitRunner};
use crate::metrics::{Metric, Metrics};
use crate::model::{FittedModel, ModelParams};
use crate::report::comparison_table;
use crate::tuning::{EstimatorSpec, Tuning, TuningPlan, TuningResult};
use kiln_engine::{KilnError, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;

/// One estimator's result: its tuned params, the model fitted with them on
/// all training rows, and that model's test metrics.
#[derive(Debug, Clone)]
pub struct CandidateResult {
    pub params: ModelParams,
    pub tuning: Option<TuningResult>,
    pub model: FittedModel,
    pub test_metrics: Metrics,
    /// The tuning score of the best params (NaN when nothing was tuned).
    pub cv_metric: f64,
    /// The final fit alone (no tuning, no scoring).
    pub fit_seconds: f64,
    pub predict_seconds: f64,
    /// Tuning (of every estimator, run together), final fit and test scoring.
    pub total_seconds: f64,
    /// How the final fit ran (data-parallel round trips), when the runner says.
    pub fit_details: Option<serde_json::Value>,
}

impl CandidateResult {
    pub fn classname(&self) -> &'static str {
        self.params.classname()
    }

    /// This candidate's entry in `report.json`.
    pub fn report(&self, feature_names: &[String]) -> serde_json::Value {
        #[derive(Serialize)]
        struct GridPoint<'a> {
            params: &'a serde_json::Value,
            metric: f64,
        }
        let importances: BTreeMap<&str, f64> = feature_names
            .iter()
            .map(String::as_str)
            .zip(self.model.feature_importances().iter().copied())
            .collect();
        serde_json::json!({
            "classname": self.classname(),
            "params": self.params.to_json(),
            "cv_metric": self.cv_metric,
            "fit_seconds": self.fit_seconds,
            "fit_details": self.fit_details,
            "tuning_and_fit_seconds": self.total_seconds,
            "predict_rows_per_second": self.test_metrics.rows as f64 / self.predict_seconds.max(1e-9),
            "grid": self.tuning.as_ref().map(|t| t.scores.iter().map(|(params, metric)| GridPoint { params, metric: *metric }).collect::<Vec<_>>()),
            "test_metrics": self.test_metrics,
            "feature_importances": importances,
        })
    }
}

/// What model selection compares and how.
#[derive(Debug, Clone, Copy)]
pub struct SelectionPlan<'a> {
    pub estimators: &'a [EstimatorSpec],
    pub tuning: &'a Tuning,
    pub metric: Metric,
    pub seed: u64,
}

impl SelectionPlan<'_> {
    /// How many tuning fits it makes (0 when nothing is tuned).
    pub fn tuning_fits(&self) -> Result<usize> {
        self.estimators.iter().try_fold(0, |n, spec| {
            let plan = self
                .tuning
                .plan(&spec.candidates(self.seed)?, self.metric, self.seed)?;
            Ok(n + plan.map_or(0, |p| p.jobs().len()))
        })
    }
}

/// Tunes every estimator's grid, fits each one's best params on every row
/// of `train` and evaluates those models on `test` (encoded with `train`'s
/// bin boundaries, so prediction from codes equals prediction from values).
///
/// The fits run in two batches through `runner`: every estimator's tuning
/// jobs together (the largest first), then the final fits. `on_stage`
/// hears what is running.
pub fn evaluate_estimators(
    plan: &SelectionPlan<'_>,
    train: &TrainingSet,
    test: &TrainingSet,
    runner: &dyn FitRunner,
    on_stage: &dyn Fn(String),
) -> Result<Vec<CandidateResult>> {
    let SelectionPlan {
        estimators: specs,
        tuning,
        metric,
        seed,
    } = *plan;
    let started = Instant::now();
    let candidates: Vec<Vec<ModelParams>> = specs
        .iter()
        .map(|s| s.candidates(seed))
        .collect::<Result<_>>()?;
    let plans: Vec<Option<TuningPlan>> = candidates
        .iter()
        .map(|c| tuning.plan(c, metric, seed))
        .collect::<Result<_>>()?;
    let jobs: Vec<FitJob> = plans
        .iter()
        .flatten()
        .flat_map(|p| p.jobs().iter().cloned())
        .collect();
    let mut outcomes = if jobs.is_empty() {
        Vec::new()
    } else {
        on_stage(format!(
            "tuning: {} fits on {} rows, {}",
            jobs.len(),
            train.n_rows(),
            runner.describe()
        ));
        runner.run_all(train, &jobs)?
    }
    .into_iter();
    let tuned: Vec<Option<TuningResult>> = plans
        .into_iter()
        .map(|plan| match plan {
            None => Ok(None),
            Some(plan) => {
                let mine: Vec<FitOutcome> = outcomes.by_ref().take(plan.jobs().len()).collect();
                plan.finish(&mine).map(Some)
            }
        })
        .collect::<Result<_>>()?;
    let tuning_seconds = started.elapsed().as_secs_f64();
    let chosen: Vec<ModelParams> = specs
        .iter()
        .zip(&candidates)
        .zip(&tuned)
        .map(|((spec, c), t)| match t {
            Some(t) => Ok(t.best.clone()),
            None => c
                .first()
                .cloned()
                .ok_or_else(|| KilnError::config(format!("{}: no candidates", spec.classname))),
        })
        .collect::<Result<_>>()?;
    let finals: Vec<FitJob> = chosen
        .iter()
        .map(|params| FitJob {
            params: params.clone(),
            rows: FitRows::All,
            score_sizes: Vec::new(),
            metric,
            keep_model: true,
        })
        .collect();
    on_stage(format!(
        "final fit of {} estimator(s) on {} rows",
        finals.len(),
        train.n_rows()
    ));
    let fitted = runner.run_all(train, &finals)?;
    chosen
        .into_iter()
        .zip(tuned)
        .zip(fitted)
        .map(|((params, tuned), outcome)| {
            let model = outcome.model.ok_or_else(|| {
                KilnError::internal("a final fit", "the fit job returned no model")
            })?;
            let predict_started = Instant::now();
            let predicted = model.predict_binned(test.binned(params.max_bins())?, &test.all_rows());
            let predict_seconds = predict_started.elapsed().as_secs_f64();
            Ok(CandidateResult {
                cv_metric: tuned.as_ref().map_or(f64::NAN, |t| t.best_score),
                test_metrics: Metrics::compute(&test.labels, &predicted),
                params,
                tuning: tuned,
                model,
                fit_seconds: outcome.seconds,
                predict_seconds,
                total_seconds: tuning_seconds + outcome.seconds + predict_seconds,
                fit_details: outcome.details,
            })
        })
        .collect()
}

/// Competing candidates and the one chosen.
#[derive(Debug, Clone)]
pub struct Selection {
    pub metric: Metric,
    pub candidates: Vec<CandidateResult>,
    pub winner: usize,
}

impl Selection {
    /// Chooses the candidate with the best test `metric`.
    pub fn choose(metric: Metric, candidates: Vec<CandidateResult>) -> Result<Self> {
        let scores: Vec<f64> = candidates
            .iter()
            .map(|c| c.test_metrics.get(metric))
            .collect();
        let winner = metric
            .best(&scores)
            .ok_or_else(|| KilnError::config("no estimators to choose from"))?;
        Ok(Selection {
            metric,
            candidates,
            winner,
        })
    }

    pub fn winner(&self) -> &CandidateResult {
        &self.candidates[self.winner]
    }

    /// The fixed-width comparison table of every candidate.
    pub fn table(&self) -> String {
        let rows: Vec<(String, f64, &Metrics)> = self
            .candidates
            .iter()
            .map(|c| (c.classname().to_string(), c.cv_metric, &c.test_metrics))
            .collect();
        comparison_table(&rows, self.metric.name())
    }

    /// The training report: metric, winner, row counts, every candidate.
    pub fn report(
        &self,
        train_rows: usize,
        test_rows: usize,
        feature_names: &[String],
    ) -> serde_json::Value {
        serde_json::json!({
            "metric": self.metric,
            "winner": self.winner().classname(),
            "train_rows": train_rows,
            "test_rows": test_rows,
            "models": self.candidates.iter().map(|c| c.report(feature_names)).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tuning::CrossValidation;

    use crate::data::Dataset;

    fn data(n: usize, noise_every: usize) -> Dataset {
        let x: Vec<f64> = (0..n).map(|i| (i % 100) as f64).collect();
        let y = (0..n)
            .map(|i| u32::from((i % 100 >= 50) ^ (i % noise_every == 0)))
            .collect();
        Dataset {
            columns: vec![x],
            labels: y,
            feature_names: vec!["x".into()],
        }
    }

    #[test]
    fn selection_tunes_fits_and_picks_the_better_model() -> Result<()> {
        let train = TrainingSet::from_dataset(&data(2000, 7), &[32])?;
        let test = TrainingSet::encode_like(&data(600, 7), &train)?;
        let spec = |json: serde_json::Value| -> Result<EstimatorSpec> {
            serde_json::from_value(json).map_err(|e| KilnError::config(e.to_string()))
        };
        let stump = spec(
            serde_json::json!({"classname": "GBTClassifier", "params": {"maxIter": 1, "maxDepth": 1, "stepSize": 0.01}}),
        )?;
        let forest = spec(
            serde_json::json!({"classname": "RandomForestClassifier", "params": {"numTrees": 5}, "grid": {"maxDepth": [1, 4]}}),
        )?;
        let tuning = Tuning::CrossValidation(CrossValidation {
            num_folds: 2,
            parallelism: 1,
        });
        let runner = crate::jobs::LocalFits { parallelism: 2 };
        let estimators = [stump, forest];
        let plan = SelectionPlan {
            estimators: &estimators,
            tuning: &tuning,
            metric: Metric::Accuracy,
            seed: 1,
        };
        assert_eq!(plan.tuning_fits()?, 4);
        let mut results = evaluate_estimators(&plan, &train, &test, &runner, &|_| {})?;
        let b = results
            .pop()
            .ok_or_else(|| KilnError::config("no forest"))?;
        let a = results.pop().ok_or_else(|| KilnError::config("no stump"))?;
        assert!(a.cv_metric.is_nan(), "one candidate is not tuned");
        assert_eq!(b.tuning.as_ref().map(|t| t.scores.len()), Some(2));
        let expected = if b.test_metrics.accuracy > a.test_metrics.accuracy {
            1
        } else {
            0
        };
        let selection = Selection::choose(Metric::Accuracy, vec![a, b])?;
        assert_eq!(selection.winner, expected);
        let report = selection.report(2000, 600, &train.feature_names);
        assert_eq!(report["metric"], "accuracy");
        assert!(report["models"][1]["test_metrics"]["areaUnderROC"].is_number());
        Ok(())
    }
}
