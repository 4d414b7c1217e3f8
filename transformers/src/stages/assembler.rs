//! `VectorAssembler`: numeric, boolean and vector (list) columns into one
//! `List<Float64>` feature vector, Spark semantics: booleans → 1.0/0.0,
//! ints and floats widened to double, `-0.0` → `0.0`; `handleInvalid`
//! `error` fails on null (any column) or NaN in a scalar column, `skip`
//! drops such rows, `keep` writes NaN (a null vector → `size` NaNs). NaN
//! inside a vector is kept in every mode.

use super::{HandleInvalid, column_type, require, require_columns};
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::dataframe::DataFrame;
use datafusion::functions::math::expr_fn::isnan;
use datafusion::functions_aggregate::expr_fn::max;
use datafusion::functions_nested::expr_fn::{array_element, array_length, make_array};
use datafusion::prelude::{Expr, cast, ident, lit, when};
use kiln_engine::{KilnError, Result};
use serde::{Deserialize, Serialize};
use std::ops::Not;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AssemblerParams {
    pub input_cols: Vec<String>,
    #[serde(default = "features")]
    pub output_col: String,
    #[serde(default)]
    pub handle_invalid: HandleInvalid,
}

fn features() -> String {
    "features".into()
}

/// One input: a scalar, or a vector of a learned size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AssemblerInput {
    pub name: String,
    /// `None` for scalars.
    pub vector_size: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AssemblerModel {
    pub inputs: Vec<AssemblerInput>,
    pub output_col: String,
    pub handle_invalid: HandleInvalid,
}

fn is_list(t: &DataType) -> bool {
    matches!(
        t,
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(_, _)
    )
}

impl AssemblerParams {
    /// Learns vector sizes (the longest vector of each list column).
    pub async fn fit(
        &self,
        df: &DataFrame,
        known_sizes: &std::collections::HashMap<String, usize>,
    ) -> Result<AssemblerModel> {
        let stage = "VectorAssembler";
        require_columns(df, stage, &self.input_cols)?;
        let mut inputs = Vec::new();
        for c in &self.input_cols {
            let t = column_type(df, c)?;
            if is_list(&t) {
                let size = match known_sizes.get(c) {
                    Some(s) => *s,
                    None => {
                        let err = |e| KilnError::execution("fitting VectorAssembler", e);
                        let b = df
                            .clone()
                            .aggregate(
                                vec![],
                                vec![max(cast(array_length(ident(c)), DataType::Int64)).alias("m")],
                            )
                            .map_err(err)?
                            .collect()
                            .await
                            .map_err(err)?;
                        b.first()
                            .map(|b| b.column(0).as_primitive::<Int64Type>())
                            .filter(|a| a.is_valid(0))
                            .map(|a| a.value(0) as usize)
                            .unwrap_or(0)
                    }
                };
                inputs.push(AssemblerInput {
                    name: c.clone(),
                    vector_size: Some(size),
                });
            } else if t.is_numeric() || t == DataType::Boolean {
                inputs.push(AssemblerInput {
                    name: c.clone(),
                    vector_size: None,
                });
            } else {
                return Err(KilnError::Data {
                    location: format!("stage {stage}"),
                    message: format!(
                        "column '{c}' has type {t}; VectorAssembler takes numeric, boolean or vector columns"
                    ),
                    fix: Some(
                        "index strings first (StringIndexer) or drop the column from inputCols"
                            .into(),
                    ),
                });
            }
        }
        Ok(AssemblerModel {
            inputs,
            output_col: self.output_col.clone(),
            handle_invalid: self.handle_invalid,
        })
    }
}

impl AssemblerModel {
    pub fn size(&self) -> usize {
        self.inputs.iter().map(|i| i.vector_size.unwrap_or(1)).sum()
    }

    pub fn transform(&self, df: DataFrame) -> Result<DataFrame> {
        let stage = "VectorAssembler";
        let names: Vec<String> = self.inputs.iter().map(|i| i.name.clone()).collect();
        require_columns(&df, stage, &names)?;
        let err = |e| KilnError::execution(stage, e);
        let mut values: Vec<Expr> = Vec::new();
        let mut valid = lit(true);
        for input in &self.inputs {
            let c = ident(&input.name);
            match input.vector_size {
                None => {
                    let x = cast(c.clone(), DataType::Float64);
                    valid = valid
                        .and(c.clone().is_not_null())
                        .and(isnan(x.clone()).not());
                    values.push(
                        when(c.is_null(), lit(f64::NAN))
                            .otherwise(x + lit(0.0))
                            .map_err(err)?,
                    );
                }
                Some(size) => {
                    valid = valid.and(c.clone().is_not_null());
                    for k in 0..size {
                        let e = cast(
                            array_element(c.clone(), lit(k as i64 + 1)),
                            DataType::Float64,
                        );
                        values.push(
                            when(e.clone().is_null(), lit(f64::NAN))
                                .otherwise(e + lit(0.0))
                                .map_err(err)?,
                        );
                    }
                }
            }
        }
        let vector = make_array(values);
        let df = match self.handle_invalid {
            HandleInvalid::Skip => df.filter(valid.clone()).map_err(err)?,
            _ => df,
        };
        let vector = if self.handle_invalid == HandleInvalid::Error {
            require(
                vector,
                valid,
                format!(
                    "{stage}: encountered null or NaN while assembling a row with handleInvalid = error. Consider handleInvalid skip or keep."
                ),
            )
        } else {
            vector
        };
        df.with_column(&self.output_col, vector).map_err(err)
    }
}

impl crate::stages::Stage for AssemblerParams {
    type Fitted = AssemblerModel;

    async fn fit(&self, df: &DataFrame, sizes: &mut crate::stages::Sizes) -> Result<Self::Fitted> {
        let m = AssemblerParams::fit(self, df, sizes).await?;
        sizes.insert(m.output_col.clone(), m.size());
        Ok(m)
    }
}

crate::stages::transform_by_expressions!(AssemblerModel);
