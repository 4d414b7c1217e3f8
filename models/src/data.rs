//! Training data as compact bin codes: quantile binning to at most
//! `max_bins` bins per feature, bin 0 reserved for missing (NaN / null).

use kiln_engine::{KilnError, Result};
use serde::{Deserialize, Serialize};

/// Dense feature columns (NaN = missing) and integer class labels.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub columns: Vec<Vec<f64>>,
    pub labels: Vec<u32>,
    pub feature_names: Vec<String>,
}

impl Dataset {
    pub fn n_rows(&self) -> usize {
        self.labels.len()
    }

    pub fn n_features(&self) -> usize {
        self.columns.len()
    }

    /// Reorders rows canonically (by content), so results do not depend on
    /// the order in which a distributed engine returned the rows.
    pub fn canonicalize(&mut self) {
        let n = self.n_rows();
        let mut h = kiln_engine::hash::StableHasher::new();
        let keys: Vec<u64> = (0..n).map(|r| self.row_hash(r, &mut h)).collect();
        let mut idx: Vec<usize> = (0..n).collect();
        idx.sort_by(|&a, &b| {
            keys[a].cmp(&keys[b]).then_with(|| {
                self.columns
                    .iter()
                    .map(|c| c[a].total_cmp(&c[b]))
                    .find(|o| o.is_ne())
                    .unwrap_or(std::cmp::Ordering::Equal)
                    .then(self.labels[a].cmp(&self.labels[b]))
            })
        });
        for c in &mut self.columns {
            *c = idx.iter().map(|&i| c[i]).collect();
        }
        self.labels = idx.iter().map(|&i| self.labels[i]).collect();
    }

    /// The stable hash of row `r` (label, then every feature's bits).
    pub fn row_hash(&self, r: usize, h: &mut kiln_engine::hash::StableHasher) -> u64 {
        h.reset();
        h.u32(self.labels[r]);
        for c in &self.columns {
            h.f64(c[r]);
        }
        h.finish()
    }

    /// A fingerprint of the content that does not depend on row order: row
    /// and feature counts and the wrapping sum of every row's stable hash.
    pub fn fingerprint(&self) -> String {
        let mut h = kiln_engine::hash::StableHasher::new();
        let sum = (0..self.n_rows()).fold(0u64, |s, r| s.wrapping_add(self.row_hash(r, &mut h)));
        format!(
            "rows={} features={} checksum={sum:016x}",
            self.n_rows(),
            self.n_features()
        )
    }

    /// Checks shape, finite features and labels; returns the class count.
    pub fn validate(&self, binary_only: bool) -> Result<usize> {
        let n = self.n_rows();
        if n == 0 {
            return Err(KilnError::data("training set", "the training set is empty"));
        }
        for (c, name) in self.columns.iter().zip(&self.feature_names) {
            if c.len() != n {
                return Err(KilnError::data(
                    "training set",
                    format!("feature '{name}' has {} values for {n} labels", c.len()),
                ));
            }
            if let Some(i) = c.iter().position(|v| v.is_infinite()) {
                return Err(KilnError::Data {
                    location: "training set".into(),
                    message: format!("feature '{name}' is infinite ({}) in row {i}", c[i]),
                    fix: Some("replace infinities (e.g. with a SQLTransformer) or drop the feature; NaN/null are fine and treated as missing".into()),
                });
            }
        }
        let k = self
            .labels
            .iter()
            .max()
            .map(|m| *m as usize + 1)
            .unwrap_or(0);
        let mut seen = vec![false; k];
        for l in &self.labels {
            seen[*l as usize] = true;
        }
        if seen.iter().filter(|s| **s).count() < 2 {
            return Err(KilnError::data(
                "training set",
                "the training labels have a single class; a classifier needs at least two",
            ));
        }
        if binary_only && k > 2 {
            return Err(KilnError::data(
                "training set",
                format!(
                    "labels go up to {}, but binary training needs labels in {{0, 1}}",
                    k - 1
                ),
            ));
        }
        Ok(k.max(2))
    }
}

/// Bin thresholds of one feature: value `x` falls in bin `1 + #{t < x}`
/// (first threshold ≥ x), missing in bin 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureBins {
    pub thresholds: Vec<f64>,
}

impl FeatureBins {
    /// Quantile thresholds from a sorted sample of the non-missing values.
    pub fn fit(values: &[f64], max_bins: usize) -> Self {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
        v.sort_by(f64::total_cmp);
        v.dedup();
        let usable = max_bins.saturating_sub(1).max(1);
        let thresholds = if v.len() <= usable {
            // One bin per distinct value; thresholds halfway between values.
            v.windows(2).map(|w| w[0] + (w[1] - w[0]) / 2.0).collect()
        } else {
            // Quantiles of the distinct values weighted by frequency.
            let mut all: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
            all.sort_by(f64::total_cmp);
            let mut t = Vec::with_capacity(usable);
            for q in 1..usable {
                let idx = (q * all.len()) / usable;
                let x = all[idx.min(all.len() - 1)];
                if t.last().is_none_or(|l| x > *l) {
                    t.push(x);
                }
            }
            t
        };
        FeatureBins { thresholds }
    }

    pub fn n_bins(&self) -> usize {
        self.thresholds.len() + 2
    }

    #[inline]
    pub fn bin(&self, x: f64) -> u8 {
        if x.is_nan() {
            return 0;
        }
        1 + self.thresholds.partition_point(|t| *t < x) as u8
    }

    /// The split value between bin `b` and `b + 1` (go left when x <= value).
    pub fn upper(&self, b: usize) -> f64 {
        self.thresholds.get(b - 1).copied().unwrap_or(f64::INFINITY)
    }
}

/// Column-major bin codes.
#[derive(Debug, Clone)]
pub struct Binned {
    pub n_rows: usize,
    pub codes: Vec<Vec<u8>>,
    pub bins: Vec<FeatureBins>,
}

impl Binned {
    pub fn new(data: &Dataset, max_bins: usize) -> Result<Self> {
        use rayon::prelude::*;
        if !(2..=256).contains(&max_bins) {
            return Err(KilnError::config(format!(
                "maxBins must be in 2..=256, got {max_bins}"
            )));
        }
        let n = data.n_rows();
        let sample_stride = (n / 200_000).max(1);
        let bins: Vec<FeatureBins> = data
            .columns
            .par_iter()
            .map(|c| {
                let sample: Vec<f64> = c.iter().step_by(sample_stride).copied().collect();
                FeatureBins::fit(&sample, max_bins)
            })
            .collect();
        let codes = data
            .columns
            .par_iter()
            .zip(&bins)
            .map(|(c, b)| c.iter().map(|x| b.bin(*x)).collect())
            .collect();
        Ok(Binned {
            n_rows: n,
            codes,
            bins,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_are_ordered_and_missing_is_zero() {
        let values: Vec<f64> = (0..1000).map(|i| i as f64).collect();
        let b = FeatureBins::fit(&values, 32);
        assert!(b.n_bins() <= 33);
        assert_eq!(b.bin(f64::NAN), 0);
        assert_eq!(b.bin(-5.0), 1);
        let mut last = 0;
        for v in &values {
            let code = b.bin(*v);
            assert!(code >= last);
            last = code;
            assert!(*v <= b.upper(code as usize));
        }
        let few = FeatureBins::fit(&[1.0, 2.0, 2.0, 3.0], 32);
        assert_eq!((few.bin(1.0), few.bin(2.0), few.bin(3.0)), (1, 2, 3));
    }
}
