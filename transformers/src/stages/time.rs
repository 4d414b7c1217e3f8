//! `WeekendExtractor` and `TimeExtractor`: calendar fields of a timestamp
//! in a configurable time zone (Spark's session-time-zone semantics:
//! `dayofweek` 1 = Sunday ... 7 = Saturday; weekend = Saturday or Sunday).

use super::require_columns;
use datafusion::arrow::datatypes::DataType;
use datafusion::dataframe::DataFrame;
use datafusion::functions::datetime::expr_fn::date_part;
use datafusion::prelude::{Expr, cast, ident, lit};
use kiln_engine::{KilnError, Result};
use serde::{Deserialize, Serialize};

fn ts() -> String {
    "ts".into()
}
fn utc() -> String {
    "UTC".into()
}

/// The timestamp column re-labelled to `tz`, so calendar fields are local.
fn local(df: &DataFrame, stage: &str, c: &str, tz: &str) -> Result<Expr> {
    match super::column_type(df, c)? {
        DataType::Timestamp(unit, _) => {
            tz.parse::<datafusion::arrow::array::timezone::Tz>()
                .map_err(|e| {
                    KilnError::config_fix(
                        format!("{stage}: unknown time zone '{tz}': {e}"),
                        "use an IANA name such as Europe/Berlin, or UTC",
                    )
                })?;
            Ok(cast(ident(c), DataType::Timestamp(unit, Some(tz.into()))))
        }
        t => Err(KilnError::Data {
            location: format!("stage {stage}"),
            message: format!("column '{c}' has type {t}, but {stage} needs a timestamp"),
            fix: None,
        }),
    }
}

fn part(name: &str, e: Expr) -> Expr {
    date_part(lit(name), e)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WeekendParams {
    #[serde(default = "ts")]
    pub input_col: String,
    #[serde(default = "weekend_out")]
    pub output_col: String,
    #[serde(default = "utc")]
    pub time_zone: String,
}

fn weekend_out() -> String {
    "is_weekend".into()
}

impl WeekendParams {
    pub fn transform(&self, df: DataFrame) -> Result<DataFrame> {
        require_columns(
            &df,
            "WeekendExtractor",
            std::slice::from_ref(&self.input_col),
        )?;
        let dow = part(
            "dow",
            local(&df, "WeekendExtractor", &self.input_col, &self.time_zone)?,
        );
        df.with_column(&self.output_col, dow.clone().eq(lit(0)).or(dow.eq(lit(6))))
            .map_err(|e| KilnError::execution("WeekendExtractor", e))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TimeParams {
    #[serde(default = "ts")]
    pub input_col: String,
    #[serde(default = "utc")]
    pub time_zone: String,
    #[serde(default = "hour_out")]
    pub hour_col: Option<String>,
    #[serde(default)]
    pub minute_col: Option<String>,
    /// Spark's dayofweek: 1 = Sunday ... 7 = Saturday.
    #[serde(default)]
    pub day_of_week_col: Option<String>,
    #[serde(default)]
    pub day_of_month_col: Option<String>,
    #[serde(default)]
    pub month_col: Option<String>,
}

fn hour_out() -> Option<String> {
    Some("hour".into())
}

impl TimeParams {
    pub fn transform(&self, df: DataFrame) -> Result<DataFrame> {
        require_columns(&df, "TimeExtractor", std::slice::from_ref(&self.input_col))?;
        let t = local(&df, "TimeExtractor", &self.input_col, &self.time_zone)?;
        let mut exprs: Vec<Expr> = super::all_columns(&df);
        let fields = [
            (&self.hour_col, part("hour", t.clone())),
            (&self.minute_col, part("minute", t.clone())),
            (&self.day_of_week_col, part("dow", t.clone()) + lit(1)),
            (&self.day_of_month_col, part("day", t.clone())),
            (&self.month_col, part("month", t)),
        ];
        for (name, e) in fields {
            if let Some(n) = name {
                exprs.push(cast(e, DataType::Int32).alias(n));
            }
        }
        df.select(exprs)
            .map_err(|e| KilnError::execution("TimeExtractor", e))
    }
}

crate::stages::stateless_stage!(WeekendParams, TimeParams);
crate::stages::transform_by_expressions!(WeekendParams, TimeParams);
