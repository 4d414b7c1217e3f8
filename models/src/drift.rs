//! Drift of a prediction batch against the data a model was trained on.
//!
//! At training time every feature gets a [`Reference`]: the sorted distinct
//! values of the bin sample (the same rows that fix the bin boundaries)
//! with their counts, and the missing count; the winner's scores on the
//! test rows get one too. A batch is reduced to [`Counts`] against those
//! values (one binary search per value, mergeable across partitions), and
//! every statistic follows from the counts exactly:
//! - **KS**: the two-sample Kolmogorov–Smirnov statistic between the
//!   reference multiset and the batch (`scipy.stats.ks_2samp(...).statistic`);
//! - **PSI**: population stability index over the reference's deciles
//!   (edges are reference values; bins `(e_{i-1}, e_i]`), proportions
//!   floored at [`PSI_FLOOR`]: `Σ (q - p) ln(q / p)`;
//! - **JS**: Jensen–Shannon distance (base 2) over the same bins
//!   (`scipy.spatial.distance.jensenshannon(p, q, base=2)`);
//! - the share of missing values (null or NaN) in the reference and the batch.
//!
//! `testdata/drift/reference.py` computes the same numbers with numpy and
//! scipy; the golden file it wrote is checked in a test.

use kiln_engine::{KilnError, Result};
use serde::{Deserialize, Serialize};

/// The profile's file in a model version.
pub const PROFILE_FILE: &str = "profile.json";
/// Profile format version; another version is refused.
pub const PROFILE_FORMAT_VERSION: u32 = 1;
/// At most this many points per reference (more distinct values are merged).
pub const MAX_POINTS: usize = 4096;
/// PSI bins: the reference's deciles.
pub const PSI_BINS: usize = 10;
/// Proportions below this count as this in the PSI (an empty bin would make it infinite).
pub const PSI_FLOOR: f64 = 1e-4;

/// A reference distribution: sorted distinct values with their counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    pub values: Vec<f64>,
    pub counts: Vec<u64>,
    /// Null or NaN values.
    pub missing: u64,
}

impl Reference {
    /// From raw values (NaN counts as missing). More than [`MAX_POINTS`]
    /// distinct values are merged into groups of consecutive values, each
    /// represented by its largest value.
    pub fn from_values(values: &[f64]) -> Self {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
        let missing = (values.len() - sorted.len()) as u64;
        sorted.sort_by(f64::total_cmp);
        let mut distinct: Vec<f64> = Vec::new();
        let mut counts: Vec<u64> = Vec::new();
        for x in sorted {
            // -0.0 and 0.0 are one value, as in comparisons.
            if distinct.last() == Some(&x) {
                if let Some(c) = counts.last_mut() {
                    *c += 1;
                }
            } else {
                distinct.push(x);
                counts.push(1);
            }
        }
        if distinct.len() > MAX_POINTS {
            let total: u64 = counts.iter().sum();
            let (mut values, mut merged) = (Vec::new(), Vec::new());
            let (mut cumulative, mut group) = (0u64, 0u64);
            let mut next_edge = 1usize;
            for (x, c) in distinct.iter().zip(&counts) {
                cumulative += c;
                group += c;
                // Close a group once the cumulative count passes its share.
                if cumulative * MAX_POINTS as u64 >= next_edge as u64 * total {
                    values.push(*x);
                    merged.push(group);
                    group = 0;
                    while cumulative * MAX_POINTS as u64 >= next_edge as u64 * total {
                        next_edge += 1;
                    }
                }
            }
            return Reference {
                values,
                counts: merged,
                missing,
            };
        }
        Reference {
            values: distinct,
            counts,
            missing,
        }
    }

