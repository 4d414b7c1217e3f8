//! The synthesis task classes: `ReproductionTraining` (fit a generative
//! model and publish it), `ReproductionSampling` (sample it, optionally
//! under a condition), `SyntheticEvaluation` (judge synthetic data against
//! the real table) and `Fusion` (combine datasets). The work is
//! `kiln_synth`'s; these bind parameters and paths in the lake.

use crate::config::{LoadedConfig, TaskConfig};
use crate::task::{Task, TaskContext, TaskFuture, TaskOutcome};
use kiln_engine::io::{FileFormat, ParquetWriteOptions, write_files, write_table};
use kiln_engine::{KilnError, Result};
use kiln_synth::copula::sample::Sampler;
use kiln_synth::copula::{
    Conditions, CopulaParams, DistributionKind, Reproduction, load_model, publish_model,
    write_sample,
};
use kiln_synth::evaluate::{EvaluationParams, SdType, report_files};
use kiln_synth::fusion::{FusionSpec, Input};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The generative model to fit.
#[derive(Debug, Clone, Copy, Default, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReproductionModel {
    /// Empirical marginals joined by the correlation of normal scores.
    #[default]
    GaussianCopula,
    /// A Chow-Liu tree: a Bayesian network over binned columns.
    ChowLiu,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ReproductionTrainingInit")]
pub struct TrainingInit {
    /// The table to imitate (lake path).
    path_input: String,
    #[serde(default)]
    format: FileFormat,
    #[serde(default)]
    model: ReproductionModel,
    #[serde(default)]
    seed: u64,
    /// Column types where the inferred ones are wrong: numerical, datetime,
    /// categorical, boolean or id (keys, sampled as unique numbers).
    #[serde(default)]
    types: BTreeMap<String, SdType>,
    /// Columns not modelled.
    #[serde(default)]
    ignore: Vec<String>,
    /// Rows in the uniform sample the quantiles come from (default 100000).
    #[serde(default)]
    sample_rows: Option<usize>,
    /// Quantiles kept per continuous column (default 1001).
    #[serde(default)]
    quantiles: Option<usize>,
    /// Numeric columns with at most this many values keep them exactly
    /// (default 32).
    #[serde(default)]
    discrete_values: Option<usize>,
    /// More distinct text values than this is an error (default 10000).
    #[serde(default)]
    max_categories: Option<usize>,
    /// How continuous columns are modelled: empirical (default), norm,
    /// truncnorm, uniform, lognorm, or auto (the fit closest to the data
    /// by the KS statistic; SDV's parameter of the same name).
    #[serde(default)]
    default_distribution: DistributionKind,
    /// The same per column.
    #[serde(default)]
    numerical_distributions: BTreeMap<String, DistributionKind>,
}

