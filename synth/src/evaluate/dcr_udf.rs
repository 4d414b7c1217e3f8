//! `kiln_dcr(config, column, …)`: each row's distance to the closest record
//! of a sample of real rows (the privacy section's DCR, SDMetrics'
//! definition), computed where the rows are: on a cluster, the executors.
//! The configuration carries the sampled real values; a discrete value is
//! compared by its text, so the synthetic rows need no shared codes.

use super::Loaded;
use super::privacy::{Sample, dcr, reference_sample};
use crate::frame::{NULL_CODE, Values, append_numbers, text_values};
use arrow::array::{Array, ArrayRef, AsArray, Float64Array};
use arrow::datatypes::DataType;
use kiln_engine::Result;
use kiln_engine::config_udf::ConfigFunction;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

/// A discrete value no sampled real row has.
const UNSEEN_CODE: u32 = NULL_CODE - 1;

/// One column of the sampled real rows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ReferenceColumn {
    /// NaN = missing.
    Numbers(Vec<f64>),
    /// Codes into `values` ([`NULL_CODE`] = missing).
    Codes {
        values: Vec<String>,
        codes: Vec<u32>,
    },
}

/// The real rows distances are measured to, and the columns (keys left
/// out) they are measured over.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DcrReference {
    pub names: Vec<String>,
    pub columns: Vec<ReferenceColumn>,
    pub rows: usize,
}

impl DcrReference {
    /// A seeded sample of `real_rows` of the real rows read for the
    /// evaluation (the same rows whatever the process).
    pub fn of(loaded: &Loaded, real_rows: usize, seed: u64) -> DcrReference {
        let real = loaded.view(&loaded.real);
        let (keep, sample) = reference_sample(real, real_rows, seed);
        let columns = keep
            .iter()
            .zip(sample.columns)
            .map(|(&c, values)| match values {
                Values::Numbers(v) => ReferenceColumn::Numbers(v),
                Values::Codes(codes) => {
                    // Renumbered over the values the sample has.
                    let mut index: HashMap<u32, u32> = HashMap::new();
                    let mut values = Vec::new();
                    let codes = codes
                        .into_iter()
                        .map(|k| {
                            if k == NULL_CODE {
                                return NULL_CODE;
                            }
                            *index.entry(k).or_insert_with(|| {
                                values.push(loaded.dictionaries[c].values[k as usize].clone());
                                values.len() as u32 - 1
                            })
                        })
                        .collect();
                    ReferenceColumn::Codes { values, codes }
                }
            })
            .collect();
        DcrReference {
            names: keep.iter().map(|&c| real.names[c].clone()).collect(),
            columns,
            rows: sample.rows,
        }
    }
}

/// `kiln_dcr`.
pub struct Dcr;

impl ConfigFunction for Dcr {
    const NAME: &'static str = "kiln_dcr";
    const RETURNS: DataType = DataType::Float64;
    type Config = DcrReference;

    fn run(reference: &DcrReference, columns: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
        let mut data = Vec::with_capacity(columns.len());
        let mut real = Vec::with_capacity(columns.len());
        for ((column, array), name) in reference.columns.iter().zip(columns).zip(&reference.names) {
            match column {
                ReferenceColumn::Numbers(v) => {
                    let mut out = Vec::with_capacity(rows);
                    append_numbers(array, &mut out, name, "synthetic")?;
                    data.push(Values::Numbers(out));
                    real.push(Values::Numbers(v.clone()));
                }
                ReferenceColumn::Codes { values, codes } => {
                    let index: HashMap<&str, u32> = values
                        .iter()
                        .enumerate()
                        .map(|(k, v)| (v.as_str(), k as u32))
                        .collect();
                    let text = text_values(array, name, "synthetic")?;
                    let text = text.as_string::<i32>();
                    data.push(Values::Codes(
                        (0..rows)
                            .map(|r| {
                                if text.is_null(r) {
                                    NULL_CODE
                                } else {
                                    index.get(text.value(r)).copied().unwrap_or(UNSEEN_CODE)
                                }
                            })
                            .collect(),
                    ));
                    real.push(Values::Codes(codes.clone()));
                }
            }
        }
        let distances = dcr(
            &Sample {
                columns: data,
                rows,
            },
            &Sample {
                columns: real,
                rows: reference.rows,
            },
        );
        Ok(Arc::new(Float64Array::from(distances)))
    }
}
