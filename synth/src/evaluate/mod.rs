//! Evaluation of synthetic data against the real table it imitates: quality
//! (SDMetrics' definitions, [`quality`]), validity (boundaries, categories,
//! keys, [`validity`]), privacy (exact copies and distance to the closest
//! real record, [`privacy`]), with SVG plots a researcher can look at
//! ([`plots`]).

mod bounds;
mod bounds_udf;
mod dcr_udf;
pub mod filter;
pub mod plots;
pub mod privacy;
pub mod quality;
pub mod usefulness;
pub mod validity;

#[cfg(test)]
mod tests;

pub use crate::frame::{Metadata, Precision, SdType};
pub use bounds::BoundsPass;
pub use bounds_udf::InBounds;
pub use dcr_udf::Dcr;
pub use filter::{FilterParams, FilterSummary, write_filtered};
pub use privacy::Privacy;
pub use quality::Quality;
pub use usefulness::Usefulness;
pub use validity::Validity;

use crate::frame::{self, Dictionary, Frame, Values};
use datafusion::dataframe::DataFrame;
use kiln_engine::{KilnError, Result};
use serde::Serialize;
use std::collections::BTreeMap;

/// What to compare and how.
#[derive(Debug, Clone)]
pub struct EvaluationParams {
    /// Column types that differ from the inferred ones (a numeric code that
    /// is categorical, a key column as `id`).
    pub types: BTreeMap<String, SdType>,
    /// Columns left out of the evaluation.
    pub ignore: Vec<String>,
    /// Synthetic and real rows sampled for the distance computations.
    pub privacy_rows: usize,
    /// Seed of those samples and of the random baseline.
    pub seed: u64,
    /// A binary label column: usefulness trains kiln's GBT on the synthetic
    /// rows and tests it on real ones.
    pub target: Option<String>,
    /// Largest number of rows read from each table: a larger table is
    /// evaluated on a uniform sample of about this many rows (by content
    /// hash, whatever the file order), and the report says so.
    pub max_rows: usize,
}

impl Default for EvaluationParams {
    fn default() -> Self {
        EvaluationParams {
            types: BTreeMap::new(),
            ignore: Vec::new(),
            privacy_rows: 5_000,
            seed: 0,
            target: None,
            max_rows: 1_000_000,
        }
    }
}

/// Row counts of the compared tables.
#[derive(Debug, Clone, Serialize)]
pub struct Rows {
    pub real: usize,
    pub synthetic: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holdout: Option<usize>,
    /// The tables' sizes where the evaluation read a sample of them
    /// (`max_rows`): `{"real": 38148040}`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub sampled_from: BTreeMap<String, usize>,
}

/// The evaluation report (`report.json`). Scores are in [0, 1]; a score
/// that is undefined (no values to compare) is `null`, never NaN.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub kiln_version: String,
    pub rows: Rows,
    /// The columns and types compared, in SDV's metadata format.
    pub metadata: serde_json::Value,
    pub quality: Quality,
    pub validity: Validity,
    pub privacy: Privacy,
    pub usefulness: UsefulnessSection,
    /// With a filter: how many synthetic rows were kept and why the others
    /// were dropped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<FilterSummary>,
}

/// Usefulness, or why it was not measured.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum UsefulnessSection {
    Measured(Usefulness),
    NotMeasured { reason: String },
}

/// A frame with its column names and types, as the metrics read it.
#[derive(Debug, Clone, Copy)]
pub struct FrameRef<'a> {
    pub names: &'a [String],
    pub types: &'a [SdType],
    pub columns: &'a [Values],
    pub precision: &'a [Precision],
    pub rows: usize,
}

/// Both tables loaded with shared dictionaries.
#[derive(Debug)]
pub struct Loaded {
    pub names: Vec<String>,
    pub types: Vec<SdType>,
    pub dictionaries: Vec<Dictionary>,
    pub real: Frame,
    pub synthetic: Frame,
    pub holdout: Option<Frame>,
    pub metadata: Metadata,
}

impl Loaded {
    pub fn view<'a>(&'a self, frame: &'a Frame) -> FrameRef<'a> {
        FrameRef {
            names: &self.names,
            types: &self.types,
            columns: &frame.columns,
            precision: &frame.precision,
            rows: frame.rows,
        }
    }
}

