//! Privacy: how close synthetic rows come to real ones.
//! - `exact_copies`: the share of synthetic rows equal to a real row in
//!   every evaluated column (all rows of both tables);
//! - distance to the closest record (DCR), SDMetrics' definition: per
//!   column, |a − b| / (real range), capped at 1, for numbers (0/1 when the
//!   range is 0) and 0/1 for categories, a missing value differing from any
//!   value by 1; a row's distance is the mean over columns, and its DCR the
//!   minimum over the real rows. Computed on seeded samples of
//!   `privacy_rows` rows;
//! - the baseline: with a holdout table, SDMetrics' `DCROverfittingProtection`
//!   (the share of synthetic rows closer to the training rows than to the
//!   holdout rows; score = min(2 (1 − share), 1)); without one,
//!   `DCRBaselineProtection` (the median DCR of the synthetic rows over that
//!   of uniformly random rows in the real ranges; score = min(ratio, 1)).

use super::{EvaluationParams, FrameRef};
use crate::frame::{NULL_CODE, SdType, Values};
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::HashSet;

#[derive(Debug, Clone, Serialize)]
pub struct Privacy {
    /// Share of synthetic rows that copy a real row exactly.
    pub exact_copies: f64,
    /// Synthetic rows that copy a real row exactly.
    pub exact_copy_rows: usize,
    pub dcr: Dcr,
}

#[derive(Debug, Clone, Serialize)]
pub struct Dcr {
    /// `DCROverfittingProtection` (holdout) or `DCRBaselineProtection`.
    pub metric: &'static str,
    /// Higher is more private; `None` when the baseline distance is 0.
    pub score: Option<f64>,
    /// Median DCR of the sampled synthetic rows to the sampled real rows.
    pub median_synthetic_to_real: f64,
    /// Median DCR of the baseline rows (holdout or random) to the real rows.
    pub median_baseline_to_real: f64,
    /// With a holdout: share of synthetic rows closer to the real
    /// (training) rows than to the holdout rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closer_to_training: Option<f64>,
    pub synthetic_rows_sampled: usize,
    pub real_rows_sampled: usize,
}

/// Column-major values of sampled rows, in the shape the distance loop reads.
pub(crate) struct Sample {
    pub columns: Vec<Values>,
    pub rows: usize,
}

fn take(frame: FrameRef<'_>, rows: &[usize], keep: &[usize]) -> Sample {
    let columns = keep
        .iter()
        .map(|&c| match &frame.columns[c] {
            Values::Numbers(v) => Values::Numbers(rows.iter().map(|&r| v[r]).collect()),
            Values::Codes(v) => Values::Codes(rows.iter().map(|&r| v[r]).collect()),
        })
        .collect();
    Sample {
        columns,
        rows: rows.len(),
    }
}

fn sample_rows(n: usize, k: usize, seed: u64) -> Vec<usize> {
    if k >= n {
        return (0..n).collect();
    }
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut rows = sample(&mut rng, n, k).into_vec();
    rows.sort_unstable();
    rows
}

/// The DCR of every row of `data` to `reference` (SDMetrics' `calculate_dcr`).
pub(crate) fn dcr(data: &Sample, reference: &Sample) -> Vec<f64> {
    let ranges: Vec<f64> = reference
        .columns
        .iter()
        .map(|c| match c {
            Values::Numbers(v) => {
                let (lo, hi) = v
                    .iter()
                    .filter(|x| !x.is_nan())
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &x| {
                        (l.min(x), h.max(x))
                    });
                if lo > hi { f64::NAN } else { hi - lo }
            }
            Values::Codes(_) => 0.0,
        })
        .collect();
    let ncols = data.columns.len() as f64;
    // One data row against every reference row, column by column, so the
    // inner loops run over contiguous slices.
    (0..data.rows)
        .into_par_iter()
        .map_init(
            || vec![0.0f64; reference.rows],
            |acc, i| {
                acc.fill(0.0);
                for (c, (a, b)) in data.columns.iter().zip(&reference.columns).enumerate() {
                    match (a, b) {
                        (Values::Numbers(a), Values::Numbers(b)) => {
                            let (x, range) = (a[i], ranges[c]);
                            for (d, &y) in acc.iter_mut().zip(b) {
                                *d += numeric_distance(x, y, range);
                            }
                        }
                        (Values::Codes(a), Values::Codes(b)) => {
                            let x = a[i];
                            for (d, &y) in acc.iter_mut().zip(b) {
                                *d += f64::from(u8::from(x != y));
                            }
                        }
                        _ => acc.iter_mut().for_each(|d| *d += 1.0),
                    }
                }
                acc.iter().fold(f64::INFINITY, |m, &d| m.min(d)) / ncols
            },
        )
        .collect()
}

#[inline]
fn numeric_distance(a: f64, b: f64, range: f64) -> f64 {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => 0.0,
        (true, false) | (false, true) => 1.0,
        (false, false) => {
            let diff = (a - b).abs();
            if range == 0.0 || range.is_nan() {
                f64::from(u8::from(diff > 0.0))
            } else {
                (diff / range).min(1.0)
            }
        }
    }
}

