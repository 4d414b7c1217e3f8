//! Fusion: several datasets into one, as a lazy DataFusion plan.
//! - `union`: rows of every input, columns matched by name; types widen
//!   (integers to the widest integer, integers and floats to `Float64`, any
//!   text to `Utf8`, timestamps to the finest unit of one time zone); a
//!   column an input lacks is null there; conflicting types are an error
//!   naming the column, both types and both inputs;
//! - `join`: key joins (inner, left, full) of the inputs in order; other
//!   columns that share a name get the input's name as a suffix;
//! - `asof`: each row of the first input gets the row of the second with the
//!   nearest earlier (or equal) time within a tolerance, per entity (`by`);
//! - after any of them, de-duplication by key (the first input's row wins)
//!   and a provenance column naming the input each row came from.

use arrow::datatypes::{DataType, Field, TimeUnit};
use datafusion::common::{JoinType, ScalarValue};
use datafusion::dataframe::DataFrame;
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::{ExprFunctionExt, SortExpr};
use datafusion::prelude::{Expr, cast, col, ident, lit};
use kiln_engine::{KilnError, Result};
use serde::{Deserialize, Serialize};

/// How the inputs are combined (checked from a [`FusionSpec`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    /// All rows of all inputs, columns matched by name.
    Union,
    /// Key join of the inputs, in order.
    Join { on: Vec<String>, how: JoinHow },
    /// The second input's latest row at or before each row of the first.
    Asof {
        left_time: String,
        right_time: String,
        by: Vec<String>,
        tolerance_seconds: f64,
    },
}

/// The strategy's name in configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StrategyKind {
    Union,
    Join,
    Asof,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum JoinHow {
    #[default]
    Inner,
    Left,
    Full,
}

/// A named input.
pub struct Input {
    pub name: String,
    pub df: DataFrame,
}

/// Fusion settings, flat as configs and job parameters write them, with
/// the inputs of the caller's kind (paths in a pipeline, dataset ids in the
/// service).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FusionSpec<I> {
    pub inputs: Vec<I>,
    /// union | join | asof.
    pub strategy: StrategyKind,
    /// join: the key columns.
    #[serde(default)]
    pub on: Vec<String>,
    /// join: inner | left | full.
    #[serde(default)]
    pub how: Option<JoinHow>,
    /// asof: the time column of the first input.
    #[serde(default)]
    pub left_time: Option<String>,
    /// asof: the time column of the second input.
    #[serde(default)]
    pub right_time: Option<String>,
    /// asof: entity columns both inputs share (empty: one entity).
    #[serde(default)]
    pub by: Vec<String>,
    /// asof: the largest accepted gap in seconds (inclusive).
    #[serde(default)]
    pub tolerance_seconds: Option<f64>,
    /// Keep one row per value of these columns (the earliest input's).
    #[serde(default)]
    pub deduplicate: Vec<String>,
    /// Name of the column that says which input a row came from (`union`)
    /// or which inputs contributed (joins); `null` leaves it out.
    #[serde(default = "default_provenance")]
    pub provenance_column: Option<String>,
}

impl<I> FusionSpec<I> {
    /// The strategy with its settings; a setting of another strategy, or a
    /// missing one, is an error naming it.
    pub fn strategy(&self) -> Result<Strategy> {
        let unused = |name: &str, given: bool| {
            if given {
                Err(KilnError::config_fix(
                    format!("{name} is not a setting of strategy {:?}", self.strategy),
                    format!("remove {name}, or choose the strategy it belongs to"),
                ))
            } else {
                Ok(())
            }
        };
        let needed = |name: &str| {
            KilnError::config_fix(
                format!("strategy {:?} needs {name}", self.strategy),
                format!("set {name}"),
            )
        };
        let join_given = !self.on.is_empty() || self.how.is_some();
        let asof_given = self.left_time.is_some()
            || self.right_time.is_some()
            || !self.by.is_empty()
            || self.tolerance_seconds.is_some();
        match self.strategy {
            StrategyKind::Union => {
                unused("on/how", join_given)?;
                unused("left_time/right_time/by/tolerance_seconds", asof_given)?;
                Ok(Strategy::Union)
            }
            StrategyKind::Join => {
                unused("left_time/right_time/by/tolerance_seconds", asof_given)?;
                if self.on.is_empty() {
                    return Err(needed("on"));
                }
                Ok(Strategy::Join {
                    on: self.on.clone(),
                    how: self.how.unwrap_or_default(),
                })
            }
            StrategyKind::Asof => {
                unused("on/how", join_given)?;
                Ok(Strategy::Asof {
                    left_time: self.left_time.clone().ok_or_else(|| needed("left_time"))?,
                    right_time: self
                        .right_time
                        .clone()
                        .ok_or_else(|| needed("right_time"))?,
                    by: self.by.clone(),
                    tolerance_seconds: self
                        .tolerance_seconds
                        .ok_or_else(|| needed("tolerance_seconds"))?,
                })
            }
        }
    }
}

