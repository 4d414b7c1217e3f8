//! `LevelCalculator`: buckets from split points with Spark `Bucketizer`
//! semantics: `[s_i, s_i+1)`, the last bucket closed, `-0.0 < 0.0`, NaN
//! handled by `handleInvalid` (keep → bucket `numBuckets`), null stays null.

use super::{HandleInvalid, require, require_columns, require_numeric};
use datafusion::arrow::datatypes::DataType;
use datafusion::dataframe::DataFrame;
use datafusion::functions::math::expr_fn::isnan;
use datafusion::functions::string::expr_fn::starts_with;
use datafusion::prelude::{Expr, cast, ident, lit, when};
use kiln_engine::{KilnError, Result};
use serde::{Deserialize, Serialize};
use std::ops::Not;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BucketizerParams {
    pub input_col: String,
    pub output_col: String,
    /// Strictly increasing; use `-.inf` / `.inf` for open ends.
    #[serde(with = "crate::float_serde::vec")]
    #[schemars(with = "Vec<crate::float_serde::Float>")]
    pub splits: Vec<f64>,
    #[serde(default)]
    pub handle_invalid: HandleInvalid,
}

impl BucketizerParams {
    fn check(&self) -> Result<()> {
        if self.splits.len() < 3
            || self
                .splits
                .windows(2)
                .any(|w| w[0].total_cmp(&w[1]).is_ge())
            || self.splits.iter().any(|s| s.is_nan())
        {
            return Err(KilnError::config_fix(
                format!(
                    "LevelCalculator ({}): splits must be at least 3 strictly increasing values, got {:?}",
                    self.input_col, self.splits
                ),
                "e.g. splits: [-.inf, -110, -100, -90, -80, .inf]",
            ));
        }
        Ok(())
    }

    pub fn transform(&self, df: DataFrame) -> Result<DataFrame> {
        let stage = "LevelCalculator";
        self.check()?;
        require_columns(&df, stage, std::slice::from_ref(&self.input_col))?;
        require_numeric(&df, stage, &self.input_col)?;
        let x = cast(ident(&self.input_col), DataType::Float64);
        let n = self.splits.len() - 1;
        let (lo, hi) = (self.splits[0], self.splits[n]);
        let nan = isnan(x.clone());
        let df = if self.handle_invalid == HandleInvalid::Skip {
            df.filter(x.clone().is_not_null().and(nan.clone().not()))
                .map_err(|e| KilnError::execution(stage, e))?
        } else {
            df
        };
        // Comparisons on floats follow IEEE total order in Arrow, like
        // Java's Double.compare in Spark: -0.0 < 0.0.
        let mut case = when(
            x.clone().is_null(),
            lit(datafusion::common::ScalarValue::Float64(None)),
        );
        case = case.when(
            nan.clone(),
            match self.handle_invalid {
                HandleInvalid::Keep => lit(n as f64),
                _ => lit(datafusion::common::ScalarValue::Float64(None)),
            },
        );
        // Arrow compares floats as IEEE (-0.0 == 0.0); Spark's binary search
        // uses Java's total order, where -0.0 < 0.0.
        let negative_zero = x
            .clone()
            .eq(lit(0.0))
            .and(starts_with(cast(x.clone(), DataType::Utf8), lit("-")));
        for (i, s) in self.splits[1..n].iter().enumerate() {
            let below = if *s == 0.0 && s.is_sign_positive() {
                x.clone().lt(lit(*s)).or(negative_zero.clone())
            } else {
                x.clone().lt(lit(*s))
            };
            case = case.when(below, lit(i as f64));
        }
        let bucket: Expr = case
            .otherwise(lit((n - 1) as f64))
            .map_err(|e| KilnError::execution(stage, e))?;
        let in_range = x.clone().gt_eq(lit(lo)).and(x.clone().lt_eq(lit(hi)));
        let mut ok = x.clone().is_null().or(in_range.clone());
        let mut message = format!(
            "{stage} (column '{}'): value {{}} is outside the splits [{lo}, {hi}]; Bucketizer fails on such values under every handleInvalid",
            self.input_col
        );
        if self.handle_invalid == HandleInvalid::Error {
            ok = x.clone().is_null().or(in_range.and(nan.clone().not()));
            message = format!(
                "{stage} (column '{}'): Bucketizer encountered NaN value (or {{}} outside the splits). To handle or skip NaNs, set handleInvalid to keep or skip.",
                self.input_col
            );
        } else {
            ok = ok.or(nan);
        }
        df.with_column(&self.output_col, require(bucket, ok, message))
            .map_err(|e| KilnError::execution(stage, e))
    }
}

crate::stages::stateless_stage!(BucketizerParams);
crate::stages::transform_by_expressions!(BucketizerParams);
