//! Tables as the evaluation sees them: each column classified by its
//! statistical type (SDV's *sdtypes*) and held column-major, numbers as
//! `f64` (NaN = missing) and discrete values as codes into a dictionary that
//! the real and the synthetic table share.

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use datafusion::dataframe::DataFrame;
use futures::StreamExt;
use kiln_engine::{KilnError, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// The code of a missing discrete value.
pub const NULL_CODE: u32 = u32::MAX;

/// What a column holds statistically (SDV's metadata names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SdType {
    /// Numbers: integers and floats.
    Numerical,
    /// Timestamps and dates (compared as microseconds since the epoch).
    Datetime,
    /// Text or any other discrete value.
    Categorical,
    /// true / false.
    Boolean,
    /// A key: checked for uniqueness, left out of the statistics.
    Id,
}

impl SdType {
    /// The statistical type of an Arrow column type.
    pub fn of(data_type: &DataType) -> SdType {
        match data_type {
            DataType::Boolean => SdType::Boolean,
            DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => SdType::Datetime,
            t if t.is_numeric() => SdType::Numerical,
            DataType::Dictionary(_, value) => SdType::of(value),
            _ => SdType::Categorical,
        }
    }

    /// Compared through numbers (KS, correlation) rather than frequencies.
    pub fn is_continuous(self) -> bool {
        matches!(self, SdType::Numerical | SdType::Datetime)
    }
}

/// The columns to compare and their types: inferred from the real table's
/// Arrow schema, with the user's overrides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// In the real table's column order.
    pub columns: Vec<(String, SdType)>,
}

