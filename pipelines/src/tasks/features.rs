//! `FeaturePipeline`: fits the feature stages and saves the pipeline model
//! (`mode: fit_transform`), or applies a saved one (`mode: transform`).

use crate::config::{LoadedConfig, TaskConfig};
use crate::task::{Task, TaskContext, TaskFuture, TaskOutcome};
use kiln_engine::artifacts::ArtifactRepo;
use kiln_engine::io::{FileFormat, ParquetWriteOptions, write_parquet};
use kiln_engine::{KilnError, Result};
use kiln_transformers::{PipelineModel, StageSpec};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "FeaturePipelineInit")]
pub struct Init {
    input: String,
    #[serde(default)]
    format: FileFormat,
    #[serde(default)]
    stages: Vec<StageSpec>,
    /// Columns present at fit time but not needed at inference (labels).
    #[serde(default)]
    label_cols: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "FeaturePipelineMode")]
pub enum Mode {
    FitTransform,
    Transform,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "FeaturePipelineOutput")]
pub struct Output {
    mode: Mode,
    path_pipeline_model: String,
    /// Pin a model version for `transform` (default: the latest).
    #[serde(default)]
    pipeline_version: Option<u64>,
    path_df_features: String,
    #[serde(default)]
    parquet: ParquetWriteOptions,
}

pub const MODEL_FILE: &str = "pipeline_model.json";

#[derive(Debug)]
pub struct FeaturePipeline {
    init: Init,
    output: Output,
}

impl FeaturePipeline {
    pub fn bind(loaded: &LoadedConfig, task: &TaskConfig) -> Result<Self> {
        let (init, output): (Init, Output) = loaded.task_params(task)?;
        if output.mode == Mode::FitTransform && init.stages.is_empty() {
            return Err(KilnError::config(format!(
                "{}: fit_transform needs stages",
                loaded.at(task, "stages")
            )));
        }
        Ok(FeaturePipeline { init, output })
    }
}

/// Loads a saved pipeline model (latest or pinned).
pub async fn load_pipeline_model(
    ctx: &TaskContext,
    path: &str,
    version: Option<u64>,
) -> Result<(PipelineModel, u64)> {
    let repo = ArtifactRepo::open(
        &ctx.session,
        &ctx.lake
            .resolve(&format!("{}/", path.trim_end_matches('/')))?,
    )?;
    let v = match version {
        Some(v) => v,
        None => repo.latest().await?,
    };
    let bytes = repo.read(v, MODEL_FILE).await?;
    Ok((
        PipelineModel::from_json(&bytes, &repo.url(v, MODEL_FILE))?,
        v,
    ))
}

impl Task for FeaturePipeline {
    fn inputs(&self) -> Vec<String> {
        let mut inputs = vec![self.init.input.clone()];
        if self.output.mode != Mode::FitTransform {
            inputs.push(self.output.path_pipeline_model.clone());
        }
        inputs
    }

    fn outputs(&self) -> Vec<String> {
        let mut outputs = vec![self.output.path_df_features.clone()];
        if self.output.mode == Mode::FitTransform {
            outputs.push(self.output.path_pipeline_model.clone());
        }
        outputs
    }

    fn run<'a>(&'a self, ctx: &'a TaskContext) -> TaskFuture<'a> {
        Box::pin(async move {
            let df = ctx.input(&self.init.input, self.init.format).await?;
            let (df, note) = match self.output.mode {
                Mode::FitTransform => {
                    ctx.progress
                        .stage(format!("fitting {} stage(s)", self.init.stages.len()));
                    let (mut model, df) = PipelineModel::fit(&self.init.stages, df).await?;
                    model
                        .input_schema
                        .columns
                        .retain(|c| !self.init.label_cols.contains(&c.name));
                    let base = ctx.lake.resolve(&format!(
                        "{}/",
                        self.output.path_pipeline_model.trim_end_matches('/')
                    ))?;
                    let repo = ArtifactRepo::open(&ctx.session, &base)?;
                    let v = repo.publish(&[(MODEL_FILE, model.to_json()?)]).await?;
                    (
                        df,
                        format!(
                            "fitted {} stages -> {}",
                            model.stages.len(),
                            repo.url(v, MODEL_FILE)
                        ),
                    )
                }
                Mode::Transform => {
                    let (model, v) = load_pipeline_model(
                        ctx,
                        &self.output.path_pipeline_model,
                        self.output.pipeline_version,
                    )
                    .await?;
                    (
                        model.transform(df).await?,
                        format!("applied pipeline model v{v}"),
                    )
                }
            };
            let url = ctx.lake.resolve(&self.output.path_df_features)?;
            let summary = write_parquet(&ctx.session, df, &url, &self.output.parquet).await?;
            Ok(TaskOutcome {
                rows_out: Some(summary.rows),
                outputs: vec![url.to_string()],
                summary: vec![note, format!("{} rows -> {url}", summary.rows)],
                ..Default::default()
            })
        })
    }
}
