//! Fitting the copula in two streaming passes over the table, whatever its
//! size:
//! 1. exact per-column counts (nulls, minimum, maximum, the distinct values
//!    of low-cardinality numeric columns, category frequencies) and a
//!    uniform sample of rows for the quantiles: the `sample_rows` rows with
//!    the smallest content hash, so the sample (and the model) does not
//!    depend on file order or partitioning;
//! 2. every row's normal scores, summed as fixed-point integers into the
//!    covariance, which is exact and order-independent too.
//!
//! A value with a probability mass (a category, a repeated number, a
//! missing value) maps to an interval of the unit line; its normal score is
//! drawn inside the interval from the row's hash (the distributional
//! transform), again deterministic whatever the order.

use super::linalg::{Matrix, nearest_definite};
use super::marginal::{Marginal, Prepared};
use super::parametric::{Distribution, DistributionKind};
use super::{CopulaColumn, CopulaParams, FORMAT_VERSION, GaussianCopula, SourceInfo, normal};
use crate::frame::{Metadata, SdType, append_numbers, text_values};
use crate::mix;
use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::DataType;
use datafusion::dataframe::DataFrame;
use kiln_engine::table_pass::{self, RowsSeen, TablePass};
use kiln_engine::{KilnError, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use twox_hash::XxHash3_64;

/// Fixed-point scale of the normal scores summed into the covariance.
const SCALE: f64 = (1u64 << 20) as f64;

/// One batch's columns as the fit reads them.
enum ColumnData {
    Numbers(Vec<f64>),
    Text(ArrayRef),
}

/// Where the fit stands, for a progress display.
#[derive(Debug, Clone, Copy)]
pub struct FitProgress {
    /// 1 or 2.
    pub pass: u8,
    pub rows: u64,
}

fn is_supported(t: &DataType) -> bool {
    t.is_numeric()
        || matches!(
            t,
            DataType::Boolean
                | DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Timestamp(..)
                | DataType::Date32
                | DataType::Date64
        )
        || matches!(t, DataType::Dictionary(_, v) if matches!(**v, DataType::Utf8 | DataType::LargeUtf8))
}

fn is_integer(t: &DataType) -> bool {
    t.is_integer()
}

/// Per-column accumulators of pass 1.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Stats {
    Numbers {
        nulls: u64,
        count: u64,
        min: f64,
        max: f64,
        /// Distinct values and counts while there are few.
        distinct: Option<HashMap<u64, u64>>,
    },
    Categories {
        nulls: u64,
        counts: HashMap<String, u64>,
        /// More than `max_categories` distinct values were seen (counting
        /// stopped; the fit fails with a fix).
        overflowed: bool,
    },
    Key,
}

fn read_columns(arrays: &[ArrayRef], columns: &[CopulaColumn]) -> Result<Vec<ColumnData>> {
    if arrays.len() != columns.len() {
        return Err(KilnError::internal(
            "reading the training table",
            format!("{} columns for {} arrays", columns.len(), arrays.len()),
        ));
    }
    columns
        .iter()
        .zip(arrays)
        .map(|(c, array)| {
            if c.sdtype.is_continuous() {
                let mut v = Vec::with_capacity(array.len());
                append_numbers(array, &mut v, &c.name, "training")?;
                Ok(ColumnData::Numbers(v))
            } else {
                Ok(ColumnData::Text(text_values(array, &c.name, "training")?))
            }
        })
        .collect()
}

/// A content hash per row, over every column.
fn row_hashes(data: &[ColumnData], rows: usize) -> Vec<u64> {
    let mut h = vec![0x9E37_79B9_7F4A_7C15u64; rows];
    for (c, column) in data.iter().enumerate() {
        match column {
            ColumnData::Numbers(v) => {
                for (r, x) in v.iter().enumerate() {
                    let bits = if x.is_nan() {
                        u64::MAX
                    } else {
                        (x + 0.0).to_bits()
                    };
                    h[r] = mix(h[r], bits, c as u64);
                }
            }
            ColumnData::Text(a) => {
                let a = a.as_string::<i32>();
                for (r, hr) in h.iter_mut().enumerate() {
                    let v = if a.is_valid(r) {
                        XxHash3_64::oneshot(a.value(r).as_bytes())
                    } else {
                        u64::MAX - 1
                    };
                    *hr = mix(*hr, v, c as u64);
                }
            }
        }
    }
    h
}

