//! Job types: what a client may submit, how its parameters are checked at
//! submission (so a bad job is a 422, not a failed run), and how it runs.
//! A job runs the same code as the pipeline task or CLI command of the same
//! name. A new method (reproduction, fusion, evaluation) plugs in as one
//! more [`JobType`] variant with its parameter struct.

use crate::datasets::DatasetLake;
use crate::problem::{ApiError, ApiResult};
use crate::store::{Column, DatasetRecord, JobRecord, Progress, now_ms};
use kiln_engine::io::{FileFormat, ParquetWriteOptions};
use kiln_engine::{KilnError, Master};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use utoipa::ToSchema;

/// The kinds of job the service runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum JobType {
    /// Rows from a rule file (`kiln generate`).
    Generate,
    /// A kiln pipeline (`kiln submit`).
    Pipeline,
    /// Fit a Gaussian copula to a dataset (`kiln reproduce fit`).
    ReproduceTrain,
    /// Sample a fitted model into a new dataset (`kiln reproduce sample`).
    ReproduceGenerate,
    /// Combine datasets into one (the `Fusion` task class).
    Fuse,
    /// Judge a synthetic dataset against a real one (`kiln evaluate`).
    Evaluate,
}

impl JobType {
    pub const ALL: [JobType; 6] = [
        JobType::Generate,
        JobType::Pipeline,
        JobType::ReproduceTrain,
        JobType::ReproduceGenerate,
        JobType::Fuse,
        JobType::Evaluate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobType::Generate => "generate",
            JobType::Pipeline => "pipeline",
            JobType::ReproduceTrain => "reproduce-train",
            JobType::ReproduceGenerate => "reproduce-generate",
            JobType::Fuse => "fuse",
            JobType::Evaluate => "evaluate",
        }
    }

    /// What a job of this type does, in one line (the web UI's job list).
    pub fn description(self) -> &'static str {
        match self {
            JobType::Generate => "Rows from a rule file (kiln generate)",
            JobType::Pipeline => "A kiln pipeline (kiln submit)",
            JobType::ReproduceTrain => "Fit a generative model to a dataset (kiln reproduce fit)",
            JobType::ReproduceGenerate => {
                "Sample a fitted model into a new dataset (kiln reproduce sample)"
            }
            JobType::Fuse => "Combine datasets into one: union, key join or as-of join",
            JobType::Evaluate => "Judge a synthetic dataset against the real one (kiln evaluate)",
        }
    }

    /// The JSON Schema of the type's parameters, from the parameter
    /// structs themselves: the web UI's job forms are generated from it.
    pub fn params_schema(self) -> serde_json::Value {
        let schema = match self {
            JobType::Generate => schemars::schema_for!(GenerateParams),
            JobType::Pipeline => schemars::schema_for!(PipelineParams),
            JobType::ReproduceTrain => schemars::schema_for!(ReproduceTrainParams),
            JobType::ReproduceGenerate => schemars::schema_for!(ReproduceGenerateParams),
            JobType::Fuse => schemars::schema_for!(FuseParams),
            JobType::Evaluate => schemars::schema_for!(EvaluateParams),
        };
        schema.to_value()
    }

    /// Parses a submitted `type`, with the nearest known name on a typo.
    pub fn parse(text: &str) -> ApiResult<Self> {
        if let Some(t) = Self::ALL.into_iter().find(|t| t.as_str() == text) {
            return Ok(t);
        }
        let names: Vec<&str> = Self::ALL.iter().map(|t| t.as_str()).collect();
        let hint = kiln_engine::suggest::closest(text, &names)
            .map(|n| format!("did you mean '{n}'? "))
            .unwrap_or_default();
        Err(
            ApiError::invalid("type", format!("unknown job type '{text}'"))
                .fix(format!("{hint}known types: {}", names.join(", "))),
        )
    }
}

/// Output format of generated data.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    ToSchema,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    #[default]
    Parquet,
    Csv,
}

impl From<OutputFormat> for FileFormat {
    fn from(f: OutputFormat) -> Self {
        match f {
            OutputFormat::Parquet => FileFormat::Parquet,
            OutputFormat::Csv => FileFormat::Csv,
        }
    }
}

