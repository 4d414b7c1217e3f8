//! `FeaturePipeline`: fits the feature stages and saves the pipeline model
//! (`mode: fit_transform`), or applies a saved one (`mode: transform`).

use super::passes::{check_pass_plan, check_passes, check_window_key};
use crate::config::{LoadedConfig, TaskConfig};
use crate::task::{Task, TaskContext, TaskFuture, TaskOutcome};
use datafusion::dataframe::DataFrame;
use datafusion::prelude::Expr;
use kiln_engine::artifacts::ArtifactRepo;
use kiln_engine::io::{
    FileFormat, ParquetWriteOptions, WriteSummary, in_pass, key_range_filters, read_table,
    remove_table, write_parquet_passes,
};
use kiln_engine::{KilnError, Result};
use kiln_transformers::{PipelineFitter, PipelineModel, StageSpec};
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
    /// Run the window stages in this many passes over ranges of `pass_key`
    /// (an integer column every window stage partitions by), so their sorts
    /// hold about 1/N of the rows. With `fit_transform`, the rows after the
    /// last window stage are written to a scratch table in the run's
    /// directory, the later stages fit on it, and it is removed at the end.
    /// Default 1.
    #[serde(default = "one_pass")]
    passes: usize,
    #[serde(default)]
    pass_key: Option<String>,
}

fn one_pass() -> usize {
    1
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
        let at = loaded.at(task, "passes");
        check_passes(init.passes, init.pass_key.as_deref(), &at)?;
        if let (Some(key), 2..) = (&init.pass_key, init.passes) {
            check_window_key(
                key,
                init.stages
                    .iter()
                    .filter_map(StageSpec::window_partition_col),
                &at,
            )?;
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
            let input = ctx.input(&self.init.input, self.init.format).await?;
            let filters = match &self.init.pass_key {
                Some(key) => key_range_filters(&input, key, self.init.passes).await?,
                None => vec![None],
            };
            let url = ctx.lake.resolve(&self.output.path_df_features)?;
            let (summary, note) = match self.output.mode {
                Mode::FitTransform => {
                    ctx.progress
                        .stage(format!("fitting {} stage(s)", self.init.stages.len()));
                    let (mut model, summary) =
                        self.fit_and_write(ctx, input, &filters, &url).await?;
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
                        summary,
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
                    if let (Some(key), 2..) = (&self.init.pass_key, filters.len()) {
                        check_window_key(
                            key,
                            model.window_partition_cols().into_iter(),
                            "initialization_parameters.passes",
                        )?;
                    }
                    let summary = self
                        .write_in_passes(ctx, &model, &input, &filters, &url, &self.output.parquet)
                        .await?;
                    (summary, format!("applied pipeline model v{v}"))
                }
            };
            let passes = match filters.len() {
                1 => String::new(),
                n => format!(" in {n} passes"),
            };
            Ok(TaskOutcome {
                rows_out: Some(summary.rows),
                outputs: vec![url.to_string()],
                summary: vec![note, format!("{} rows -> {url}{passes}", summary.rows)],
                ..Default::default()
            })
        })
    }
}

impl FeaturePipeline {
    /// Fits the stages and writes the features. In passes, stages that read
    /// data after the last window stage fit on the scratch table of the
    /// windowed rows (written pass by pass), not on a plan that would run
    /// every window again for each of their queries; without such stages,
    /// the output itself is written pass by pass.
    async fn fit_and_write(
        &self,
        ctx: &TaskContext,
        input: DataFrame,
        filters: &[Option<Expr>],
        url: &url::Url,
    ) -> Result<(PipelineModel, WriteSummary)> {
        let stages = &self.init.stages;
        let after_windows = stages
            .iter()
            .rposition(|s| s.window_partition_col().is_some())
            .map_or(0, |i| i + 1);
        let scratch = (filters.len() > 1
            && after_windows > 0
            && stages[after_windows..].iter().any(StageSpec::reads_data))
        .then(|| {
            ctx.lake.resolve(&format!(
                "_kiln/runs/{}/{}.scratch/",
                ctx.run.run_id, ctx.task_name
            ))
        })
        .transpose()?;
        let result = self
            .fit_and_write_via(ctx, input, filters, url, after_windows, scratch.as_ref())
            .await;
        if let Some(scratch) = &scratch {
            remove_table(&ctx.session, scratch).await;
        }
        result
    }

    /// [`Self::fit_and_write`] with the scratch table at `scratch`, if any,
    /// written before stage `after_windows`.
    async fn fit_and_write_via(
        &self,
        ctx: &TaskContext,
        input: DataFrame,
        filters: &[Option<Expr>],
        url: &url::Url,
        after_windows: usize,
        scratch: Option<&url::Url>,
    ) -> Result<(PipelineModel, WriteSummary)> {
        let mut fitter = PipelineFitter::new(input.clone());
        for (i, spec) in self.init.stages.iter().enumerate() {
            if let (Some(scratch), true) = (scratch, i == after_windows) {
                ctx.progress
                    .stage(format!("windows in {} passes -> {scratch}", filters.len()));
                let head = fitter.model().clone();
                let options = ParquetWriteOptions::default();
                self.write_in_passes(ctx, &head, &input, filters, scratch, &options)
                    .await?;
                fitter
                    .continue_from(read_table(&ctx.session, scratch, FileFormat::Parquet).await?)?;
            }
            fitter.fit(spec).await?;
        }
        let (model, out) = fitter.finish();
        let written = match scratch {
            Some(_) => {
                write_parquet_passes(&ctx.session, vec![out], url, &self.output.parquet).await?
            }
            None => {
                self.write_in_passes(ctx, &model, &input, filters, url, &self.output.parquet)
                    .await?
            }
        };
        Ok((model, written))
    }

    /// Writes `model` applied to `input` in the passes of `filters`.
    async fn write_in_passes(
        &self,
        ctx: &TaskContext,
        model: &PipelineModel,
        input: &DataFrame,
        filters: &[Option<Expr>],
        url: &url::Url,
        options: &ParquetWriteOptions,
    ) -> Result<WriteSummary> {
        let mut passes = Vec::with_capacity(filters.len());
        for filter in filters {
            passes.push(model.transform(in_pass(input, filter)?).await?);
        }
        if let (Some(key), Some(first), 2..) = (&self.init.pass_key, passes.first(), passes.len()) {
            check_pass_plan(first, key)?;
        }
        write_parquet_passes(&ctx.session, passes, url, options).await
    }
}
