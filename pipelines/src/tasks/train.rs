//! `ModelTraining`: tunes competing estimators (grid × k-fold CV or a
//! train/validation split), evaluates the best of each on the test set,
//! writes reports and deploys the winner to the model repository.

use super::{Task, TaskContext, TaskFuture, TaskOutcome, load_pipeline_model};
use crate::config::{LoadedConfig, TaskConfig};
use datafusion::prelude::DataFrame;
use kiln_engine::artifacts::ArtifactRepo;
use kiln_engine::io::FileFormat;
use kiln_engine::{KilnError, Result};
use kiln_models::data::Dataset;
use kiln_models::frame::{FeatureSource, collect_dataset};
use kiln_models::metrics::{METRIC_NAMES, Metrics, larger_is_better};
use kiln_models::model::{MODEL_FORMAT_VERSION, ModelArtifact, PipelineRef};
use kiln_models::report::{comparison_table, roc_svg};
use kiln_models::tuning::{
    CrossValidation, EstimatorSpec, cross_validate, subset, train_validation_split,
};
use kiln_transformers::FittedStage;
use serde::Deserialize;
use std::ops::Not;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TvSplit {
    #[serde(default = "tv_ratio")]
    train_ratio: f64,
    #[serde(default = "one")]
    parallelism: usize,
}