impl TrainingInit {
    fn params(&self) -> CopulaParams {
        let d = CopulaParams::default();
        CopulaParams {
            seed: self.seed,
            sample_rows: self.sample_rows.unwrap_or(d.sample_rows),
            quantiles: self.quantiles.unwrap_or(d.quantiles),
            discrete_values: self.discrete_values.unwrap_or(d.discrete_values),
            max_categories: self.max_categories.unwrap_or(d.max_categories),
            types: self.types.clone(),
            ignore: self.ignore.clone(),
            default_distribution: self.default_distribution,
            numerical_distributions: self.numerical_distributions.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ReproductionTrainingOutput")]
pub struct TrainingOutput {
    /// Model repository (a new version `vN/` per run).
    path_model_repository: String,
}

#[derive(Debug)]
pub struct ReproductionTraining {
    init: TrainingInit,
    output: TrainingOutput,
}

impl ReproductionTraining {
    pub fn bind(loaded: &LoadedConfig, task: &TaskConfig) -> Result<Self> {
        let (init, output): (TrainingInit, TrainingOutput) = loaded.task_params(task)?;
        init.params()
            .check()
            .map_err(|e| e.context(loaded.at(task, "initialization_parameters")))?;
        Ok(ReproductionTraining { init, output })
    }
}

impl Task for ReproductionTraining {
    fn inputs(&self) -> Vec<String> {
        vec![self.init.path_input.clone()]
    }

    fn outputs(&self) -> Vec<String> {
        vec![self.output.path_model_repository.clone()]
    }

    fn run<'a>(&'a self, ctx: &'a TaskContext) -> TaskFuture<'a> {
        Box::pin(async move {
            let source = ctx.lake.resolve(&self.init.path_input)?;
            let df = ctx.input(&self.init.path_input, self.init.format).await?;
            let started = std::time::Instant::now();
            let progress = ctx.progress.clone();
            let report = |p: kiln_synth::copula::FitProgress| {
                progress.stage(format!("pass {}/2", p.pass));
                progress.set_rows(p.rows);
            };
            let params = self.init.params();
            let model = match self.init.model {
                ReproductionModel::GaussianCopula => Reproduction::GaussianCopula(
                    kiln_synth::copula::fit(df, source.as_str(), &params, &report).await?,
                ),
                ReproductionModel::ChowLiu => Reproduction::ChowLiu(
                    kiln_synth::copula::fit_tree(df, source.as_str(), &params, &report).await?,
                ),
            };
            let base = ctx.lake.resolve(&dir(&self.output.path_model_repository))?;
            let version = publish_model(&ctx.session, &base, &model).await?;
            Ok(TaskOutcome {
                rows_in: Some(model.source().rows),
                outputs: vec![format!("{base}v{version}/")],
                summary: vec![format!(
                    "{} fitted to {} rows ({} columns, {} modelled jointly) in {:.1}s -> {base}v{version}/",
                    model.kind(),
                    model.source().rows,
                    model.columns().len(),
                    model.dimensions().len(),
                    started.elapsed().as_secs_f64()
                )],
                ..Default::default()
            })
        })
    }
}

fn dir(path: &str) -> String {
    format!("{}/", path.trim_end_matches('/'))
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ReproductionSamplingInit")]
pub struct SamplingInit {
    /// Model repository (lake path).
    path_model_repository: String,
    /// A model version (default: the latest).
    #[serde(default)]
    version: Option<u64>,
    rows: usize,
    #[serde(default)]
    seed: u64,
    /// A SQL condition every sampled row meets.
    #[serde(default, rename = "where")]
    condition: Option<String>,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ReproductionSamplingOutput")]
pub struct SamplingOutput {
    path_output: String,
    #[serde(default)]
    format: FileFormat,
}

#[derive(Debug)]
pub struct ReproductionSampling {
    init: SamplingInit,
    output: SamplingOutput,
}

impl ReproductionSampling {
    pub fn bind(loaded: &LoadedConfig, task: &TaskConfig) -> Result<Self> {
        let (init, output): (SamplingInit, SamplingOutput) = loaded.task_params(task)?;
        Ok(ReproductionSampling { init, output })
    }
}

impl Task for ReproductionSampling {
    fn inputs(&self) -> Vec<String> {
        vec![self.init.path_model_repository.clone()]
    }

    fn outputs(&self) -> Vec<String> {
        vec![self.output.path_output.clone()]
    }

    fn run<'a>(&'a self, ctx: &'a TaskContext) -> TaskFuture<'a> {
        Box::pin(async move {
            let base = ctx.lake.resolve(&dir(&self.init.path_model_repository))?;
            let (model, version) = load_model(&ctx.session, &base, self.init.version).await?;
            let conditions = Conditions {
                sql: self.init.condition.clone(),
            };
            let sampler = Arc::new(Sampler::new(Arc::new(model), &conditions, self.init.seed)?);
            let target = ctx.lake.resolve(&dir(&self.output.path_output))?;
            let started = std::time::Instant::now();
            ctx.progress
                .stage(format!("sampling {} rows", self.init.rows));
            let progress = ctx.progress.clone();
            let summary = write_sample(
                &ctx.session,
                sampler,
                self.init.rows,
                &target,
                self.output.format,
                Arc::new(move |n| progress.add_rows(n)),
            )
            .await?;
            Ok(TaskOutcome {
                rows_out: Some(summary.rows),
                outputs: vec![target.to_string()],
                summary: vec![format!(
                    "{} rows from model version {version} -> {target} in {:.1}s",
                    summary.rows,
                    started.elapsed().as_secs_f64()
                )],
                ..Default::default()
            })
        })
    }
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "SyntheticEvaluationInit")]
pub struct EvaluationInit {
    path_real: String,
    path_synthetic: String,
    /// Real rows the synthesizer did not see (privacy against a holdout).
    #[serde(default)]
    path_holdout: Option<String>,
    #[serde(default)]
    format: FileFormat,
    /// Column types where the inferred ones are wrong.
    #[serde(default)]
    types: BTreeMap<String, SdType>,
    #[serde(default)]
    ignore: Vec<String>,
    #[serde(default = "default_privacy_rows")]
    privacy_rows: usize,
    #[serde(default)]
    seed: u64,
    /// A binary label column for usefulness (train on synthetic, test on
    /// real, with kiln's GBT).
    #[serde(default)]
    target: Option<String>,
    /// Most rows read from each table; a larger one is evaluated on a
    /// uniform sample of about this many (default 1000000).
    #[serde(default = "default_max_rows")]
    max_rows: usize,
}

fn default_privacy_rows() -> usize {
    EvaluationParams::default().privacy_rows
}

fn default_max_rows() -> usize {
    EvaluationParams::default().max_rows
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "SyntheticEvaluationOutput")]
pub struct EvaluationOutput {
    /// Directory of report.json, index.html and the plots.
    path_report: String,
}

#[derive(Debug)]
pub struct SyntheticEvaluation {
    init: EvaluationInit,
    output: EvaluationOutput,
}

impl SyntheticEvaluation {
    pub fn bind(loaded: &LoadedConfig, task: &TaskConfig) -> Result<Self> {
        let (init, output): (EvaluationInit, EvaluationOutput) = loaded.task_params(task)?;
        Ok(SyntheticEvaluation { init, output })
    }
}

impl Task for SyntheticEvaluation {
    fn inputs(&self) -> Vec<String> {
        let mut v = vec![
            self.init.path_real.clone(),
            self.init.path_synthetic.clone(),
        ];
        v.extend(self.init.path_holdout.iter().cloned());
        v
    }

    fn outputs(&self) -> Vec<String> {
        vec![self.output.path_report.clone()]
    }

    fn run<'a>(&'a self, ctx: &'a TaskContext) -> TaskFuture<'a> {
        Box::pin(async move {
            let real = ctx.input(&self.init.path_real, self.init.format).await?;
            let synthetic = ctx
                .input(&self.init.path_synthetic, self.init.format)
                .await?;
            let holdout = match &self.init.path_holdout {
                Some(p) => Some(ctx.input(p, self.init.format).await?),
                None => None,
            };
            let params = EvaluationParams {
                types: self.init.types.clone(),
                ignore: self.init.ignore.clone(),
                privacy_rows: self.init.privacy_rows,
                seed: self.init.seed,
                target: self.init.target.clone(),
                max_rows: self.init.max_rows,
            };
            ctx.progress.stage("evaluating");
            let (report, loaded) =
                kiln_synth::evaluate::evaluate(real, synthetic, holdout, &params).await?;
            let target = ctx.lake.resolve(&dir(&self.output.path_report))?;
            write_files(&ctx.session, &target, &report_files(&report, &loaded)?).await?;
            let metrics = serde_json::json!({
                "quality": report.quality.overall,
                "column_shapes": report.quality.column_shapes,
                "column_pair_trends": report.quality.column_pair_trends,
                "validity": report.validity.score,
                "exact_copies": report.privacy.exact_copies,
                "dcr_score": report.privacy.dcr.score,
            });
            Ok(TaskOutcome {
                rows_in: Some((report.rows.real + report.rows.synthetic) as u64),
                outputs: vec![format!("{target}report.json")],
                summary: vec![format!(
                    "quality {}, validity {}, exact copies {:.2}% -> {target}",
                    percent(report.quality.overall),
                    percent(report.validity.score),
                    report.privacy.exact_copies * 100.0
                )],
                metrics,
                ..Default::default()
            })
        })
    }
}

fn percent(v: Option<f64>) -> String {
    v.map(|v| format!("{:.2}%", v * 100.0))
        .unwrap_or_else(|| "n/a".into())
}

/// One input of a fusion.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FusionInput {
    /// Names the input in the provenance column and in renamed columns.
    name: String,
    path: String,
    #[serde(default)]
    format: FileFormat,
}

/// `inputs`, then `strategy`: union | join (`on`, `how`) | asof
/// (`left_time`, `right_time`, `by`, `tolerance_seconds`); `deduplicate`;
/// `provenance_column`.
pub type FusionInit = FusionSpec<FusionInput>;

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "FusionOutput")]
pub struct FusionOutput {
    path_output: String,
    #[serde(default)]
    format: FileFormat,
    #[serde(default)]
    parquet: ParquetWriteOptions,
}

