//! Parametric marginals of continuous columns, an option beside the
//! empirical quantiles (SDV's `default_distribution` /
//! `numerical_distributions`, with scipy's names and fits):
//! - `norm`: the sample's mean and standard deviation (scipy's
//!   `norm.fit`, maximum likelihood);
//! - `truncnorm`: a normal cut to the observed `[min, max]`, with the
//!   sample's mean and standard deviation as location and scale;
//! - `uniform`: `[min, max]` (scipy's `uniform.fit`);
//! - `lognorm`: the mean and standard deviation of `ln x` for a positive
//!   column (scipy's `lognorm.fit` with `floc=0`);
//! - `auto`: of those that apply, the one closest to the sample by the
//!   Kolmogorov-Smirnov statistic (scipy's `kstest`).
//!
//! A sample beyond the observed range is clamped to it, so a column keeps
//! its range whatever the distribution.

use super::normal;
use serde::{Deserialize, Serialize};

/// How a continuous column's distribution is modelled.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DistributionKind {
    /// The column's empirical quantiles (exact up to the sample).
    #[default]
    Empirical,
    Norm,
    #[serde(rename = "truncnorm")]
    TruncNorm,
    Uniform,
    #[serde(rename = "lognorm")]
    LogNorm,
    /// The parametric fit closest to the sample (smallest KS statistic).
    Auto,
}

impl DistributionKind {
    /// The parametric kinds `auto` chooses from, in order of preference
    /// on a tie.
    const PARAMETRIC: [DistributionKind; 4] = [
        DistributionKind::Norm,
        DistributionKind::TruncNorm,
        DistributionKind::Uniform,
        DistributionKind::LogNorm,
    ];
}

/// A fitted parametric distribution.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "family", rename_all = "snake_case")]
pub enum Distribution {
    Norm {
        loc: f64,
        scale: f64,
    },
    #[serde(rename = "truncnorm")]
    TruncNorm {
        loc: f64,
        scale: f64,
        low: f64,
        high: f64,
    },
    Uniform {
        low: f64,
        high: f64,
    },
    /// `ln x ~ N(mu, sigma)`.
    #[serde(rename = "lognorm")]
    LogNorm {
        mu: f64,
        sigma: f64,
    },
}

/// The normal CDF at a truncated normal's bounds: the probability range
/// it keeps.
fn truncation(loc: f64, scale: f64, low: f64, high: f64) -> (f64, f64) {
    (
        normal::cdf((low - loc) / scale),
        normal::cdf((high - loc) / scale),
    )
}

/// Mean and population standard deviation.
fn moments(values: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let (n, sum) = values
        .clone()
        .fold((0usize, 0.0), |(n, s), x| (n + 1, s + x));
    let mean = sum / n.max(1) as f64;
    let var = values.map(|x| (x - mean) * (x - mean)).sum::<f64>() / n.max(1) as f64;
    (mean, var.sqrt())
}

impl Distribution {
    /// Fits `kind` to a sorted sample; `None` when the kind does not apply
    /// (a constant sample, `lognorm` of a column with non-positive
    /// values) or is not parametric.
    pub fn fit(kind: DistributionKind, sorted: &[f64]) -> Option<Distribution> {
        let (&low, &high) = (sorted.first()?, sorted.last()?);
        if low >= high {
            return None;
        }
        let (mean, sd) = moments(sorted.iter().copied());
        let fitted = match kind {
            DistributionKind::Norm => Distribution::Norm {
                loc: mean,
                scale: sd,
            },
            DistributionKind::TruncNorm => Distribution::TruncNorm {
                loc: mean,
                scale: sd,
                low,
                high,
            },
            DistributionKind::Uniform => Distribution::Uniform { low, high },
            DistributionKind::LogNorm if low > 0.0 => {
                let (mu, sigma) = moments(sorted.iter().map(|x| x.ln()));
                Distribution::LogNorm { mu, sigma }
            }
            DistributionKind::LogNorm => return None,
            DistributionKind::Auto => {
                return DistributionKind::PARAMETRIC
                    .iter()
                    .filter_map(|&k| Distribution::fit(k, sorted))
                    .map(|d| (d.ks_statistic(sorted), d))
                    .filter(|(ks, _)| ks.is_finite())
                    .min_by(|a, b| a.0.total_cmp(&b.0))
                    .map(|(_, d)| d);
            }
            DistributionKind::Empirical => return None,
        };
        fitted.is_valid().then_some(fitted)
    }

    fn is_valid(&self) -> bool {
        match *self {
            Distribution::Norm { loc, scale } => loc.is_finite() && scale > 0.0,
            Distribution::TruncNorm {
                loc,
                scale,
                low,
                high,
            } => {
                let (a, b) = truncation(loc, scale, low, high);
                loc.is_finite() && scale > 0.0 && low < high && b > a
            }
            Distribution::Uniform { low, high } => low < high,
            Distribution::LogNorm { mu, sigma } => mu.is_finite() && sigma > 0.0,
        }
    }