/// Parameters of a `generate` job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "rules": "entities:\n  count: 10\ncolumns:\n  - name: x\n    normal: {mean: 0, std: 1}\n",
    "rows": 1000,
    "seed": 42
}))]
pub struct GenerateParams {
    /// The rule file's text (YAML), as `kiln generate` reads it.
    pub rules: String,
    /// Rows to generate.
    pub rows: u64,
    #[serde(default)]
    pub seed: u64,
    /// Name of the output dataset (default: `generated-<job id>`).
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub format: OutputFormat,
}

/// Parameters of a `pipeline` job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "config": "name: demo\nstorage: {root: lake/}\nprocessing_tasks: []\n",
    "conf": {"kiln.storage.root": "s3://lake/team-a/"}
}))]
pub struct PipelineParams {
    /// The pipeline config's text (YAML), as `kiln submit` reads it.
    pub config: String,
    /// `--conf key=value` settings. Without `kiln.storage.root` the run's
    /// relative paths resolve under the job's own directory in the lake.
    #[serde(default)]
    pub conf: BTreeMap<String, String>,
}

/// Parameters of a `reproduce-train` job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"dataset": "3f2a…", "seed": 1, "types": {"sample_id": "id"}}))]
pub struct ReproduceTrainParams {
    /// The dataset to imitate (its id).
    #[schemars(extend("x-kiln" = "dataset"))]
    pub dataset: String,
    #[serde(default)]
    pub model: ReproductionKind,
    #[serde(default)]
    pub seed: u64,
    /// Column types where the inferred ones are wrong: numerical, datetime,
    /// categorical, boolean or id (keys, sampled as unique numbers).
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, String>)]
    pub types: BTreeMap<String, kiln_synth::evaluate::SdType>,
    /// Columns not modelled.
    #[serde(default)]
    pub ignore: Vec<String>,
    /// How continuous columns are modelled: empirical (default), norm,
    /// truncnorm, uniform, lognorm or auto (the closest fit by KS).
    #[serde(default)]
    #[schema(value_type = String)]
    pub default_distribution: kiln_synth::copula::DistributionKind,
    /// The same per column.
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, String>)]
    pub numerical_distributions: BTreeMap<String, kiln_synth::copula::DistributionKind>,
}

/// The generative model of a `reproduce-train` job.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    ToSchema,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ReproductionKind {
    /// Empirical marginals joined by the correlation of normal scores.
    #[default]
    GaussianCopula,
    /// A Bayesian network over binned columns (Chow-Liu tree).
    ChowLiu,
}

/// Parameters of a `reproduce-generate` job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"model_job": "9c1e…", "rows": 100000, "seed": 7, "where": "rsrp BETWEEN -140 AND -120"}))]
pub struct ReproduceGenerateParams {
    /// The `reproduce-train` job whose model to sample.
    #[schemars(extend("x-kiln" = "job:reproduce-train"))]
    pub model_job: String,
    pub rows: u64,
    #[serde(default)]
    pub seed: u64,
    /// A SQL condition every row meets.
    #[serde(default, rename = "where")]
    pub condition: Option<String>,
    /// Name of the output dataset (default: `reproduced-<job id>`).
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub format: OutputFormat,
}

/// One input of a `fuse` job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FuseInput {
    /// A dataset id.
    pub dataset: String,
    /// Its name in the provenance column (default: the dataset's name).
    #[serde(default)]
    pub name: Option<String>,
}

/// Parameters of a `fuse` job: the `Fusion` task class's settings with
/// datasets as inputs (`strategy`: union | join with `on`, `how` | asof
/// with `left_time`, `right_time`, `by`, `tolerance_seconds`;
/// `deduplicate`; `provenance_column`). The output is named
/// `fused-<job id>`.
pub type FuseParams = kiln_synth::fusion::FusionSpec<FuseInput>;

