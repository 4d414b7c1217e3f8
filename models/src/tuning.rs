//! Parameter grids, `CrossValidator` (stratified k-fold) and
//! `TrainValidationSplit`, with several competing estimators in one run.
//! Fold × grid fits run in parallel.

use crate::data::Dataset;
use crate::metrics::{Metric, Metrics};
use crate::model::ModelParams;
use kiln_engine::{KilnError, Result};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
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
    /// Tunes `candidates` on `data` by `metric`; `None` for a single
    /// candidate (nothing to compare).
    pub fn run(
        &self,
        candidates: &[ModelParams],
        data: &Dataset,
        metric: Metric,
        seed: u64,
    ) -> Result<Option<TuningResult>> {
        if candidates.len() == 1 {
            return Ok(None);
        }
        Ok(Some(match self {
            Tuning::CrossValidation(cv) => cross_validate(candidates, data, cv, metric, seed)?,
            Tuning::TrainValidationSplit(tv) => train_validation_split(
                candidates,
                data,
                tv.train_ratio,
                metric,
                seed,
                tv.parallelism,
            )?,
        }))
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

/// Rows of `data` selected by `keep`.
pub fn subset(data: &Dataset, keep: &[bool]) -> Dataset {
    Dataset {
        columns: data
            .columns
            .iter()
            .map(|c| {
                c.iter()
                    .zip(keep)
                    .filter(|(_, k)| **k)
                    .map(|(v, _)| *v)
                    .collect()
            })
            .collect(),
        labels: data
            .labels
            .iter()
            .zip(keep)
            .filter(|(_, k)| **k)
            .map(|(v, _)| *v)
            .collect(),
        feature_names: data.feature_names.clone(),
    }
}

fn score(params: &ModelParams, train: &Dataset, valid: &Dataset, metric: Metric) -> Result<f64> {
    let model = params.fit(train)?;
    Ok(Metrics::compute(&valid.labels, &model.predict_dataset(valid)).get(metric))
}

/// k-fold cross-validation of every candidate; returns the best by `metric`.
pub fn cross_validate(
    candidates: &[ModelParams],
    data: &Dataset,
    cv: &CrossValidation,
    metric: Metric,
    seed: u64,
) -> Result<TuningResult> {
    if cv.num_folds < 2 {
        return Err(KilnError::config_fix(
            format!("cross_validation.num_folds is {}", cv.num_folds),
            "use at least 2 folds",
        ));
    }
    let folds = stratified_folds(&data.labels, cv.num_folds, seed);
    let splits: Vec<(Dataset, Dataset)> = (0..cv.num_folds)
        .map(|f| {
            let train: Vec<bool> = folds.iter().map(|x| *x != f).collect();
            let valid: Vec<bool> = train.iter().map(|t| !t).collect();
            (subset(data, &train), subset(data, &valid))
        })
        .collect();
    let jobs: Vec<(usize, usize)> = (0..candidates.len())
        .flat_map(|c| (0..cv.num_folds).map(move |f| (c, f)))
        .collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cv.parallelism.max(1))
        .build()
        .map_err(|e| KilnError::internal("starting the tuning thread pool", e))?;
    let results: Vec<Result<f64>> = pool.install(|| {
        jobs.par_iter()
            .map(|(c, f)| score(&candidates[*c], &splits[*f].0, &splits[*f].1, metric))
            .collect()
    });
    let mut sums = vec![0.0; candidates.len()];
    for ((c, _), r) in jobs.iter().zip(results) {
        sums[*c] += r?;
    }
    pick(
        candidates,
        sums.iter().map(|s| s / cv.num_folds as f64).collect(),
        metric,
    )
}

/// One train/validation split (`train_ratio` of the rows train).
pub fn train_validation_split(
    candidates: &[ModelParams],
    data: &Dataset,
    train_ratio: f64,
    metric: Metric,
    seed: u64,
    parallelism: usize,
) -> Result<TuningResult> {
    if !(train_ratio > 0.0 && train_ratio < 1.0) {
        return Err(KilnError::config_fix(
            format!("train_validation_split.train_ratio is {train_ratio}"),
            "use a ratio between 0 and 1 (exclusive), e.g. 0.75",
        ));
    }
    let buckets = ((1.0 / (1.0 - train_ratio)).round() as usize).max(2);
    let folds = stratified_folds(&data.labels, buckets, seed);
    let train_mask: Vec<bool> = folds.iter().map(|f| *f != 0).collect();
    let valid_mask: Vec<bool> = train_mask.iter().map(|t| !t).collect();
    let (train, valid) = (subset(data, &train_mask), subset(data, &valid_mask));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(parallelism.max(1))
        .build()
        .map_err(|e| KilnError::internal("starting the tuning thread pool", e))?;
    let results: Vec<Result<f64>> = pool.install(|| {
        candidates
            .par_iter()
            .map(|c| score(c, &train, &valid, metric))
            .collect()
    });
    pick(
        candidates,
        results.into_iter().collect::<Result<_>>()?,
        metric,
    )
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
