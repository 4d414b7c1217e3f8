//! `BatchPrediction`: loads the deployed model (or a version or alias) and
//! the fitted feature pipeline it was trained with, applies both lazily
//! (the model runs as the `kiln_predict` UDF, on executors under Ballista),
//! and writes Parquet predictions; with `monitor_drift:` it also measures
//! the batch's drift from the training data on the way (see [`super::monitor`]).

use super::load_pipeline_model;
use super::monitor::{DriftReport, ModelUsed, MonitorDrift, Tap, load_profile};
use super::passes::{check_pass_plan, check_passes, check_window_key};
use crate::config::{LoadedConfig, TaskConfig};
use crate::task::{Task, TaskContext, TaskFuture, TaskOutcome};
use datafusion::functions::core::expr_fn::get_field;
use datafusion::prelude::{Expr, ident, lit};
use kiln_engine::artifacts::ArtifactRepo;
use kiln_engine::artifacts::VersionRef;
use kiln_engine::io::{
    FileFormat, ParquetWriteOptions, in_pass, key_range_filters, write_parquet_passes,
};
use kiln_engine::io::{batch_streams, write_stream_passes};
use kiln_engine::{KilnError, Result};
use kiln_models::drift::PROFILE_FILE;
use kiln_models::model::ModelArtifact;
use kiln_models::registry::MODEL_FILE;
use serde::Deserialize;
use std::sync::Arc;

/// The feature vectors, carried to the drift counters and dropped before the write.
const MONITORED_FEATURES: &str = "__kiln_monitored_features";

fn features() -> String {
    "features".into()
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "BatchPredictionInit")]
pub struct Init {
    input: String,
    #[serde(default)]
    format: FileFormat,
    path_model_repository: String,
    /// A version number (`3`) or an alias (`champion`, `challenger`, …);
    /// default: the deployed version (`champion`).
    #[serde(default)]
    model_version: Option<VersionRef>,
    /// Apply the model's feature pipeline to the input first (default true).
    #[serde(default = "yes")]
    apply_feature_pipeline: bool,
    #[serde(default = "features")]
    features_col: String,
    /// Columns to keep next to the predictions (default: every non-vector column).
    #[serde(default)]
    keep_cols: Option<Vec<String>>,
    /// Measure the batch's drift from the model's training data (thresholds
    /// `psi`, `ks`, `js`, `missing`), write `drift/report.json` beside the
    /// predictions, and optionally retrain (`on_drift`).
    #[serde(default)]
    monitor_drift: Option<MonitorDrift>,
    /// Predict in this many passes over ranges of `pass_key` (an integer
    /// column that every window stage of the feature pipeline partitions
    /// by), each written before the next starts: the window sorts then hold
    /// about 1/N of the batch in memory without a DataFusion memory limit.
    /// With `monitor_drift`, every pass is counted into the one report.
    /// Default 1.
    #[serde(default = "one_pass")]
    passes: usize,
    #[serde(default)]
    pass_key: Option<String>,
}

fn yes() -> bool {
    true
}

fn one_pass() -> usize {
    1
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "BatchPredictionOutput")]
pub struct Output {
    path_predictions: String,
    #[serde(default)]
    parquet: ParquetWriteOptions,
}

#[derive(Debug)]
pub struct BatchPrediction {
    init: Init,
    output: Output,
}

impl BatchPrediction {
    pub fn bind(loaded: &LoadedConfig, task: &TaskConfig) -> Result<Self> {
        let (mut init, output): (Init, Output) = loaded.task_params(task)?;
        if let Some(VersionRef::Alias(text)) = &init.model_version {
            // `v3` is a version; anything else must be a valid alias.
            init.model_version = Some(
                text.parse()
                    .map_err(|e: KilnError| e.context(loaded.at(task, "model_version")))?,
            );
        }
        if let Some(m) = &init.monitor_drift {
            m.validate(&loaded.at(task, "monitor_drift"))?;
        }
        let at = loaded.at(task, "passes");
        check_passes(init.passes, init.pass_key.as_deref(), &at)?;
        Ok(BatchPrediction { init, output })
    }
}

/// A loaded model artifact with its JSON text, version and repository.
pub struct LoadedModel {
    pub artifact: ModelArtifact,
    pub json: String,
    pub version: u64,
    pub repo: ArtifactRepo,
}