/// Parameters of an `evaluate` job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"real": "a…", "synthetic": "b…", "types": {"sample_id": "id"}}))]
pub struct EvaluateParams {
    #[schemars(extend("x-kiln" = "dataset"))]
    pub real: String,
    #[schemars(extend("x-kiln" = "dataset"))]
    pub synthetic: String,
    /// Real rows the synthesizer did not see.
    #[serde(default)]
    #[schemars(extend("x-kiln" = "dataset"))]
    pub holdout: Option<String>,
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, String>)]
    pub types: BTreeMap<String, kiln_synth::evaluate::SdType>,
    #[serde(default)]
    pub ignore: Vec<String>,
    #[serde(default)]
    pub seed: u64,
    /// A binary label column for usefulness.
    #[serde(default)]
    pub target: Option<String>,
    /// Most rows read from each dataset; a larger one is evaluated on a
    /// uniform sample of about this many (default 1000000).
    #[serde(default)]
    pub max_rows: Option<usize>,
}

/// A job's parameters, checked.
#[derive(Debug, Clone, PartialEq)]
pub enum JobSpec {
    Generate(GenerateParams),
    Pipeline(PipelineParams),
    ReproduceTrain(ReproduceTrainParams),
    ReproduceGenerate(ReproduceGenerateParams),
    Fuse(FuseParams),
    Evaluate(EvaluateParams),
}

/// Limits applied at submission.
#[derive(Debug, Clone)]
pub struct JobLimits {
    /// Most rows a `generate` job may ask for.
    pub max_generated_rows: u64,
    /// Longest text parameter (rules, config), in bytes.
    pub max_text_bytes: usize,
}

impl Default for JobLimits {
    fn default() -> Self {
        JobLimits {
            max_generated_rows: 100_000_000,
            max_text_bytes: 1 << 20,
        }
    }
}

fn typed<T: serde::de::DeserializeOwned>(params: &serde_json::Value) -> ApiResult<T> {
    serde_json::from_value(params.clone()).map_err(|e| {
        ApiError::invalid("params", format!("invalid params: {e}"))
            .fix("see the job type's parameter schema in /api/v1/openapi.json")
    })
}

fn check_text(field: &str, text: &str, limits: &JobLimits) -> ApiResult<()> {
    if text.len() > limits.max_text_bytes {
        return Err(ApiError::invalid(
            field,
            format!(
                "{field} is {} bytes, more than the limit of {}",
                text.len(),
                limits.max_text_bytes
            ),
        ));
    }
    Ok(())
}

/// Rows a job is asked to produce: 1 to the limit.
fn check_rows(rows: u64, limits: &JobLimits) -> ApiResult<()> {
    if rows == 0 || rows > limits.max_generated_rows {
        return Err(ApiError::invalid(
            "params.rows",
            format!(
                "params.rows is {rows}; it must be between 1 and {}",
                limits.max_generated_rows
            ),
        ));
    }
    Ok(())
}

fn check_output_name(name: Option<&str>) -> ApiResult<()> {
    match name {
        Some(name) => crate::datasets::check_name(name).map_err(|e| e.field("params.name")),
        None => Ok(()),
    }
}

impl JobSpec {
    /// Parses and checks a submission's parameters: everything that can be
    /// known before the job runs (rules and configs are parsed and
    /// validated here).
    pub fn check(
        job_type: JobType,
        params: &serde_json::Value,
        limits: &JobLimits,
    ) -> ApiResult<Self> {
        match job_type {
            JobType::Generate => {
                let p: GenerateParams = typed(params)?;
                check_text("params.rules", &p.rules, limits)?;
                check_rows(p.rows, limits)?;
                check_output_name(p.name.as_deref())?;
                kiln_synth::Rules::from_yaml(&p.rules, "params.rules")
                    .map_err(|e| ApiError::from_kiln("params.rules", e))?;
                Ok(JobSpec::Generate(p))
            }
            JobType::Pipeline => {
                let p: PipelineParams = typed(params)?;
                check_text("params.config", &p.config, limits)?;
                let loaded = kiln_pipelines::LoadedConfig::from_text(&p.config, "params.config")
                    .map_err(|e| ApiError::from_kiln("params.config", e))?;
                kiln_pipelines::validate::validate(&loaded)
                    .map_err(|e| ApiError::from_kiln("params.config", e))?;
                Ok(JobSpec::Pipeline(p))
            }
            JobType::ReproduceTrain => Ok(JobSpec::ReproduceTrain(typed(params)?)),
            JobType::ReproduceGenerate => {
                let p: ReproduceGenerateParams = typed(params)?;
                check_rows(p.rows, limits)?;
                if let Some(c) = &p.condition {
                    check_text("params.where", c, limits)?;
                }
                check_output_name(p.name.as_deref())?;
                Ok(JobSpec::ReproduceGenerate(p))
            }
            JobType::Fuse => {
                let p: FuseParams = typed(params)?;
                if p.inputs.is_empty() {
                    return Err(ApiError::invalid("params.inputs", "no datasets to fuse"));
                }
                p.strategy()
                    .map_err(|e| ApiError::from_kiln("params.strategy", e))?;
                Ok(JobSpec::Fuse(p))
            }
            JobType::Evaluate => Ok(JobSpec::Evaluate(typed(params)?)),
        }
    }
}