/// Pass 1's result: every column with its marginal, and the table's size
/// and content fingerprint.
pub(crate) struct Marginals {
    pub columns: Vec<CopulaColumn>,
    pub rows: u64,
    pub fingerprint: u64,
}

impl Marginals {
    /// The columns that vary: not keys, not constant.
    pub fn dimensions(&self) -> Vec<usize> {
        (0..self.columns.len())
            .filter(|&c| {
                self.columns[c].sdtype != SdType::Id && !self.columns[c].marginal.is_degenerate()
            })
            .collect()
    }
}

/// What every partition of pass 1 needs.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StatsConfig {
    columns: Vec<CopulaColumn>,
    discrete_values: usize,
    max_categories: usize,
    sample_rows: usize,
}

/// Pass 1's state: exact counts per column, the rows with the smallest
/// content hashes (their continuous values), the row count and the sum of
/// the row hashes. Every part merges exactly, in any order.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StatsState {
    stats: Vec<Stats>,
    sample: Vec<(u64, Vec<f64>)>,
    /// Rows hashing above it cannot enter the sample.
    threshold: u64,
    rows: u64,
    fingerprint: u64,
}

/// Pass 1 as a [`TablePass`]: `kiln_copula_stats`.
pub(crate) struct StatsPass;

impl TablePass for StatsPass {
    const NAME: &'static str = "kiln_copula_stats";
    type Config = StatsConfig;
    type State = StatsState;

    fn start(config: &StatsConfig) -> StatsState {
        StatsState {
            stats: config
                .columns
                .iter()
                .map(|c| match c.sdtype {
                    SdType::Id => Stats::Key,
                    t if t.is_continuous() => Stats::Numbers {
                        nulls: 0,
                        count: 0,
                        min: f64::INFINITY,
                        max: f64::NEG_INFINITY,
                        distinct: Some(HashMap::new()),
                    },
                    _ => Stats::Categories {
                        nulls: 0,
                        counts: HashMap::new(),
                        overflowed: false,
                    },
                })
                .collect(),
            sample: Vec::new(),
            threshold: u64::MAX,
            rows: 0,
            fingerprint: 0,
        }
    }

    fn update(config: &StatsConfig, state: &mut StatsState, arrays: &[ArrayRef]) -> Result<()> {
        let data = read_columns(arrays, &config.columns)?;
        let n = arrays.first().map_or(0, |a| a.len());
        let hashes = row_hashes(&data, n);
        state.fingerprint = hashes
            .iter()
            .fold(state.fingerprint, |a, &h| a.wrapping_add(h));
        for (column, st) in data.iter().zip(state.stats.iter_mut()) {
            accumulate(st, column, config);
        }
        let continuous: Vec<usize> = (0..config.columns.len())
            .filter(|&c| config.columns[c].sdtype.is_continuous())
            .collect();
        let k = config.sample_rows;
        for (r, &h) in hashes.iter().enumerate() {
            if h < state.threshold || state.sample.len() < k {
                let values = continuous
                    .iter()
                    .map(|&c| match &data[c] {
                        ColumnData::Numbers(v) => v[r],
                        ColumnData::Text(_) => f64::NAN,
                    })
                    .collect();
                state.sample.push((h, values));
            }
        }
        if state.sample.len() >= 2 * k {
            state.threshold = shrink(&mut state.sample, k);
        }
        state.rows += n as u64;
        Ok(())
    }

    fn merge(config: &StatsConfig, state: &mut StatsState, other: StatsState) -> Result<()> {
        for (st, o) in state.stats.iter_mut().zip(other.stats) {
            merge_stats(st, o, config);
        }
        state.sample.extend(other.sample);
        if state.sample.len() >= config.sample_rows {
            state.threshold = shrink(&mut state.sample, config.sample_rows);
        }
        state.rows += other.rows;
        state.fingerprint = state.fingerprint.wrapping_add(other.fingerprint);
        Ok(())
    }

    fn finish(config: &StatsConfig, state: &mut StatsState) {
        shrink(&mut state.sample, config.sample_rows);
    }

