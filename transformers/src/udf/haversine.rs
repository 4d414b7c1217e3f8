//! `kiln_haversine(lat1, lon1, lat2, lon2)`: great-circle distance in metres
//! (earth radius 6 371 000 m, Spark's formula); null if any input is null.

use arrow::array::{Array, ArrayRef, Float64Array};
use arrow::datatypes::DataType;
use datafusion::common::{Result, cast::as_float64_array};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use std::sync::Arc;

pub const EARTH_RADIUS_M: f64 = 6_371_000.0;

/// Haversine distance in metres, the way Spark's SQL expression computes it.
pub fn haversine_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dlat = p2 - p1;
    let dlon = lon2.to_radians() - lon1.to_radians();
    let a = (dlat / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * a.sqrt().asin()
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Haversine {
    signature: Signature,
}

impl Default for Haversine {
    fn default() -> Self {
        Haversine {
            signature: Signature::uniform(4, vec![DataType::Float64], Volatility::Immutable),
        }
    }
}

pub fn haversine_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(Haversine::default())
}

impl ScalarUDFImpl for Haversine {
    fn name(&self) -> &str {
        "kiln_haversine"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let cols: Vec<&Float64Array> = arrays
            .iter()
            .map(|a| as_float64_array(a))
            .collect::<Result<_>>()?;
        let n = cols[0].len();
        let out: Float64Array = (0..n)
            .map(|i| {
                if cols.iter().any(|c| c.is_null(i)) {
                    None
                } else {
                    Some(haversine_m(
                        cols[0].value(i),
                        cols[1].value(i),
                        cols[2].value(i),
                        cols[3].value(i),
                    ))
                }
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_distances() {
        // Hamburg -> Munich is about 612 km.
        let d = haversine_m(53.5511, 9.9937, 48.1372, 11.5755);
        assert!((d - 612_000.0).abs() < 3_000.0, "{d}");
        assert_eq!(haversine_m(1.0, 2.0, 1.0, 2.0), 0.0);
        // Across the antimeridian and the equator.
        let d = haversine_m(0.0, 179.9, 0.0, -179.9);
        assert!((d - 22_239.0).abs() < 10.0, "{d}");
    }
}
