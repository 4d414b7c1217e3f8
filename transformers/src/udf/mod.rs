//! kiln's scalar UDFs, one per file.

mod haversine;
mod require;

pub use haversine::{EARTH_RADIUS_M, haversine_m, haversine_udf};
pub use require::require_udf;

/// Every transformer UDF, for installation on all kiln processes.
pub fn all() -> Vec<datafusion::logical_expr::ScalarUDF> {
    vec![haversine_udf(), require_udf()]
}
