//! Parameter grids, `CrossValidator` (stratified k-fold) and
//! `TrainValidationSplit`, with several competing estimators in one run.
//!
//! A tuning is a [`TuningPlan`]: fit jobs ([`crate::jobs::FitJob`]) over
//! the one binned training set, folds as row lists. Candidates that differ
//! only in ensemble size (`numTrees`, `maxIter`) share one fit and are
//! scored by prefix. A [`FitRunner`] runs the jobs, in this process or on
//! Ballista executors, with the same outcome.

use crate::data::TrainingSet;
use crate::jobs::{FitJob, FitOutcome, FitRows, FitRunner};
use crate::metrics::Metric;
use crate::model::ModelParams;
use kiln_engine::{KilnError, Result};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One estimator with fixed params and a grid over others (YAML shape).
/// Params and grid keys are the estimator's Spark names (`maxDepth`); each
/// grid point is validated as the estimator's params.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EstimatorSpec {
    pub classname: String,
    #[serde(default)]
    pub params: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub grid: BTreeMap<String, Vec<serde_json::Value>>,
}

impl EstimatorSpec {
    /// Every grid point as validated params (the cartesian product, in key order).
    pub fn candidates(&self, seed: u64) -> Result<Vec<ModelParams>> {
        let mut points: Vec<serde_json::Map<String, serde_json::Value>> = vec![self.params.clone()];
        for (key, values) in &self.grid {
            if values.is_empty() {
                return Err(KilnError::config(format!(
                    "{}: grid '{key}' is empty",
                    self.classname
                )));
            }
            points = points
                .into_iter()
                .flat_map(|p| {
                    values.iter().map(move |v| {
                        let mut q = p.clone();
                        q.insert(key.clone(), v.clone());
                        q
                    })
                })
                .collect();
        }
        points
            .into_iter()
            .map(|mut p| {
                p.entry("seed").or_insert(serde_json::json!(seed));
                ModelParams::parse(&self.classname, &p)
            })
            .collect()
    }
}

/// One branch per estimator: its classname, its params' schema, and a grid
/// whose keys are those params, each with a list of values.
impl schemars::JsonSchema for EstimatorSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "EstimatorSpec".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let branches: Vec<serde_json::Value> = ModelParams::schemas(generator)
            .into_iter()
            .map(|(classname, params)| {
                let name = params
                    .get("$ref")
                    .and_then(|r| r.as_str())
                    .and_then(|r| r.rsplit('/').next())
                    .unwrap_or_default()
                    .to_string();
                let fields = generator
                    .definitions()
                    .get(&name)
                    .and_then(|d| d.get("properties"))
                    .and_then(|p| p.as_object())
                    .cloned()
                    .unwrap_or_default();
                let grid: serde_json::Map<String, serde_json::Value> = fields
                    .into_iter()
                    .map(|(k, v)| (k, serde_json::json!({"type": "array", "minItems": 1, "items": v})))
                    .collect();
                serde_json::json!({
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["classname"],
                    "properties": {
                        "classname": {"const": classname},
                        "params": params,
                        "grid": {
                            "description": "Values to try per param; the cartesian product is tuned.",
                            "type": "object",
                            "additionalProperties": false,
                            "properties": grid,
                        },
                    },
                })
            })
            .collect();
        schemars::json_schema!({
            "description": "A competing estimator: fixed params and a grid over others (Spark's param names).",
            "oneOf": branches,
        })
    }
}

/// Spark's `CrossValidator`: stratified k-fold over the training rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CrossValidation {
    /// Folds (at least 2).
    #[serde(default = "three", alias = "numFolds")]
    pub num_folds: usize,
    /// (fold × grid point) fits at a time.
    #[serde(default = "one")]
    pub parallelism: usize,
}

/// Spark's `TrainValidationSplit`: one stratified split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainValidationSplit {
    /// Share of the training rows that fit; the rest validate.
    #[serde(default = "tv_ratio", alias = "trainRatio")]
    pub train_ratio: f64,
    /// Grid points fitted at a time.
    #[serde(default = "one")]
    pub parallelism: usize,
}