/// What a running job can see: the lake, the master, the store (for the
/// datasets and jobs it reads), its progress.
pub struct JobContext {
    pub datasets: DatasetLake,
    pub master: Master,
    pub store: crate::store::Store,
}

/// Shared progress of a running job, read by the heartbeat.
#[derive(Clone, Default)]
pub struct ProgressCell(Arc<Mutex<Progress>>);

impl ProgressCell {
    pub fn set(&self, stage: &str, rows: Option<u64>) {
        if let Ok(mut p) = self.0.lock() {
            p.stage = stage.to_string();
            p.rows = rows;
        }
    }
    pub fn get(&self) -> Progress {
        self.0.lock().map(|p| p.clone()).unwrap_or_default()
    }
}

/// The id of a job's `index`-th output dataset: fixed by the job, so a
/// rerun writes over the same files and records the same row.
pub fn output_id(job_id: &str, index: usize) -> String {
    format!("{job_id}-{index}")
}

/// Runs one attempt of a job. Outputs are committed atomically; their
/// records are returned for the store to insert with the job's final state.
pub async fn run(
    job: &JobRecord,
    ctx: &JobContext,
    progress: &ProgressCell,
) -> Result<(Vec<DatasetRecord>, serde_json::Value), KilnError> {
    let job_type = JobType::parse(&job.job_type)
        .map_err(|e| KilnError::config(format!("job {}: {}", job.id, e.detail)))?;
    let spec = JobSpec::check(job_type, &job.params, &JobLimits::default())
        .map_err(|e| KilnError::config(format!("job {}: {}", job.id, e.detail)))?;
    match spec {
        JobSpec::Generate(p) => generate(job, ctx, progress, p).await,
        JobSpec::Pipeline(p) => pipeline(job, ctx, progress, p).await,
        JobSpec::ReproduceTrain(p) => {
            crate::synthesis_jobs::reproduce_train(job, ctx, progress, p).await
        }
        JobSpec::ReproduceGenerate(p) => {
            crate::synthesis_jobs::reproduce_generate(job, ctx, progress, p).await
        }
        JobSpec::Fuse(p) => crate::synthesis_jobs::fuse(job, ctx, progress, p).await,
        JobSpec::Evaluate(p) => crate::synthesis_jobs::evaluate(job, ctx, progress, p).await,
    }
}

async fn generate(
    job: &JobRecord,
    ctx: &JobContext,
    progress: &ProgressCell,
    p: GenerateParams,
) -> Result<(Vec<DatasetRecord>, serde_json::Value), KilnError> {
    let rules = kiln_synth::Rules::from_yaml(&p.rules, "params.rules")?;
    let rows = usize::try_from(p.rows)
        .map_err(|_| KilnError::config(format!("params.rows {} is too large", p.rows)))?;
    let id = output_id(&job.id, 0);
    let target = ctx.datasets.dataset_dir(&id).map_err(|e| {
        KilnError::internal("resolving the output", std::io::Error::other(e.detail))
    })?;
    progress.set("generating", None);
    let generator = Arc::new(kiln_synth::Generator::new(rules, p.seed, rows)?);
    let schema = generator.schema();
    let format: FileFormat = p.format.into();
    let summary = kiln_synth::write_generated(
        ctx.datasets.session(),
        generator,
        &target,
        format,
        &ParquetWriteOptions::default(),
    )
    .await?;
    progress.set("committed", Some(summary.rows));
    let name = p.name.unwrap_or_else(|| format!("generated-{}", job.id));
    let record = output_record(job, ctx, id, name, format, &target, summary.rows, &schema).await?;
    let detail = serde_json::json!({"rows": summary.rows, "files": summary.files});
    Ok((vec![record], detail))
}