fn default_provenance() -> Option<String> {
    Some("source_dataset".into())
}

fn exec(what: &str) -> impl Fn(datafusion::error::DataFusionError) -> KilnError + '_ {
    move |e| KilnError::execution(what.to_string(), e)
}

/// The common type of two column types, or `None` when they conflict.
pub fn widen(a: &DataType, b: &DataType) -> Option<DataType> {
    use DataType::*;
    let text = |t: &DataType| matches!(t, Utf8 | LargeUtf8 | Utf8View);
    if a == b {
        return Some(a.clone());
    }
    match (a, b) {
        (Null, t) | (t, Null) => Some(t.clone()),
        (x, y) if text(x) && text(y) => Some(Utf8),
        (x, y) if x.is_integer() && y.is_integer() => {
            let width = |t: &DataType| t.primitive_width().unwrap_or(8);
            let signed = x.is_signed_integer() || y.is_signed_integer();
            let w = width(x).max(width(y));
            Some(match (signed, w) {
                (true, 1) => Int8,
                (true, 2) => Int16,
                (true, 4) => Int32,
                (true, _) => Int64,
                (false, 1) => UInt8,
                (false, 2) => UInt16,
                (false, 4) => UInt32,
                (false, _) => UInt64,
            })
        }
        (x, y) if x.is_numeric() && y.is_numeric() => Some(Float64),
        (Timestamp(u1, z1), Timestamp(u2, z2)) if z1 == z2 => {
            let rank = |u: &TimeUnit| match u {
                TimeUnit::Second => 0,
                TimeUnit::Millisecond => 1,
                TimeUnit::Microsecond => 2,
                TimeUnit::Nanosecond => 3,
            };
            Some(Timestamp(
                if rank(u1) >= rank(u2) { *u1 } else { *u2 },
                z1.clone(),
            ))
        }
        (Date32, Date64) | (Date64, Date32) => Some(Date64),
        _ => None,
    }
}

/// Fuses the inputs (at least one; two for the joins) as `spec` says
/// (its own `inputs` are the caller's; `inputs` here are their tables).
pub fn fuse<I>(inputs: Vec<Input>, spec: &FusionSpec<I>) -> Result<DataFrame> {
    if inputs.is_empty() {
        return Err(KilnError::config("fusion needs at least one input"));
    }
    let mut seen = std::collections::HashSet::new();
    for i in &inputs {
        if !seen.insert(i.name.clone()) {
            return Err(KilnError::config(format!(
                "two fusion inputs are named '{}'",
                i.name
            )));
        }
    }
    let fused = match &spec.strategy()? {
        Strategy::Union => union(inputs, spec.provenance_column.as_deref())?,
        Strategy::Join { on, how } => join(inputs, on, *how, spec.provenance_column.as_deref())?,
        Strategy::Asof {
            left_time,
            right_time,
            by,
            tolerance_seconds,
        } => asof(
            inputs,
            left_time,
            right_time,
            by,
            *tolerance_seconds,
            spec.provenance_column.as_deref(),
        )?,
    };
    let fused = if spec.deduplicate.is_empty() {
        fused
    } else {
        deduplicate(fused, &spec.deduplicate)?
    };
    // The input rank only orders the de-duplication.
    let keep: Vec<Expr> = names(&fused)
        .iter()
        .filter(|n| *n != INPUT_RANK)
        .map(ident)
        .collect();
    fused.select(keep).map_err(exec("finishing the fusion"))
}