fn tv_ratio() -> f64 {
    0.75
}
fn one() -> usize {
    1
}
fn default_metric() -> String {
    "areaUnderROC".into()
}
fn test_fraction() -> f64 {
    0.2
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Init {
    input: String,
    #[serde(default)]
    format: FileFormat,
    #[serde(default)]
    test_input: Option<String>,
    /// SQL condition selecting test rows (e.g. `sample_id % 5 = 0`).
    #[serde(default)]
    test_condition: Option<String>,
    #[serde(default = "test_fraction")]
    test_fraction: f64,
    label_col: String,
    #[serde(default)]
    features_col: Option<String>,
    #[serde(default)]
    feature_cols: Option<Vec<String>>,
    #[serde(default)]
    seed: u64,
    #[serde(default = "default_metric")]
    metric: String,
    #[serde(default)]
    cross_validation: Option<CrossValidation>,
    #[serde(default)]
    train_validation_split: Option<TvSplit>,
    estimators: Vec<EstimatorSpec>,
    /// The fitted feature pipeline the features come from (recorded in the
    /// artifact so prediction can apply it).
    #[serde(default)]
    path_pipeline_model: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Output {
    path_model_repository: String,
}

#[derive(Debug)]
pub struct ModelTraining {
    init: Init,
    output: Output,
}

impl ModelTraining {
    pub fn bind(loaded: &LoadedConfig, task: &TaskConfig) -> Result<Self> {
        let (init, output): (Init, Output) = loaded.task_params(task)?;
        let at = |k: &str| format!("{}: task '{}'", loaded.locate(&task.name, k), task.name);
        if !METRIC_NAMES.contains(&init.metric.as_str()) {
            return Err(KilnError::config_fix(
                format!("{}: unknown metric '{}'", at("metric"), init.metric),
                format!("use one of: {}", METRIC_NAMES.join(", ")),
            ));
        }
        if init.estimators.is_empty() {
            return Err(KilnError::config(format!(
                "{}: estimators is empty",
                at("estimators")
            )));
        }
        if init.features_col.is_some() == init.feature_cols.is_some() {
            return Err(KilnError::config_fix(
                format!(
                    "{}: give exactly one of features_col and feature_cols",
                    at("label_col")
                ),
                "features_col: features (a vector column) or feature_cols: [a, b, c]",
            ));
        }
        if !(0.0..1.0).contains(&init.test_fraction) {
            return Err(KilnError::config(format!(
                "{}: test_fraction must be in [0, 1)",
                at("test_fraction")
            )));
        }
        for e in &init.estimators {
            e.candidates(init.seed)
                .map_err(|err| err.context(at("estimators")))?;
        }
        Ok(ModelTraining { init, output })
    }

    async fn feature_source(
        &self,
        ctx: &TaskContext,
    ) -> Result<(FeatureSource, Option<PipelineRef>)> {
        if let Some(cols) = &self.init.feature_cols {
            return Ok((FeatureSource::Columns(cols.clone()), None));
        }
        let column = self.init.features_col.clone().unwrap_or_default();
        let Some(path) = &self.init.path_pipeline_model else {
            return Err(KilnError::config(format!(
                "task '{}': features_col needs path_pipeline_model (to name the features)",
                ctx.task_name
            )));
        };
        let (pipeline, version) = load_pipeline_model(ctx, path, None).await?;
        let names = pipeline
            .stages
            .iter()
            .rev()
            .find_map(|s| match s {
                FittedStage::VectorAssembler(m) if m.output_col == column => Some(
                    m.inputs
                        .iter()
                        .flat_map(|i| match i.vector_size {
                            None => vec![i.name.clone()],
                            Some(n) => (0..n).map(|k| format!("{}[{k}]", i.name)).collect(),
                        })
                        .collect::<Vec<_>>(),
                ),
                _ => None,
            })
            .ok_or_else(|| {
                KilnError::config(format!(
                    "task '{}': the pipeline model has no VectorAssembler producing '{column}'",
                    ctx.task_name
                ))
            })?;
        Ok((
            FeatureSource::Vector { column, names },
            Some(PipelineRef {
                path: path.clone(),
                version,
            }),
        ))
    }

    async fn split(
        &self,
        ctx: &TaskContext,
        df: DataFrame,
    ) -> Result<(DataFrame, Option<DataFrame>)> {
        if let Some(test) = &self.init.test_input {
            return Ok((df, Some(ctx.input(test, self.init.format).await?)));
        }
        if let Some(cond) = &self.init.test_condition {
            let e = df.parse_sql_expr(cond).map_err(|e| {
                KilnError::config(format!("task '{}': test_condition: {e}", ctx.task_name))
            })?;
            let test = df.clone().filter(e.clone())?;
            return Ok((df.filter(e.not())?, Some(test)));
        }
        Ok((df, None))
    }
}

fn fingerprint(d: &Dataset) -> String {
    use std::hash::{Hash, Hasher};
    let mut sum = 0u64;
    for r in 0..d.n_rows() {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        d.labels[r].hash(&mut h);
        for c in &d.columns {
            c[r].to_bits().hash(&mut h);
        }
        sum = sum.wrapping_add(h.finish());
    }
    format!(
        "rows={} features={} checksum={sum:016x}",
        d.n_rows(),
        d.n_features()
    )
}

fn random_split(d: &Dataset, fraction: f64, seed: u64) -> (Dataset, Dataset) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let test: Vec<bool> = (0..d.n_rows())
        .map(|_| rng.random::<f64>() < fraction)
        .collect();
    let train: Vec<bool> = test.iter().map(|t| !t).collect();
    (subset(d, &train), subset(d, &test))
}

impl Task for ModelTraining {
    fn inputs(&self) -> Vec<String> {
        vec![self.init.input.clone()]
    }

    fn run<'a>(&'a self, ctx: &'a TaskContext) -> TaskFuture<'a> {
        Box::pin(async move {
            ctx.progress.stage("collecting the training data");
            let df = ctx.input(&self.init.input, self.init.format).await?;
            let (source, pipeline_ref) = self.feature_source(ctx).await?;
            let (train_df, test_df) = self.split(ctx, df).await?;
            let label = &self.init.label_col;
            let all = collect_dataset(train_df, label, &source).await?;
            let (train, test) = match test_df {
                Some(t) => (all, collect_dataset(t, label, &source).await?),
                None => random_split(&all, self.init.test_fraction, self.init.seed),
            };
            train.validate(false)?;
            ctx.progress
                .add_rows((train.n_rows() + test.n_rows()) as u64);
            if test.n_rows() == 0 {
                return Err(KilnError::data(
                    "test set",
                    "the test set is empty; raise test_fraction or check test_condition",
                ));
            }
            let metric = self.init.metric.as_str();
            let mut results = Vec::new();
            let mut totals = Vec::new();
            for spec in &self.init.estimators {
                let candidates = spec.candidates(self.init.seed)?;
                ctx.progress.stage(format!(
                    "{}: tuning {} candidate(s) on {} rows",
                    spec.classname,
                    candidates.len(),
                    train.n_rows()
                ));
                let started = std::time::Instant::now();
                let train_c = train.clone();
                let metric_s = metric.to_string();
                let cv = self.init.cross_validation.clone();
                let tv = self.init.train_validation_split.clone();
                let seed = self.init.seed;
                let tuned = tokio::task::spawn_blocking(move || -> Result<_> {
                    let tuning = match (cv, tv) {
                        (_, _) if candidates.len() == 1 => None,
                        (Some(cv), _) => {
                            Some(cross_validate(&candidates, &train_c, &cv, &metric_s, seed)?)
                        }
                        (None, Some(tv)) => Some(train_validation_split(
                            &candidates,
                            &train_c,
                            tv.train_ratio,
                            &metric_s,
                            seed,
                            tv.parallelism,
                        )?),
                        (None, None) => Some(cross_validate(
                            &candidates,
                            &train_c,
                            &CrossValidation {
                                num_folds: 3,
                                parallelism: 1,
                            },
                            &metric_s,
                            seed,
                        )?),
                    };
                    let best = tuning
                        .as_ref()
                        .map(|t| t.best.clone())
                        .unwrap_or_else(|| candidates[0].clone());
                    // Fit time of the final model alone (no tuning, copy or scoring).
                    let fit_started = std::time::Instant::now();
                    let model = best.fit(&train_c)?;
                    Ok((best, tuning, model, fit_started.elapsed().as_secs_f64()))
                })
                .await
                .map_err(|e| KilnError::config(format!("training thread failed: {e}")))??;
                let (best, tuning, model, fit_secs) = tuned;
                let predict_started = std::time::Instant::now();
                let predicted = model.predict_dataset(&test);
                let predict_secs = predict_started.elapsed().as_secs_f64();
                let metrics = Metrics::compute(&test.labels, &predicted);
                let cv_score = tuning.as_ref().map(|t| t.best_score).unwrap_or(f64::NAN);
                totals.push(started.elapsed().as_secs_f64());
                results.push((
                    best,
                    tuning,
                    model,
                    metrics,
                    cv_score,
                    fit_secs,
                    predict_secs,
                ));
            }
            let better = |a: f64, b: f64| {
                if larger_is_better(metric) {
                    a > b
                } else {
                    a < b
                }
            };
            let mut winner = 0;
            for (i, r) in results.iter().enumerate() {
                let (a, b) = (
                    r.3.get(metric).unwrap_or(f64::NAN),
                    results[winner].3.get(metric).unwrap_or(f64::NAN),
                );
                if better(a, b) {
                    winner = i;
                }
            }
            let (best, _, model, metrics, _, _, _) = &results[winner];
            let artifact = ModelArtifact {
                format_version: MODEL_FORMAT_VERSION,
                kiln_version: env!("CARGO_PKG_VERSION").into(),
                classname: best.classname().into(),
                params: best.to_json(),
                label_col: label.clone(),
                feature_names: train.feature_names.clone(),
                feature_types: vec!["double".into(); train.n_features()],
                feature_pipeline: pipeline_ref,
                training_fingerprint: fingerprint(&train),
                metrics: ModelArtifact::metric_map(metrics),
                model: model.clone(),
            };
            let rows: Vec<(String, f64, &Metrics)> = results
                .iter()
                .map(|r| (r.0.classname().to_string(), r.4, &r.3))
                .collect();
            let table = comparison_table(&rows, metric);
            let report = serde_json::json!({
                "metric": metric,
                "winner": best.classname(),
                "train_rows": train.n_rows(),
                "test_rows": test.n_rows(),
                "models": results.iter().zip(&totals).map(|(r, total)| serde_json::json!({
                    "classname": r.0.classname(),
                    "params": r.0.to_json(),
                    "cv_metric": r.4,
                    "fit_seconds": r.5,
                    "tuning_and_fit_seconds": total,
                    "predict_rows_per_second": test.n_rows() as f64 / r.6.max(1e-9),
                    "grid": r.1.as_ref().map(|t| t.scores.iter().map(|(p, s)| serde_json::json!({"params": p, "metric": s})).collect::<Vec<_>>()),
                    "test_metrics": serde_json::to_value(&r.3).unwrap_or_default(),
                    "feature_importances": train.feature_names.iter().zip(r.2.feature_importances()).map(|(n, v)| (n.clone(), *v)).collect::<std::collections::BTreeMap<_, _>>(),
                })).collect::<Vec<_>>(),
            });
            let mut files: Vec<(String, Vec<u8>)> = vec![
                ("model.json".into(), artifact.to_json()?),
                (
                    "report.json".into(),
                    serde_json::to_vec_pretty(&report).unwrap_or_default(),
                ),
                ("comparison.txt".into(), table.clone().into_bytes()),
            ];
            for r in &results {
                files.push((
                    format!("roc_{}.svg", r.0.classname()),
                    roc_svg(r.0.classname(), &r.3).into_bytes(),
                ));
            }
            let base = ctx.lake.resolve(&format!(
                "{}/",
                self.output.path_model_repository.trim_end_matches('/')
            ))?;
            let repo = ArtifactRepo::open(&ctx.session, &base)?;
            let refs: Vec<(&str, Vec<u8>)> =
                files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
            let version = repo.publish(&refs).await?;
            let mut summary = vec![format!(
                "train {} rows, test {} rows, {} features",
                train.n_rows(),
                test.n_rows(),
                train.n_features()
            )];
            summary.extend(table.lines().map(str::to_string));
            summary.push(format!(
                "winner by {metric}: {} -> {}",
                best.classname(),
                repo.url(version, "model.json")
            ));
            summary.push(format!("reports and ROC plots: {}", repo.url(version, "")));
            Ok(TaskOutcome {
                rows_in: Some(train.n_rows() as u64),
                rows_out: None,
                outputs: vec![repo.url(version, "model.json")],
                metrics: serde_json::to_value(ModelArtifact::metric_map(metrics))
                    .unwrap_or_default(),
                summary,
            })
        })
    }
}