    /// Non-missing values.
    pub fn present(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn rows(&self) -> u64 {
        self.present() + self.missing
    }

    /// Indices of the values that close each PSI bin (the last bin is open).
    pub fn psi_edges(&self) -> Vec<usize> {
        let n = self.present();
        let mut edges: Vec<usize> = Vec::new();
        let mut cumulative = 0u64;
        let mut q = 1usize;
        for (j, c) in self.counts.iter().enumerate() {
            cumulative += c;
            let mut closes = false;
            while q < PSI_BINS && cumulative * PSI_BINS as u64 >= q as u64 * n {
                closes = true;
                q += 1;
            }
            if closes && j + 1 < self.values.len() {
                edges.push(j);
            }
        }
        edges
    }
}

/// A batch counted against a reference's values.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Counts {
    /// Values equal to `values[j]`.
    pub at: Vec<u64>,
    /// `between[0]`: below `values[0]`; `between[j + 1]`: strictly between
    /// `values[j]` and `values[j + 1]` (or above the last).
    pub between: Vec<u64>,
    pub missing: u64,
}

impl Counts {
    pub fn new(reference: &Reference) -> Self {
        Counts {
            at: vec![0; reference.values.len()],
            between: vec![0; reference.values.len() + 1],
            missing: 0,
        }
    }

    #[inline]
    pub fn add(&mut self, locator: &Locator, x: f64) {
        if x.is_nan() {
            self.missing += 1;
            return;
        }
        let j = locator.position(x);
        let values = &locator.values;
        if j < values.len() && values[j] == x {
            self.at[j] += 1;
        } else {
            self.between[j] += 1;
        }
    }

    pub fn merge(&mut self, other: &Counts) {
        for (a, b) in self.at.iter_mut().zip(&other.at) {
            *a += b;
        }
        for (a, b) in self.between.iter_mut().zip(&other.between) {
            *a += b;
        }
        self.missing += other.missing;
    }

    pub fn present(&self) -> u64 {
        self.at.iter().sum::<u64>() + self.between.iter().sum::<u64>()
    }
}

/// The coordinate a [`Locator`] buckets values by: the value itself
/// (evenly spread data), or the order of its bits (log-like: long tails
/// and skewed data). Both are non-decreasing in the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scale {
    Linear,
    Bits,
}

impl Scale {
    #[inline]
    fn coordinate(self, x: f64) -> f64 {
        match self {
            Scale::Linear => x,
            Scale::Bits => {
                let bits = x.to_bits();
                let ordered = if bits >> 63 == 1 {
                    !bits
                } else {
                    bits | (1 << 63)
                };
                ordered as f64
            }
        }
    }
}

/// Finds where a value falls among a reference's sorted values (the index
/// of the first value ≥ x): a table of equal-width buckets over the
/// values' coordinates narrows the binary search to a few candidates. The
/// scale with the fewer candidates per bucket is chosen when it is built.
#[derive(Debug, Clone, PartialEq)]
pub struct Locator {
    values: Vec<f64>,
    scale: Scale,
    low: f64,
    buckets_per_unit: f64,
    /// `starts[b]`: the first value whose coordinate reaches bucket `b`.
    starts: Vec<u16>,
}

impl Locator {
    pub fn new(values: &[f64]) -> Self {
        let linear = Locator::with_scale(values, Scale::Linear);
        let bits = Locator::with_scale(values, Scale::Bits);
        if bits.widest_window() < linear.widest_window() {
            bits
        } else {
            linear
        }
    }

