//! Filtering generated rows: keep only the synthetic rows that stay within
//! the real boundaries (ranges, categories, missing values only where the
//! real column has them), meet a SQL rule, and are at least a distance from
//! every sampled real row (the privacy section's DCR). Each dropped row is
//! counted under the first reason it fails, in that order.
//!
//! The filter is one DataFusion plan over the whole synthetic table (not
//! the rows read for the evaluation, which may be a sample): the
//! boundaries and the distances are UDFs ([`InBounds`], [`Dcr`]) whose
//! configuration carries the real side, so on a cluster the executors
//! measure the distances where the rows are. The distances are computed
//! only for rows that pass the other checks.

use super::Loaded;
use super::bounds_udf::{Bounds, InBounds};
use super::dcr_udf::{Dcr, DcrReference};
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::functions_aggregate::expr_fn::{count, sum};
use datafusion::logical_expr::{ExprSchemable, when};
use datafusion::prelude::{Expr, coalesce, lit};
use kiln_engine::config_udf::ConfigUdf;
use kiln_engine::io::{FileFormat, ParquetWriteOptions, write_table};
use kiln_engine::{KilnError, KilnSession, Result};
use serde::Serialize;
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
fn reason(synthetic: &DataFrame, loaded: &Loaded, params: &FilterParams) -> Result<Expr> {
    let names: Vec<&str> = loaded.names.iter().map(String::as_str).collect();
    let in_bounds = ConfigUdf::<InBounds>::call(&Bounds::of(loaded), &names)?;
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

/// Writes the synthetic rows that pass to `target` (atomic commit) and
/// counts the others by reason.
pub async fn write_filtered(
    session: &KilnSession,
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
    let reason = reason(&synthetic, loaded, params)?;
    let kept = synthetic
        .clone()
        .filter(reason.clone().eq(lit(KEPT)))
        .map_err(|e| KilnError::execution("planning the filter", e))?;
    // The counts without the distances first (a bad rule fails before any
    // file is written); those dropped for being too close are the rest.
    let (rows_in, out_of_bounds, by_rule) =
        count_cheap_reasons(synthetic.clone(), loaded, params).await?;
    let written = write_table(
        session,
        kept,
        target,
        format,
        &ParquetWriteOptions::default(),
    )
    .await?;
    let dropped_too_close = rows_in
        .checked_sub(written.rows + out_of_bounds + by_rule)
        .ok_or_else(|| {
            KilnError::data_fix(
                "the synthetic table",
                format!(
                    "it changed while it was filtered ({rows_in} rows counted, {} written or dropped)",
                    written.rows + out_of_bounds + by_rule
                ),
                "filter a table that is not being written",
            )
        })?;
    Ok(FilterSummary {
        rows_in,
        rows_kept: written.rows,
        dropped_out_of_bounds: out_of_bounds,
        dropped_by_rule: by_rule,
        dropped_too_close,
        rule: params.rule.clone(),
        min_distance: params.min_distance,
    })
}

/// The synthetic table's rows, and those out of bounds or failing the rule.
async fn count_cheap_reasons(
    synthetic: DataFrame,
    loaded: &Loaded,
    params: &FilterParams,
) -> Result<(u64, u64, u64)> {
    let without_distance = FilterParams {
        min_distance: None,
        ..params.clone()
    };
    let reason = reason(&synthetic, loaded, &without_distance)?;
    let rows_with = |code: u8| -> Result<Expr> {
        let one = when(reason.clone().eq(lit(code)), lit(1i64))
            .otherwise(lit(0i64))
            .map_err(|e| KilnError::internal("planning the filter", e))?;
        Ok(sum(one))
    };
    let batches = synthetic
        .aggregate(
            vec![],
            vec![
                count(lit(1)).alias("rows"),
                rows_with(OUT_OF_BOUNDS)?.alias("out_of_bounds"),
                rows_with(BY_RULE)?.alias("by_rule"),
            ],
        )
        .map_err(|e| KilnError::execution("counting the synthetic rows", e))?
        .collect()
        .await
        .map_err(|e| KilnError::execution("counting the synthetic rows", e))?;
    let batch = batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .ok_or_else(|| KilnError::internal("counting the synthetic rows", "no result"))?;
    let value = |i: usize| -> Result<u64> {
        match ScalarValue::try_from_array(batch.column(i), 0)
            .map_err(|e| KilnError::internal("counting the synthetic rows", e))?
        {
            ScalarValue::Int64(v) => Ok(v.unwrap_or(0).max(0) as u64),
            v => Err(KilnError::internal(
                "counting the synthetic rows",
                format!("a count is {}", v.data_type()),
            )),
        }
    };
    Ok((value(0)?, value(1)?, value(2)?))
}
