//! `BatchPrediction`: loads the latest (or a pinned) model and the fitted
//! feature pipeline it was trained with, applies both lazily (the model runs
//! as the `kiln_predict` UDF, on executors under Ballista), and writes
//! Parquet predictions.

use super::load_pipeline_model;
use crate::config::{LoadedConfig, TaskConfig};
use crate::task::{Task, TaskContext, TaskFuture, TaskOutcome};
use datafusion::functions::core::expr_fn::get_field;
use datafusion::prelude::{Expr, ident, lit};
use kiln_engine::artifacts::ArtifactRepo;
use kiln_engine::io::{FileFormat, ParquetWriteOptions, write_parquet};
use kiln_engine::{KilnError, Result};
use kiln_models::model::ModelArtifact;
use serde::Deserialize;

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
    /// Pin a model version (default: the latest).
    #[serde(default)]
    model_version: Option<u64>,
    /// Apply the model's feature pipeline to the input first (default true).
    #[serde(default = "yes")]
    apply_feature_pipeline: bool,
    #[serde(default = "features")]
    features_col: String,
    /// Columns to keep next to the predictions (default: every non-vector column).
    #[serde(default)]
    keep_cols: Option<Vec<String>>,
}

fn yes() -> bool {
    true
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
        let (init, output) = loaded.task_params(task)?;
        Ok(BatchPrediction { init, output })
    }
}

/// Loads a model artifact (latest or pinned) and its JSON text.
pub async fn load_model(
    ctx: &TaskContext,
    repository: &str,
    version: Option<u64>,
) -> Result<(ModelArtifact, String, u64)> {
    let repo = ArtifactRepo::open(
        &ctx.session,
        &ctx.lake
            .resolve(&format!("{}/", repository.trim_end_matches('/')))?,
    )?;
    let v = match version {
        Some(v) => v,
        None => repo.latest().await?,
    };
    let bytes = repo.read(v, "model.json").await?;
    let artifact = ModelArtifact::from_json(&bytes, &repo.url(v, "model.json"))?;
    Ok((artifact, String::from_utf8_lossy(&bytes).into_owned(), v))
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
            let (artifact, json, version) = load_model(
                ctx,
                &self.init.path_model_repository,
                self.init.model_version,
            )
            .await?;
            let mut df = ctx.input(&self.init.input, self.init.format).await?;
            if self.init.apply_feature_pipeline
                && let Some(p) = &artifact.feature_pipeline
            {
                let (pipeline, _) = load_pipeline_model(ctx, &p.path, Some(p.version)).await?;
                df = pipeline
                    .transform(df)
                    .await
                    .map_err(|e| e.context("applying the model's feature pipeline"))?;
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
            let out = df
                .select(exprs)
                .map_err(|e| KilnError::execution("prediction", e))?;
            let url = ctx.lake.resolve(&self.output.path_predictions)?;
            let summary = write_parquet(&ctx.session, out, &url, &self.output.parquet).await?;
            Ok(TaskOutcome {
                rows_out: Some(summary.rows),
                outputs: vec![url.to_string()],
                summary: vec![format!(
                    "model {} v{version}: {} predictions -> {url}",
                    artifact.classname, summary.rows
                )],
                ..Default::default()
            })
        })
    }
}