    fn size(state: &StatsState) -> usize {
        state.sample.len() * (16 + 8 * state.sample.first().map_or(0, |(_, v)| v.len()))
    }
}

/// Runs `pass` over `columns` of `df`, telling `progress` how many rows
/// this process has read so far (locally all; on a cluster the executors
/// read, and only the total is known at the end).
async fn run_pass<P: TablePass>(
    df: DataFrame,
    config: &P::Config,
    columns: &[CopulaColumn],
    pass: u8,
    progress: &(dyn Fn(FitProgress) + Sync),
) -> Result<P::State> {
    let seen = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&seen);
    let hook: RowsSeen = Arc::new(move |rows| {
        counter.fetch_add(rows, Ordering::Relaxed);
    });
    let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
    let work = table_pass::run::<P>(df, config, &names, Some(hook));
    tokio::pin!(work);
    let every = std::time::Duration::from_millis(250);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            state = &mut work => return state,
            // Nothing read here yet (or ever, on a cluster): nothing to say.
            _ = tick.tick() => match seen.load(Ordering::Relaxed) {
                0 => {}
                rows => progress(FitProgress { pass, rows }),
            },
        }
    }
}

/// Pass 1: the columns to model (checked against the schema) and their
/// marginals, from exact counts and a bottom-k sample of rows.
pub(crate) async fn marginals(
    df: &DataFrame,
    params: &CopulaParams,
    progress: &(dyn Fn(FitProgress) + Sync),
) -> Result<Marginals> {
    params.check()?;
    let schema = df.schema().as_arrow().clone();
    let mut metadata = Metadata::infer(&schema, &params.types)?;
    for name in &params.ignore {
        if schema.field_with_name(name).is_err() {
            return Err(KilnError::config(format!(
                "ignore names column '{name}', which the table does not have"
            )));
        }
    }
    metadata.columns.retain(|(n, _)| !params.ignore.contains(n));
    let mut columns = Vec::new();
    for (name, sdtype) in &metadata.columns {
        let data_type = schema
            .field_with_name(name)
            .map_err(|e| KilnError::internal("reading the schema", e))?
            .data_type()
            .clone();
        if !is_supported(&data_type) {
            return Err(KilnError::config_fix(
                format!("column '{name}' has type {data_type}, which the model cannot represent"),
                format!(
                    "leave it out (ignore: [{name}]) or cast it to a number, text or timestamp"
                ),
            ));
        }
        // Text is recorded as Utf8 whatever the reader chose (local scans
        // give Utf8View, Ballista Utf8): the same data gives the same model.
        let recorded = match &data_type {
            DataType::Utf8View | DataType::LargeUtf8 | DataType::Dictionary(..) => DataType::Utf8,
            t => t.clone(),
        };
        columns.push(CopulaColumn {
            name: name.clone(),
            data_type: recorded.to_string(),
            sdtype: *sdtype,
            integer: is_integer(&data_type),
            marginal: Marginal::Null,
        });
    }
    if columns.is_empty() {
        return Err(KilnError::config("no columns are left to model"));
    }
    for name in params.numerical_distributions.keys() {
        if !columns
            .iter()
            .any(|c| &c.name == name && c.sdtype.is_continuous())
        {
            let continuous: Vec<&str> = columns
                .iter()
                .filter(|c| c.sdtype.is_continuous())
                .map(|c| c.name.as_str())
                .collect();
            return Err(KilnError::config_fix(
                format!(
                    "numerical_distributions names '{name}', which is not a numeric or datetime column of the table"
                ),
                format!("name one of: {}", continuous.join(", ")),
            ));
        }
    }
    let config = StatsConfig {
        columns,
        discrete_values: params.discrete_values,
        max_categories: params.max_categories,
        sample_rows: params.sample_rows,
    };
    let state = run_pass::<StatsPass>(df.clone(), &config, &config.columns, 1, progress).await?;
    let StatsState {
        stats,
        mut sample,
        rows,
        fingerprint,
        ..
    } = state;
    progress(FitProgress { pass: 1, rows });
    if rows == 0 {
        return Err(KilnError::data_fix(
            "the training table",
            "it has no rows",
            "fit the model to a table with data",
        ));
    }
    shrink(&mut sample, params.sample_rows);
    let mut columns = config.columns;
    let continuous: Vec<usize> = (0..columns.len())
        .filter(|&c| columns[c].sdtype.is_continuous())
        .collect();
    for (c, st) in stats.into_iter().enumerate() {
        let k = continuous.iter().position(|&x| x == c);
        let sample = k.map(|k| column_of(&sample, k));
        columns[c].marginal = marginal(st, rows, sample, &columns[c].name, params)?;
    }
    Ok(Marginals {
        columns,
        rows,
        fingerprint,
    })
}

