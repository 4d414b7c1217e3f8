//! Filtering generated rows: keep only the synthetic rows that stay within
//! the real boundaries (ranges, categories, missing values only where the
//! real column has them), meet a SQL rule, and are at least a distance from
//! every sampled real row (the privacy section's DCR). Each dropped row is
//! counted under the first reason it fails, in that order.
//!
//! The boundaries are measured over every real row ([`super::BoundsPass`]);
//! the filter is one DataFusion plan over the whole synthetic table (not
//! the rows read for the evaluation, which may be samples): the
//! boundary check and the distances are UDFs ([`InBounds`], [`Dcr`]) whose
//! configuration carries the real side, so on a cluster the executors
//! measure the distances where the rows are. The distances are computed
//! only for rows that pass the other checks; the reasons are counted on the
//! way to the writer, so the table is read once.

use super::Loaded;
use super::bounds::Bounds;
use super::bounds_udf::InBounds;
use super::dcr_udf::{Dcr, DcrReference};
use arrow::array::{AsArray, UInt8Array};
use arrow::compute::filter_record_batch;
use arrow::datatypes::UInt8Type;
use datafusion::dataframe::DataFrame;
use datafusion::logical_expr::{ExprSchemable, when};
use datafusion::prelude::{Expr, coalesce, lit};
use futures::StreamExt;
use kiln_engine::config_udf::ConfigUdf;
use kiln_engine::io::{FileFormat, ParquetWriteOptions, batch_streams, write_streams};
use kiln_engine::{KilnError, KilnSession, Result};
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use url::Url;

/// What a kept row must meet.
#[derive(Debug, Clone, Default)]
pub struct FilterParams {
    /// A SQL condition over the synthetic table's columns.
    pub rule: Option<String>,
    /// Smallest distance to the closest sampled real row (0 to 1).
    pub min_distance: Option<f64>,
    /// Real rows sampled for the distances.
    pub real_rows: usize,
    pub seed: u64,
}

/// How many rows were kept and why the others were dropped.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FilterSummary {
    pub rows_in: u64,
    pub rows_kept: u64,
    /// A value outside the real range or category set, or missing where the
    /// real column never is.
    pub dropped_out_of_bounds: u64,
    /// The rule was false or null.
    pub dropped_by_rule: u64,
    /// Closer than `min_distance` to a real row.
    pub dropped_too_close: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_distance: Option<f64>,
}

/// Why a row is dropped (0: kept), the first reason in the order above.
fn reason(
    synthetic: &DataFrame,
    bounds: &Bounds,
    loaded: &Loaded,
    params: &FilterParams,
) -> Result<Expr> {
    let names: Vec<&str> = bounds.names.iter().map(String::as_str).collect();
    let in_bounds = ConfigUdf::<InBounds>::call(bounds, &names)?;
    let rule = match &params.rule {
        Some(sql) => {
            let expr = synthetic.parse_sql_expr(sql).map_err(|e| {
                KilnError::config_fix(
                    format!("invalid rule '{sql}': {e}"),
                    "write a SQL boolean expression over the synthetic table's columns",
                )
            })?;
            let data_type = expr
                .get_type(synthetic.schema())
                .map_err(|e| KilnError::config(format!("invalid rule '{sql}': {e}")))?;
            if data_type != arrow::datatypes::DataType::Boolean {
                return Err(KilnError::config_fix(
                    format!("the rule '{sql}' is {data_type}, not a boolean expression"),
                    "write a condition, such as rsrp < -80 AND activity <> 'still'",
                ));
            }
            // False or null: dropped.
            coalesce(vec![expr, lit(false)])
        }
        None => lit(true),
    };
    let too_close = match params.min_distance {
        Some(min) => {
            let reference = DcrReference::of(loaded, params.real_rows, params.seed);
            let kept: Vec<&str> = reference.names.iter().map(String::as_str).collect();
            ConfigUdf::<Dcr>::call(&reference, &kept)?.lt(lit(min))
        }
        None => lit(false),
    };
    when(!in_bounds, lit(OUT_OF_BOUNDS))
        .when(!rule, lit(BY_RULE))
        .when(too_close, lit(TOO_CLOSE))
        .otherwise(lit(KEPT))
        .map_err(|e| KilnError::internal("planning the filter", e))
}

