//! `DistanceCalculator` (haversine metres between two lat/lon pairs) and
//! `GpsDelayCalculator` (seconds between the sample and its GPS fix).

use super::{require_columns, require_numeric};
use datafusion::arrow::datatypes::DataType;
use datafusion::dataframe::DataFrame;
use datafusion::prelude::{cast, ident, lit};
use kiln_engine::{KilnError, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DistanceParams {
    pub lat_col: String,
    pub lon_col: String,
    pub prev_lat_col: String,
    pub prev_lon_col: String,
    #[serde(default = "distance_out")]
    pub output_col: String,
}

fn distance_out() -> String {
    "distance_m".into()
}

impl DistanceParams {
    pub fn transform(&self, df: DataFrame) -> Result<DataFrame> {
        let cols = [
            &self.lat_col,
            &self.lon_col,
            &self.prev_lat_col,
            &self.prev_lon_col,
        ];
        require_columns(
            &df,
            "DistanceCalculator",
            &cols.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
        )?;
        for c in cols {
            require_numeric(&df, "DistanceCalculator", c)?;
        }
        let args = [
            &self.prev_lat_col,
            &self.prev_lon_col,
            &self.lat_col,
            &self.lon_col,
        ]
        .iter()
        .map(|c| cast(ident(*c), DataType::Float64))
        .collect();
        df.with_column(&self.output_col, crate::udf::haversine_udf().call(args))
            .map_err(|e| KilnError::execution("DistanceCalculator", e))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GpsDelayParams {
    #[serde(default = "ts")]
    pub timestamp_col: String,
    #[serde(default = "fix_ts")]
    pub fix_timestamp_col: String,
    #[serde(default = "delay_out")]
    pub output_col: String,
}

fn ts() -> String {
    "ts".into()
}
fn fix_ts() -> String {
    "gps_fix_ts".into()
}
fn delay_out() -> String {
    "gps_delay_s".into()
}

/// Milliseconds since the epoch of a timestamp column, whatever its unit.
pub(crate) fn epoch_millis(
    df: &DataFrame,
    stage: &str,
    c: &str,
) -> Result<datafusion::prelude::Expr> {
    use datafusion::arrow::datatypes::TimeUnit;
    match super::column_type(df, c)? {
        DataType::Timestamp(unit, _) => {
            let raw = cast(ident(c), DataType::Int64);
            Ok(match unit {
                TimeUnit::Second => raw * lit(1000i64),
                TimeUnit::Millisecond => raw,
                TimeUnit::Microsecond => raw / lit(1000i64),
                TimeUnit::Nanosecond => raw / lit(1_000_000i64),
            })
        }
        t => Err(KilnError::Data {
            location: format!("stage {stage}"),
            message: format!("column '{c}' has type {t}, but {stage} needs a timestamp"),
            fix: None,
        }),
    }
}

impl GpsDelayParams {
    pub fn transform(&self, df: DataFrame) -> Result<DataFrame> {
        let stage = "GpsDelayCalculator";
        require_columns(
            &df,
            stage,
            &[self.timestamp_col.clone(), self.fix_timestamp_col.clone()],
        )?;
        let delay = cast(
            epoch_millis(&df, stage, &self.timestamp_col)?
                - epoch_millis(&df, stage, &self.fix_timestamp_col)?,
            DataType::Float64,
        ) / lit(1000.0);
        df.with_column(&self.output_col, delay)
            .map_err(|e| KilnError::execution(stage, e))
    }
}

crate::stages::stateless_stage!(DistanceParams, GpsDelayParams);
crate::stages::transform_by_expressions!(DistanceParams, GpsDelayParams);