    fn with_scale(values: &[f64], scale: Scale) -> Self {
        // Values are at most MAX_POINTS, so u16 positions suffice.
        let buckets = (values.len() * 4).clamp(1, 16_384);
        let (low, high) = match (values.first(), values.last()) {
            (Some(l), Some(h)) => (scale.coordinate(*l), scale.coordinate(*h)),
            _ => (0.0, 0.0),
        };
        let buckets_per_unit = if high > low && low.is_finite() && high.is_finite() {
            buckets as f64 / (high - low)
        } else {
            0.0
        };
        let starts = (0..=buckets)
            .map(|b| {
                // The outer bounds are exact whatever the rounding of the edges.
                if b == 0 {
                    return 0;
                }
                if b == buckets || buckets_per_unit == 0.0 || !buckets_per_unit.is_finite() {
                    return values.len() as u16;
                }
                let edge = low + b as f64 / buckets_per_unit;
                values.partition_point(|v| scale.coordinate(*v) < edge) as u16
            })
            .collect();
        Locator {
            values: values.to_vec(),
            scale,
            low,
            buckets_per_unit: if buckets_per_unit.is_finite() {
                buckets_per_unit
            } else {
                0.0
            },
            starts,
        }
    }

    /// The most candidates one search can have.
    fn widest_window(&self) -> usize {
        let buckets = self.starts.len() - 1;
        (0..buckets)
            .map(|b| {
                usize::from(self.starts[(b + 2).min(buckets)])
                    - usize::from(self.starts[b.saturating_sub(1)])
            })
            .max()
            .unwrap_or(0)
    }

    /// `values.partition_point(|v| v < x)`, for x not NaN.
    #[inline]
    pub fn position(&self, x: f64) -> usize {
        if self.values.len() <= 8 {
            // A few values (flags, small categories): count without branches.
            return self.values.iter().filter(|v| **v < x).count();
        }
        let buckets = self.starts.len() - 1;
        // `as usize` saturates: below the range is bucket 0, above the last.
        let b = (((self.scale.coordinate(x) - self.low) * self.buckets_per_unit) as usize)
            .min(buckets - 1);
        // One bucket of margin on each side covers rounding at the edges.
        let from = usize::from(self.starts[b.saturating_sub(1)]);
        let to = usize::from(self.starts[(b + 2).min(buckets)]);
        from + self.values[from..to].partition_point(|v| *v < x)
    }
}

/// Locators for every reference of a profile, built once per batch.
#[derive(Debug, Clone)]
pub struct ProfileIndex {
    pub features: Vec<Locator>,
    pub scores: Option<Locator>,
}

impl ProfileIndex {
    pub fn new(profile: &ReferenceProfile) -> Self {
        ProfileIndex {
            features: profile
                .features
                .iter()
                .map(|f| Locator::new(&f.reference.values))
                .collect(),
            scores: profile.scores.as_ref().map(|s| Locator::new(&s.values)),
        }
    }
}

/// The drift statistics of one distribution; `None` when either side has
/// no value to compare.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Statistics {
    pub psi: Option<f64>,
    pub ks: Option<f64>,
    pub js: Option<f64>,
    pub missing_reference: f64,
    pub missing_batch: f64,
}

/// Reference and batch proportions of the PSI bins.
pub fn bin_proportions(reference: &Reference, counts: &Counts) -> (Vec<f64>, Vec<f64>) {
    let edges = reference.psi_edges();
    let (n, m) = (reference.present() as f64, counts.present() as f64);
    let mut p = Vec::with_capacity(edges.len() + 1);
    let mut q = Vec::with_capacity(edges.len() + 1);
    let mut start = 0usize;
    for end in edges
        .iter()
        .copied()
        .chain(std::iter::once(reference.values.len() - 1))
    {
        let last = end == reference.values.len() - 1;
        let r: u64 = reference.counts[start..=end].iter().sum();
        // Batch values in (values[start - 1], values[end]]: between[start]
        // (or below the first) up to at[end]; the last bin is open above.
        let mut b: u64 = counts.at[start..=end].iter().sum::<u64>()
            + counts.between[start..=end].iter().sum::<u64>();
        if last {
            b += counts.between[end + 1];
        }
        p.push(r as f64 / n);
        q.push(b as f64 / m);
        start = end + 1;
    }
    (p, q)
}

