//! `MedianImputer` / `NumericalImputer`: Spark `Imputer` semantics.
//!
//! * Fit: null, NaN and `missingValue` are missing; the surrogate per column
//!   is the mean, the median or the mode (ties → smallest) of the rest.
//! * Transform: null and values equal to `missingValue` are replaced (with
//!   the default `missingValue = NaN` that covers NaN; with another sentinel
//!   NaN passes through, as in Spark). The surrogate is cast to the column
//!   type (an int column gets the truncated mean).
//! * The median is **exact** (the mean of the two middle values for an even
//!   count). Spark uses `approxQuantile(0.5, relativeError = 0.001)`, which
//!   returns a data value (the lower middle one); the two can differ by up to
//!   half the gap between the middle values.

use super::{column_type, require_columns, require_numeric};
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::dataframe::DataFrame;
use datafusion::functions::math::expr_fn::isnan;
use datafusion::functions_aggregate::expr_fn::{avg, count, median};
use datafusion::logical_expr::ExprFunctionExt;
use datafusion::prelude::{Expr, cast, ident, lit, when};
use kiln_engine::{KilnError, Result};
use serde::{Deserialize, Serialize};
use std::ops::Not;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    #[default]
    Mean,
    Median,
    Mode,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImputerParams {
    pub input_cols: Vec<String>,
    /// Defaults to replacing the input columns.
    #[serde(default)]
    pub output_cols: Option<Vec<String>>,
    #[serde(default)]
    pub strategy: Option<Strategy>,
    /// The value that marks a missing entry besides null (NaN by default).
    #[serde(default, with = "crate::float_serde::option")]
    #[schemars(with = "Option<crate::float_serde::Float>")]
    pub missing_value: Option<f64>,
    /// Accepted for Spark compatibility; the median here is exact.
    #[serde(default)]
    pub relative_error: Option<f64>,
}

/// Fitted imputer: one surrogate per column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ImputerModel {
    pub input_cols: Vec<String>,
    pub output_cols: Vec<String>,
    #[serde(default, with = "crate::float_serde::option")]
    #[schemars(with = "Option<crate::float_serde::Float>")]
    pub missing_value: Option<f64>,
    #[serde(with = "crate::float_serde::vec")]
    #[schemars(with = "Vec<crate::float_serde::Float>")]
    pub surrogates: Vec<f64>,
}

fn is_missing_for_fit(x: Expr, missing: Option<f64>) -> Expr {
    let mut m = x.clone().is_null().or(isnan(x.clone()));
    if let Some(v) = missing {
        m = m.or(x.eq(lit(v)));
    }
    m
}

impl ImputerParams {
    pub async fn fit(
        &self,
        df: &DataFrame,
        stage: &str,
        default_strategy: Strategy,
    ) -> Result<ImputerModel> {
        require_columns(df, stage, &self.input_cols)?;
        for c in &self.input_cols {
            require_numeric(df, stage, c)?;
        }
        let output_cols = self
            .output_cols
            .clone()
            .unwrap_or_else(|| self.input_cols.clone());
        if output_cols.len() != self.input_cols.len() {
            return Err(KilnError::config(format!(
                "{stage}: outputCols needs one name per input column"
            )));
        }
        let strategy = self.strategy.unwrap_or(default_strategy);
        let mv = self.missing_value.filter(|v| !v.is_nan());
        let mut surrogates = Vec::new();
        let valid = |c: &str| is_missing_for_fit(cast(ident(c), DataType::Float64), mv).not();
        let err = |e| KilnError::execution(format!("fitting {stage}"), e);
        match strategy {
            Strategy::Mean | Strategy::Median => {
                let aggs: Vec<Expr> = self
                    .input_cols
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let x = cast(ident(c), DataType::Float64);
                        let f = if strategy == Strategy::Mean {
                            avg(x)
                        } else {
                            median(x)
                        };
                        f.filter(valid(c)).build().map(|e| e.alias(format!("s{i}")))
                    })
                    .collect::<datafusion::error::Result<_>>()
                    .map_err(err)?;
                let batches = df
                    .clone()
                    .aggregate(vec![], aggs)
                    .map_err(err)?
                    .collect()
                    .await
                    .map_err(err)?;
                let batch = batches
                    .first()
                    .ok_or_else(|| KilnError::data(stage, "no result"))?;
                for (i, c) in self.input_cols.iter().enumerate() {
                    let a = cast_f64(batch.column(i))?;
                    let v = a.as_primitive::<Float64Type>();
                    surrogates.push(if v.is_null(0) {
                        self.all_missing(stage, c)?
                    } else {
                        v.value(0)
                    });
                }
            }
            Strategy::Mode => {
                for c in &self.input_cols {
                    let x = cast(ident(c), DataType::Float64);
                    let batches = df
                        .clone()
                        .filter(valid(c))
                        .and_then(|d| {
                            d.aggregate(vec![x.clone().alias("v")], vec![count(lit(1)).alias("n")])
                        })
                        .and_then(|d| {
                            d.sort(vec![
                                ident("n").sort(false, false),
                                ident("v").sort(true, false),
                            ])
                        })
                        .and_then(|d| d.limit(0, Some(1)))
                        .map_err(err)?
                        .collect()
                        .await
                        .map_err(err)?;
                    match batches.iter().find(|b| b.num_rows() > 0) {
                        Some(b) => surrogates.push(
                            cast_f64(b.column(0))?
                                .as_primitive::<Float64Type>()
                                .value(0),
                        ),
                        None => surrogates.push(self.all_missing(stage, c)?),
                    }
                }
            }
        }
        Ok(ImputerModel {
            input_cols: self.input_cols.clone(),
            output_cols,
            missing_value: mv,
            surrogates,
        })
    }

    fn all_missing(&self, stage: &str, c: &str) -> Result<f64> {
        Err(KilnError::Data {
            location: format!("stage {stage}"),
            message: format!(
                "surrogate cannot be computed: all the values in column '{c}' are null, NaN or missingValue({})",
                self.missing_value
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "NaN".into())
            ),
            fix: Some(format!("drop '{c}' from inputCols or fix the data")),
        })
    }
}

