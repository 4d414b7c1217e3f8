//! `LagCalculator` / `LeadCalculator`: the previous / next value of columns
//! within a partition, ordered by a time column (Spark `lag`/`lead` over
//! `PARTITION BY p ORDER BY t ASC NULLS FIRST`).

use super::require_columns;
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::functions_window::expr_fn::{lag, lead};
use datafusion::logical_expr::ExprFunctionExt;
use datafusion::prelude::{Expr, ident};
use kiln_engine::{KilnError, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShiftParams {
    pub input_cols: Vec<String>,
    /// Output names; default `<col>_lag<offset>` / `<col>_lead<offset>`.
    #[serde(default)]
    pub output_cols: Option<Vec<String>>,
    pub partition_col: String,
    pub order_col: String,
    /// Extra order columns breaking ties (e.g. a row id), ascending.
    #[serde(default)]
    pub tie_break_cols: Vec<String>,
    #[serde(default = "one")]
    pub offset: i64,
    /// Value when there is no previous / next row (null by default).
    #[serde(default, with = "crate::float_serde::option")]
    #[schemars(with = "Option<crate::float_serde::Float>")]
    pub default: Option<f64>,
}

fn one() -> i64 {
    1
}

/// `LagCalculator`'s params: the previous value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct LagParams(pub ShiftParams);

/// `LeadCalculator`'s params: the next value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct LeadParams(pub ShiftParams);

crate::stages::stateless_stage!(LagParams, LeadParams);

impl crate::stages::Transform for LagParams {
    async fn transform(&self, df: DataFrame) -> Result<DataFrame> {
        self.0.transform(df, Direction::Lag)
    }
}

impl crate::stages::Transform for LeadParams {
    async fn transform(&self, df: DataFrame) -> Result<DataFrame> {
        self.0.transform(df, Direction::Lead)
    }
}

/// Which direction to shift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Direction {
    Lag,
    Lead,
}

impl ShiftParams {
    pub fn outputs(&self, dir: Direction) -> Vec<String> {
        let suffix = match dir {
            Direction::Lag => "lag",
            Direction::Lead => "lead",
        };
        self.output_cols.clone().unwrap_or_else(|| {
            self.input_cols
                .iter()
                .map(|c| format!("{c}_{suffix}{}", self.offset))
                .collect()
        })
    }

    pub fn transform(&self, df: DataFrame, dir: Direction) -> Result<DataFrame> {
        let stage = match dir {
            Direction::Lag => "LagCalculator",
            Direction::Lead => "LeadCalculator",
        };
        let mut needed = self.input_cols.clone();
        needed.push(self.partition_col.clone());
        needed.push(self.order_col.clone());
        needed.extend(self.tie_break_cols.iter().cloned());
        require_columns(&df, stage, &needed)?;
        let outputs = self.outputs(dir);
        if outputs.len() != self.input_cols.len() {
            return Err(KilnError::config(format!(
                "{stage}: outputCols needs one name per input column"
            )));
        }
        if self.offset < 1 {
            return Err(KilnError::config(format!("{stage}: offset must be >= 1")));
        }
        let mut order = vec![ident(&self.order_col).sort(true, true)];
        order.extend(
            self.tie_break_cols
                .iter()
                .map(|c| ident(c).sort(true, true)),
        );
        let mut exprs: Vec<Expr> = super::all_columns(&df);
        for (input, output) in self.input_cols.iter().zip(&outputs) {
            let default = match (self.default, super::column_type(&df, input)?) {
                (Some(d), t) => Some(ScalarValue::Float64(Some(d)).cast_to(&t).map_err(|e| {
                    KilnError::config(format!("{stage}: default for '{input}': {e}"))
                })?),
                (None, _) => None,
            };
            let f = match dir {
                Direction::Lag => lag(ident(input), Some(self.offset), default),
                Direction::Lead => lead(ident(input), Some(self.offset), default),
            };
            let w = f
                .partition_by(vec![ident(&self.partition_col)])
                .order_by(order.clone())
                .build()
                .map_err(|e| KilnError::execution(stage, e))?;
            exprs.push(w.alias(output));
        }
        df.select(exprs).map_err(|e| KilnError::execution(stage, e))
    }
}