/// Reads the tables: the metadata comes from the real table's schema and
/// `params`; the synthetic (and holdout) table must hold the same columns.
pub async fn load(
    real: DataFrame,
    synthetic: DataFrame,
    holdout: Option<DataFrame>,
    params: &EvaluationParams,
) -> Result<Loaded> {
    let real_schema = real.schema().as_arrow().clone();
    if let Some(t) = &params.target
        && params.ignore.contains(t)
    {
        return Err(KilnError::config(format!(
            "the target '{t}' is also ignored; drop it from --ignore"
        )));
    }
    for name in &params.ignore {
        if real_schema.field_with_name(name).is_err() {
            return Err(KilnError::config(format!(
                "--ignore names column '{name}', which the real table does not have"
            )));
        }
    }
    let mut metadata = Metadata::infer(&real_schema, &params.types)?;
    metadata
        .columns
        .retain(|(name, _)| !params.ignore.contains(name));
    if metadata.columns.is_empty() {
        return Err(KilnError::config("no columns are left to evaluate"));
    }
    metadata.check_compatible(&real_schema, synthetic.schema().as_arrow(), "synthetic")?;
    if let Some(h) = &holdout {
        metadata.check_compatible(&real_schema, h.schema().as_arrow(), "holdout")?;
    }
    let mut dictionaries = vec![Dictionary::default(); metadata.columns.len()];
    if params.max_rows == 0 {
        return Err(KilnError::config_fix(
            "max_rows is 0",
            "give the largest number of rows to read from each table (default 1000000)",
        ));
    }
    let cap = Some(params.max_rows);
    let real = frame::load(real, &metadata, &mut dictionaries, "real", cap).await?;
    if real.rows == 0 {
        return Err(KilnError::data_fix(
            "the real table",
            "it has no rows",
            "evaluate against a real table with data",
        ));
    }
    let synthetic = frame::load(synthetic, &metadata, &mut dictionaries, "synthetic", cap).await?;
    if synthetic.rows == 0 {
        return Err(KilnError::data_fix(
            "the synthetic table",
            "it has no rows",
            "generate or sample rows before evaluating them",
        ));
    }
    let holdout = match holdout {
        Some(h) => Some(frame::load(h, &metadata, &mut dictionaries, "holdout", cap).await?),
        None => None,
    };
    Ok(Loaded {
        names: metadata.columns.iter().map(|(n, _)| n.clone()).collect(),
        types: metadata.columns.iter().map(|(_, t)| *t).collect(),
        dictionaries,
        real,
        synthetic,
        holdout,
        metadata,
    })
}

/// Evaluates loaded tables (CPU work; call it off the async runtime).
pub fn evaluate_loaded(loaded: &Loaded, params: &EvaluationParams) -> Result<Report> {
    let real = loaded.view(&loaded.real);
    let synthetic = loaded.view(&loaded.synthetic);
    let holdout = loaded.holdout.as_ref().map(|h| loaded.view(h));
    let usefulness = match &params.target {
        Some(target) => {
            UsefulnessSection::Measured(usefulness::usefulness(loaded, target, params.seed)?)
        }
        None => UsefulnessSection::NotMeasured {
            reason: "no target column was given (--target, target:)".into(),
        },
    };
    Ok(Report {
        kiln_version: env!("CARGO_PKG_VERSION").into(),
        rows: Rows {
            real: real.rows,
            synthetic: synthetic.rows,
            holdout: holdout.map(|h| h.rows),
            sampled_from: [("real", &loaded.real), ("synthetic", &loaded.synthetic)]
                .into_iter()
                .chain(loaded.holdout.as_ref().map(|h| ("holdout", h)))
                .filter_map(|(name, f)| Some((name.to_string(), f.sampled_from?)))
                .collect(),
        },
        metadata: loaded.metadata.to_sdv_json(),
        quality: quality::quality(real, synthetic),
        validity: validity::validity(real, synthetic),
        privacy: privacy::privacy(real, synthetic, holdout, params),
        usefulness,
        filter: None,
    })
}

/// Reads and evaluates the tables.
pub async fn evaluate(
    real: DataFrame,
    synthetic: DataFrame,
    holdout: Option<DataFrame>,
    params: &EvaluationParams,
) -> Result<(Report, Loaded)> {
    let loaded = load(real, synthetic, holdout, params).await?;
    let params = params.clone();
    let (report, loaded) = tokio::task::spawn_blocking(move || {
        let report = evaluate_loaded(&loaded, &params);
        (report, loaded)
    })
    .await
    .map_err(|e| KilnError::internal("evaluating synthetic data", e))?;
    Ok((report?, loaded))
}

/// The report's files: `report.json`, a histogram per column and the
/// correlation heat maps (SVG), and `index.html` showing them together.
pub fn report_files(report: &Report, loaded: &Loaded) -> Result<Vec<(String, Vec<u8>)>> {
    let json = serde_json::to_vec_pretty(report)
        .map_err(|e| KilnError::internal("serializing the evaluation report", e))?;
    let mut files = vec![("report.json".to_string(), json)];
    files.extend(plots::plots(report, loaded));
    Ok(files)
}
