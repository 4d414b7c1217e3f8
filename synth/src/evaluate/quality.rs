//! Quality: how closely the synthetic table follows the real one, with the
//! definitions of SDMetrics' `QualityReport` (0.32), so that its numbers and
//! kiln's can be compared:
//! - column shapes: `KSComplement` (1 − the two-sample Kolmogorov–Smirnov
//!   D statistic) for numerical and datetime columns, `TVComplement`
//!   (1 − total variation distance of the frequencies) for categorical and
//!   boolean ones;
//! - column-pair trends: `CorrelationSimilarity` (1 − |ρ_real − ρ_syn| / 2,
//!   Pearson, pairwise complete) for two continuous columns, counted only
//!   where |ρ_real| > 0.5; `ContingencySimilarity` (1 − total variation
//!   distance of the joint frequencies) otherwise, with continuous columns
//!   cut into NumPy's 10 equal-width histogram bins of each table, counted
//!   only where the real Cramér's V > 0.3;
//! - overall: the mean of the two property scores.
//!
//! One difference: SDMetrics scores a contingency pair on a random sample
//! of 50,000 rows when a table is larger; kiln always uses every row, which
//! is what SDMetrics computes with `num_rows_subsample = None`.

use super::{FrameRef, Precision};
use crate::frame::{NULL_CODE, SdType, Values};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// SDMetrics' default threshold on the real |correlation| of a pair.
pub const REAL_CORRELATION_THRESHOLD: f64 = 0.5;
/// SDMetrics' default threshold on the real Cramér's V of a pair.
pub const REAL_ASSOCIATION_THRESHOLD: f64 = 0.3;
/// Bins of a continuous column in a mixed pair (`np.histogram_bin_edges`).
const PAIR_BINS: usize = 10;

/// The quality section of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Quality {
    /// Mean of the property scores that exist.
    pub overall: Option<f64>,
    /// Mean of the column scores.
    pub column_shapes: Option<f64>,
    /// Mean of the scores of the pairs that meet their threshold.
    pub column_pair_trends: Option<f64>,
    /// Each column's shape score.
    pub columns: BTreeMap<String, Option<f64>>,
    /// Each column's metric and score, in table order.
    pub column_details: Vec<ColumnShape>,
    /// Every pair's metric and score.
    pub pairs: Vec<PairTrend>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ColumnShape {
    pub column: String,
    pub metric: &'static str,
    pub score: Option<f64>,
    /// Why there is no score (no values in one of the tables).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PairTrend {
    pub column_1: String,
    pub column_2: String,
    pub metric: &'static str,
    /// `None` below the threshold or when undefined (see `error`).
    pub score: Option<f64>,
    pub real_correlation: Option<f64>,
    pub synthetic_correlation: Option<f64>,
    pub real_association: Option<f64>,
    /// Whether the pair counts towards the property score.
    pub meets_threshold: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// Computes the quality section. `real` and `synthetic` hold the same
/// columns, in `names`' order, with shared dictionaries.
pub fn quality(real: FrameRef<'_>, synthetic: FrameRef<'_>) -> Quality {
    let n = real.names.len();
    let column_details: Vec<ColumnShape> = (0..n)
        .into_par_iter()
        .filter(|&c| real.types[c] != SdType::Id)
        .map(|c| column_shape(real, synthetic, c))
        .collect();
    let column_shapes = mean(column_details.iter().filter_map(|c| c.score));
    let columns = column_details
        .iter()
        .map(|c| (c.column.clone(), c.score))
        .collect();

    // Continuous columns cut into bins, per table, for the mixed pairs.
    let real_bins = discretized(real);
    let synthetic_bins = discretized(synthetic);
    let pair_list: Vec<(usize, usize)> = (0..n)
        .filter(|&a| real.types[a] != SdType::Id)
        .flat_map(|a| {
            (a + 1..n)
                .filter(|&b| real.types[b] != SdType::Id)
                .map(move |b| (a, b))
        })
        .collect();
    let pairs: Vec<PairTrend> = pair_list
        .par_iter()
        .map(|&(a, b)| pair_trend(real, synthetic, (&real_bins, &synthetic_bins), a, b))
        .collect();
    let column_pair_trends = mean(
        pairs
            .iter()
            .filter(|p| p.meets_threshold)
            .filter_map(|p| p.score),
    );
    let overall = mean([column_shapes, column_pair_trends].into_iter().flatten());
    Quality {
        overall,
        column_shapes,
        column_pair_trends,
        columns,
        column_details,
        pairs,
    }
}

fn column_shape(real: FrameRef<'_>, synthetic: FrameRef<'_>, c: usize) -> ColumnShape {
    let column = real.names[c].clone();
    let (metric, score) = match (&real.columns[c], &synthetic.columns[c]) {
        (Values::Numbers(r), Values::Numbers(s)) => ("KSComplement", ks_complement(r, s)),
        (Values::Codes(r), Values::Codes(s)) => ("TVComplement", tv_complement(r, s)),
        _ => ("KSComplement", None),
    };
    ColumnShape {
        column,
        metric,
        error: score
            .is_none()
            .then(|| "the column has no values in one of the tables".to_string()),
        score,
    }
}

/// `np.round(x, 14)`, as SDMetrics rounds values before the KS test.
fn round14(x: f64) -> f64 {
    const F: f64 = 1e14;
    (x * F).round_ties_even() / F
}

/// 1 − the two-sample KS D statistic of the non-missing values; `None` when
/// either side has none (`scipy.stats.ks_2samp`).
pub fn ks_complement(real: &[f64], synthetic: &[f64]) -> Option<f64> {
    let sorted = |v: &[f64]| {
        let mut s: Vec<f64> = v
            .iter()
            .filter(|x| !x.is_nan())
            .map(|&x| round14(x))
            .collect();
        s.par_sort_unstable_by(f64::total_cmp);
        s
    };
    let (a, b) = (sorted(real), sorted(synthetic));
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j, mut d) = (0usize, 0usize, 0.0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / na - j as f64 / nb).abs());
    }
    Some(1.0 - d)
}