impl Metadata {
    /// Infers every column's type from `schema`; `overrides` set some
    /// explicitly (a numeric code that is categorical, a key).
    pub fn infer(schema: &Schema, overrides: &BTreeMap<String, SdType>) -> Result<Metadata> {
        for name in overrides.keys() {
            if schema.field_with_name(name).is_err() {
                return Err(KilnError::config_fix(
                    format!("column '{name}' given a type is not in the real table"),
                    format!(
                        "use one of: {}",
                        schema
                            .fields()
                            .iter()
                            .map(|f| f.name().as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
        let columns = schema
            .fields()
            .iter()
            .map(|f| {
                let t = overrides
                    .get(f.name())
                    .copied()
                    .unwrap_or_else(|| SdType::of(f.data_type()));
                (f.name().clone(), t)
            })
            .collect();
        Ok(Metadata { columns })
    }

    /// The SDV / SDMetrics metadata dictionary for the same columns, so the
    /// numbers can be reproduced with their tools.
    pub fn to_sdv_json(&self) -> serde_json::Value {
        let columns: serde_json::Map<String, serde_json::Value> = self
            .columns
            .iter()
            .map(|(name, t)| (name.clone(), serde_json::json!({ "sdtype": t })))
            .collect();
        serde_json::json!({ "columns": columns })
    }

    /// Fails when `schema` (the synthetic table) lacks a column of the
    /// metadata or holds it with an incompatible type; names all of them.
    pub fn check_compatible(&self, real: &Schema, synthetic: &Schema, what: &str) -> Result<()> {
        let mut problems = Vec::new();
        for (name, t) in &self.columns {
            match synthetic.field_with_name(name) {
                Err(_) => problems.push(format!("column '{name}' is missing")),
                Ok(field) => {
                    let theirs = SdType::of(field.data_type());
                    // Discrete values compare as text, so any type will do.
                    let compatible = !t.is_continuous() || theirs == *t;
                    if !compatible {
                        let ours = real
                            .field_with_name(name)
                            .map(|f| f.data_type().to_string())
                            .unwrap_or_default();
                        problems.push(format!(
                            "column '{name}' is {} ({ours}) in the real table but {} in the {what} table",
                            type_name(*t),
                            field.data_type()
                        ));
                    }
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(KilnError::data_fix(
                format!("the {what} table"),
                format!(
                    "its schema does not match the real table's: {}",
                    problems.join("; ")
                ),
                "compare tables with the same columns and types, or leave columns out with --ignore",
            ))
        }
    }
}

fn type_name(t: SdType) -> &'static str {
    match t {
        SdType::Numerical => "numerical",
        SdType::Datetime => "datetime",
        SdType::Categorical => "categorical",
        SdType::Boolean => "boolean",
        SdType::Id => "an id",
    }
}

/// One column's values.
#[derive(Debug, Clone)]
pub enum Values {
    /// Numerical and datetime columns; NaN = missing.
    Numbers(Vec<f64>),
    /// Categorical, boolean and id columns; [`NULL_CODE`] = missing.
    Codes(Vec<u32>),
}

impl Values {
    pub fn len(&self) -> usize {
        match self {
            Values::Numbers(v) => v.len(),
            Values::Codes(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The distinct discrete values of a column across both tables.
#[derive(Debug, Clone, Default)]
pub struct Dictionary {
    index: HashMap<String, u32>,
    pub values: Vec<String>,
}

impl Dictionary {
    fn code(&mut self, value: &str) -> u32 {
        if let Some(&c) = self.index.get(value) {
            return c;
        }
        let c = self.values.len() as u32;
        self.index.insert(value.to_string(), c);
        self.values.push(value.to_string());
        c
    }
}

/// The floating-point width a column was stored with, which NumPy keeps
/// when it computes histogram edges (SDMetrics' pair bins).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Single,
    Double,
}

/// A table held for evaluation, column-major in the metadata's order.
#[derive(Debug, Clone)]
pub struct Frame {
    pub rows: usize,
    pub columns: Vec<Values>,
    pub precision: Vec<Precision>,
    /// The table's rows when `rows` is a sample of them.
    pub sampled_from: Option<usize>,
}

/// Reads `df` into a [`Frame`] with the metadata's columns, coding discrete
/// values with (and extending) `dictionaries`, one per column.
///
/// A table of more than `max_rows` rows is read as a uniform sample of
/// about `max_rows` of them: the rows whose content hash falls below
/// `max_rows / total` of the hash range, so the sample does not depend on
/// file order or partitioning, and equal rows are kept or left together.
pub async fn load(
    df: DataFrame,
    metadata: &Metadata,
    dictionaries: &mut [Dictionary],
    what: &str,
    max_rows: Option<usize>,
) -> Result<Frame> {
    let total = match max_rows {
        Some(_) => Some(
            df.clone()
                .count()
                .await
                .map_err(|e| KilnError::execution(format!("counting the {what} table"), e))?,
        ),
        None => None,
    };
    // Rows kept: those with a content hash below this.
    let keep_below = match (max_rows, total) {
        (Some(cap), Some(total)) if total > cap => {
            Some((cap as f64 / total as f64 * u64::MAX as f64) as u64)
        }
        _ => None,
    };
    let mut columns: Vec<Values> = metadata
        .columns
        .iter()
        .map(|(_, t)| {
            if t.is_continuous() {
                Values::Numbers(Vec::new())
            } else {
                Values::Codes(Vec::new())
            }
        })
        .collect();
    let schema = df.schema().as_arrow().clone();
    let precision = metadata
        .columns
        .iter()
        .map(
            |(name, _)| match schema.field_with_name(name).map(|f| f.data_type()) {
                Ok(DataType::Float32 | DataType::Float16) => Precision::Single,
                _ => Precision::Double,
            },
        )
        .collect();
    // Partitions one after the other: the same input gives the same row
    // order, dictionary codes and samples on every run.
    let streams = df
        .execute_stream_partitioned()
        .await
        .map_err(|e| KilnError::execution(format!("reading the {what} table"), e))?;
    let mut rows = 0;
    for mut stream in streams {
        while let Some(batch) = stream.next().await {
            let batch =
                batch.map_err(|e| KilnError::execution(format!("reading the {what} table"), e))?;
            let batch = match keep_below {
                Some(limit) => {
                    let keep: arrow::array::BooleanArray = row_hashes(&batch, metadata, what)?
                        .into_iter()
                        .map(|h| Some(h < limit))
                        .collect();
                    arrow::compute::filter_record_batch(&batch, &keep)
                        .map_err(|e| KilnError::internal(format!("sampling the {what} table"), e))?
                }
                None => batch,
            };
            append(&batch, metadata, dictionaries, &mut columns, what)?;
            rows += batch.num_rows();
        }
    }
    Ok(Frame {
        rows,
        columns,
        precision,
        sampled_from: keep_below.and(total),
    })
}

/// A content hash of each row over the metadata's columns (numbers by
/// value, everything else by its text), independent of batch boundaries.
fn row_hashes(batch: &RecordBatch, metadata: &Metadata, what: &str) -> Result<Vec<u64>> {
    let mut hashes = vec![0x9E37_79B9_7F4A_7C15u64; batch.num_rows()];
    for (c, (name, sdtype)) in metadata.columns.iter().enumerate() {
        let array = batch.column_by_name(name).ok_or_else(|| {
            KilnError::data(
                format!("the {what} table"),
                format!("column '{name}' is missing"),
            )
        })?;
        if sdtype.is_continuous() {
            let mut numbers = Vec::with_capacity(array.len());
            append_numbers(array, &mut numbers, name, what)?;
            for (h, x) in hashes.iter_mut().zip(numbers) {
                let bits = if x.is_nan() {
                    u64::MAX
                } else {
                    (x + 0.0).to_bits()
                };
                *h = crate::mix(*h, bits, c as u64);
            }
        } else {
            let text = cast(array, &DataType::Utf8).map_err(|e| cast_error(name, what, e))?;
            let text = text.as_string::<i32>();
            for (r, h) in hashes.iter_mut().enumerate() {
                let v = if text.is_valid(r) {
                    twox_hash::XxHash3_64::oneshot(text.value(r).as_bytes())
                } else {
                    u64::MAX - 1
                };
                *h = crate::mix(*h, v, c as u64);
            }
        }
    }
    Ok(hashes)
}

fn append(
    batch: &RecordBatch,
    metadata: &Metadata,
    dictionaries: &mut [Dictionary],
    columns: &mut [Values],
    what: &str,
) -> Result<()> {
    for (i, (name, _)) in metadata.columns.iter().enumerate() {
        let array = batch.column_by_name(name).ok_or_else(|| {
            KilnError::data(
                format!("the {what} table"),
                format!("column '{name}' is missing"),
            )
        })?;
        match &mut columns[i] {
            Values::Numbers(out) => append_numbers(array, out, name, what)?,
            Values::Codes(out) => append_codes(array, &mut dictionaries[i], out, name, what)?,
        }
    }
    Ok(())
}

fn cast_error(name: &str, what: &str, e: impl std::fmt::Display) -> KilnError {
    KilnError::data(
        format!("column '{name}' of the {what} table"),
        format!("cannot read its values: {e}"),
    )
}

pub(crate) fn append_numbers(
    array: &ArrayRef,
    out: &mut Vec<f64>,
    name: &str,
    what: &str,
) -> Result<()> {
    let numbers = match array.data_type() {
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => {
            let micros = cast(array, &DataType::Timestamp(TimeUnit::Microsecond, None))
                .and_then(|a| cast(&a, &DataType::Int64))
                .map_err(|e| cast_error(name, what, e))?;
            let micros = micros.as_primitive::<Int64Type>();
            out.extend((0..micros.len()).map(|r| {
                if micros.is_valid(r) {
                    micros.value(r) as f64
                } else {
                    f64::NAN
                }
            }));
            return Ok(());
        }
        _ => cast(array, &DataType::Float64).map_err(|e| cast_error(name, what, e))?,
    };
    let numbers = numbers.as_primitive::<Float64Type>();
    out.extend((0..numbers.len()).map(|r| {
        if numbers.is_valid(r) {
            numbers.value(r)
        } else {
            f64::NAN
        }
    }));
    Ok(())
}

/// A discrete column's values as text (`Utf8`), whatever their type.
pub(crate) fn text_values(array: &ArrayRef, name: &str, what: &str) -> Result<ArrayRef> {
    cast(array, &DataType::Utf8).map_err(|e| cast_error(name, what, e))
}

fn append_codes(
    array: &ArrayRef,
    dictionary: &mut Dictionary,
    out: &mut Vec<u32>,
    name: &str,
    what: &str,
) -> Result<()> {
    let text = text_values(array, name, what)?;
    let text = text.as_string::<i32>();
    out.extend((0..text.len()).map(|r| {
        if text.is_valid(r) {
            dictionary.code(text.value(r))
        } else {
            NULL_CODE
        }
    }));
    Ok(())
}
