//! `OneHotEncoder` with Spark semantics.
//!
//! Output representation: a dense `List<Float64>` column per input, the same
//! values as Spark's vector (Spark returns a SparseVector; the golden files
//! and `VectorAssembler` here use dense lists because category counts in
//! tabular pipelines are small and dense lists are plain Arrow that Parquet,
//! pandas and Spark's `array_to_vector` all read).
//!
//! Vector length: `keep` + `dropLast=false` → size+1 (last slot = invalid);
//! `keep` + `dropLast=true` → size (invalid → all zeros); `error` +
//! `dropLast=true` → size-1 (last category → all zeros); `error` +
//! `dropLast=false` → size. A null index gives a null vector. Invalid: an
//! index ≥ size, negative, or NaN.

use super::{HandleInvalid, require, require_columns, require_numeric};
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type};
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::functions::math::expr_fn::isnan;
use datafusion::functions_aggregate::expr_fn::max;
use datafusion::functions_nested::expr_fn::make_array;
use datafusion::prelude::{Expr, cast, ident, lit, when};
use kiln_engine::{KilnError, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::ops::Not;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OneHotParams {
    pub input_cols: Vec<String>,
    #[serde(default)]
    pub output_cols: Option<Vec<String>>,
    #[serde(default = "yes")]
    pub drop_last: bool,
    #[serde(default)]
    pub handle_invalid: HandleInvalid,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OneHotModel {
    pub input_cols: Vec<String>,
    pub output_cols: Vec<String>,
    pub category_sizes: Vec<usize>,
    pub drop_last: bool,
    pub handle_invalid: HandleInvalid,
}

impl OneHotParams {
    /// `known_sizes` carries sizes from an upstream StringIndexer in the
    /// same pipeline (Spark's ML attribute metadata).
    pub async fn fit(
        &self,
        df: &DataFrame,
        known_sizes: &HashMap<String, usize>,
    ) -> Result<OneHotModel> {
        let stage = "OneHotEncoder";
        if self.handle_invalid == HandleInvalid::Skip {
            return Err(KilnError::config(
                "OneHotEncoder: handleInvalid must be error or keep",
            ));
        }
        require_columns(df, stage, &self.input_cols)?;
        let output_cols = self
            .output_cols
            .clone()
            .unwrap_or_else(|| self.input_cols.iter().map(|c| format!("{c}_vec")).collect());
        if output_cols.len() != self.input_cols.len() {
            return Err(KilnError::config(
                "OneHotEncoder: outputCols needs one name per input column",
            ));
        }
        let mut category_sizes = Vec::new();
        let err = |e| KilnError::execution("fitting OneHotEncoder", e);
        for c in &self.input_cols {
            require_numeric(df, stage, c)?;
            if let Some(n) = known_sizes.get(c) {
                category_sizes.push(*n);
                continue;
            }
            let x = cast(ident(c), DataType::Float64);
            let batches = df
                .clone()
                .filter(x.clone().is_not_null().and(isnan(x.clone()).not()))
                .and_then(|d| d.aggregate(vec![], vec![max(x).alias("m")]))
                .map_err(err)?
                .collect()
                .await
                .map_err(err)?;
            let m = batches
                .first()
                .map(|b| b.column(0).as_primitive::<Float64Type>())
                .filter(|a| a.is_valid(0))
                .map(|a| a.value(0));
            match m {
                Some(m) if m >= 0.0 => category_sizes.push(m as usize + 1),
                _ => {
                    return Err(KilnError::Data {
                        location: format!("stage {stage}"),
                        message: format!(
                            "column '{c}' has no valid category index to size the encoding"
                        ),
                        fix: None,
                    });
                }
            }
        }
        Ok(OneHotModel {
            input_cols: self.input_cols.clone(),
            output_cols,
            category_sizes,
            drop_last: self.drop_last,
            handle_invalid: self.handle_invalid,
        })
    }
}

impl OneHotModel {
    pub fn vector_sizes(&self) -> Vec<usize> {
        self.category_sizes
            .iter()
            .map(|s| match (self.handle_invalid, self.drop_last) {
                (HandleInvalid::Keep, false) => s + 1,
                (HandleInvalid::Keep, true) => *s,
                (_, true) => s.saturating_sub(1),
                (_, false) => *s,
            })
            .collect()
    }

    pub fn transform(&self, mut df: DataFrame) -> Result<DataFrame> {
        let stage = "OneHotEncoder";
        require_columns(&df, stage, &self.input_cols)?;
        let err = |e| KilnError::execution(stage, e);
        let null_list = ScalarValue::try_from(&DataType::List(Arc::new(Field::new_list_field(
            DataType::Float64,
            true,
        ))))
        .map_err(err)?;
        for ((c, out), (size, len)) in self
            .input_cols
            .iter()
            .zip(&self.output_cols)
            .zip(self.category_sizes.iter().zip(self.vector_sizes()))
        {
            let x = cast(ident(c), DataType::Float64);
            let invalid = isnan(x.clone())
                .or(x.clone().lt(lit(0.0)))
                .or(x.clone().gt_eq(lit(*size as f64)));
            let slots: Vec<Expr> = (0..len)
                .map(|k| {
                    let hit = if self.handle_invalid == HandleInvalid::Keep
                        && !self.drop_last
                        && k == *size
                    {
                        invalid.clone()
                    } else {
                        x.clone().eq(lit(k as f64))
                    };
                    when(hit, lit(1.0)).otherwise(lit(0.0))
                })
                .collect::<datafusion::error::Result<_>>()
                .map_err(err)?;
            let vector = when(x.clone().is_null(), lit(null_list.clone()))
                .otherwise(make_array(slots))
                .map_err(err)?;
            let vector = if self.handle_invalid == HandleInvalid::Error {
                require(
                    vector,
                    x.clone().is_null().or(invalid.not()),
                    format!(
                        "{stage} (column '{c}'): invalid category index (unseen, negative or NaN) in a row; categories are 0..{size}. To handle invalid values, set handleInvalid to keep."
                    ),
                )
            } else {
                vector
            };
            df = df.with_column(out, vector).map_err(err)?;
        }
        Ok(df)
    }
}

impl crate::stages::Stage for OneHotParams {
    type Fitted = OneHotModel;

    async fn fit(&self, df: &DataFrame, sizes: &mut crate::stages::Sizes) -> Result<Self::Fitted> {
        let m = OneHotParams::fit(self, df, sizes).await?;
        for (c, n) in m.output_cols.iter().zip(m.vector_sizes()) {
            sizes.insert(c.clone(), n);
        }
        Ok(m)
    }
}

crate::stages::transform_by_expressions!(OneHotModel);
