//! The real table's boundaries, which filtered synthetic rows must keep:
//! each numeric or datetime column's range (datetimes as microseconds),
//! each discrete column's values, and whether a column has missing values.
//! Measured over every real row by [`BoundsPass`] (a mergeable aggregate,
//! on the executors of a cluster), not over the rows read for the report,
//! which may be a sample.

use super::Loaded;
use crate::frame::{SdType, append_numbers, text_values};
use arrow::array::{Array, ArrayRef, AsArray};
use datafusion::dataframe::DataFrame;
use kiln_engine::Result;
use kiln_engine::table_pass::{self, TablePass};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// The boundary of one column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ColumnBound {
    /// Within [lo, hi] (empty while lo > hi); missing only when `nullable`.
    Range { lo: f64, hi: f64, nullable: bool },
    /// One of `values`; missing only when `nullable`.
    Values {
        values: BTreeSet<String>,
        nullable: bool,
    },
    /// Anything (keys).
    Any,
}

/// The boundaries of every evaluated column, in the metadata's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bounds {
    pub names: Vec<String>,
    pub columns: Vec<ColumnBound>,
}

impl Bounds {
    /// The boundaries of no rows, for the columns of `loaded`.
    fn empty(loaded: &Loaded) -> Bounds {
        Bounds {
            names: loaded.names.clone(),
            columns: loaded
                .types
                .iter()
                .map(|t| match t {
                    SdType::Id => ColumnBound::Any,
                    t if t.is_continuous() => ColumnBound::Range {
                        lo: f64::INFINITY,
                        hi: f64::NEG_INFINITY,
                        nullable: false,
                    },
                    _ => ColumnBound::Values {
                        values: BTreeSet::new(),
                        nullable: false,
                    },
                })
                .collect(),
        }
    }

    /// The boundaries of every row of `real`.
    pub async fn measure(real: DataFrame, loaded: &Loaded) -> Result<Bounds> {
        let names: Vec<&str> = loaded.names.iter().map(String::as_str).collect();
        table_pass::run::<BoundsPass>(real, &Bounds::empty(loaded), &names, None).await
    }
}

/// [`Bounds`] as a [`TablePass`]: `kiln_real_bounds`. The configuration is
/// the empty boundaries (the columns and their kinds).
pub struct BoundsPass;

impl TablePass for BoundsPass {
    const NAME: &'static str = "kiln_real_bounds";
    type Config = Bounds;
    type State = Bounds;

    fn start(config: &Bounds) -> Bounds {
        config.clone()
    }

    fn update(_config: &Bounds, state: &mut Bounds, columns: &[ArrayRef]) -> Result<()> {
        for ((bound, array), name) in state.columns.iter_mut().zip(columns).zip(&state.names) {
            match bound {
                ColumnBound::Range { lo, hi, nullable } => {
                    let mut v = Vec::with_capacity(array.len());
                    append_numbers(array, &mut v, name, "real")?;
                    for x in v {
                        if x.is_nan() {
                            *nullable = true;
                        } else {
                            *lo = lo.min(x);
                            *hi = hi.max(x);
                        }
                    }
                }
                ColumnBound::Values { values, nullable } => {
                    let text = text_values(array, name, "real")?;
                    let text = text.as_string::<i32>();
                    for r in 0..text.len() {
                        if text.is_null(r) {
                            *nullable = true;
                        } else if !values.contains(text.value(r)) {
                            values.insert(text.value(r).to_string());
                        }
                    }
                }
                ColumnBound::Any => {}
            }
        }
        Ok(())
    }

    fn merge(_config: &Bounds, state: &mut Bounds, other: Bounds) -> Result<()> {
        for (bound, o) in state.columns.iter_mut().zip(other.columns) {
            match (bound, o) {
                (
                    ColumnBound::Range { lo, hi, nullable },
                    ColumnBound::Range {
                        lo: other_lo,
                        hi: other_hi,
                        nullable: other_nullable,
                    },
                ) => {
                    *lo = lo.min(other_lo);
                    *hi = hi.max(other_hi);
                    *nullable |= other_nullable;
                }
                (
                    ColumnBound::Values { values, nullable },
                    ColumnBound::Values {
                        values: other_values,
                        nullable: other_nullable,
                    },
                ) => {
                    values.extend(other_values);
                    *nullable |= other_nullable;
                }
                _ => {}
            }
        }
        Ok(())
    }
}