/// What every partition of pass 2 needs to place its rows on the unit
/// lines: the marginals, the columns that are dimensions, the table's size
/// and the seed of the draws inside a value's interval.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct UnitsConfig {
    columns: Vec<CopulaColumn>,
    pub dims: Vec<usize>,
    rows: u64,
    seed: u64,
}

impl UnitsConfig {
    pub fn new(m: &Marginals, dims: &[usize], seed: u64) -> Self {
        UnitsConfig {
            columns: m.columns.clone(),
            dims: dims.to_vec(),
            rows: m.rows,
            seed,
        }
    }

    /// Every row's position on the unit line for each dimension (a value
    /// with a mass gets a draw inside its interval, seeded by the row's
    /// content and the column) as a row-major `rows × dims` matrix,
    /// clamped to [0.5 / n, 1 − 0.5 / n]; and the number of rows.
    pub fn units(&self, arrays: &[ArrayRef]) -> Result<(Vec<f64>, usize)> {
        let columns = &self.columns;
        let dims = &self.dims;
        let d = dims.len();
        let eps = 0.5 / self.rows.max(1) as f64;
        let prepared: Vec<_> = columns.iter().map(|c| c.marginal.prepare()).collect();
        let lookups: Vec<HashMap<&str, usize>> = columns
            .iter()
            .map(|c| match &c.marginal {
                Marginal::Categorical { categories, .. } => categories
                    .iter()
                    .enumerate()
                    .map(|(k, v)| (v.as_str(), k))
                    .collect(),
                _ => HashMap::new(),
            })
            .collect();
        let data = read_columns(arrays, columns)?;
        let n = arrays.first().map_or(0, |a| a.len());
        let hashes = row_hashes(&data, n);
        let mut units = vec![0.0; n * d];
        units
            .par_chunks_mut(d.max(1))
            .enumerate()
            .for_each(|(r, row)| {
                for (k, &c) in dims.iter().enumerate() {
                    let (lo, hi) = unit_interval(&prepared[c], &lookups[c], &data[c], r);
                    let t = to_unit(mix(hashes[r], c as u64, self.seed));
                    row[k] = (lo + (hi - lo) * t).clamp(eps, 1.0 - eps);
                }
            });
        Ok((units, n))
    }

    /// Fails when pass 2 saw another number of rows than pass 1.
    pub fn check_rows(&self, seen: u64) -> Result<()> {
        if seen != self.rows {
            return Err(KilnError::data_fix(
                "the training table",
                format!(
                    "it changed while the model was fitted ({} rows, then {seen})",
                    self.rows
                ),
                "fit the model to a table that is not being written",
            ));
        }
        Ok(())
    }
}

/// Pass 2 of any model: runs `P` (whose configuration holds a
/// [`UnitsConfig`]) over the modelled columns and checks the row count.
pub(crate) async fn run_units_pass<P: TablePass>(
    df: DataFrame,
    config: &P::Config,
    units: &UnitsConfig,
    rows_of: impl Fn(&P::State) -> u64,
    progress: &(dyn Fn(FitProgress) + Sync),
) -> Result<P::State> {
    let state = run_pass::<P>(df, config, &units.columns, 2, progress).await?;
    let rows = rows_of(&state);
    progress(FitProgress { pass: 2, rows });
    units.check_rows(rows)?;
    Ok(state)
}

/// The copula's pass 2: sums and products of the rows' normal scores, as
/// fixed-point integers (exact, order-independent).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Moments {
    rows: u64,
    /// Little-endian i128s (CBOR has no 128-bit integers).
    sums: Vec<[u8; 16]>,
    products: Vec<[u8; 16]>,
}

