//! `CategoricalFilter`: keep whitelisted values, map everything else (null
//! and the empty string included) to a replacement such as `other`.

use super::require_columns;
use datafusion::dataframe::DataFrame;
use datafusion::prelude::{ident, lit, when};
use kiln_engine::{KilnError, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterColumn {
    pub input_col: String,
    /// Defaults to replacing the input column.
    #[serde(default)]
    pub output_col: Option<String>,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CategoricalFilterParams {
    pub columns: Vec<FilterColumn>,
    #[serde(default = "other")]
    pub replacement: String,
}

fn other() -> String {
    "other".into()
}

impl CategoricalFilterParams {
    pub fn transform(&self, mut df: DataFrame) -> Result<DataFrame> {
        let stage = "CategoricalFilter";
        for c in &self.columns {
            require_columns(&df, stage, std::slice::from_ref(&c.input_col))?;
            let x = datafusion::prelude::cast(
                ident(&c.input_col),
                datafusion::arrow::datatypes::DataType::Utf8,
            );
            let listed = x
                .clone()
                .in_list(c.values.iter().map(|v| lit(v.as_str())).collect(), false);
            let e = when(listed, x)
                .otherwise(lit(self.replacement.as_str()))
                .map_err(|e| KilnError::execution(stage, e))?;
            let out = c.output_col.clone().unwrap_or_else(|| c.input_col.clone());
            df = df
                .with_column(&out, e)
                .map_err(|e| KilnError::execution(stage, e))?;
        }
        Ok(df)
    }
}

crate::stages::stateless_stage!(CategoricalFilterParams);
crate::stages::transform_by_expressions!(CategoricalFilterParams);