/// Which input (by position) a row of a union came from.
const INPUT_RANK: &str = "_kiln_input";

fn union(inputs: Vec<Input>, provenance: Option<&str>) -> Result<DataFrame> {
    // Unified columns in order of first appearance.
    let mut columns: Vec<(String, DataType, String)> = Vec::new();
    for input in &inputs {
        for field in input.df.schema().fields() {
            match columns.iter_mut().find(|(n, _, _)| n == field.name()) {
                None => columns.push((
                    field.name().clone(),
                    field.data_type().clone(),
                    input.name.clone(),
                )),
                Some((name, t, first)) => {
                    *t = widen(t, field.data_type()).ok_or_else(|| {
                        KilnError::data_fix(
                            format!("column '{name}'"),
                            format!(
                                "it is {t} in input '{first}' but {} in input '{}', which cannot be combined",
                                field.data_type(),
                                input.name
                            ),
                            format!("cast '{name}' to one type in one of the inputs, or rename it"),
                        )
                    })?;
                }
            }
        }
    }
    if let Some(p) = provenance
        && columns.iter().any(|(n, _, _)| n == p)
    {
        return Err(KilnError::config_fix(
            format!("the provenance column '{p}' is already a column of an input"),
            "choose another provenance_column",
        ));
    }
    let mut fused: Option<DataFrame> = None;
    for (rank, input) in inputs.into_iter().enumerate() {
        let have: Vec<String> = input
            .df
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let mut exprs: Vec<Expr> = columns
            .iter()
            .map(|(name, t, _)| {
                if have.contains(name) {
                    cast(ident(name), t.clone()).alias(name)
                } else {
                    cast(lit(ScalarValue::Null), t.clone()).alias(name)
                }
            })
            .collect();
        if let Some(p) = provenance {
            exprs.push(lit(input.name.clone()).alias(p));
        }
        exprs.push(lit(rank as u32).alias(INPUT_RANK));
        let df = input
            .df
            .select(exprs)
            .map_err(exec("aligning a fusion input"))?;
        fused = Some(match fused {
            None => df,
            Some(f) => f.union(df).map_err(exec("combining fusion inputs"))?,
        });
    }
    fused.ok_or_else(|| KilnError::config("fusion needs at least one input"))
}