/// Pass 2 of the copula as a [`TablePass`]: `kiln_copula_moments`.
pub(crate) struct MomentsPass;

fn wide(v: &[[u8; 16]]) -> Vec<i128> {
    v.iter().map(|b| i128::from_le_bytes(*b)).collect()
}

impl TablePass for MomentsPass {
    const NAME: &'static str = "kiln_copula_moments";
    type Config = UnitsConfig;
    type State = Moments;

    fn start(config: &UnitsConfig) -> Moments {
        let d = config.dims.len();
        Moments {
            rows: 0,
            sums: vec![[0; 16]; d],
            products: vec![[0; 16]; d * d],
        }
    }

    fn update(config: &UnitsConfig, state: &mut Moments, arrays: &[ArrayRef]) -> Result<()> {
        let (units, n) = config.units(arrays)?;
        let d = config.dims.len();
        let (s, p) = (0..n)
            .into_par_iter()
            .chunks(1024)
            .map(|chunk| {
                let mut s = vec![0i64; d];
                let mut p = vec![0i64; d * d];
                let mut q = vec![0i64; d];
                for r in chunk {
                    for k in 0..d {
                        q[k] = (normal::quantile(units[r * d + k]) * SCALE).round() as i64;
                    }
                    for i in 0..d {
                        s[i] += q[i];
                        for j in 0..=i {
                            p[i * d + j] += q[i] * q[j];
                        }
                    }
                }
                // |q| < 2^23, so 1024 rows of products fit an i64; wider
                // sums are i128.
                let widen = |v: Vec<i64>| v.into_iter().map(i128::from).collect::<Vec<_>>();
                (widen(s), widen(p))
            })
            .reduce(
                || (vec![0i128; d], vec![0i128; d * d]),
                |(mut a, mut b), (x, y)| {
                    a.iter_mut().zip(x).for_each(|(a, x)| *a += x);
                    b.iter_mut().zip(y).for_each(|(b, y)| *b += y);
                    (a, b)
                },
            );
        add_wide(&mut state.sums, &s);
        add_wide(&mut state.products, &p);
        state.rows += n as u64;
        Ok(())
    }

    fn merge(_config: &UnitsConfig, state: &mut Moments, other: Moments) -> Result<()> {
        add_wide(&mut state.sums, &wide(&other.sums));
        add_wide(&mut state.products, &wide(&other.products));
        state.rows += other.rows;
        Ok(())
    }
}

fn add_wide(to: &mut [[u8; 16]], add: &[i128]) {
    for (a, x) in to.iter_mut().zip(add) {
        *a = (i128::from_le_bytes(*a) + x).to_le_bytes();
    }
}

/// Fits a Gaussian copula to `df`.
pub async fn fit(
    df: DataFrame,
    source_uri: &str,
    params: &CopulaParams,
    progress: &(dyn Fn(FitProgress) + Sync),
) -> Result<GaussianCopula> {
    let m = marginals(&df, params, progress).await?;
    let dims = m.dimensions();
    let d = dims.len();
    let units = UnitsConfig::new(&m, &dims, params.seed);
    let moments = run_units_pass::<MomentsPass>(df, &units, &units, |s| s.rows, progress).await?;
    let (sums, products) = (wide(&moments.sums), wide(&moments.products));
    let (rows, fingerprint, columns) = (m.rows, m.fingerprint, m.columns);
    let n = i128::from(rows as i64);
    let cov = |i: usize, j: usize| {
        let (a, b) = if j <= i { (i, j) } else { (j, i) };
        (n * products[a * d + b] - sums[a] * sums[b]) as f64
    };
    let mut corr = Matrix::identity(d);
    for i in 0..d {
        for j in 0..i {
            let denom = (cov(i, i) * cov(j, j)).sqrt();
            let r = if denom > 0.0 {
                (cov(i, j) / denom).clamp(-1.0, 1.0)
            } else {
                0.0
            };
            corr.data[i * d + j] = r;
            corr.data[j * d + i] = r;
        }
    }
    let (correlation, _, shrinkage) = nearest_definite(&corr);
    Ok(GaussianCopula {
        format_version: FORMAT_VERSION,
        kind: "gaussian_copula".into(),
        kiln_version: env!("CARGO_PKG_VERSION").into(),
        columns,
        dimensions: dims,
        correlation: correlation.data,
        shrinkage,
        source: SourceInfo {
            uri: source_uri.to_string(),
            rows,
            fingerprint: format!("{fingerprint:016x}"),
        },
        params: params.clone(),
    })
}