/// PSI, KS, JS and missing shares of a batch against its reference.
pub fn statistics(reference: &Reference, counts: &Counts) -> Statistics {
    let share = |missing: u64, rows: u64| {
        if rows == 0 {
            0.0
        } else {
            missing as f64 / rows as f64
        }
    };
    let (n, m) = (reference.present(), counts.present());
    let missing_reference = share(reference.missing, reference.rows());
    let missing_batch = share(counts.missing, m + counts.missing);
    if n == 0 || m == 0 {
        return Statistics {
            psi: None,
            ks: None,
            js: None,
            missing_reference,
            missing_batch,
        };
    }
    let (nf, mf) = (n as f64, m as f64);
    // KS: the empirical CDFs (#≤x) at every value of either sample.
    let (mut ref_below, mut batch_below) = (0u64, counts.between[0]);
    let mut ks = (batch_below as f64 / mf).abs();
    for j in 0..reference.values.len() {
        let ref_le = ref_below + reference.counts[j];
        let batch_le = batch_below + counts.at[j];
        ks = ks.max((ref_le as f64 / nf - batch_le as f64 / mf).abs());
        // Just below the next reference value (the last batch value before it).
        let batch_next = batch_le + counts.between[j + 1];
        if j + 1 < reference.values.len() {
            ks = ks.max((ref_le as f64 / nf - batch_next as f64 / mf).abs());
        }
        ref_below = ref_le;
        batch_below = batch_next;
    }
    let (p, q) = bin_proportions(reference, counts);
    let psi = p
        .iter()
        .zip(&q)
        .map(|(p, q)| {
            let (p, q) = (p.max(PSI_FLOOR), q.max(PSI_FLOOR));
            (q - p) * (q / p).ln()
        })
        .sum();
    Statistics {
        psi: Some(psi),
        ks: Some(ks),
        js: Some(jensen_shannon(&p, &q)),
        missing_reference,
        missing_batch,
    }
}

/// Jensen–Shannon distance, base 2 (0 for equal, 1 for disjoint).
pub fn jensen_shannon(p: &[f64], q: &[f64]) -> f64 {
    let kl = |a: &[f64], m: &[f64]| -> f64 {
        a.iter()
            .zip(m)
            .filter(|(a, _)| **a > 0.0)
            .map(|(a, m)| a * (a / m).ln())
            .sum()
    };
    let m: Vec<f64> = p.iter().zip(q).map(|(p, q)| (p + q) / 2.0).collect();
    let divergence = (kl(p, &m) + kl(q, &m)) / 2.0 / std::f64::consts::LN_2;
    divergence.max(0.0).sqrt()
}

/// A feature's reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureReference {
    pub name: String,
    pub reference: Reference,
}

/// What a model stores about its training data for drift monitoring.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferenceProfile {
    pub format_version: u32,
    /// The model's features, in the order of its feature vector.
    pub features: Vec<FeatureReference>,
    /// The winner's scores on the test rows ([`score_of`]).
    pub scores: Option<Reference>,
    /// Training rows the feature references were sampled from.
    pub training_rows: u64,
}

/// The score a prediction is monitored by: the probability of class 1 for
/// a binary model, else the largest class probability.
pub fn score_of(probabilities: &[f64]) -> f64 {
    match probabilities {
        [_, positive] => *positive,
        many => many.iter().copied().fold(f64::NAN, f64::max),
    }
}

impl ReferenceProfile {
    pub fn to_json(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| KilnError::internal("serializing a profile", e))
    }

    pub fn from_json(bytes: &[u8], location: &str) -> Result<Self> {
        let profile: ReferenceProfile = serde_json::from_slice(bytes)
            .map_err(|e| KilnError::data(location, format!("invalid reference profile: {e}")))?;
        if profile.format_version != PROFILE_FORMAT_VERSION {
            return Err(KilnError::data(
                location,
                format!(
                    "reference profile format {} is not the one this kiln reads ({PROFILE_FORMAT_VERSION}); retrain the model",
                    profile.format_version
                ),
            ));
        }
        Ok(profile)
    }
}

