//! `kiln_in_bounds(config, column, …)`: whether each synthetic row stays
//! within the real table's boundaries: numbers (datetimes as microseconds)
//! inside the real range, discrete values among the real ones, and missing
//! values only in columns where the real table has them.

use super::Loaded;
use crate::frame::{NULL_CODE, Values, append_numbers, text_values};
use arrow::array::{Array, ArrayRef, AsArray, BooleanArray};
use arrow::datatypes::DataType;
use kiln_engine::config_udf::ConfigFunction;
use kiln_engine::Result;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::Arc;

/// The boundary of one column.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ColumnBound {
    /// Within [lo, hi]; missing only when `nullable`.
    Range { lo: f64, hi: f64, nullable: bool },
    /// One of `values`; missing only when `nullable`.
    Values { values: Vec<String>, nullable: bool },
    /// Anything (keys).
    Any,
}

/// The boundaries of every evaluated column, in the metadata's order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bounds {
    pub names: Vec<String>,
    pub columns: Vec<ColumnBound>,
}

impl Bounds {
    /// The boundaries the real rows read for the evaluation show.
    pub fn of(loaded: &Loaded) -> Bounds {
        let real = loaded.view(&loaded.real);
        let columns = (0..real.names.len())
            .map(|c| match &real.columns[c] {
                Values::Numbers(r) => {
                    let (lo, hi) = r
                        .iter()
                        .filter(|v| !v.is_nan())
                        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| {
                            (l.min(v), h.max(v))
                        });
                    ColumnBound::Range {
                        lo,
                        hi,
                        nullable: r.iter().any(|v| v.is_nan()),
                    }
                }
                Values::Codes(_) if real.types[c] == crate::frame::SdType::Id => ColumnBound::Any,
                Values::Codes(r) => {
                    let known: HashSet<u32> = r.iter().copied().collect();
                    let mut values: Vec<String> = known
                        .iter()
                        .filter(|&&k| k != NULL_CODE)
                        .map(|&k| loaded.dictionaries[c].values[k as usize].clone())
                        .collect();
                    values.sort_unstable();
                    ColumnBound::Values {
                        values,
                        nullable: known.contains(&NULL_CODE),
                    }
                }
            })
            .collect();
        Bounds {
            names: real.names.to_vec(),
            columns,
        }
    }
}

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