/// A hash as a uniform number in [0, 1).
fn to_unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// Keeps the `k` rows with the smallest hashes; returns the largest kept.
fn shrink(sample: &mut Vec<(u64, Vec<f64>)>, k: usize) -> u64 {
    if sample.len() > k {
        sample.select_nth_unstable_by_key(k, |(h, _)| *h);
        sample.truncate(k);
    }
    sample.iter().map(|(h, _)| *h).max().unwrap_or(u64::MAX)
}

fn column_of(sample: &[(u64, Vec<f64>)], k: usize) -> Vec<f64> {
    let mut v: Vec<f64> = sample
        .iter()
        .map(|(_, row)| row[k])
        .filter(|x| !x.is_nan())
        .collect();
    v.sort_unstable_by(f64::total_cmp);
    v
}

fn accumulate(st: &mut Stats, column: &ColumnData, config: &StatsConfig) {
    match (st, column) {
        (
            Stats::Numbers {
                nulls,
                count,
                min,
                max,
                distinct,
            },
            ColumnData::Numbers(v),
        ) => {
            for &x in v {
                if x.is_nan() {
                    *nulls += 1;
                    continue;
                }
                *count += 1;
                *min = min.min(x);
                *max = max.max(x);
                if let Some(m) = distinct {
                    *m.entry((x + 0.0).to_bits()).or_insert(0) += 1;
                    if m.len() > config.discrete_values {
                        *distinct = None;
                    }
                }
            }
        }
        (
            Stats::Categories {
                nulls,
                counts,
                overflowed,
            },
            ColumnData::Text(a),
        ) => {
            let a = a.as_string::<i32>();
            for r in 0..a.len() {
                if a.is_null(r) {
                    *nulls += 1;
                } else if *overflowed {
                    continue;
                } else if let Some(c) = counts.get_mut(a.value(r)) {
                    *c += 1;
                } else if counts.len() >= config.max_categories {
                    *overflowed = true;
                    counts.clear();
                } else {
                    counts.insert(a.value(r).to_string(), 1);
                }
            }
        }
        _ => {}
    }
}

/// Folds another partition's counts of the same column in. Distinct values
/// and categories past their limits stay past them, as in one pass.
fn merge_stats(st: &mut Stats, other: Stats, config: &StatsConfig) {
    match (st, other) {
        (
            Stats::Numbers {
                nulls,
                count,
                min,
                max,
                distinct,
            },
            Stats::Numbers {
                nulls: other_nulls,
                count: other_count,
                min: other_min,
                max: other_max,
                distinct: other_distinct,
            },
        ) => {
            *nulls += other_nulls;
            *count += other_count;
            *min = min.min(other_min);
            *max = max.max(other_max);
            *distinct = match (distinct.take(), other_distinct) {
                (Some(mut m), Some(o)) => {
                    for (v, c) in o {
                        *m.entry(v).or_insert(0) += c;
                    }
                    (m.len() <= config.discrete_values).then_some(m)
                }
                _ => None,
            };
        }
        (
            Stats::Categories {
                nulls,
                counts,
                overflowed,
            },
            Stats::Categories {
                nulls: other_nulls,
                counts: other_counts,
                overflowed: other_overflowed,
            },
        ) => {
            *nulls += other_nulls;
            *overflowed |= other_overflowed;
            if !*overflowed {
                for (v, c) in other_counts {
                    *counts.entry(v).or_insert(0) += c;
                }
                *overflowed = counts.len() > config.max_categories;
            }
            if *overflowed {
                counts.clear();
            }
        }
        _ => {}
    }
}