/// Counts of a batch against a profile; one per partition, merged at the end.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchCounts {
    pub features: Vec<Counts>,
    pub scores: Option<Counts>,
    pub rows: u64,
}

impl BatchCounts {
    pub fn new(profile: &ReferenceProfile) -> Self {
        BatchCounts {
            features: profile
                .features
                .iter()
                .map(|f| Counts::new(&f.reference))
                .collect(),
            scores: profile.scores.as_ref().map(Counts::new),
            rows: 0,
        }
    }

    /// Adds rows of a row-major feature matrix (one value per feature of
    /// the profile; a null vector is `None`) and their scores.
    pub fn add_rows(
        &mut self,
        index: &ProfileIndex,
        rows: &[Option<&[f64]>],
        scores: &[f64],
    ) -> Result<()> {
        let width = index.features.len();
        if let Some(bad) = rows.iter().flatten().find(|r| r.len() != width) {
            return Err(KilnError::data(
                "the prediction batch",
                format!(
                    "a feature vector has {} values, but the model's reference profile has {width} features",
                    bad.len()
                ),
            ));
        }
        let present: Vec<&[f64]> = rows.iter().flatten().copied().collect();
        let null_rows = (rows.len() - present.len()) as u64;
        // Feature by feature: one reference's values and counts stay in
        // cache while the batch's values of that feature go by.
        for (f, (counts, locator)) in self.features.iter_mut().zip(&index.features).enumerate() {
            counts.missing += null_rows;
            for row in &present {
                counts.add(locator, row[f]);
            }
        }
        if let (Some(counts), Some(locator)) = (&mut self.scores, &index.scores) {
            for s in scores {
                counts.add(locator, *s);
            }
        }
        self.rows += rows.len() as u64;
        Ok(())
    }

    pub fn merge(&mut self, other: &BatchCounts) {
        for (a, b) in self.features.iter_mut().zip(&other.features) {
            a.merge(b);
        }
        if let (Some(a), Some(b)) = (&mut self.scores, &other.scores) {
            a.merge(b);
        }
        self.rows += other.rows;
    }
}

/// Thresholds: a feature drifts when any given statistic exceeds its threshold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Population stability index (0.1: moderate, 0.2: significant shift).
    #[serde(default)]
    pub psi: Option<f64>,
    /// Kolmogorov–Smirnov statistic (numeric features).
    #[serde(default)]
    pub ks: Option<f64>,
    /// Jensen–Shannon distance (base 2, in [0, 1]).
    #[serde(default)]
    pub js: Option<f64>,
    /// Increase of the share of missing values.
    #[serde(default)]
    pub missing: Option<f64>,
}

impl Thresholds {
    /// Checks each is a finite non-negative number and one is given.
    pub fn validate(&self, at: &str) -> Result<()> {
        let given = [
            ("psi", self.psi),
            ("ks", self.ks),
            ("js", self.js),
            ("missing", self.missing),
        ];
        for (name, value) in given {
            if let Some(v) = value
                && !(v.is_finite() && v >= 0.0)
            {
                return Err(KilnError::config(format!(
                    "{at}.{name}: {v} is not a threshold (a number ≥ 0)"
                )));
            }
        }
        if given.iter().all(|(_, v)| v.is_none()) {
            return Err(KilnError::config_fix(
                format!("{at}: no threshold is given"),
                "give at least one of psi, ks, js, missing (e.g. {psi: 0.2, ks: 0.1})",
            ));
        }
        Ok(())
    }

    /// The statistics above their thresholds.
    pub fn exceeded(&self, s: &Statistics) -> Vec<&'static str> {
        let mut out = Vec::new();
        let over = |v: Option<f64>, t: Option<f64>| matches!((v, t), (Some(v), Some(t)) if v > t);
        if over(s.psi, self.psi) {
            out.push("psi");
        }
        if over(s.ks, self.ks) {
            out.push("ks");
        }
        if over(s.js, self.js) {
            out.push("js");
        }
        if over(Some(s.missing_batch - s.missing_reference), self.missing) {
            out.push("missing");
        }
        out
    }
}