/// The record of a job's output dataset, once its files are committed.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn output_record(
    job: &JobRecord,
    ctx: &JobContext,
    id: String,
    name: String,
    format: FileFormat,
    target: &url::Url,
    rows: u64,
    schema: &arrow::datatypes::Schema,
) -> Result<DatasetRecord, KilnError> {
    Ok(DatasetRecord {
        id,
        name,
        owner: job.owner.clone(),
        format,
        uri: target.to_string(),
        rows: rows as i64,
        bytes: directory_bytes(ctx, target).await?,
        schema: Column::of_schema(schema),
        shared: false,
        source_job: Some(job.id.clone()),
        created_ms: now_ms(),
    })
}

async fn directory_bytes(ctx: &JobContext, dir: &url::Url) -> Result<i64, KilnError> {
    use futures::StreamExt;
    let store = ctx.datasets.session().stores().store_for(dir)?;
    let prefix = kiln_engine::storage::object_path(dir)?;
    let mut listing = store.list(Some(&prefix));
    let mut total = 0i64;
    while let Some(meta) = listing.next().await {
        total += meta.map_err(|e| KilnError::io(dir, e))?.size as i64;
    }
    Ok(total)
}

async fn pipeline(
    job: &JobRecord,
    ctx: &JobContext,
    progress: &ProgressCell,
    p: PipelineParams,
) -> Result<(Vec<DatasetRecord>, serde_json::Value), KilnError> {
    let loaded = kiln_pipelines::LoadedConfig::from_text(&p.config, "params.config")?;
    let mut conf: Vec<(String, String)> = p.conf.into_iter().collect();
    if !conf.iter().any(|(k, _)| k == "kiln.storage.root") {
        let root = ctx
            .datasets
            .lake()
            .resolve(&format!("_kiln/service/jobs/{}/", job.id))?;
        conf.push(("kiln.storage.root".into(), root.to_string()));
    }
    progress.set("running pipeline", None);
    let options = kiln_pipelines::runner::RunOptions {
        master: ctx.master.clone(),
        // One run id per job: a rerun after a lost worker resumes nothing
        // and overwrites the same run's outputs atomically.
        name: Some(format!("job-{}", job.id)),
        conf,
        only: None,
        from: None,
        resume: None,
        time_limit: None,
        log_format: kiln_pipelines::terminal::LogFormat::Json,
        live_progress: false,
        run_id: None,
        triggered_by: None,
    };
    let report = kiln_pipelines::runner::run_observed(
        &loaded,
        &options,
        &kiln_pipelines::extensions(),
        vec![Arc::new(TaskProgress(progress.clone()))],
    )
    .await?;
    let tasks: Vec<serde_json::Value> = report
        .tasks
        .iter()
        .map(|t| {
            serde_json::json!({
                "task": t.task,
                "state": t.state.as_str(),
                "seconds": t.seconds,
                "outputs": t.outcome.as_ref().map(|o| o.outputs.clone()).unwrap_or_default(),
            })
        })
        .collect();
    Ok((
        Vec::new(),
        serde_json::json!({"run_id": report.run_id, "tasks": tasks}),
    ))
}

/// A pipeline job's progress: the task that started or ended last, and
/// the rows it wrote.
struct TaskProgress(ProgressCell);

impl kiln_pipelines::observer::RunObserver for TaskProgress {
    fn observe<'a>(
        &'a self,
        event: &'a kiln_pipelines::observer::RunEvent,
        _ts_ms: i64,
    ) -> futures::future::BoxFuture<'a, ()> {
        use kiln_pipelines::observer::RunEvent;
        match event {
            RunEvent::TaskStarted { task } => self.0.set(&format!("task {task}"), None),
            RunEvent::TaskFinished(result) => self.0.set(
                &format!("task {} {}", result.task, result.state.as_str()),
                result.outcome.as_ref().and_then(|o| o.rows_out),
            ),
            _ => {}
        }
        Box::pin(async {})
    }
}
