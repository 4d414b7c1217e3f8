//! The synthesis job types of the service: `reproduce-train`,
//! `reproduce-generate`, `fuse` and `evaluate`. Inputs are datasets the
//! job's owner may read (their own or shared); outputs are new datasets
//! (or, for `evaluate`, a report in the lake and its scores in the result).

use crate::jobs::{
    EvaluateParams, FuseParams, JobContext, ProgressCell, ReproduceGenerateParams,
    ReproduceTrainParams, ReproductionKind, output_id, output_record,
};
use crate::store::{DatasetRecord, JobRecord};
use datafusion::dataframe::DataFrame;
use kiln_engine::KilnError;
use kiln_engine::io::{FileFormat, ParquetWriteOptions, read_table, write_files, write_table};
use kiln_synth::copula::sample::Sampler;
use kiln_synth::copula::{
    Conditions, CopulaParams, Reproduction, load_model, publish_model, write_sample,
};
use kiln_synth::evaluate::{EvaluationParams, report_files};
use std::sync::Arc;
use url::Url;

type JobResult = Result<(Vec<DatasetRecord>, serde_json::Value), KilnError>;

/// A dataset the job's owner may read: theirs or a shared one. Others are
/// reported as not found, so ids of private datasets do not leak.
async fn readable(
    job: &JobRecord,
    ctx: &JobContext,
    id: &str,
    field: &str,
) -> Result<DatasetRecord, KilnError> {
    let found = ctx
        .store
        .dataset(id)
        .await
        .map_err(|e| KilnError::io("the job store", e))?;
    match found {
        Some(d) if d.owner == job.owner || d.shared => Ok(d),
        _ => Err(KilnError::config_fix(
            format!("{field}: dataset '{id}' not found"),
            "use the id of one of your datasets or of a shared one (GET /api/v1/datasets)",
        )),
    }
}

async fn read(ctx: &JobContext, d: &DatasetRecord) -> Result<DataFrame, KilnError> {
    let url =
        Url::parse(&d.uri).map_err(|e| KilnError::internal("reading a dataset's location", e))?;
    read_table(ctx.datasets.session(), &url, d.format).await
}

/// Where a `reproduce-train` job publishes its model.
fn model_repository(ctx: &JobContext, job_id: &str) -> Result<Url, KilnError> {
    ctx.datasets
        .lake()
        .resolve(&format!("_kiln/service/models/{job_id}/"))
}

fn output_dir(ctx: &JobContext, job: &JobRecord) -> Result<Url, KilnError> {
    ctx.datasets
        .dataset_dir(&output_id(&job.id, 0))
        .map_err(|e| KilnError::internal("resolving the output", std::io::Error::other(e.detail)))
}

/// A job's result with its one output dataset.
#[allow(clippy::too_many_arguments)]
async fn one_output(
    job: &JobRecord,
    ctx: &JobContext,
    name: String,
    format: FileFormat,
    target: &Url,
    rows: u64,
    schema: &arrow::datatypes::Schema,
    detail: serde_json::Value,
) -> JobResult {
    let record = output_record(
        job,
        ctx,
        output_id(&job.id, 0),
        name,
        format,
        target,
        rows,
        schema,
    )
    .await?;
    Ok((vec![record], detail))
}

pub async fn reproduce_train(
    job: &JobRecord,
    ctx: &JobContext,
    progress: &ProgressCell,
    p: ReproduceTrainParams,
) -> JobResult {
    let d = readable(job, ctx, &p.dataset, "params.dataset").await?;
    let df = read(ctx, &d).await?;
    let params = CopulaParams {
        seed: p.seed,
        types: p.types,
        ignore: p.ignore,
        default_distribution: p.default_distribution,
        numerical_distributions: p.numerical_distributions,
        ..CopulaParams::default()
    };
    let report = |f: kiln_synth::copula::FitProgress| {
        progress.set(&format!("fitting, pass {}/2", f.pass), Some(f.rows));
    };
    let model = match p.model {
        ReproductionKind::GaussianCopula => Reproduction::GaussianCopula(
            kiln_synth::copula::fit(df, &d.uri, &params, &report).await?,
        ),
        ReproductionKind::ChowLiu => {
            Reproduction::ChowLiu(kiln_synth::copula::fit_tree(df, &d.uri, &params, &report).await?)
        }
    };
    let repo = model_repository(ctx, &job.id)?;
    let version = publish_model(ctx.datasets.session(), &repo, &model).await?;
    Ok((
        Vec::new(),
        serde_json::json!({
            "model": format!("{repo}v{version}/"),
            "kind": model.kind(),
            "rows": model.source().rows,
            "columns": model.columns().len(),
            "fingerprint": model.source().fingerprint,
        }),
    ))
}