const KEPT: u8 = 0;
const OUT_OF_BOUNDS: u8 = 1;
const BY_RULE: u8 = 2;
const TOO_CLOSE: u8 = 3;

/// The column carrying each row's reason on its way to the writer.
const REASON_COLUMN: &str = "__kiln_filter_reason";

/// Writes the synthetic rows that pass to `target` (atomic commit) and
/// counts the others by reason, in one pass over the table: the plan adds
/// each row's reason (computed where the rows are read), and the stream to
/// the writer counts and drops the rows that have one.
pub async fn write_filtered(
    session: &KilnSession,
    real: DataFrame,
    synthetic: DataFrame,
    loaded: &Loaded,
    params: &FilterParams,
    target: &Url,
    format: FileFormat,
) -> Result<FilterSummary> {
    if let Some(d) = params.min_distance
        && !(0.0..=1.0).contains(&d)
    {
        return Err(KilnError::config_fix(
            format!("min_distance is {d}"),
            "give a distance between 0 and 1 (the mean per-column difference, as in the DCR)",
        ));
    }
    let bounds = Bounds::measure(real, loaded).await?;
    let reason = reason(&synthetic, &bounds, loaded, params)?;
    let schema = Arc::new(synthetic.schema().as_arrow().clone());
    let columns: Vec<Expr> = synthetic
        .schema()
        .columns()
        .into_iter()
        .map(Expr::Column)
        .chain(std::iter::once(reason.alias(REASON_COLUMN)))
        .collect();
    let with_reason = synthetic
        .select(columns)
        .map_err(|e| KilnError::execution("planning the filter", e))?;
    let counts: Arc<[AtomicU64; 4]> = Arc::new(Default::default());
    let keep_columns: Vec<usize> = (0..schema.fields().len()).collect();
    let streams = batch_streams(with_reason, target)
        .await?
        .into_iter()
        .map(|stream| {
            let counts = Arc::clone(&counts);
            let keep_columns = keep_columns.clone();
            stream
                .map(move |batch| {
                    let batch = batch?;
                    let reasons = batch
                        .column(keep_columns.len())
                        .as_primitive_opt::<UInt8Type>()
                        .ok_or_else(|| KilnError::internal("filtering rows", "no reason column"))?;
                    let mut tally = [0u64; 4];
                    for r in reasons.values() {
                        tally[usize::from(*r).min(3)] += 1;
                    }
                    for (c, n) in counts.iter().zip(tally) {
                        c.fetch_add(n, Ordering::Relaxed);
                    }
                    let keep =
                        arrow::compute::kernels::cmp::eq(reasons, &UInt8Array::new_scalar(KEPT))
                            .map_err(|e| KilnError::internal("filtering rows", e))?;
                    let rows = batch
                        .project(&keep_columns)
                        .map_err(|e| KilnError::internal("filtering rows", e))?;
                    filter_record_batch(&rows, &keep)
                        .map_err(|e| KilnError::internal("filtering rows", e))
                })
                .boxed()
        })
        .collect();
    let written = write_streams(
        session,
        schema,
        streams,
        target,
        format,
        &ParquetWriteOptions::default(),
    )
    .await?;
    let count = |code: u8| counts[usize::from(code)].load(Ordering::Relaxed);
    Ok(FilterSummary {
        rows_in: counts.iter().map(|c| c.load(Ordering::Relaxed)).sum(),
        rows_kept: written.rows,
        dropped_out_of_bounds: count(OUT_OF_BOUNDS),
        dropped_by_rule: count(BY_RULE),
        dropped_too_close: count(TOO_CLOSE),
        rule: params.rule.clone(),
        min_distance: params.min_distance,
    })
}