/// pandas' median: the mean of the two middle values of an even count.
fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Uniformly random rows within the real ranges and categories, with the
/// real null rates (SDMetrics' `_generate_random_data`).
fn random_rows(real: FrameRef<'_>, keep: &[usize], rows: usize, seed: u64) -> Sample {
    let columns = keep
        .iter()
        .map(|&c| {
            let mut rng =
                rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(crate::mix(seed, 7, c as u64));
            match &real.columns[c] {
                Values::Numbers(v) => {
                    let present: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
                    let null_rate = 1.0 - present.len() as f64 / v.len().max(1) as f64;
                    let (lo, hi) = present
                        .iter()
                        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &x| {
                            (l.min(x), h.max(x))
                        });
                    Values::Numbers(
                        (0..rows)
                            .map(|_| {
                                let x = lo + (hi - lo) * rng.random::<f64>();
                                if present.is_empty() || rng.random::<f64>() < null_rate {
                                    f64::NAN
                                } else {
                                    x
                                }
                            })
                            .collect(),
                    )
                }
                Values::Codes(v) => {
                    let mut distinct: Vec<u32> = v
                        .iter()
                        .copied()
                        .filter(|&x| x != NULL_CODE)
                        .collect::<HashSet<_>>()
                        .into_iter()
                        .collect();
                    distinct.sort_unstable();
                    let null_rate = v.iter().filter(|&&x| x == NULL_CODE).count() as f64
                        / v.len().max(1) as f64;
                    Values::Codes(
                        (0..rows)
                            .map(|_| {
                                let x = if distinct.is_empty() {
                                    NULL_CODE
                                } else {
                                    distinct[rng.random_range(0..distinct.len())]
                                };
                                if rng.random::<f64>() < null_rate {
                                    NULL_CODE
                                } else {
                                    x
                                }
                            })
                            .collect(),
                    )
                }
            }
        })
        .collect();
    Sample { columns, rows }
}

/// Row keys for exact-copy detection: numbers by their bits (one NaN),
/// codes as they are.
fn row_key(frame: FrameRef<'_>, keep: &[usize], r: usize) -> Vec<u64> {
    keep.iter()
        .map(|&c| match &frame.columns[c] {
            Values::Numbers(v) if v[r].is_nan() => u64::MAX,
            Values::Numbers(v) => (v[r] + 0.0).to_bits(),
            Values::Codes(v) => u64::from(v[r]),
        })
        .collect()
}

/// The privacy section.
pub fn privacy(
    real: FrameRef<'_>,
    synthetic: FrameRef<'_>,
    holdout: Option<FrameRef<'_>>,
    params: &EvaluationParams,
) -> Privacy {
    let keep: Vec<usize> = (0..real.names.len())
        .filter(|&c| real.types[c] != SdType::Id)
        .collect();

    let real_rows: HashSet<Vec<u64>> = (0..real.rows)
        .into_par_iter()
        .map(|r| row_key(real, &keep, r))
        .collect();
    let exact_copy_rows = (0..synthetic.rows)
        .into_par_iter()
        .filter(|&r| real_rows.contains(&row_key(synthetic, &keep, r)))
        .count();
    drop(real_rows);

    let k = params.privacy_rows.max(1);
    let syn_sample = take(
        synthetic,
        &sample_rows(synthetic.rows, k, crate::mix(params.seed, 1, 0)),
        &keep,
    );
    let real_sample = take(
        real,
        &sample_rows(real.rows, k, crate::mix(params.seed, 2, 0)),
        &keep,
    );
    let to_real = dcr(&syn_sample, &real_sample);
    let median_synthetic_to_real = median(to_real.clone());

    let dcr = match holdout {
        Some(holdout) => {
            let holdout_sample = take(
                holdout,
                &sample_rows(holdout.rows, k, crate::mix(params.seed, 3, 0)),
                &keep,
            );
            let to_holdout = dcr(&syn_sample, &holdout_sample);
            let closer = to_real
                .iter()
                .zip(&to_holdout)
                .filter(|(r, h)| r < h)
                .count() as f64
                / to_real.len().max(1) as f64;
            Dcr {
                metric: "DCROverfittingProtection",
                score: Some(((1.0 - closer) * 2.0).min(1.0)),
                median_synthetic_to_real,
                median_baseline_to_real: median(to_holdout),
                closer_to_training: Some(closer),
                synthetic_rows_sampled: syn_sample.rows,
                real_rows_sampled: real_sample.rows,
            }
        }
        None => {
            let random = random_rows(real, &keep, syn_sample.rows, crate::mix(params.seed, 4, 0));
            let baseline = median(dcr(&random, &real_sample));
            Dcr {
                metric: "DCRBaselineProtection",
                score: (baseline > 0.0).then(|| (median_synthetic_to_real / baseline).min(1.0)),
                median_synthetic_to_real,
                median_baseline_to_real: baseline,
                closer_to_training: None,
                synthetic_rows_sampled: syn_sample.rows,
                real_rows_sampled: real_sample.rows,
            }
        }
    };
    Privacy {
        exact_copies: exact_copy_rows as f64 / synthetic.rows.max(1) as f64,
        exact_copy_rows,
        dcr,
    }
}

/// The columns distances are measured over (keys left out), and the
/// seeded sample of `real_rows` real rows the filter measures against.
pub(crate) fn reference_sample(
    real: FrameRef<'_>,
    real_rows: usize,
    seed: u64,
) -> (Vec<usize>, Sample) {
    let keep: Vec<usize> = (0..real.names.len())
        .filter(|&c| real.types[c] != SdType::Id)
        .collect();
    let reference = take(
        real,
        &sample_rows(real.rows, real_rows.max(1), crate::mix(seed, 2, 0)),
        &keep,
    );
    (keep, reference)
}

/// The DCR of every row of `rows` to the filter's reference sample (in
/// this process; the filter computes the same on the data's executors).
#[cfg(test)]
pub(crate) fn distances_to(
    real: FrameRef<'_>,
    rows: FrameRef<'_>,
    real_rows: usize,
    seed: u64,
) -> Vec<f64> {
    let (keep, reference) = reference_sample(real, real_rows, seed);
    let all: Vec<usize> = (0..rows.rows).collect();
    dcr(&take(rows, &all, &keep), &reference)
}