fn tv_ratio() -> f64 {
    0.75
}

/// How an estimator's grid points are compared.
#[derive(Debug, Clone, PartialEq)]
pub enum Tuning {
    CrossValidation(CrossValidation),
    TrainValidationSplit(TrainValidationSplit),
}

impl Tuning {
    /// Tunes `candidates` on every row of `data` by `metric`, running the
    /// fits with `runner`; `None` for a single candidate (nothing to compare).
    pub fn run(
        &self,
        candidates: &[ModelParams],
        data: &TrainingSet,
        metric: Metric,
        seed: u64,
        runner: &dyn FitRunner,
    ) -> Result<Option<TuningResult>> {
        let Some(plan) = self.plan(candidates, metric, seed)? else {
            return Ok(None);
        };
        let outcomes = runner.run_all(data, plan.jobs())?;
        plan.finish(&outcomes).map(Some)
    }

    /// The fit jobs that tune `candidates`: one per (group, validating
    /// fold), where a group is the candidates that differ only in ensemble
    /// size; `None` for a single candidate.
    pub fn plan(
        &self,
        candidates: &[ModelParams],
        metric: Metric,
        seed: u64,
    ) -> Result<Option<TuningPlan>> {
        if candidates.len() <= 1 {
            return Ok(None);
        }
        let (k, validating) = self.folds()?;
        let groups = groups(candidates);
        let mut jobs = Vec::new();
        let mut slots = Vec::new();
        for group in &groups {
            for (slot, held_out) in validating.iter().enumerate() {
                jobs.push(FitJob {
                    params: group.params.clone(),
                    rows: FitRows::Fold {
                        k,
                        seed,
                        held_out: *held_out,
                    },
                    score_sizes: group.members.iter().map(|(_, size)| *size).collect(),
                    metric,
                    keep_model: false,
                });
                slots.push(slot);
            }
        }
        Ok(Some(TuningPlan {
            candidates: candidates.to_vec(),
            members: groups.into_iter().map(|g| g.members).collect(),
            jobs,
            slots,
            folds: validating.len(),
            metric,
        }))
    }

    /// Fits at a time.
    pub fn parallelism(&self) -> usize {
        match self {
            Tuning::CrossValidation(cv) => cv.parallelism,
            Tuning::TrainValidationSplit(tv) => tv.parallelism,
        }
        .max(1)
    }

    /// The number of stratified folds and the folds that validate.
    fn folds(&self) -> Result<(usize, Vec<usize>)> {
        match self {
            Tuning::CrossValidation(cv) => {
                if cv.num_folds < 2 {
                    return Err(KilnError::config_fix(
                        format!("cross_validation.num_folds is {}", cv.num_folds),
                        "use at least 2 folds",
                    ));
                }
                Ok((cv.num_folds, (0..cv.num_folds).collect()))
            }
            Tuning::TrainValidationSplit(tv) => {
                let ratio = tv.train_ratio;
                if !(ratio > 0.0 && ratio < 1.0) {
                    return Err(KilnError::config_fix(
                        format!("train_validation_split.train_ratio is {ratio}"),
                        "use a ratio between 0 and 1 (exclusive), e.g. 0.75",
                    ));
                }
                // Fold 0 of 1/(1 - ratio) stratified buckets validates.
                let buckets = ((1.0 / (1.0 - ratio)).round() as usize).max(2);
                Ok((buckets, vec![0]))
            }
        }
    }
}

/// The fit jobs of one tuning and how their scores map back to candidates.
#[derive(Debug, Clone)]
pub struct TuningPlan {
    candidates: Vec<ModelParams>,
    /// Per group: (candidate index, ensemble size scored).
    members: Vec<Vec<(usize, Option<usize>)>>,
    /// Group-major: `folds` jobs per group.
    jobs: Vec<FitJob>,
    /// Each job's validating-fold slot.
    slots: Vec<usize>,
    folds: usize,
    metric: Metric,
}

impl TuningPlan {
    pub fn jobs(&self) -> &[FitJob] {
        &self.jobs
    }