#[derive(Debug)]
pub struct Fusion {
    init: FusionInit,
    output: FusionOutput,
}

impl Fusion {
    pub fn bind(loaded: &LoadedConfig, task: &TaskConfig) -> Result<Self> {
        let (init, output): (FusionInit, FusionOutput) = loaded.task_params(task)?;
        init.strategy()
            .map_err(|e| e.context(loaded.at(task, "strategy")))?;
        if init.inputs.is_empty() {
            return Err(KilnError::config_fix(
                format!("{}: no inputs", loaded.at(task, "inputs")),
                "list the datasets to fuse: inputs: [{name, path}, …]",
            ));
        }
        Ok(Fusion { init, output })
    }
}

impl Task for Fusion {
    fn inputs(&self) -> Vec<String> {
        self.init.inputs.iter().map(|i| i.path.clone()).collect()
    }

    fn outputs(&self) -> Vec<String> {
        vec![self.output.path_output.clone()]
    }

    fn run<'a>(&'a self, ctx: &'a TaskContext) -> TaskFuture<'a> {
        Box::pin(async move {
            let mut inputs = Vec::new();
            for i in &self.init.inputs {
                inputs.push(Input {
                    name: i.name.clone(),
                    df: ctx.input(&i.path, i.format).await?,
                });
            }
            let fused = kiln_synth::fusion::fuse(inputs, &self.init)?;
            let target = ctx.lake.resolve(&dir(&self.output.path_output))?;
            ctx.progress.stage("fusing");
            let summary = write_table(
                &ctx.session,
                fused,
                &target,
                self.output.format,
                &self.output.parquet,
            )
            .await?;
            Ok(TaskOutcome {
                rows_out: Some(summary.rows),
                outputs: vec![target.to_string()],
                summary: vec![format!(
                    "{} inputs fused into {} rows -> {target}",
                    self.init.inputs.len(),
                    summary.rows
                )],
                ..Default::default()
            })
        })
    }
}