fn cast_f64(a: &datafusion::arrow::array::ArrayRef) -> Result<datafusion::arrow::array::ArrayRef> {
    datafusion::arrow::compute::cast(a, &DataType::Float64)
        .map_err(|e| KilnError::data("imputer", e.to_string()))
}

impl ImputerModel {
    pub fn transform(&self, mut df: DataFrame, stage: &str) -> Result<DataFrame> {
        require_columns(&df, stage, &self.input_cols)?;
        for ((c, out), s) in self
            .input_cols
            .iter()
            .zip(&self.output_cols)
            .zip(&self.surrogates)
        {
            let t = column_type(&df, c)?;
            let x = ident(c);
            let missing = match self.missing_value {
                None => x
                    .clone()
                    .is_null()
                    .or(isnan(cast(x.clone(), DataType::Float64))),
                Some(v) => x
                    .clone()
                    .is_null()
                    .or(cast(x.clone(), DataType::Float64).eq(lit(v))),
            };
            let e = when(missing, cast(lit(*s), t))
                .otherwise(x)
                .map_err(|e| KilnError::execution(stage, e))?;
            df = df
                .with_column(out, e)
                .map_err(|e| KilnError::execution(stage, e))?;
        }
        Ok(df)
    }
}

/// `MedianImputer`'s params (strategy median unless given).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct MedianImputerParams(pub ImputerParams);

/// `NumericalImputer`'s (Spark's `Imputer`) params (strategy mean unless given).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct NumericalImputerParams(pub ImputerParams);

/// A fitted `MedianImputer`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct MedianImputerModel(pub ImputerModel);

/// A fitted `NumericalImputer`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct NumericalImputerModel(pub ImputerModel);

impl crate::stages::Stage for MedianImputerParams {
    type Fitted = MedianImputerModel;

    async fn fit(&self, df: &DataFrame, _sizes: &mut crate::stages::Sizes) -> Result<Self::Fitted> {
        Ok(MedianImputerModel(
            self.0.fit(df, "MedianImputer", Strategy::Median).await?,
        ))
    }
}

impl crate::stages::Stage for NumericalImputerParams {
    type Fitted = NumericalImputerModel;

    async fn fit(&self, df: &DataFrame, _sizes: &mut crate::stages::Sizes) -> Result<Self::Fitted> {
        Ok(NumericalImputerModel(
            self.0.fit(df, "NumericalImputer", Strategy::Mean).await?,
        ))
    }
}

impl crate::stages::Transform for MedianImputerModel {
    async fn transform(&self, df: DataFrame) -> Result<DataFrame> {
        self.0.transform(df, "MedianImputer")
    }
}

impl crate::stages::Transform for NumericalImputerModel {
    async fn transform(&self, df: DataFrame) -> Result<DataFrame> {
        self.0.transform(df, "NumericalImputer")
    }
}
