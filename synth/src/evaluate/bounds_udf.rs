//! `kiln_in_bounds(config, column, …)`: whether each synthetic row stays
//! within the real table's boundaries: numbers (datetimes as microseconds)
//! inside the real range, discrete values among the real ones, and missing
//! values only in columns where the real table has them.

use super::bounds::{Bounds, ColumnBound};
use crate::frame::{append_numbers, text_values};
use arrow::array::{Array, ArrayRef, AsArray, BooleanArray};
use arrow::datatypes::DataType;
use kiln_engine::Result;
use kiln_engine::config_udf::ConfigFunction;
use std::collections::HashSet;
use std::sync::Arc;

/// `kiln_in_bounds`.
pub struct InBounds;

impl ConfigFunction for InBounds {
    const NAME: &'static str = "kiln_in_bounds";
    const RETURNS: DataType = DataType::Boolean;
    type Config = Bounds;

    fn run(bounds: &Bounds, columns: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
        let mut ok = vec![true; rows];
        for ((bound, array), name) in bounds.columns.iter().zip(columns).zip(&bounds.names) {
            match bound {
                ColumnBound::Range { lo, hi, nullable } => {
                    let mut v = Vec::with_capacity(rows);
                    append_numbers(array, &mut v, name, "synthetic")?;
                    for (ok, x) in ok.iter_mut().zip(v) {
                        *ok &= if x.is_nan() {
                            *nullable
                        } else {
                            x >= *lo && x <= *hi
                        };
                    }
                }
                ColumnBound::Values { values, nullable } => {
                    let known: HashSet<&str> = values.iter().map(String::as_str).collect();
                    let text = text_values(array, name, "synthetic")?;
                    let text = text.as_string::<i32>();
                    for (r, ok) in ok.iter_mut().enumerate() {
                        *ok &= if text.is_null(r) {
                            *nullable
                        } else {
                            known.contains(text.value(r))
                        };
                    }
                }
                ColumnBound::Any => {}
            }
        }
        Ok(Arc::new(BooleanArray::from(ok)))
    }
}