/// The thresholds of a batch: one set for every feature (and the scores),
/// replaced for the features named in `features`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ThresholdSet {
    pub default: Thresholds,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub features: std::collections::BTreeMap<String, Thresholds>,
}

impl ThresholdSet {
    pub fn for_feature(&self, name: &str) -> &Thresholds {
        self.features.get(name).unwrap_or(&self.default)
    }

    /// Fails when a per-feature threshold names no feature of the profile.
    pub fn check_names(&self, profile: &ReferenceProfile, at: &str) -> Result<()> {
        for name in self.features.keys() {
            if name != "prediction" && !profile.features.iter().any(|f| &f.name == name) {
                let known: Vec<&str> = profile.features.iter().map(|f| f.name.as_str()).collect();
                return Err(KilnError::config_fix(
                    format!("{at}.features.{name}: the model has no feature '{name}'"),
                    format!("its features are: {}, and prediction", known.join(", ")),
                ));
            }
        }
        Ok(())
    }
}

/// One feature's (or the prediction's) entry of a drift report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftEntry {
    pub feature: String,
    pub psi: Option<f64>,
    pub ks: Option<f64>,
    pub js: Option<f64>,
    pub missing_reference: f64,
    pub missing_batch: f64,
    pub drifted: bool,
    /// The statistics over their thresholds.
    pub exceeded: Vec<String>,
    /// Reference and batch proportions of the PSI bins, for the plots.
    pub bins: BinShares,
}

/// The PSI bins of an entry: upper edges (the last is open) and shares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BinShares {
    pub upper_edges: Vec<f64>,
    pub reference: Vec<f64>,
    pub batch: Vec<f64>,
}

fn entry(
    name: &str,
    reference: &Reference,
    counts: &Counts,
    thresholds: &Thresholds,
) -> DriftEntry {
    let s = statistics(reference, counts);
    let exceeded = thresholds.exceeded(&s);
    let (p, q) = if reference.present() > 0 && counts.present() > 0 {
        bin_proportions(reference, counts)
    } else {
        (Vec::new(), Vec::new())
    };
    DriftEntry {
        feature: name.into(),
        psi: s.psi,
        ks: s.ks,
        js: s.js,
        missing_reference: s.missing_reference,
        missing_batch: s.missing_batch,
        drifted: !exceeded.is_empty(),
        exceeded: exceeded.into_iter().map(str::to_string).collect(),
        bins: BinShares {
            upper_edges: reference
                .psi_edges()
                .iter()
                .map(|j| reference.values[*j])
                .collect(),
            reference: p,
            batch: q,
        },
    }
}

/// The statistics of a batch: one entry per feature and one for the scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftResult {
    pub rows: u64,
    pub features: Vec<DriftEntry>,
    pub prediction: Option<DriftEntry>,
    /// Names of the drifted features (and `prediction` when the scores drifted).
    pub drifted: Vec<String>,
}