    /// P(X ≤ x).
    pub fn cdf(&self, x: f64) -> f64 {
        match *self {
            Distribution::Norm { loc, scale } => normal::cdf((x - loc) / scale),
            Distribution::TruncNorm {
                loc,
                scale,
                low,
                high,
            } => {
                if x <= low {
                    return 0.0;
                }
                if x >= high {
                    return 1.0;
                }
                let (a, b) = truncation(loc, scale, low, high);
                ((normal::cdf((x - loc) / scale) - a) / (b - a)).clamp(0.0, 1.0)
            }
            Distribution::Uniform { low, high } => ((x - low) / (high - low)).clamp(0.0, 1.0),
            Distribution::LogNorm { mu, sigma } => {
                if x <= 0.0 {
                    0.0
                } else {
                    normal::cdf((x.ln() - mu) / sigma)
                }
            }
        }
    }

    /// The `p`-quantile, `p` in [0, 1].
    pub fn ppf(&self, p: f64) -> f64 {
        let p = p.clamp(0.0, 1.0);
        match *self {
            Distribution::Norm { loc, scale } => loc + scale * normal::quantile(p),
            Distribution::TruncNorm {
                loc,
                scale,
                low,
                high,
            } => {
                let (a, b) = truncation(loc, scale, low, high);
                (loc + scale * normal::quantile(a + p * (b - a))).clamp(low, high)
            }
            Distribution::Uniform { low, high } => low + p * (high - low),
            Distribution::LogNorm { mu, sigma } => (mu + sigma * normal::quantile(p)).exp(),
        }
    }

    /// The Kolmogorov-Smirnov statistic of a sorted sample against the
    /// distribution (scipy's `kstest(sample, cdf).statistic`).
    pub fn ks_statistic(&self, sorted: &[f64]) -> f64 {
        let n = sorted.len() as f64;
        sorted
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                let f = self.cdf(x);
                (f - i as f64 / n).max((i + 1) as f64 / n - f)
            })
            .fold(0.0, f64::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `testdata/copula/parametric.json`, made by
    /// `testdata/copula/parametric.py` with scipy.
    #[derive(Deserialize)]
    struct Case {
        name: String,
        sample: Vec<f64>,
        fits: std::collections::BTreeMap<String, Golden>,
        auto: String,
    }

    #[derive(Deserialize)]
    struct Golden {
        params: Vec<f64>,
        ks: f64,
        points: Vec<f64>,
        cdf: Vec<f64>,
        ppf_at: Vec<f64>,
        ppf: Vec<f64>,
    }

    fn kind(name: &str) -> DistributionKind {
        serde_json::from_value(serde_json::json!(name)).expect("a kind")
    }

    fn params(d: &Distribution) -> Vec<f64> {
        match *d {
            Distribution::Norm { loc, scale } => vec![loc, scale],
            Distribution::TruncNorm {
                loc,
                scale,
                low,
                high,
            } => vec![loc, scale, low, high],
            Distribution::Uniform { low, high } => vec![low, high],
            Distribution::LogNorm { mu, sigma } => vec![mu, sigma],
        }
    }

    fn close(a: f64, b: f64, what: &str) {
        assert!(
            (a - b).abs() <= 1e-9 * (1.0 + b.abs()),
            "{what}: kiln {a} vs scipy {b}"
        );
    }

    #[test]
    fn fits_cdfs_quantiles_and_ks_equal_scipy() {
        let text = include_str!("../../../testdata/copula/parametric.json");
        let cases: Vec<Case> = serde_json::from_str(text).expect("golden file");
        assert!(cases.len() >= 3);
        for case in cases {
            let mut sorted = case.sample.clone();
            sorted.sort_unstable_by(f64::total_cmp);
            for (name, golden) in &case.fits {
                let what = format!("{} {name}", case.name);
                let d = Distribution::fit(kind(name), &sorted).expect(&what);
                for (a, b) in params(&d).iter().zip(&golden.params) {
                    close(*a, *b, &format!("{what} params"));
                }
                close(d.ks_statistic(&sorted), golden.ks, &format!("{what} ks"));
                for (x, f) in golden.points.iter().zip(&golden.cdf) {
                    close(d.cdf(*x), *f, &format!("{what} cdf({x})"));
                }
                for (p, q) in golden.ppf_at.iter().zip(&golden.ppf) {
                    close(d.ppf(*p), *q, &format!("{what} ppf({p})"));
                }
            }
            let auto = Distribution::fit(DistributionKind::Auto, &sorted).expect("auto");
            let chosen = Distribution::fit(kind(&case.auto), &sorted).expect("chosen");
            assert_eq!(auto, chosen, "{}: auto picks scipy's best by KS", case.name);
        }
    }

    #[test]
    fn kinds_that_do_not_apply_are_none() {
        assert_eq!(
            Distribution::fit(DistributionKind::LogNorm, &[-1.0, 2.0, 3.0]),
            None
        );
        assert_eq!(Distribution::fit(DistributionKind::Norm, &[2.0, 2.0]), None);
        assert_eq!(Distribution::fit(DistributionKind::Norm, &[]), None);
        assert_eq!(
            Distribution::fit(DistributionKind::Empirical, &[1.0, 2.0]),
            None
        );
    }
}