/// Loads a model artifact: the deployed one, or a version or alias.
pub async fn load_model(
    ctx: &TaskContext,
    repository: &str,
    version: Option<&VersionRef>,
) -> Result<LoadedModel> {
    let repo = ArtifactRepo::open(
        &ctx.session,
        &ctx.lake
            .resolve(&format!("{}/", repository.trim_end_matches('/')))?,
    )?;
    let version = repo
        .resolve(version.unwrap_or(&VersionRef::deployed()))
        .await?;
    let bytes = repo.read(version, MODEL_FILE).await?;
    let artifact = ModelArtifact::from_json(&bytes, &repo.url(version, MODEL_FILE))?;
    Ok(LoadedModel {
        artifact,
        json: String::from_utf8_lossy(&bytes).into_owned(),
        version,
        repo,
    })
}

impl Task for BatchPrediction {
    fn inputs(&self) -> Vec<String> {
        vec![
            self.init.input.clone(),
            self.init.path_model_repository.clone(),
        ]
    }

    fn outputs(&self) -> Vec<String> {
        vec![self.output.path_predictions.clone()]
    }

    fn run<'a>(&'a self, ctx: &'a TaskContext) -> TaskFuture<'a> {
        Box::pin(async move {
            ctx.progress.stage("loading the model");
            let LoadedModel {
                artifact,
                json,
                version,
                repo,
            } = load_model(
                ctx,
                &self.init.path_model_repository,
                self.init.model_version.as_ref(),
            )
            .await?;
            // Before any work: a model without a profile cannot be monitored.
            let profile = match &self.init.monitor_drift {
                Some(_) => Some(load_profile(&repo, version).await?),
                None => None,
            };
            let input = ctx.input(&self.init.input, self.init.format).await?;
            let pipeline = match &artifact.feature_pipeline {
                Some(p) if self.init.apply_feature_pipeline => {
                    Some(load_pipeline_model(ctx, &p.path, Some(p.version)).await?.0)
                }
                _ => None,
            };
            let filters = match (&self.init.pass_key, self.init.passes) {
                (Some(key), n) if n > 1 => {
                    check_window_key(
                        key,
                        pipeline.iter().flat_map(|p| p.window_partition_cols()),
                        "initialization_parameters.passes",
                    )?;
                    key_range_filters(&input, key, n).await?
                }
                _ => vec![None],
            };
            let mut passes = Vec::new();
            for filter in &filters {
                let mut df = in_pass(&input, filter)?;
                if let Some(pipeline) = &pipeline {
                    df = pipeline
                        .transform(df)
                        .await
                        .map_err(|e| e.context("applying the model's feature pipeline"))?;
                }
                passes.push(df);
            }
            let Some(df) = passes.first().cloned() else {
                return Err(KilnError::internal("prediction", "no passes"));
            };
            if let (Some(key), 2..) = (&self.init.pass_key, passes.len()) {
                check_pass_plan(&df, key)?;
            }
            if df
                .schema()
                .field_with_unqualified_name(&self.init.features_col)
                .is_err()
            {
                return Err(KilnError::Data {
                    location: format!("task '{}'", ctx.task_name),
                    message: format!("no feature vector column '{}' in the input", self.init.features_col),
                    fix: Some("apply the feature pipeline (apply_feature_pipeline: true) or set features_col".into()),
                });
            }
            let keep: Vec<String> = match &self.init.keep_cols {
                Some(k) => k.clone(),
                None => df
                    .schema()
                    .fields()
                    .iter()
                    .filter(|f| {
                        !matches!(
                            f.data_type(),
                            datafusion::arrow::datatypes::DataType::List(_)
                        )
                    })
                    .map(|f| f.name().clone())
                    .collect(),
            };
            let pred = kiln_models::predict_udf::predict_udf()
                .call(vec![lit(json), ident(&self.init.features_col)]);
            let mut exprs: Vec<Expr> = keep.iter().map(ident).collect();
            exprs.push(get_field(pred.clone(), "probability").alias("probability"));
            exprs.push(get_field(pred, "label").alias("prediction"));
            if profile.is_some() {
                exprs.push(ident(&self.init.features_col).alias(MONITORED_FEATURES));
            }
            let outs = passes
                .into_iter()
                .map(|df| df.select(exprs.clone()))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| KilnError::execution("prediction", e))?;
            let url = ctx.lake.resolve(&self.output.path_predictions)?;
            let (Some(monitor), Some(profile)) = (&self.init.monitor_drift, profile) else {
                let summary =
                    write_parquet_passes(&ctx.session, outs, &url, &self.output.parquet).await?;
                return Ok(TaskOutcome {
                    rows_out: Some(summary.rows),
                    outputs: vec![url.to_string()],
                    summary: vec![format!(
                        "model {} v{version}: {} predictions -> {url}",
                        artifact.classname, summary.rows
                    )],
                    ..Default::default()
                });
            };
            monitor.thresholds().check_names(
                &profile,
                &format!("task '{}': monitor_drift", ctx.task_name),
            )?;
            if profile.features.len() != artifact.feature_names.len() {
                return Err(KilnError::data(
                    repo.url(version, PROFILE_FILE),
                    format!(
                        "the profile has {} features, the model {}",
                        profile.features.len(),
                        artifact.feature_names.len()
                    ),
                ));
            }
            let Some(first) = outs.first() else {
                return Err(KilnError::internal("prediction", "no passes"));
            };
            let schema = first.schema().as_arrow().clone();
            let features = schema
                .index_of(MONITORED_FEATURES)
                .map_err(|e| KilnError::internal("finding the monitored feature column", e))?;
            let score = schema
                .index_of("probability")
                .map_err(|e| KilnError::internal("finding the scores", e))?;
            let written = datafusion::arrow::datatypes::Schema::new_with_metadata(
                schema
                    .fields()
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != features)
                    .map(|(_, f)| f.clone())
                    .collect::<Vec<_>>(),
                schema.metadata().clone(),
            );
            // Every pass streams through the same counters.
            let tap = Tap::new(profile, features, score);
            let n = outs.len();
            let mut outs = outs.into_iter();
            let summary = write_stream_passes(
                &ctx.session,
                Arc::new(written),
                n,
                &url,
                FileFormat::Parquet,
                &self.output.parquet,
                |_| {
                    let (next, tap, url) = (outs.next(), &tap, &url);
                    async move {
                        match next {
                            Some(df) => tap.wrap(batch_streams(df, url).await?),
                            None => Ok(Vec::new()),
                        }
                    }
                },
            )
            .await?;
            ctx.progress
                .stage("drift: comparing the batch with the training data");
            let thresholds = monitor.thresholds();
            let result = tap.result(&thresholds)?;
            let mut report = DriftReport::new(
                ctx,
                ModelUsed {
                    repository: repo.base().to_string(),
                    version,
                    classname: artifact.classname.clone(),
                },
                url.to_string(),
                result.clone(),
                thresholds,
            )?;
            let report_dir = monitor.report_dir(ctx, &self.output.path_predictions)?;
            let mut lines = vec![format!(
                "model {} v{version}: {} predictions -> {url}",
                artifact.classname, summary.rows
            )];
            lines.push(if result.drifted.is_empty() {
                format!("drift: none of {} features drifted", result.features.len())
            } else {
                format!(
                    "drift: {} drifted: {}",
                    result.drifted.len(),
                    result.drifted.join(", ")
                )
            });
            if !result.drifted.is_empty()
                && let Some(on) = monitor.on_drift()
            {
                // The report without the retraining first: it is what the
                // training run would read if it looked.
                report.write(ctx, &report_dir, &result).await?;
                let retraining = on.retrain(ctx).await?;
                lines.push(format!(
                    "drift: training run {} {}{}",
                    retraining.run_id,
                    retraining.state,
                    match retraining.promoted {
                        Some(true) => ", new model deployed",
                        Some(false) => ", new model not better: kept as challenger",
                        None => "",
                    }
                ));
                report.retraining = Some(retraining);
            }
            report.write(ctx, &report_dir, &result).await?;
            lines.push(format!("drift report: {report_dir}report.json"));
            let drifted = !result.drifted.is_empty();
            if drifted && monitor.fail_on_drift() {
                return Err(KilnError::data(
                    format!("{report_dir}report.json"),
                    format!(
                        "drift over the thresholds in {} (fail_on_drift is set)",
                        result.drifted.join(", ")
                    ),
                ));
            }
            Ok(TaskOutcome {
                rows_out: Some(summary.rows),
                outputs: vec![url.to_string(), format!("{report_dir}report.json")],
                summary: lines,
                metrics: serde_json::json!({
                    "drifted_features": result.drifted.len(),
                    "rows": result.rows,
                }),
                ..Default::default()
            })
        })
    }
}