impl DriftResult {
    pub fn compute(
        profile: &ReferenceProfile,
        counts: &BatchCounts,
        thresholds: &ThresholdSet,
    ) -> Self {
        let features: Vec<DriftEntry> = profile
            .features
            .iter()
            .zip(&counts.features)
            .map(|(f, c)| entry(&f.name, &f.reference, c, thresholds.for_feature(&f.name)))
            .collect();
        let prediction = match (&profile.scores, &counts.scores) {
            (Some(r), Some(c)) => Some(entry(
                "prediction",
                r,
                c,
                thresholds.for_feature("prediction"),
            )),
            _ => None,
        };
        let drifted = features
            .iter()
            .chain(&prediction)
            .filter(|e| e.drifted)
            .map(|e| e.feature.clone())
            .collect();
        DriftResult {
            rows: counts.rows,
            features,
            prediction,
            drifted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts_of(reference: &Reference, batch: &[f64]) -> Counts {
        let mut c = Counts::new(reference);
        let locator = Locator::new(&reference.values);
        for x in batch {
            c.add(&locator, *x);
        }
        c
    }

    #[test]
    fn the_locator_finds_what_a_binary_search_finds() {
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng >> 11) as f64 / (1u64 << 53) as f64
        };
        let sets: Vec<Vec<f64>> = vec![
            vec![],
            vec![3.0],
            vec![-1.0, 0.0, 1.0],
            (0..5000)
                .map(|i| (f64::from(i) * 0.1).exp().min(1e300))
                .collect(),
            {
                let mut v: Vec<f64> = (0..3000).map(|_| (next() * 1e6).round() / 7.0).collect();
                v.sort_by(f64::total_cmp);
                v.dedup();
                v
            },
        ];
        for values in sets {
            let locator = Locator::new(&values);
            let mut probes: Vec<f64> = values.clone();
            probes.extend(values.iter().map(|v| v + 1e-9));
            probes.extend(values.iter().map(|v| v - 1e-9));
            probes.extend([f64::INFINITY, f64::NEG_INFINITY, -1e308, 1e308, 0.0, -0.0]);
            probes.extend((0..2000).map(|_| (next() - 0.5) * 2e6));
            for x in probes {
                assert_eq!(
                    locator.position(x),
                    values.partition_point(|v| *v < x),
                    "{x} in {} values",
                    values.len()
                );
            }
        }
    }

    /// The two-sample KS statistic by definition: the CDFs at every point.
    fn ks_by_definition(a: &[f64], b: &[f64]) -> f64 {
        let cdf = |s: &[f64], x: f64| s.iter().filter(|v| **v <= x).count() as f64 / s.len() as f64;
        a.iter()
            .chain(b)
            .map(|x| (cdf(a, *x) - cdf(b, *x)).abs())
            .fold(0.0, f64::max)
    }

    #[test]
    fn ks_from_counts_equals_the_definition() {
        let reference = [1.0, 2.0, 2.0, 3.0, 5.0, 8.0, 8.0, 8.0, f64::NAN];
        let batches: [&[f64]; 4] = [
            &[0.5, 2.0, 2.5, 9.0],
            &[8.0, 8.0, 8.0],
            &[1.0, 2.0, 2.0, 3.0, 5.0, 8.0, 8.0, 8.0],
            &[-1.0, 4.0, 4.0, 6.0, 7.0, 100.0, f64::NAN],
        ];
        let r = Reference::from_values(&reference);
        assert_eq!(r.missing, 1);
        for b in batches {
            let s = statistics(&r, &counts_of(&r, b));
            let clean: Vec<f64> = b.iter().copied().filter(|x| !x.is_nan()).collect();
            let present: Vec<f64> = reference.iter().copied().filter(|x| !x.is_nan()).collect();
            let expected = ks_by_definition(&present, &clean);
            assert!(
                (s.ks.unwrap_or(f64::NAN) - expected).abs() < 1e-12,
                "{b:?}: {s:?} vs {expected}"
            );
        }
    }