/// 1 − the total variation distance between the frequencies of the
/// non-missing values, with SDMetrics' regularisation (a value only the
/// synthetic table has counts 1e-6 in the real one); `None` when either
/// side has no values.
pub fn tv_complement(real: &[u32], synthetic: &[u32]) -> Option<f64> {
    let counts = |v: &[u32]| {
        let mut order = Vec::new();
        let mut m: HashMap<u32, f64> = HashMap::new();
        for &c in v.iter().filter(|&&c| c != NULL_CODE) {
            *m.entry(c).or_insert_with(|| {
                order.push(c);
                0.0
            }) += 1.0;
        }
        (order, m)
    };
    let (mut order, mut r) = counts(real);
    let (_, s) = counts(synthetic);
    if r.is_empty() || s.is_empty() {
        return None;
    }
    let mut s_order: Vec<u32> = s.keys().copied().collect();
    s_order.sort_unstable();
    for c in s_order {
        if let std::collections::hash_map::Entry::Vacant(e) = r.entry(c) {
            e.insert(1e-6);
            order.push(c);
        }
    }
    let r_total: f64 = order.iter().map(|c| r[c]).sum();
    let s_total: f64 = s.values().sum();
    let tv: f64 = order
        .iter()
        .map(|c| (s.get(c).copied().unwrap_or(0.0) / s_total - r[c] / r_total).abs())
        .sum();
    Some(1.0 - 0.5 * tv)
}