fn field_of<'a>(df: &'a DataFrame, name: &str, input: &str) -> Result<&'a Field> {
    df.schema()
        .field_with_unqualified_name(name)
        .map(|f| f.as_ref())
        .map_err(|_| {
            KilnError::config_fix(
                format!("input '{input}' has no column '{name}'"),
                format!(
                    "use one of: {}",
                    df.schema()
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })
}

/// Renames every column of `df` that also occurs in `taken` (and is not a
/// join key) to `{column}_{input}`.
fn disambiguate(
    df: DataFrame,
    input: &str,
    taken: &[String],
    keys: &[String],
) -> Result<DataFrame> {
    let exprs: Vec<Expr> = df
        .schema()
        .fields()
        .iter()
        .map(|f| {
            let name = f.name();
            if taken.contains(name) && !keys.contains(name) {
                ident(name).alias(format!("{name}_{input}"))
            } else {
                ident(name)
            }
        })
        .collect();
    df.select(exprs).map_err(exec("renaming fusion columns"))
}

fn names(df: &DataFrame) -> Vec<String> {
    df.schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect()
}

fn join(
    inputs: Vec<Input>,
    on: &[String],
    how: JoinHow,
    provenance: Option<&str>,
) -> Result<DataFrame> {
    if inputs.len() < 2 {
        return Err(KilnError::config("a fusion join needs at least two inputs"));
    }
    if on.is_empty() {
        return Err(KilnError::config_fix(
            "a fusion join needs keys",
            "set on: [key, …]",
        ));
    }
    let join_type = match how {
        JoinHow::Inner => JoinType::Inner,
        JoinHow::Left => JoinType::Left,
        JoinHow::Full => JoinType::Full,
    };
    let mut inputs = inputs.into_iter();
    let first = inputs
        .next()
        .ok_or_else(|| KilnError::config("no inputs"))?;
    for k in on {
        field_of(&first.df, k, &first.name)?;
    }
    let mut present = vec![(first.name.clone(), format!("_kiln_in_{}", first.name))];
    let mut fused = first
        .df
        .clone()
        .with_column(&present[0].1, lit(true))
        .map_err(exec("marking a fusion input"))?;
    for input in inputs {
        let left_types: Vec<DataType> = on
            .iter()
            .map(|k| field_of(&fused, k, "the fused inputs").map(|f| f.data_type().clone()))
            .collect::<Result<_>>()?;
        for (k, lt) in on.iter().zip(&left_types) {
            let rt = field_of(&input.df, k, &input.name)?.data_type();
            if widen(lt, rt).is_none() {
                return Err(KilnError::data_fix(
                    format!("key '{k}'"),
                    format!(
                        "it is {lt} in the inputs before '{}' but {rt} there",
                        input.name
                    ),
                    format!("cast '{k}' to one type"),
                ));
            }
        }
        let marker = format!("_kiln_in_{}", input.name);
        let right = input
            .df
            .with_column(&marker, lit(true))
            .map_err(exec("marking a fusion input"))?;
        let right = disambiguate(right, &input.name, &names(&fused), on)?;
        // Keys under temporary names on the right, coalesced after a full join.
        let right_keys: Vec<String> = on.iter().map(|k| format!("_kiln_key_{k}")).collect();
        let right_names = names(&right);
        let right = right
            .select(
                right_names
                    .iter()
                    .map(|n| match on.iter().position(|k| k == n) {
                        Some(i) => ident(n).alias(&right_keys[i]),
                        None => ident(n),
                    })
                    .collect::<Vec<_>>(),
            )
            .map_err(exec("renaming join keys"))?;
        let left_on: Vec<&str> = on.iter().map(String::as_str).collect();
        let right_on: Vec<&str> = right_keys.iter().map(String::as_str).collect();
        let joined = fused
            .join(right, join_type, &left_on, &right_on, None)
            .map_err(exec("joining fusion inputs"))?;
        let exprs: Vec<Expr> = names(&joined)
            .iter()
            .filter(|n| !right_keys.contains(n))
            .map(|n| match on.iter().position(|k| k == n) {
                Some(i) if how == JoinHow::Full => {
                    datafusion::functions::expr_fn::coalesce(vec![ident(n), ident(&right_keys[i])])
                        .alias(n)
                }
                _ => ident(n),
            })
            .collect();
        fused = joined
            .select(exprs)
            .map_err(exec("joining fusion inputs"))?;
        present.push((input.name, marker));
    }
    finish_provenance(fused, &present, provenance)
}

/// Replaces the per-input markers by one provenance column listing the
/// inputs a row has data from (`a+b`).
fn finish_provenance(
    df: DataFrame,
    present: &[(String, String)],
    provenance: Option<&str>,
) -> Result<DataFrame> {
    let markers: Vec<&String> = present.iter().map(|(_, m)| m).collect();
    let mut exprs: Vec<Expr> = names(&df)
        .iter()
        .filter(|n| !markers.contains(n))
        .map(ident)
        .collect();
    if let Some(p) = provenance {
        let parts: Vec<Expr> = present
            .iter()
            .map(|(name, marker)| {
                datafusion::logical_expr::when(ident(marker).is_not_null(), lit(name.clone()))
                    .otherwise(lit(ScalarValue::Utf8(None)))
                    .unwrap_or_else(|_| lit(ScalarValue::Utf8(None)))
            })
            .collect();
        exprs.push(datafusion::functions::expr_fn::concat_ws(lit("+"), parts).alias(p));
    }
    df.select(exprs)
        .map_err(exec("naming the inputs of fused rows"))
}

fn asof(
    inputs: Vec<Input>,
    left_time: &str,
    right_time: &str,
    by: &[String],
    tolerance_seconds: f64,
    provenance: Option<&str>,
) -> Result<DataFrame> {
    if inputs.len() != 2 {
        return Err(KilnError::config(format!(
            "an as-of join takes exactly two inputs (rows, then the readings joined onto them), got {}",
            inputs.len()
        )));
    }
    if !(tolerance_seconds >= 0.0 && tolerance_seconds.is_finite()) {
        return Err(KilnError::config_fix(
            format!("tolerance_seconds is {tolerance_seconds}"),
            "set a tolerance of 0 or more seconds",
        ));
    }
    let mut it = inputs.into_iter();
    let (left, right) = match (it.next(), it.next()) {
        (Some(l), Some(r)) => (l, r),
        _ => return Err(KilnError::config("an as-of join takes two inputs")),
    };
    let lt = field_of(&left.df, left_time, &left.name)?
        .data_type()
        .clone();
    let rt = field_of(&right.df, right_time, &right.name)?
        .data_type()
        .clone();
    for t in [&lt, &rt] {
        if !matches!(
            t,
            DataType::Timestamp(..) | DataType::Date32 | DataType::Date64
        ) {
            return Err(KilnError::data_fix(
                "as-of join",
                format!("time columns must be timestamps or dates, got {t}"),
                "cast the time column to a timestamp",
            ));
        }
    }
    for k in by {
        field_of(&left.df, k, &left.name)?;
        field_of(&right.df, k, &right.name)?;
    }
    // Times as microseconds since the epoch, so the gap is a number.
    let micros = |c: &str| {
        cast(
            cast(ident(c), DataType::Timestamp(TimeUnit::Microsecond, None)),
            DataType::Int64,
        )
    };
    let left_df = left
        .df
        .with_column("_kiln_row", row_number())
        .and_then(|d| d.with_column("_kiln_lt", micros(left_time)))
        .map_err(exec("preparing the as-of join"))?;
    let right_df = disambiguate(right.df, &right.name, &names(&left_df), &[])?;
    let right_time_name = if names(&left_df).contains(&right_time.to_string()) {
        format!("{right_time}_{}", right.name)
    } else {
        right_time.to_string()
    };
    let by_right: Vec<String> = by.iter().map(|k| format!("{k}_{}", right.name)).collect();
    let right_df = right_df
        .with_column("_kiln_rt", micros(&right_time_name))
        .and_then(|d| d.with_column("_kiln_matched", lit(true)))
        .map_err(exec("preparing the as-of join"))?;
    let tolerance = (tolerance_seconds * 1e6).round() as i64;
    let mut on = col("_kiln_rt")
        .lt_eq(col("_kiln_lt"))
        .and((col("_kiln_lt") - col("_kiln_rt")).lt_eq(lit(tolerance)));
    for (l, r) in by.iter().zip(&by_right) {
        on = on.and(ident(l).eq(ident(r)));
    }
    let joined = left_df
        .join_on(right_df, JoinType::Left, [on])
        .map_err(exec("as-of joining"))?;
    // The latest reading per left row.
    let rank = row_number()
        .partition_by(vec![col("_kiln_row")])
        .order_by(vec![SortExpr::new(col("_kiln_rt"), false, false)])
        .build()
        .map_err(exec("ranking as-of matches"))?;
    let ranked = joined
        .with_column("_kiln_rank", rank)
        .and_then(|d| d.filter(col("_kiln_rank").eq(lit(1u64))))
        .map_err(exec("keeping the nearest reading"))?;
    let drop: Vec<String> = [
        "_kiln_row",
        "_kiln_lt",
        "_kiln_rt",
        "_kiln_rank",
        "_kiln_matched",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(by_right)
    .collect();
    let mut exprs: Vec<Expr> = names(&ranked)
        .iter()
        .filter(|n| !drop.contains(n))
        .map(ident)
        .collect();
    if let Some(p) = provenance {
        exprs.push(
            datafusion::logical_expr::when(
                col("_kiln_matched").is_not_null(),
                lit(format!("{}+{}", left.name, right.name)),
            )
            .otherwise(lit(left.name.clone()))
            .map_err(exec("naming the inputs of fused rows"))?
            .alias(p),
        );
    }
    ranked.select(exprs).map_err(exec("as-of joining"))
}

fn deduplicate(df: DataFrame, keys: &[String]) -> Result<DataFrame> {
    for k in keys {
        field_of(&df, k, "the fused table")?;
    }
    let cols = names(&df);
    // The earliest input's row first (unions); otherwise any one row.
    let order = if cols.iter().any(|c| c == INPUT_RANK) {
        vec![SortExpr::new(col(INPUT_RANK), true, false)]
    } else {
        Vec::new()
    };
    let rank = row_number()
        .partition_by(keys.iter().map(ident).collect())
        .order_by(order)
        .build()
        .map_err(exec("ranking duplicates"))?;
    df.with_column("_kiln_dup", rank)
        .and_then(|d| d.filter(col("_kiln_dup").eq(lit(1u64))))
        .and_then(|d| d.select(cols.iter().map(ident).collect::<Vec<_>>()))
        .map_err(exec("removing duplicate keys"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        Array, ArrayRef, AsArray, BooleanArray, Float32Array, Int32Array, Int64Array, RecordBatch,
        StringArray, TimestampMillisecondArray,
    };
    use arrow::datatypes::{Float64Type, Int64Type};
    use std::sync::Arc;

    fn input(name: &str, columns: Vec<(&str, ArrayRef)>) -> Input {
        Input {
            name: name.into(),
            df: crate::test_support::frame_of(columns),
        }
    }

    fn spec(strategy: Strategy) -> FusionSpec<()> {
        let mut s = FusionSpec {
            inputs: Vec::new(),
            strategy: StrategyKind::Union,
            on: Vec::new(),
            how: None,
            left_time: None,
            right_time: None,
            by: Vec::new(),
            tolerance_seconds: None,
            deduplicate: Vec::new(),
            provenance_column: default_provenance(),
        };
        match strategy {
            Strategy::Union => {}
            Strategy::Join { on, how } => {
                s.strategy = StrategyKind::Join;
                s.on = on;
                s.how = Some(how);
            }
            Strategy::Asof {
                left_time,
                right_time,
                by,
                tolerance_seconds,
            } => {
                s.strategy = StrategyKind::Asof;
                s.left_time = Some(left_time);
                s.right_time = Some(right_time);
                s.by = by;
                s.tolerance_seconds = Some(tolerance_seconds);
            }
        }
        s
    }

    #[test]
    fn settings_of_another_strategy_are_errors() {
        let mut s = spec(Strategy::Union);
        s.on = vec!["k".into()];
        let err = s.strategy().expect_err("on with union").to_string();
        assert!(
            err.contains("on/how is not a setting of strategy Union"),
            "{err}"
        );
        s.strategy = StrategyKind::Asof;
        s.on.clear();
        let err = s.strategy().expect_err("missing times").to_string();
        assert!(err.contains("needs left_time"), "{err}");
    }

    async fn rows(df: DataFrame, order: &str) -> RecordBatch {
        let df = df.sort(vec![col(order).sort(true, true)]).expect("sort");
        let batches = df.collect().await.expect("rows");
        arrow::compute::concat_batches(&batches[0].schema(), &batches).expect("concat")
    }

    fn texts(b: &RecordBatch, c: &str) -> Vec<Option<String>> {
        let a = arrow::compute::cast(b.column_by_name(c).expect("column"), &DataType::Utf8)
            .expect("text");
        a.as_string::<i32>()
            .iter()
            .map(|v| v.map(str::to_string))
            .collect()
    }

    #[tokio::test]
    async fn union_widens_types_and_fills_missing_columns() {
        let a = input(
            "a",
            vec![
                ("id", Arc::new(Int32Array::from(vec![1, 2])) as ArrayRef),
                (
                    "x",
                    Arc::new(Float32Array::from(vec![0.5, 1.5])) as ArrayRef,
                ),
                (
                    "name",
                    Arc::new(StringArray::from(vec!["p", "q"])) as ArrayRef,
                ),
            ],
        );
        let b = input(
            "b",
            vec![
                ("id", Arc::new(Int64Array::from(vec![3])) as ArrayRef),
                ("x", Arc::new(Int64Array::from(vec![7])) as ArrayRef),
                (
                    "extra",
                    Arc::new(BooleanArray::from(vec![true])) as ArrayRef,
                ),
            ],
        );
        let out = rows(
            fuse(vec![a, b], &spec(Strategy::Union)).expect("plan"),
            "id",
        )
        .await;
        let schema = out.schema();
        let types: Vec<(&str, &DataType)> = schema
            .fields()
            .iter()
            .map(|f| (f.name().as_str(), f.data_type()))
            .collect();
        assert_eq!(
            types,
            vec![
                ("id", &DataType::Int64),
                ("x", &DataType::Float64),
                ("name", &DataType::Utf8),
                ("extra", &DataType::Boolean),
                ("source_dataset", &DataType::Utf8)
            ]
        );
        let x: Vec<f64> = out
            .column(1)
            .as_primitive::<Float64Type>()
            .values()
            .to_vec();
        assert_eq!(x, vec![0.5, 1.5, 7.0]);
        assert_eq!(
            texts(&out, "name"),
            vec![Some("p".into()), Some("q".into()), None]
        );
        assert_eq!(texts(&out, "extra"), vec![None, None, Some("true".into())]);
        assert_eq!(
            texts(&out, "source_dataset"),
            vec![Some("a".into()), Some("a".into()), Some("b".into())]
        );
    }

    #[tokio::test]
    async fn conflicting_types_name_the_column_both_types_and_inputs() {
        let a = input(
            "weather",
            vec![(
                "station",
                Arc::new(StringArray::from(vec!["x"])) as ArrayRef,
            )],
        );
        let b = input(
            "samples",
            vec![("station", Arc::new(Int64Array::from(vec![1])) as ArrayRef)],
        );
        let err = fuse(vec![a, b], &spec(Strategy::Union))
            .expect_err("conflict")
            .to_string();
        assert!(
            err.contains("column 'station'")
                && err.contains("Utf8 in input 'weather'")
                && err.contains("Int64 in input 'samples'")
                && err.contains("fix:"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn key_joins_inner_left_full() {
        let make = || {
            (
                input(
                    "left",
                    vec![
                        ("k", Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef),
                        (
                            "v",
                            Arc::new(StringArray::from(vec!["l1", "l2", "l3"])) as ArrayRef,
                        ),
                    ],
                ),
                input(
                    "right",
                    vec![
                        ("k", Arc::new(Int32Array::from(vec![2, 3, 4])) as ArrayRef),
                        (
                            "v",
                            Arc::new(StringArray::from(vec!["r2", "r3", "r4"])) as ArrayRef,
                        ),
                    ],
                ),
            )
        };
        for (how, keys, provenance) in [
            (
                JoinHow::Inner,
                vec!["2", "3"],
                vec!["left+right", "left+right"],
            ),
            (
                JoinHow::Left,
                vec!["1", "2", "3"],
                vec!["left", "left+right", "left+right"],
            ),
            (
                JoinHow::Full,
                vec!["1", "2", "3", "4"],
                vec!["left", "left+right", "left+right", "right"],
            ),
        ] {
            let (l, r) = make();
            let strategy = Strategy::Join {
                on: vec!["k".into()],
                how,
            };
            let out = rows(fuse(vec![l, r], &spec(strategy)).expect("plan"), "k").await;
            let got: Vec<String> = texts(&out, "k").into_iter().flatten().collect();
            assert_eq!(got, keys, "{how:?}");
            let p: Vec<String> = texts(&out, "source_dataset")
                .into_iter()
                .flatten()
                .collect();
            assert_eq!(p, provenance, "{how:?}");
            assert!(out.schema().field_with_name("v_right").is_ok(), "{how:?}");
        }
    }

    #[tokio::test]
    async fn asof_join_takes_the_latest_reading_within_the_tolerance() {
        let ms = |s: i64| s * 1000;
        // Samples of two devices; readings per device.
        let samples = input(
            "samples",
            vec![
                (
                    "device",
                    Arc::new(Int64Array::from(vec![1, 1, 1, 2])) as ArrayRef,
                ),
                (
                    "sample",
                    Arc::new(Int64Array::from(vec![10, 11, 12, 13])) as ArrayRef,
                ),
                (
                    "ts",
                    Arc::new(TimestampMillisecondArray::from(vec![
                        ms(100),
                        ms(200),
                        ms(1000),
                        ms(100),
                    ])) as ArrayRef,
                ),
            ],
        );
        let readings = input(
            "weather",
            vec![
                (
                    "device",
                    Arc::new(Int64Array::from(vec![1, 1, 1, 1, 2])) as ArrayRef,
                ),
                (
                    "ts",
                    Arc::new(TimestampMillisecondArray::from(vec![
                        ms(40),      // 60 s before sample 10: exactly the tolerance
                        ms(90),      // nearer, so it wins for sample 10
                        ms(140) - 1, // 60.001 s before sample 11 (200 s): too far
                        ms(1001),    // after sample 12: never used
                        ms(50),      // device 2 only
                    ])) as ArrayRef,
                ),
                (
                    "temp",
                    Arc::new(Float32Array::from(vec![1.0, 2.0, 3.0, 4.0, 5.0])) as ArrayRef,
                ),
            ],
        );
        let strategy = Strategy::Asof {
            left_time: "ts".into(),
            right_time: "ts".into(),
            by: vec!["device".into()],
            tolerance_seconds: 60.0,
        };
        let out = rows(
            fuse(vec![samples, readings], &spec(strategy)).expect("plan"),
            "sample",
        )
        .await;
        assert_eq!(out.num_rows(), 4, "one row per sample");
        assert_eq!(
            texts(&out, "temp"),
            vec![Some("2.0".into()), None, None, Some("5.0".into())]
        );
        assert_eq!(
            texts(&out, "source_dataset"),
            vec![
                Some("samples+weather".into()),
                Some("samples".into()),
                Some("samples".into()),
                Some("samples+weather".into())
            ]
        );
        // The boundary: only the reading exactly 60 s earlier, then 1 ms too far.
        let boundary = |gap_ms: i64| {
            (
                input(
                    "s",
                    vec![
                        ("k", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
                        (
                            "ts",
                            Arc::new(TimestampMillisecondArray::from(vec![ms(100)])) as ArrayRef,
                        ),
                    ],
                ),
                input(
                    "w",
                    vec![
                        (
                            "ts",
                            Arc::new(TimestampMillisecondArray::from(vec![ms(100) - gap_ms]))
                                as ArrayRef,
                        ),
                        ("t", Arc::new(Int64Array::from(vec![7])) as ArrayRef),
                    ],
                ),
            )
        };
        for (gap, matched) in [(60_000, true), (60_001, false)] {
            let (s, w) = boundary(gap);
            let strategy = Strategy::Asof {
                left_time: "ts".into(),
                right_time: "ts".into(),
                by: Vec::new(),
                tolerance_seconds: 60.0,
            };
            let out = rows(fuse(vec![s, w], &spec(strategy)).expect("plan"), "k").await;
            let t = out
                .column_by_name("t")
                .expect("t")
                .as_primitive::<Int64Type>();
            assert_eq!(t.is_valid(0), matched, "gap {gap} ms");
        }
    }

    #[tokio::test]
    async fn deduplication_keeps_the_first_inputs_row() {
        let a = input(
            "first",
            vec![
                ("k", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef),
                (
                    "v",
                    Arc::new(StringArray::from(vec!["a1", "a2"])) as ArrayRef,
                ),
            ],
        );
        let b = input(
            "second",
            vec![
                ("k", Arc::new(Int64Array::from(vec![2, 3])) as ArrayRef),
                (
                    "v",
                    Arc::new(StringArray::from(vec!["b2", "b3"])) as ArrayRef,
                ),
            ],
        );
        let spec = FusionSpec {
            deduplicate: vec!["k".into()],
            ..spec(Strategy::Union)
        };
        let out = rows(fuse(vec![b, a], &spec).expect("plan"), "k").await;
        assert_eq!(
            texts(&out, "v"),
            vec![Some("a1".into()), Some("b2".into()), Some("b3".into())]
        );
        assert!(out.schema().field_with_name(INPUT_RANK).is_err());
    }
}
