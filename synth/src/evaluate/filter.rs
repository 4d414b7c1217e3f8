//! Filtering generated rows: keep only the synthetic rows that stay within
//! the real boundaries (ranges, categories, missing values only where the
//! real column has them), meet a SQL rule, and are at least a distance from
//! every sampled real row (the privacy section's DCR). Each dropped row is
//! counted under the first reason it fails, in that order.

use super::Loaded;
use super::privacy::distances_to;
use crate::frame::{NULL_CODE, Values};
use arrow::array::{Array, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use datafusion::common::DFSchema;
use datafusion::dataframe::DataFrame;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use kiln_engine::io::{FileFormat, ParquetWriteOptions, write_streams};
use kiln_engine::{KilnError, KilnSession, Result};
use serde::Serialize;
use std::collections::HashSet;
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    Kept,
    OutOfBounds,
    TooClose,
}

/// Per synthetic row: out of bounds, too close, or kept (the rule is
/// checked while writing).
fn reasons(loaded: &Loaded, params: &FilterParams) -> Vec<Reason> {
    let real = loaded.view(&loaded.real);
    let synthetic = loaded.view(&loaded.synthetic);
    let mut out = vec![Reason::Kept; synthetic.rows];
    for c in 0..real.names.len() {
        match (&real.columns[c], &synthetic.columns[c]) {
            (Values::Numbers(r), Values::Numbers(s)) => {
                let nullable = r.iter().any(|v| v.is_nan());
                let (lo, hi) = r
                    .iter()
                    .filter(|v| !v.is_nan())
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| {
                        (l.min(v), h.max(v))
                    });
                for (row, &v) in s.iter().enumerate() {
                    let ok = if v.is_nan() {
                        nullable
                    } else {
                        v >= lo && v <= hi
                    };
                    if !ok {
                        out[row] = Reason::OutOfBounds;
                    }
                }
            }
            (Values::Codes(r), Values::Codes(s)) if real.types[c] != crate::frame::SdType::Id => {
                let known: HashSet<u32> = r.iter().copied().collect();
                for (row, v) in s.iter().enumerate() {
                    if !known.contains(v) || (*v == NULL_CODE && !known.contains(&NULL_CODE)) {
                        out[row] = Reason::OutOfBounds;
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(min) = params.min_distance {
        let d = distances_to(real, synthetic, params.real_rows, params.seed);
        for (row, dist) in d.into_iter().enumerate() {
            if out[row] == Reason::Kept && dist < min {
                out[row] = Reason::TooClose;
            }
        }
    }
    out
}

/// Writes the synthetic rows that pass to `target` (atomic commit), in the
/// synthetic table's order, and counts the others by reason.
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
    let reasons = reasons(loaded, params);
    let schema = std::sync::Arc::new(synthetic.schema().as_arrow().clone());
    let rule = match &params.rule {
        Some(sql) => {
            let df_schema = DFSchema::try_from(schema.as_ref().clone())
                .map_err(|e| KilnError::internal("reading the synthetic schema", e))?;
            let ctx = SessionContext::new();
            let expr = ctx.parse_sql_expr(sql, &df_schema).map_err(|e| {
                KilnError::config_fix(
                    format!("invalid rule '{sql}': {e}"),
                    "write a SQL boolean expression over the synthetic table's columns",
                )
            })?;
            Some(
                ctx.create_physical_expr(expr, &df_schema)
                    .map_err(|e| KilnError::config(format!("invalid rule '{sql}': {e}")))?,
            )
        }
        None => None,
    };
    let mut summary = FilterSummary {
        rule: params.rule.clone(),
        min_distance: params.min_distance,
        ..FilterSummary::default()
    };
    for r in &reasons {
        match r {
            Reason::OutOfBounds => summary.dropped_out_of_bounds += 1,
            Reason::TooClose => summary.dropped_too_close += 1,
            _ => {}
        }
    }
    // Partitions in order, as the evaluation read them, so row i here is
    // row i of `reasons`; kept rows stream to the writer.
    let streams = synthetic
        .execute_stream_partitioned()
        .await
        .map_err(|e| KilnError::execution("reading the synthetic table", e))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(4);
    let expected = reasons.len();
    let producer = tokio::spawn(async move {
        let (mut at, mut kept_rows, mut by_rule) = (0usize, 0u64, 0u64);
        for mut stream in streams {
            while let Some(batch) = stream.next().await {
                let batch = match batch {
                    Ok(b) => b,
                    Err(e) => {
                        let _unsent = tx
                            .send(Err(KilnError::execution("reading the synthetic table", e)))
                            .await;
                        return Err(KilnError::io("the synthetic table", "reading failed"));
                    }
                };
                let n = batch.num_rows();
                let rule_mask: Option<BooleanArray> = match &rule {
                    Some(expr) => {
                        let v = expr
                            .evaluate(&batch)
                            .and_then(|v| v.into_array(n))
                            .map_err(|e| KilnError::execution("evaluating the rule", e))?;
                        Some(
                            v.as_any()
                                .downcast_ref::<BooleanArray>()
                                .cloned()
                                .ok_or_else(|| {
                                    KilnError::config("the rule is not a boolean expression")
                                })?,
                        )
                    }
                    None => None,
                };
                let keep: BooleanArray = (0..n)
                    .map(|i| {
                        if reasons.get(at + i).copied().unwrap_or(Reason::Kept) != Reason::Kept {
                            return Some(false);
                        }
                        if let Some(m) = &rule_mask
                            && !(m.is_valid(i) && m.value(i))
                        {
                            by_rule += 1;
                            return Some(false);
                        }
                        Some(true)
                    })
                    .collect();
                at += n;
                let kept = filter_record_batch(&batch, &keep)
                    .map_err(|e| KilnError::internal("filtering rows", e))?;
                kept_rows += kept.num_rows() as u64;
                if kept.num_rows() > 0 && tx.send(Ok(kept)).await.is_err() {
                    return Err(KilnError::io("the filtered output", "the writer stopped"));
                }
            }
        }
        Ok((at, kept_rows, by_rule))
    });
    let stream = kiln_engine::io::receiver_stream(rx);
    let written = write_streams(
        session,
        schema,
        vec![stream],
        target,
        format,
        &ParquetWriteOptions::default(),
    )
    .await;
    let (at, kept_rows, by_rule) = producer
        .await
        .map_err(|e| KilnError::internal("filtering rows", e))??;
    written?;
    if at != expected {
        return Err(KilnError::data_fix(
            "the synthetic table",
            format!("it changed while it was evaluated ({expected} rows, then {at})"),
            "filter a table that is not being written",
        ));
    }
    summary.rows_in = at as u64;
    summary.rows_kept = kept_rows;
    summary.dropped_by_rule = by_rule;
    Ok(summary)
}
