//! `kiln evaluate` and `kiln reproduce`: arguments and printing over
//! `kiln_synth`.

use crate::FormatArg;
use clap::{Args, ValueEnum};
use kiln_engine::io::{read_table, write_files};
use kiln_engine::storage::parse_location;
use kiln_engine::{KilnError, KilnSession, Master, Result};
use kiln_synth::copula::sample::Sampler;
use kiln_synth::copula::{
    Conditions, CopulaParams, DistributionKind, FitProgress, Reproduction, load_model,
    publish_model, write_sample,
};
use kiln_synth::evaluate::{EvaluationParams, FilterParams, SdType, report_files, write_filtered};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use url::Url;

#[derive(Args)]
pub struct EvaluateArgs {
    /// The real table: a file, directory or glob; a local path or a URI.
    real: String,
    /// The synthetic table to judge against it.
    synthetic: String,
    /// Directory for report.json, index.html and the SVG plots.
    #[arg(long)]
    out: String,
    /// Real rows the synthesizer did not see: the privacy score then says
    /// whether synthetic rows are closer to the training rows than to these.
    #[arg(long)]
    holdout: Option<String>,
    /// A column's statistical type, where the inferred one is wrong:
    /// COLUMN=numerical|datetime|categorical|boolean|id (repeatable).
    #[arg(long = "type", value_name = "COLUMN=TYPE", value_parser = parse_type)]
    types: Vec<(String, SdType)>,
    /// Leave a column out (repeatable).
    #[arg(long, value_name = "COLUMN")]
    ignore: Vec<String>,
    /// A binary label column: usefulness trains kiln's GBT on the synthetic
    /// rows and on 70 % of the real rows, and tests both on the other 30 %.
    #[arg(long, value_name = "COLUMN")]
    target: Option<String>,
    /// Rows sampled from each table for the distance to the closest record.
    #[arg(long, default_value_t = 5000)]
    privacy_rows: usize,
    /// Most rows read from each table: a larger table is evaluated on a
    /// uniform sample of about this many rows (the report says so).
    #[arg(long, default_value_t = 1_000_000)]
    max_rows: usize,
    /// Seed of the privacy samples and of the random baseline.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also write the synthetic rows that pass the filter here: within the
    /// real boundaries, meeting --rule, at least --min-distance from every
    /// sampled real row. report.json says how many were dropped and why.
    #[arg(long, value_name = "URI")]
    filter_out: Option<String>,
    /// A SQL condition kept rows must meet (with --filter-out).
    #[arg(long, value_name = "SQL", requires = "filter_out")]
    rule: Option<String>,
    /// Smallest distance to the closest real row, 0 to 1 (with --filter-out).
    #[arg(long, requires = "filter_out")]
    min_distance: Option<f64>,
    /// Format of the input tables.
    #[arg(long, value_enum, default_value = "parquet")]
    format: FormatArg,
    /// Where the work runs: local[N] or df://host:port.
    #[arg(long, default_value = "local[*]")]
    master: String,
}

fn parse_type(text: &str) -> std::result::Result<(String, SdType), String> {
    let (column, t) = text
        .split_once('=')
        .ok_or_else(|| format!("expected COLUMN=TYPE, got '{text}'"))?;
    let t: SdType = serde_json::from_value(serde_json::Value::String(t.to_lowercase()))
        .map_err(|_| {
            format!("unknown type '{t}' for column '{column}': use numerical, datetime, categorical, boolean or id")
        })?;
    Ok((column.to_string(), t))
}

/// A location as a directory URL (with a trailing `/`).
pub(crate) fn dir_url(location: &str) -> Result<Url> {
    let mut url = parse_location(location, None)?;
    if !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
    Ok(url)
}