/// Pearson's r over the rows where both values exist (`scipy.stats.pearsonr`
/// after `dropna`); `None` when undefined (fewer than 2 rows, a constant).
pub fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    let rows: Vec<usize> = (0..x.len())
        .filter(|&r| !x[r].is_nan() && !y[r].is_nan())
        .collect();
    if rows.len() < 2 {
        return None;
    }
    let n = rows.len() as f64;
    let mx = rows.iter().map(|&r| x[r]).sum::<f64>() / n;
    let my = rows.iter().map(|&r| y[r]).sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for &r in &rows {
        let (dx, dy) = (x[r] - mx, y[r] - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    let constant = |v: &[f64]| rows.iter().all(|&r| v[r] == v[rows[0]]);
    if sxx == 0.0 || syy == 0.0 || constant(x) || constant(y) {
        return None;
    }
    Some((sxy / (sxx.sqrt() * syy.sqrt())).clamp(-1.0, 1.0))
}

/// NumPy's `histogram_bin_edges(values, 10)` in the column's precision;
/// `None` when the range is not finite.
fn histogram_edges(values: &[f64], precision: Precision) -> Option<Vec<f64>> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    let mut any = false;
    for &v in values.iter().filter(|v| !v.is_nan()) {
        lo = lo.min(v);
        hi = hi.max(v);
        any = true;
    }
    if !any {
        (lo, hi) = (0.0, 1.0);
    }
    if !lo.is_finite() || !hi.is_finite() {
        return None;
    }
    if lo == hi {
        (lo, hi) = (lo - 0.5, hi + 0.5);
    }
    // np.linspace: i * step + start, the last edge exactly `stop`.
    let step = (hi - lo) / PAIR_BINS as f64;
    let mut edges: Vec<f64> = (0..=PAIR_BINS).map(|i| i as f64 * step + lo).collect();
    edges[PAIR_BINS] = hi;
    if precision == Precision::Single {
        for e in &mut edges {
            *e = *e as f32 as f64;
        }
    }
    Some(edges)
}

/// `np.digitize(v, edges)`: the number of edges ≤ v; NaN after every edge.
fn digitize(v: f64, edges: &[f64]) -> u32 {
    if v.is_nan() {
        return edges.len() as u32;
    }
    edges.partition_point(|&e| e <= v) as u32
}

/// Continuous columns as histogram bin codes (`None` for discrete columns
/// and for columns whose range is not finite).
fn discretized(frame: FrameRef<'_>) -> Vec<Option<Vec<u32>>> {
    frame
        .columns
        .par_iter()
        .zip(frame.precision.par_iter())
        .map(|(values, &precision)| match values {
            Values::Numbers(v) => {
                histogram_edges(v, precision).map(|e| v.iter().map(|&x| digitize(x, &e)).collect())
            }
            Values::Codes(_) => None,
        })
        .collect()
}

/// Joint counts of two code columns (missing values are codes too, as
/// pandas' `groupby(dropna=False)` keeps them).
fn joint_counts(a: &[u32], b: &[u32]) -> HashMap<(u32, u32), f64> {
    let mut m = HashMap::new();
    for (&x, &y) in a.iter().zip(b) {
        *m.entry((x, y)).or_insert(0.0) += 1.0;
    }
    m
}

/// The cells in key order, so that sums over them do not depend on the
/// hash map's iteration order (the same input gives the same report).
fn sorted(counts: &HashMap<(u32, u32), f64>) -> Vec<(&(u32, u32), &f64)> {
    let mut cells: Vec<_> = counts.iter().collect();
    cells.sort_unstable_by_key(|(k, _)| **k);
    cells
}

/// Cramér's V of a contingency table (`scipy.stats.contingency.association`,
/// no continuity correction); `None` when a side has a single value.
fn cramers_v(counts: &HashMap<(u32, u32), f64>) -> Option<f64> {
    let mut rows: HashMap<u32, f64> = HashMap::new();
    let mut cols: HashMap<u32, f64> = HashMap::new();
    for (&(r, c), &n) in counts {
        *rows.entry(r).or_insert(0.0) += n;
        *cols.entry(c).or_insert(0.0) += n;
    }
    let total: f64 = rows.values().sum();
    if total == 0.0 || rows.len() < 2 || cols.len() < 2 {
        return None;
    }
    // Σ (O − E)² / E over every cell equals Σ O² / E over the observed
    // cells − n (Σ O = Σ E = n), which stays linear in the observed cells
    // when both columns have many distinct values.
    let chi2 = sorted(counts)
        .into_iter()
        .map(|((r, c), &o)| o * o * total / (rows[r] * cols[c]))
        .sum::<f64>()
        - total;
    let chi2 = chi2.max(0.0);
    let k = (rows.len().min(cols.len()) - 1) as f64;
    Some((chi2 / total / k).sqrt())
}