    /// Mean score of every candidate (summed in fold order, so the means
    /// do not depend on where or in which order the jobs ran) and the best.
    pub fn finish(self, outcomes: &[FitOutcome]) -> Result<TuningResult> {
        if outcomes.len() != self.jobs.len() {
            return Err(KilnError::internal(
                "tuning",
                format!("{} fit jobs, {} outcomes", self.jobs.len(), outcomes.len()),
            ));
        }
        let mut by_fold = vec![vec![f64::NAN; self.folds]; self.candidates.len()];
        for (j, outcome) in outcomes.iter().enumerate() {
            let members = &self.members[j / self.folds];
            if outcome.scores.len() != members.len() {
                return Err(KilnError::internal(
                    "tuning",
                    format!(
                        "a fit job returned {} scores for {} candidates",
                        outcome.scores.len(),
                        members.len()
                    ),
                ));
            }
            for ((c, _), score) in members.iter().zip(&outcome.scores) {
                by_fold[*c][self.slots[j]] = *score;
            }
        }
        let means = by_fold
            .iter()
            .map(|s| s.iter().sum::<f64>() / s.len() as f64)
            .collect();
        pick(&self.candidates, means, self.metric)
    }
}

fn three() -> usize {
    3
}
fn one() -> usize {
    1
}

/// Result of tuning one estimator.
#[derive(Debug, Clone, Serialize)]
pub struct TuningResult {
    pub best: ModelParams,
    pub best_score: f64,
    /// (params, mean metric) for every grid point.
    pub scores: Vec<(serde_json::Value, f64)>,
}

/// Stratified fold assignment (per class shuffled with `seed`).
pub fn stratified_folds(labels: &[u32], k: usize, seed: u64) -> Vec<usize> {
    let mut fold = vec![0usize; labels.len()];
    let classes = labels.iter().max().map(|m| *m as usize + 1).unwrap_or(0);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for (offset, c) in (0..classes).enumerate() {
        let mut idx: Vec<usize> = (0..labels.len())
            .filter(|i| labels[*i] as usize == c)
            .collect();
        idx.shuffle(&mut rng);
        for (j, i) in idx.into_iter().enumerate() {
            fold[i] = (j + offset) % k;
        }
    }
    fold
}

/// Candidates that differ only in ensemble size: one fit of the largest
/// serves them all by prefix.
struct Group {
    params: ModelParams,
    /// (candidate index, its ensemble size; `None` when fitted as is).
    members: Vec<(usize, Option<usize>)>,
}

fn groups(candidates: &[ModelParams]) -> Vec<Group> {
    let mut groups: Vec<(Option<ModelParams>, Group)> = Vec::new();
    for (i, c) in candidates.iter().enumerate() {
        let Some(size) = c.ensemble_size() else {
            groups.push((
                None,
                Group {
                    params: c.clone(),
                    members: vec![(i, None)],
                },
            ));
            continue;
        };
        let key = c.with_ensemble_size(0);
        match groups.iter_mut().find(|(k, _)| k.as_ref() == Some(&key)) {
            Some((_, g)) => {
                if g.params.ensemble_size() < Some(size) {
                    g.params = c.clone();
                }
                g.members.push((i, Some(size)));
            }
            None => groups.push((
                Some(key),
                Group {
                    params: c.clone(),
                    members: vec![(i, Some(size))],
                },
            )),
        }
    }
    groups.into_iter().map(|(_, g)| g).collect()
}