pub async fn evaluate(args: EvaluateArgs) -> Result<()> {
    let master: Master = args.master.parse()?;
    let session = KilnSession::connect(&master, &kiln_pipelines::extensions()).await?;
    let format = args.format.into();
    let real_url = parse_location(&args.real, None)?;
    let real = read_table(&session, &real_url, format).await?;
    let synthetic_url = parse_location(&args.synthetic, None)?;
    let synthetic = read_table(&session, &synthetic_url, format).await?;
    let holdout = match &args.holdout {
        Some(h) => Some(read_table(&session, &parse_location(h, None)?, format).await?),
        None => None,
    };
    let mut types = BTreeMap::new();
    for (column, t) in args.types {
        if types.insert(column.clone(), t).is_some() {
            return Err(KilnError::config(format!(
                "--type gives column '{column}' twice"
            )));
        }
    }
    let params = EvaluationParams {
        types,
        ignore: args.ignore,
        privacy_rows: args.privacy_rows,
        seed: args.seed,
        target: args.target,
        max_rows: args.max_rows,
    };
    let out = dir_url(&args.out)?;
    let started = std::time::Instant::now();
    let (mut report, loaded) =
        kiln_synth::evaluate::evaluate(real, synthetic, holdout, &params).await?;
    if let Some(filter_out) = &args.filter_out {
        let filter = FilterParams {
            rule: args.rule.clone(),
            min_distance: args.min_distance,
            real_rows: params.privacy_rows,
            seed: params.seed,
        };
        let real = read_table(&session, &real_url, format).await?;
        let synthetic = read_table(&session, &synthetic_url, format).await?;
        let target = dir_url(filter_out)?;
        let summary =
            write_filtered(&session, real, synthetic, &loaded, &filter, &target, format).await?;
        eprintln!(
            "filter: kept {} of {} rows -> {target} (dropped: {} out of bounds, {} by the rule, {} too close to a real row)",
            summary.rows_kept,
            summary.rows_in,
            summary.dropped_out_of_bounds,
            summary.dropped_by_rule,
            summary.dropped_too_close
        );
        report.filter = Some(summary);
    }
    let files = report_files(&report, &loaded)?;
    write_files(&session, &out, &files).await?;
    let pct = |v: Option<f64>| {
        v.map(|v| format!("{:.2}%", v * 100.0))
            .unwrap_or_else(|| "n/a".into())
    };
    let q = &report.quality;
    eprintln!(
        "quality {} (column shapes {}, column pair trends {}); validity {}; exact copies {:.2}%; {} {}",
        pct(q.overall),
        pct(q.column_shapes),
        pct(q.column_pair_trends),
        pct(report.validity.score),
        report.privacy.exact_copies * 100.0,
        report.privacy.dcr.metric,
        pct(report.privacy.dcr.score)
    );
    if let kiln_synth::evaluate::UsefulnessSection::Measured(u) = &report.usefulness {
        let auc = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_else(|| "n/a".into());
        eprintln!(
            "usefulness ({}): areaUnderROC trained on synthetic {}, on real {}",
            u.target,
            auc(u.train_on_synthetic),
            auc(u.train_on_real)
        );
    }
    for (table, total) in &report.rows.sampled_from {
        eprintln!("the {table} table has {total} rows: evaluated on a uniform sample (--max-rows)");
    }
    eprintln!(
        "{} real and {} synthetic rows evaluated in {:.2}s -> {out}report.json",
        report.rows.real,
        report.rows.synthetic,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[derive(clap::Subcommand)]
pub enum ReproduceCommand {
    /// Fit a generative model to a table and publish it as a new version in
    /// a model repository.
    #[command(
        after_help = "Examples:\n  kiln reproduce fit lake/raw/training/ --model gaussian_copula --seed 1 --out lake/models/training_copula/\n  kiln reproduce fit lake/raw/training/ --model chow_liu --type sample_id=id --out lake/models/training_tree/"
    )]
    Fit(Box<FitArgs>),
    /// Sample rows from a fitted model, optionally under a SQL condition.
    #[command(
        after_help = "Examples:\n  kiln reproduce sample lake/models/training_copula/ --rows 1000000 --seed 7 --out lake/synthetic/training/\n  kiln reproduce sample lake/models/training_copula/ --rows 10000 --where \"rsrp BETWEEN -140 AND -125 AND activity IN ('still', 'walking')\" --out rare/\n\nConditions on single columns (=, <, <=, >, >=, BETWEEN, IN, IS [NOT] NULL) joined by AND hold on every row\nby construction; anything else is checked per row and met by drawing more rows."
    )]
    Sample(Box<SampleArgs>),
    /// Print a fitted model's columns: types, null rates, ranges, categories.
    #[command(after_help = "Example:\n  kiln reproduce show lake/models/training_copula/")]
    Show {
        /// The model repository.
        model: String,
        /// A version (default: the latest).
        #[arg(long)]
        version: Option<u64>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ModelArg {
    /// Gaussian copula: empirical marginals joined by the correlation of
    /// normal scores.
    #[value(name = "gaussian_copula", alias = "gaussian-copula")]
    GaussianCopula,
    /// Chow-Liu tree: a Bayesian network over binned columns along the
    /// pairs with the most mutual information.
    #[value(name = "chow_liu", alias = "chow-liu")]
    ChowLiu,
}

/// `--distribution`: how continuous columns are modelled.
#[derive(Clone, Copy, ValueEnum)]
pub enum DistributionArg {
    Empirical,
    Norm,
    Truncnorm,
    Uniform,
    Lognorm,
    Auto,
}

impl From<DistributionArg> for DistributionKind {
    fn from(d: DistributionArg) -> Self {
        match d {
            DistributionArg::Empirical => DistributionKind::Empirical,
            DistributionArg::Norm => DistributionKind::Norm,
            DistributionArg::Truncnorm => DistributionKind::TruncNorm,
            DistributionArg::Uniform => DistributionKind::Uniform,
            DistributionArg::Lognorm => DistributionKind::LogNorm,
            DistributionArg::Auto => DistributionKind::Auto,
        }
    }
}

/// `COLUMN=KIND` of `--column-distribution`.
fn parse_distribution(text: &str) -> std::result::Result<(String, DistributionKind), String> {
    let (column, kind) = text
        .split_once('=')
        .ok_or_else(|| format!("'{text}' is not COLUMN=KIND"))?;
    let kind = DistributionArg::from_str(kind, true).map_err(|_| {
        format!("'{kind}' is not a distribution: use empirical, norm, truncnorm, uniform, lognorm or auto")
    })?;
    Ok((column.to_string(), kind.into()))
}

#[derive(Args)]
pub struct FitArgs {
    /// The table to imitate: a file, directory or glob; a local path or a URI.
    data: String,
    #[arg(long, value_enum, default_value = "gaussian_copula")]
    model: ModelArg,
    /// The model repository (a new version is published under it).
    #[arg(long)]
    out: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A column's statistical type where the inferred one is wrong:
    /// COLUMN=numerical|datetime|categorical|boolean|id (repeatable). Keys
    /// (id) are sampled as unique sequence numbers.
    #[arg(long = "type", value_name = "COLUMN=TYPE", value_parser = parse_type)]
    types: Vec<(String, SdType)>,
    /// Leave a column out of the model (repeatable).
    #[arg(long, value_name = "COLUMN")]
    ignore: Vec<String>,
    /// Rows in the uniform sample the quantiles come from.
    #[arg(long, default_value_t = 100_000)]
    sample_rows: usize,
    /// How continuous columns are modelled: empirical quantiles, a
    /// parametric fit, or auto (the fit closest to the data by the KS
    /// statistic).
    #[arg(long, value_enum, default_value = "empirical")]
    distribution: DistributionArg,
    /// One column's distribution, overriding --distribution:
    /// COLUMN=empirical|norm|truncnorm|uniform|lognorm|auto (repeatable).
    #[arg(long = "column-distribution", value_name = "COLUMN=KIND", value_parser = parse_distribution)]
    column_distributions: Vec<(String, DistributionKind)>,
    /// Format of the input table.
    #[arg(long, value_enum, default_value = "parquet")]
    format: FormatArg,
    /// Where the two passes over the data run: local[N] threads, or the
    /// executors of a cluster at df://host:port (the same model either way).
    #[arg(long, default_value = "local[*]")]
    master: String,
}

#[derive(Args)]
pub struct SampleArgs {
    /// The model repository.
    model: String,
    #[arg(long)]
    rows: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A SQL condition every sampled row meets.
    #[arg(long = "where", value_name = "SQL")]
    condition: Option<String>,
    /// A model version (default: the latest).
    #[arg(long)]
    version: Option<u64>,
    /// Output directory: a local path or a URI.
    #[arg(long)]
    out: String,
    #[arg(long, value_enum, default_value = "parquet")]
    format: FormatArg,
}

fn type_map(types: Vec<(String, SdType)>) -> Result<BTreeMap<String, SdType>> {
    let mut map = BTreeMap::new();
    for (column, t) in types {
        if map.insert(column.clone(), t).is_some() {
            return Err(KilnError::config(format!(
                "--type gives column '{column}' twice"
            )));
        }
    }
    Ok(map)
}

pub async fn reproduce(command: ReproduceCommand) -> Result<()> {
    match command {
        ReproduceCommand::Fit(args) => fit(*args).await,
        ReproduceCommand::Sample(args) => sample(*args).await,
        ReproduceCommand::Show { model, version } => {
            let session = KilnSession::connect(
                &Master::Local { partitions: 1 },
                &kiln_pipelines::extensions(),
            )
            .await?;
            let (model, version) = load_model(&session, &dir_url(&model)?, version).await?;
            let source = model.source();
            println!(
                "version {version}: {} fitted to {} rows of {} (fingerprint {})",
                model.kind(),
                source.rows,
                source.uri,
                source.fingerprint
            );
            for c in model.columns() {
                println!("{}", describe_column(c));
            }
            Ok(())
        }
    }
}

fn describe_column(c: &kiln_synth::copula::CopulaColumn) -> String {
    use kiln_synth::copula::marginal::Marginal;
    let nulls = |r: f64| format!("{:.2}% null", r * 100.0);
    let detail = match &c.marginal {
        _ if c.sdtype == SdType::Id => "unique keys".to_string(),
        Marginal::Continuous {
            null_rate,
            quantiles,
        } => format!(
            "{}, range {} .. {}, median {}",
            nulls(*null_rate),
            quantiles[0],
            quantiles[quantiles.len() - 1],
            quantiles[quantiles.len() / 2]
        ),
        Marginal::Parametric {
            null_rate,
            distribution,
            min,
            max,
        } => format!(
            "{}, range {min} .. {max}, {}",
            nulls(*null_rate),
            serde_json::to_string(distribution).unwrap_or_default()
        ),
        Marginal::Discrete {
            null_rate, values, ..
        } => format!(
            "{}, values {}",
            nulls(*null_rate),
            values
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Marginal::Categorical {
            null_rate,
            categories,
            ..
        } => {
            let shown: Vec<&str> = categories.iter().take(20).map(String::as_str).collect();
            let more = categories.len().saturating_sub(shown.len());
            format!(
                "{}, {} categories: {}{}",
                nulls(*null_rate),
                categories.len(),
                shown.join(", "),
                if more > 0 {
                    format!(", … ({more} more)")
                } else {
                    String::new()
                }
            )
        }
        Marginal::Null => "always null".into(),
    };
    format!(
        "  {} ({}, {}): {detail}",
        c.name,
        c.data_type,
        serde_json::json!(c.sdtype).as_str().unwrap_or_default()
    )
}

async fn fit(args: FitArgs) -> Result<()> {
    let master: Master = args.master.parse()?;
    let session = KilnSession::connect(&master, &kiln_pipelines::extensions()).await?;
    let url = parse_location(&args.data, None)?;
    let df = read_table(&session, &url, args.format.into()).await?;
    let params = CopulaParams {
        seed: args.seed,
        sample_rows: args.sample_rows,
        types: type_map(args.types)?,
        ignore: args.ignore,
        default_distribution: args.distribution.into(),
        numerical_distributions: args.column_distributions.into_iter().collect(),
        ..CopulaParams::default()
    };
    let started = std::time::Instant::now();
    let last = std::sync::Mutex::new((0u8, std::time::Instant::now()));
    let progress = |p: FitProgress| {
        if let Ok(mut last) = last.lock()
            && (last.0 != p.pass || last.1.elapsed().as_secs_f64() > 2.0)
        {
            *last = (p.pass, std::time::Instant::now());
            eprintln!("pass {}/2: {} rows", p.pass, p.rows);
        }
    };
    let model = match args.model {
        ModelArg::GaussianCopula => Reproduction::GaussianCopula(
            kiln_synth::copula::fit(df, url.as_str(), &params, &progress).await?,
        ),
        ModelArg::ChowLiu => Reproduction::ChowLiu(
            kiln_synth::copula::fit_tree(df, url.as_str(), &params, &progress).await?,
        ),
    };
    let base = dir_url(&args.out)?;
    let version = publish_model(&session, &base, &model).await?;
    eprintln!(
        "{} fitted to {} rows ({} columns, {} modelled jointly) in {:.2}s -> {base}v{version}/",
        model.kind(),
        model.source().rows,
        model.columns().len(),
        model.dimensions().len(),
        started.elapsed().as_secs_f64(),
    );
    Ok(())
}

async fn sample(args: SampleArgs) -> Result<()> {
    let session = KilnSession::connect(
        &Master::Local { partitions: 1 },
        &kiln_pipelines::extensions(),
    )
    .await?;
    let (model, version) = load_model(&session, &dir_url(&args.model)?, args.version).await?;
    let conditions = Conditions {
        sql: args.condition,
    };
    let sampler = Arc::new(Sampler::new(Arc::new(model), &conditions, args.seed)?);
    let out = dir_url(&args.out)?;
    let started = std::time::Instant::now();
    let done = Arc::new(AtomicU64::new(0));
    let progress = {
        let done = Arc::clone(&done);
        Arc::new(move |n: u64| {
            done.fetch_add(n, Ordering::Relaxed);
        })
    };
    let write = write_sample(
        &session,
        sampler,
        args.rows,
        &out,
        args.format.into(),
        progress,
    );
    tokio::pin!(write);
    // A line every 2 s while rows are drawn (the output appears at the end).
    let every = std::time::Duration::from_secs(2);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let summary = loop {
        tokio::select! {
            summary = &mut write => break summary?,
            _ = tick.tick() => eprintln!(
                "sampled {} of {} rows",
                done.load(Ordering::Relaxed),
                args.rows
            ),
        }
    };
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{} rows from model version {version} -> {out} in {secs:.2}s ({:.2}M rows/s)",
        summary.rows,
        summary.rows as f64 / secs / 1e6
    );
    Ok(())
}