/// 1 − the total variation distance of two joint distributions.
fn contingency_score(real: &HashMap<(u32, u32), f64>, synthetic: &HashMap<(u32, u32), f64>) -> f64 {
    let nr: f64 = real.values().sum();
    let ns: f64 = synthetic.values().sum();
    let mut tv = 0.0;
    for (k, r) in sorted(real) {
        tv += (r / nr - synthetic.get(k).copied().unwrap_or(0.0) / ns).abs();
    }
    for (k, s) in sorted(synthetic) {
        if !real.contains_key(k) {
            tv += s / ns;
        }
    }
    1.0 - tv / 2.0
}

type Bins<'a> = (&'a [Option<Vec<u32>>], &'a [Option<Vec<u32>>]);

fn pair_trend(
    real: FrameRef<'_>,
    synthetic: FrameRef<'_>,
    (real_bins, synthetic_bins): Bins<'_>,
    a: usize,
    b: usize,
) -> PairTrend {
    let mut out = PairTrend {
        column_1: real.names[a].clone(),
        column_2: real.names[b].clone(),
        metric: "ContingencySimilarity",
        score: None,
        real_correlation: None,
        synthetic_correlation: None,
        real_association: None,
        meets_threshold: false,
        error: None,
    };
    let continuous = (real.types[a].is_continuous(), real.types[b].is_continuous());
    if continuous == (true, true) {
        out.metric = "CorrelationSimilarity";
        let (Values::Numbers(ra), Values::Numbers(rb), Values::Numbers(sa), Values::Numbers(sb)) = (
            &real.columns[a],
            &real.columns[b],
            &synthetic.columns[a],
            &synthetic.columns[b],
        ) else {
            return out;
        };
        let Some(r) = pearson(ra, rb) else {
            out.error = Some(
                "correlation is undefined for the real values (constant or too few rows)".into(),
            );
            return out;
        };
        out.real_correlation = Some(r);
        if r.abs() <= REAL_CORRELATION_THRESHOLD {
            return out;
        }
        let Some(s) = pearson(sa, sb) else {
            out.error = Some(
                "correlation is undefined for the synthetic values (constant or too few rows)"
                    .into(),
            );
            return out;
        };
        out.synthetic_correlation = Some(s);
        out.score = Some(1.0 - (r - s).abs() / 2.0);
        out.meets_threshold = true;
        return out;
    }
    // A continuous column in a mixed pair is compared through its bins.
    fn codes<'f>(frame: FrameRef<'f>, bins: &'f [Option<Vec<u32>>], c: usize) -> Option<&'f [u32]> {
        match &frame.columns[c] {
            Values::Codes(v) => Some(v),
            Values::Numbers(_) => bins[c].as_deref(),
        }
    }
    let (Some(ra), Some(rb), Some(sa), Some(sb)) = (
        codes(real, real_bins, a),
        codes(real, real_bins, b),
        codes(synthetic, synthetic_bins, a),
        codes(synthetic, synthetic_bins, b),
    ) else {
        out.error =
            Some("a continuous column's range is not finite, so it cannot be binned".into());
        return out;
    };
    let real_counts = joint_counts(ra, rb);
    out.real_association = cramers_v(&real_counts);
    match out.real_association {
        Some(v) if v > REAL_ASSOCIATION_THRESHOLD => {}
        _ => return out,
    }
    let synthetic_counts = joint_counts(sa, sb);
    if real_counts.is_empty() || synthetic_counts.is_empty() {
        out.error = Some("one of the tables has no rows".into());
        return out;
    }
    out.score = Some(contingency_score(&real_counts, &synthetic_counts));
    out.meets_threshold = true;
    out
}