    /// `testdata/drift/cases.json`, written by `testdata/drift/reference.py`
    /// with numpy and scipy (`ks_2samp`, `jensenshannon`).
    #[test]
    fn statistics_equal_scipy_and_the_reference_script() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/drift/cases.json");
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let golden: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let cases = golden["cases"].as_array().cloned().unwrap_or_default();
        assert_eq!(cases.len(), 7, "golden cases in {path}");
        let values = |v: &serde_json::Value| -> Vec<f64> {
            v.as_array()
                .map(|a| a.iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect())
                .unwrap_or_default()
        };
        for case in cases {
            let name = case["name"].as_str().unwrap_or_default();
            let reference = Reference::from_values(&values(&case["reference"]));
            assert!(reference.values.len() <= MAX_POINTS, "{name}: merged");
            let s = statistics(&reference, &counts_of(&reference, &values(&case["batch"])));
            let expected = &case["expected"];
            for (stat, got) in [
                ("ks", s.ks),
                ("psi", s.psi),
                ("js", s.js),
                ("missing_reference", Some(s.missing_reference)),
                ("missing_batch", Some(s.missing_batch)),
            ] {
                let want = expected[stat].as_f64().unwrap_or(f64::NAN);
                let got = got.unwrap_or(f64::NAN);
                assert!(
                    (got - want).abs() <= 1e-9,
                    "{name}: {stat} {got} vs scipy {want}"
                );
            }
        }
    }

    #[test]
    fn identical_batches_do_not_drift_and_disjoint_ones_do() {
        let values: Vec<f64> = (0..1000).map(|i| f64::from(i % 97)).collect();
        let r = Reference::from_values(&values);
        let same = statistics(&r, &counts_of(&r, &values));
        assert_eq!(same.ks, Some(0.0));
        assert!(same.psi.unwrap_or(1.0).abs() < 1e-12 && same.js.unwrap_or(1.0) < 1e-7);
        let shifted: Vec<f64> = values.iter().map(|x| x + 1000.0).collect();
        let far = statistics(&r, &counts_of(&r, &shifted));
        assert_eq!(far.ks, Some(1.0));
        // Every batch value falls in the reference's top (open) bin.
        assert!(
            far.psi.unwrap_or(0.0) > 5.0 && far.js.unwrap_or(0.0) > 0.8,
            "{far:?}"
        );
        let empty = statistics(&r, &Counts::new(&r));
        assert_eq!((empty.ks, empty.psi, empty.js), (None, None, None));
    }

    #[test]
    fn many_distinct_values_are_merged_into_at_most_max_points() {
        let values: Vec<f64> = (0..50_000).map(|i| f64::from(i) * 0.37).collect();
        let r = Reference::from_values(&values);
        assert!(r.values.len() <= MAX_POINTS && r.values.len() > MAX_POINTS / 2);
        assert_eq!(r.present(), 50_000);
        assert!(r.values.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(r.values.last(), Some(&(49_999.0 * 0.37)));
        assert_eq!(r.psi_edges().len(), PSI_BINS - 1);
    }

    #[test]
    fn merged_counts_equal_one_pass() {
        let profile = ReferenceProfile {
            format_version: PROFILE_FORMAT_VERSION,
            features: vec![FeatureReference {
                name: "x".into(),
                reference: Reference::from_values(&[1.0, 2.0, 3.0]),
            }],
            scores: Some(Reference::from_values(&[0.1, 0.9])),
            training_rows: 3,
        };
        let rows: Vec<[f64; 1]> = (0..10).map(|i| [f64::from(i)]).collect();
        let refs: Vec<Option<&[f64]>> = rows.iter().map(|r| Some(&r[..])).collect();
        let scores: Vec<f64> = (0..10).map(|i| f64::from(i) / 10.0).collect();
        let index = ProfileIndex::new(&profile);
        let mut whole = BatchCounts::new(&profile);
        assert!(whole.add_rows(&index, &refs, &scores).is_ok());
        let mut a = BatchCounts::new(&profile);
        let mut b = BatchCounts::new(&profile);
        assert!(a.add_rows(&index, &refs[..4], &scores[..4]).is_ok());
        assert!(b.add_rows(&index, &refs[4..], &scores[4..]).is_ok());
        a.merge(&b);
        assert_eq!(a, whole);
        let wrong = [1.0, 2.0];
        assert!(whole.add_rows(&index, &[Some(&wrong[..])], &[]).is_err());
    }
}