pub async fn reproduce_generate(
    job: &JobRecord,
    ctx: &JobContext,
    progress: &ProgressCell,
    p: ReproduceGenerateParams,
) -> JobResult {
    let source = ctx
        .store
        .job(&p.model_job)
        .await
        .map_err(|e| KilnError::io("the job store", e))?;
    match source {
        Some(j) if j.owner == job.owner && j.job_type == "reproduce-train" => {}
        _ => {
            return Err(KilnError::config_fix(
                format!(
                    "params.model_job: no reproduce-train job '{}' of yours",
                    p.model_job
                ),
                "give the id of one of your finished reproduce-train jobs",
            ));
        }
    }
    let (model, version) = load_model(
        ctx.datasets.session(),
        &model_repository(ctx, &p.model_job)?,
        None,
    )
    .await?;
    let conditions = Conditions { sql: p.condition };
    let sampler = Arc::new(Sampler::new(Arc::new(model), &conditions, p.seed)?);
    let schema = sampler.schema();
    let rows = usize::try_from(p.rows)
        .map_err(|_| KilnError::config(format!("params.rows {} is too large", p.rows)))?;
    let target = output_dir(ctx, job)?;
    let format: FileFormat = p.format.into();
    let done = progress.clone();
    let counted = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let summary = write_sample(
        ctx.datasets.session(),
        sampler,
        rows,
        &target,
        format,
        Arc::new(move |n| {
            let total = counted.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
            done.set("sampling", Some(total));
        }),
    )
    .await?;
    let name = p.name.unwrap_or_else(|| format!("reproduced-{}", job.id));
    let detail = serde_json::json!({"rows": summary.rows, "model_job": p.model_job, "model_version": version});
    one_output(
        job,
        ctx,
        name,
        format,
        &target,
        summary.rows,
        &schema,
        detail,
    )
    .await
}

pub async fn fuse(
    job: &JobRecord,
    ctx: &JobContext,
    progress: &ProgressCell,
    p: FuseParams,
) -> JobResult {
    let mut inputs = Vec::new();
    for (i, input) in p.inputs.iter().enumerate() {
        let d = readable(
            job,
            ctx,
            &input.dataset,
            &format!("params.inputs[{i}].dataset"),
        )
        .await?;
        inputs.push(kiln_synth::fusion::Input {
            name: input.name.clone().unwrap_or_else(|| d.name.clone()),
            df: read(ctx, &d).await?,
        });
    }
    let fused = kiln_synth::fusion::fuse(inputs, &p)?;
    let schema = fused.schema().as_arrow().clone();
    let target = output_dir(ctx, job)?;
    let format = FileFormat::Parquet;
    progress.set("fusing", None);
    let summary = write_table(
        ctx.datasets.session(),
        fused,
        &target,
        format,
        &ParquetWriteOptions::default(),
    )
    .await?;
    let detail = serde_json::json!({"rows": summary.rows, "inputs": p.inputs.len()});
    let name = format!("fused-{}", job.id);
    one_output(
        job,
        ctx,
        name,
        format,
        &target,
        summary.rows,
        &schema,
        detail,
    )
    .await
}

pub async fn evaluate(
    job: &JobRecord,
    ctx: &JobContext,
    progress: &ProgressCell,
    p: EvaluateParams,
) -> JobResult {
    let real = readable(job, ctx, &p.real, "params.real").await?;
    let synthetic = readable(job, ctx, &p.synthetic, "params.synthetic").await?;
    let holdout = match &p.holdout {
        Some(h) => Some(read(ctx, &readable(job, ctx, h, "params.holdout").await?).await?),
        None => None,
    };
    let params = EvaluationParams {
        types: p.types,
        ignore: p.ignore,
        seed: p.seed,
        target: p.target,
        max_rows: p.max_rows.unwrap_or(EvaluationParams::default().max_rows),
        ..EvaluationParams::default()
    };
    progress.set("evaluating", None);
    let (report, loaded) = kiln_synth::evaluate::evaluate(
        read(ctx, &real).await?,
        read(ctx, &synthetic).await?,
        holdout,
        &params,
    )
    .await?;
    let target = ctx
        .datasets
        .lake()
        .resolve(&format!("_kiln/service/jobs/{}/report/", job.id))?;
    write_files(
        ctx.datasets.session(),
        &target,
        &report_files(&report, &loaded)?,
    )
    .await?;
    Ok((
        Vec::new(),
        serde_json::json!({
            "report": format!("{target}report.json"),
            "quality": {
                "overall": report.quality.overall,
                "column_shapes": report.quality.column_shapes,
                "column_pair_trends": report.quality.column_pair_trends,
            },
            "validity": report.validity.score,
            "privacy": {
                "exact_copies": report.privacy.exact_copies,
                "dcr": report.privacy.dcr.score,
            },
            "usefulness": report.usefulness,
        }),
    ))
}
