//! `kiln evaluate` and `kiln reproduce`: arguments and printing over
//! `kiln_synth`.

use crate::FormatArg;
use clap::Args;
use kiln_engine::io::{read_table, write_files};
use kiln_engine::storage::parse_location;
use kiln_engine::{KilnError, KilnSession, Master, Result};
use kiln_synth::evaluate::{EvaluationParams, SdType, report_files};
use std::collections::BTreeMap;
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
    /// Rows sampled from each table for the distance to the closest record.
    #[arg(long, default_value_t = 5000)]
    privacy_rows: usize,
    /// Seed of the privacy samples and of the random baseline.
    #[arg(long, default_value_t = 0)]
    seed: u64,
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

fn dir_url(location: &str) -> Result<Url> {
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
    let real = read_table(&session, &parse_location(&args.real, None)?, format).await?;
    let synthetic = read_table(&session, &parse_location(&args.synthetic, None)?, format).await?;
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
    };
    let out = dir_url(&args.out)?;
    let started = std::time::Instant::now();
    let (report, loaded) =
        kiln_synth::evaluate::evaluate(real, synthetic, holdout, &params).await?;
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
    eprintln!(
        "{} real and {} synthetic rows evaluated in {:.2}s -> {out}report.json",
        report.rows.real,
        report.rows.synthetic,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