fn marginal(
    st: Stats,
    rows: u64,
    sample: Option<Vec<f64>>,
    name: &str,
    params: &CopulaParams,
) -> Result<Marginal> {
    Ok(match st {
        Stats::Key => Marginal::Null,
        Stats::Numbers {
            nulls,
            count,
            min,
            max,
            distinct,
        } => {
            let null_rate = nulls as f64 / rows as f64;
            if count == 0 {
                return Ok(Marginal::Null);
            }
            if let Some(m) = distinct {
                let mut values: Vec<(f64, u64)> =
                    m.into_iter().map(|(b, c)| (f64::from_bits(b), c)).collect();
                values.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
                return Ok(Marginal::Discrete {
                    null_rate,
                    probabilities: values
                        .iter()
                        .map(|(_, c)| *c as f64 / count as f64)
                        .collect(),
                    values: values.into_iter().map(|(v, _)| v).collect(),
                });
            }
            let sample = sample.unwrap_or_default();
            let asked = params.numerical_distributions.get(name);
            let kind = asked.copied().unwrap_or(params.default_distribution);
            if kind != DistributionKind::Empirical {
                match Distribution::fit(kind, &sample) {
                    Some(distribution) => {
                        return Ok(Marginal::Parametric {
                            null_rate,
                            distribution,
                            min,
                            max,
                        });
                    }
                    // Asked for this column by name: say why it cannot be.
                    None if asked.is_some() => {
                        return Err(KilnError::data_fix(
                            format!("column '{name}'"),
                            format!(
                                "a {} distribution cannot be fitted to it (constant, or not positive for lognorm)",
                                serde_json::json!(kind).as_str().unwrap_or_default()
                            ),
                            "choose another distribution for it in numerical_distributions, or empirical",
                        ));
                    }
                    // The default: the empirical quantiles, recorded as such.
                    None => {}
                }
            }
            let m = params.quantiles.max(2);
            let mut quantiles: Vec<f64> = (0..m)
                .map(|k| {
                    if sample.is_empty() {
                        return min;
                    }
                    // NumPy's default ("linear") quantile of the sample.
                    let pos = k as f64 / (m - 1) as f64 * (sample.len() - 1) as f64;
                    let i = pos.floor() as usize;
                    let j = (i + 1).min(sample.len() - 1);
                    sample[i] + (pos - i as f64) * (sample[j] - sample[i])
                })
                .collect();
            quantiles[0] = min;
            quantiles[m - 1] = max;
            for k in 1..m {
                quantiles[k] = quantiles[k].clamp(quantiles[k - 1], max);
            }
            Marginal::Continuous {
                null_rate,
                quantiles,
            }
        }
        Stats::Categories {
            overflowed: true, ..
        } => {
            return Err(KilnError::data_fix(
                format!("column '{name}'"),
                format!(
                    "it has more than {} distinct values, too many to model as categories",
                    params.max_categories
                ),
                format!(
                    "if it is a key, declare it one (types: {{{name}: id}}) and unique keys are generated; otherwise raise max_categories or leave the column out"
                ),
            ));
        }
        Stats::Categories { nulls, counts, .. } => {
            let total: u64 = counts.values().sum();
            if total == 0 {
                return Ok(Marginal::Null);
            }
            let mut counts: Vec<(String, u64)> = counts.into_iter().collect();
            counts.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            Marginal::Categorical {
                null_rate: nulls as f64 / rows as f64,
                probabilities: counts
                    .iter()
                    .map(|(_, c)| *c as f64 / total as f64)
                    .collect(),
                categories: counts.into_iter().map(|(v, _)| v).collect(),
            }
        }
    })
}

/// The unit-line interval of row `r`'s value.
fn unit_interval(
    marginal: &Prepared<'_>,
    lookup: &HashMap<&str, usize>,
    data: &ColumnData,
    r: usize,
) -> (f64, f64) {
    match (marginal.marginal, data) {
        (_, ColumnData::Numbers(v)) if v[r].is_nan() => marginal.null_interval(),
        (_, ColumnData::Numbers(v)) => marginal.interval_of_number(v[r]).unwrap_or((0.0, 1.0)),
        (Marginal::Categorical { .. }, ColumnData::Text(a)) => {
            let a = a.as_string::<i32>();
            if a.is_null(r) {
                return marginal.null_interval();
            }
            lookup
                .get(a.value(r))
                .and_then(|&k| marginal.interval_of_category(k))
                .unwrap_or((0.0, 1.0))
        }
        _ => (0.0, 1.0),
    }
}