fn pick(candidates: &[ModelParams], means: Vec<f64>, metric: Metric) -> Result<TuningResult> {
    let best = metric
        .best(&means)
        .ok_or_else(|| KilnError::config("an estimator has no candidates"))?;
    Ok(TuningResult {
        best: candidates[best].clone(),
        best_score: means[best],
        scores: candidates.iter().map(|c| c.to_json()).zip(means).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    #[test]
    fn grids_expand_to_the_cartesian_product() -> Result<()> {
        let spec: EstimatorSpec = serde_json::from_value(serde_json::json!({
            "classname": "RandomForestClassifier",
            "grid": {"maxDepth": [1, 3, 5], "numTrees": [15, 20, 25], "minInstancesPerNode": [1, 2, 3], "bootstrap": [true, false], "impurity": ["gini", "entropy"]}
        })).map_err(|e| KilnError::config(e.to_string()))?;
        assert_eq!(spec.candidates(1)?.len(), 108);
        let bad: EstimatorSpec = serde_json::from_value(
            serde_json::json!({"classname": "GBTClassifier", "grid": {"maxDeph": [1]}}),
        )
        .map_err(|e| KilnError::config(e.to_string()))?;
        let err = bad.candidates(1).expect_err("typo").to_string();
        assert!(err.contains("unknown field `maxDeph`"), "{err}");
        Ok(())
    }

    #[test]
    fn one_fit_scored_by_prefix_equals_separate_fits() -> Result<()> {
        use crate::data::Dataset;
        let n = 1200;
        let x: Vec<f64> = (0..n).map(|i| ((i * 37) % 101) as f64).collect();
        let z: Vec<f64> = (0..n).map(|i| ((i * 53) % 89) as f64).collect();
        let labels = (0..n)
            .map(|i| u32::from((x[i] + z[i] > 95.0) ^ (i % 13 == 0)))
            .collect();
        let data = Dataset {
            columns: vec![x, z],
            labels,
            feature_names: vec!["x".into(), "z".into()],
        };
        let set = TrainingSet::from_dataset(&data, &[32])?;
        let spec = |json: serde_json::Value| -> Result<Vec<ModelParams>> {
            serde_json::from_value::<EstimatorSpec>(json)
                .map_err(|e| KilnError::config(e.to_string()))?
                .candidates(3)
        };
        for candidates in [
            spec(serde_json::json!({"classname": "RandomForestClassifier",
                "params": {"featureSubsetStrategy": "1"},
                "grid": {"numTrees": [2, 6, 4], "maxDepth": [2, 3]}}))?,
            spec(serde_json::json!({"classname": "GBTClassifier",
                "grid": {"maxIter": [3, 6], "stepSize": [0.1, 0.3]}}))?,
        ] {
            let tuning = Tuning::CrossValidation(CrossValidation {
                num_folds: 3,
                parallelism: 2,
            });
            let tuned = tuning
                .run(
                    &candidates,
                    &set,
                    Metric::AreaUnderRoc,
                    7,
                    &crate::jobs::LocalFits { parallelism: 2 },
                )?
                .ok_or_else(|| KilnError::config("no tuning"))?;
            // Two groups each: one fit per depth (forest) or step size (GBT).
            assert_eq!(groups(&candidates).len(), 2);
            let folds = stratified_folds(&set.labels, 3, 7);
            for (c, (_, score)) in candidates.iter().zip(&tuned.scores) {
                let mut sum = 0.0;
                for f in 0..3 {
                    let train: Vec<u32> =
                        (0..n as u32).filter(|r| folds[*r as usize] != f).collect();
                    let valid: Vec<u32> =
                        (0..n as u32).filter(|r| folds[*r as usize] == f).collect();
                    let model = c.fit(&set, &train)?;
                    let predicted = model.predict_binned(set.binned(32)?, &valid);
                    let labels: Vec<u32> = valid.iter().map(|r| set.labels[*r as usize]).collect();
                    sum += Metrics::compute(&labels, &predicted).get(Metric::AreaUnderRoc);
                }
                assert_eq!(sum / 3.0, *score, "{}", c.to_json());
            }
        }
        Ok(())
    }

    #[test]
    fn folds_are_stratified() {
        let labels: Vec<u32> = (0..1000).map(|i| u32::from(i % 4 == 0)).collect();
        let folds = stratified_folds(&labels, 5, 3);
        for f in 0..5 {
            let pos = (0..1000)
                .filter(|i| folds[*i] == f && labels[*i] == 1)
                .count();
            assert!((49..=51).contains(&pos), "fold {f}: {pos}");
        }
    }
}
