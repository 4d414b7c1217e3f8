//! Per-column distributions of the copula. Every column maps to the unit
//! interval with missing values as the bottom `null_rate` of it, so
//! missingness is correlated with the other columns like any value:
//! - `Continuous`: a piecewise-linear quantile function through equally
//!   spaced probabilities (empirical quantiles; a repeated value is a flat
//!   stretch, i.e. a probability mass);
//! - `Discrete`: a numeric column with few distinct values, each with its
//!   probability;
//! - `Categorical`: categories (most frequent first) with their
//!   probabilities, each owning an interval of the unit line;
//! - `Parametric`: a fitted distribution ([`super::parametric`]) on the
//!   observed `[min, max]`: the probability below `min` (above `max`) is a
//!   mass at `min` (`max`), so samples keep the column's range.

use super::parametric::Distribution;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Marginal {
    Continuous {
        null_rate: f64,
        /// Q(k / (len − 1)): the minimum first, the maximum last.
        quantiles: Vec<f64>,
    },
    Discrete {
        null_rate: f64,
        /// Ascending.
        values: Vec<f64>,
        probabilities: Vec<f64>,
    },
    Categorical {
        null_rate: f64,
        categories: Vec<String>,
        probabilities: Vec<f64>,
    },
    Parametric {
        null_rate: f64,
        distribution: Distribution,
        min: f64,
        max: f64,
    },
    /// Every value missing.
    Null,
}

/// A closed interval of the unit line.
pub type UInterval = (f64, f64);

fn cumulative(null_rate: f64, probabilities: &[f64]) -> Vec<f64> {
    let mut cum = Vec::with_capacity(probabilities.len() + 1);
    let mut acc = 0.0;
    cum.push(null_rate);
    for p in probabilities {
        acc += p;
        cum.push(null_rate + (1.0 - null_rate) * acc.min(1.0));
    }
    cum
}

impl Marginal {
    pub fn null_rate(&self) -> f64 {
        match self {
            Marginal::Continuous { null_rate, .. }
            | Marginal::Discrete { null_rate, .. }
            | Marginal::Categorical { null_rate, .. }
            | Marginal::Parametric { null_rate, .. } => *null_rate,
            Marginal::Null => 1.0,
        }
    }

    /// One value and no missing ones, or only missing ones: nothing to
    /// correlate.
    pub fn is_degenerate(&self) -> bool {
        match self {
            Marginal::Continuous {
                null_rate,
                quantiles,
            } => *null_rate == 0.0 && quantiles.first() == quantiles.last(),
            Marginal::Discrete {
                null_rate, values, ..
            } => *null_rate == 0.0 && values.len() <= 1,
            Marginal::Categorical {
                null_rate,
                categories,
                ..
            } => *null_rate == 0.0 && categories.len() <= 1,
            Marginal::Parametric {
                null_rate,
                min,
                max,
                ..
            } => *null_rate == 0.0 && min >= max,
            Marginal::Null => true,
        }
    }

    /// The interval of missing values.
    pub fn null_interval(&self) -> UInterval {
        (0.0, self.null_rate())
    }

    /// The marginal with its cumulative probabilities computed once, for
    /// the per-row conversions.
    pub fn prepare(&self) -> Prepared<'_> {
        let cum = match self {
            Marginal::Discrete {
                null_rate,
                probabilities,
                ..
            }
            | Marginal::Categorical {
                null_rate,
                probabilities,
                ..
            } => cumulative(*null_rate, probabilities),
            _ => Vec::new(),
        };
        Prepared {
            marginal: self,
            cum,
        }
    }
}

/// A [`Marginal`] ready for conversions between values and the unit line.
#[derive(Debug, Clone)]
pub struct Prepared<'a> {
    pub marginal: &'a Marginal,
    cum: Vec<f64>,
}

impl Prepared<'_> {
    pub fn null_interval(&self) -> UInterval {
        self.marginal.null_interval()
    }

    /// The unit-line interval of a number: a point for a continuous value,
    /// the value's whole mass otherwise. `None` for a value the column
    /// never held (a discrete value not in the set).
    pub fn interval_of_number(&self, x: f64) -> Option<UInterval> {
        match self.marginal {
            Marginal::Continuous {
                null_rate,
                quantiles: q,
            } => {
                let scale = |v: f64| null_rate + (1.0 - null_rate) * v;
                let m = q.len();
                if m == 1 {
                    return Some((scale(0.0), scale(1.0)));
                }
                let step = 1.0 / (m - 1) as f64;
                let first = q.partition_point(|&k| k < x);
                let after = q.partition_point(|&k| k <= x);
                if first == m {
                    return Some((scale(1.0), scale(1.0)));
                }
                if first == 0 && after == 0 {
                    return Some((scale(0.0), scale(0.0)));
                }
                if first == after {
                    let (a, b) = (q[first - 1], q[first]);
                    let v = ((first - 1) as f64 + (x - a) / (b - a)) * step;
                    return Some((scale(v), scale(v)));
                }
                Some((scale(first as f64 * step), scale((after - 1) as f64 * step)))
            }
            Marginal::Discrete { values, .. } => {
                let k = values.partition_point(|&v| v < x);
                (values.get(k) == Some(&x)).then(|| (self.cum[k], self.cum[k + 1]))
            }
            Marginal::Parametric {
                null_rate,
                distribution,
                min,
                max,
            } => {
                let scale = |v: f64| null_rate + (1.0 - null_rate) * v;
                // The masses at the ends of the range.
                if x <= *min {
                    return Some((scale(0.0), scale(distribution.cdf(*min))));
                }
                if x >= *max {
                    return Some((scale(distribution.cdf(*max)), scale(1.0)));
                }
                let u = scale(distribution.cdf(x));
                Some((u, u))
            }
            Marginal::Categorical { .. } | Marginal::Null => None,
        }
    }

    /// The unit-line interval of category `k`.
    pub fn interval_of_category(&self, k: usize) -> Option<UInterval> {
        match self.marginal {
            Marginal::Categorical { probabilities, .. } if k < probabilities.len() => {
                Some((self.cum[k], self.cum[k + 1]))
            }
            _ => None,
        }
    }

    /// The unit-line interval of the numbers in `[lo, hi]` (either bound may
    /// be infinite); `None` when no value of the column lies there.
    pub fn interval_of_range(&self, lo: f64, hi: f64) -> Option<UInterval> {
        match self.marginal {
            Marginal::Continuous { quantiles: q, .. } => {
                let (min, max) = (q[0], q[q.len() - 1]);
                if hi < min || lo > max || lo > hi {
                    return None;
                }
                let a = self.interval_of_number(lo.max(min))?.0;
                let b = self.interval_of_number(hi.min(max))?.1;
                Some((a, b))
            }
            Marginal::Discrete { values, .. } => {
                let first = values.partition_point(|&v| v < lo);
                let after = values.partition_point(|&v| v <= hi);
                (first < after).then(|| (self.cum[first], self.cum[after]))
            }
            Marginal::Parametric { min, max, .. } => {
                if hi < *min || lo > *max || lo > hi {
                    return None;
                }
                let a = self.interval_of_number(lo.max(*min))?.0;
                let b = self.interval_of_number(hi.min(*max))?.1;
                Some((a, b))
            }
            Marginal::Categorical { .. } | Marginal::Null => None,
        }
    }

    /// The number at unit-line position `u` (`None` = missing).
    pub fn number_at(&self, u: f64) -> Option<f64> {
        match self.marginal {
            Marginal::Continuous {
                null_rate,
                quantiles: q,
            } => {
                if u < *null_rate {
                    return None;
                }
                let v = ((u - null_rate) / (1.0 - null_rate)).clamp(0.0, 1.0);
                let pos = v * (q.len() - 1) as f64;
                let i = (pos.floor() as usize).min(q.len().saturating_sub(2));
                if q.len() == 1 {
                    return Some(q[0]);
                }
                let t = pos - i as f64;
                Some(q[i] + t * (q[i + 1] - q[i]))
            }
            Marginal::Discrete {
                null_rate, values, ..
            } => {
                if u < *null_rate {
                    return None;
                }
                let k = self.cum[1..]
                    .partition_point(|&c| c <= u)
                    .min(values.len() - 1);
                Some(values[k])
            }
            Marginal::Parametric {
                null_rate,
                distribution,
                min,
                max,
            } => {
                if u < *null_rate {
                    return None;
                }
                let v = ((u - null_rate) / (1.0 - null_rate)).clamp(0.0, 1.0);
                Some(distribution.ppf(v).clamp(*min, *max))
            }
            Marginal::Categorical { .. } | Marginal::Null => None,
        }
    }

    /// The category at unit-line position `u` (`None` = missing).
    pub fn category_at(&self, u: f64) -> Option<usize> {
        match self.marginal {
            Marginal::Categorical {
                null_rate,
                probabilities,
                ..
            } => {
                if u < *null_rate {
                    return None;
                }
                Some(
                    self.cum[1..]
                        .partition_point(|&c| c <= u)
                        .min(probabilities.len() - 1),
                )
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip_through_the_unit_line() {
        let m = Marginal::Continuous {
            null_rate: 0.2,
            quantiles: vec![0.0, 1.0, 1.0, 3.0, 10.0],
        };
        let m = m.prepare();
        // A value between knots is a point; a repeated knot is a mass.
        let (a, b) = m.interval_of_number(2.0).expect("in range");
        assert_eq!(a, b);
        assert!((m.number_at(a).expect("value") - 2.0).abs() < 1e-12);
        let (a, b) = m.interval_of_number(1.0).expect("in range");
        assert!((a - (0.2 + 0.8 * 0.25)).abs() < 1e-12 && (b - (0.2 + 0.8 * 0.5)).abs() < 1e-12);
        assert_eq!(m.number_at(0.1), None);
        assert_eq!(m.number_at(1.0), Some(10.0));
        let (lo, hi) = m.interval_of_range(3.0, f64::INFINITY).expect("range");
        assert!((lo - (0.2 + 0.8 * 0.75)).abs() < 1e-12 && hi == 1.0);
        assert_eq!(m.interval_of_range(11.0, 12.0), None);
    }

    #[test]
    fn categories_own_intervals() {
        let m = Marginal::Categorical {
            null_rate: 0.5,
            categories: vec!["a".into(), "b".into()],
            probabilities: vec![0.75, 0.25],
        };
        let m = m.prepare();
        assert_eq!(m.interval_of_category(0), Some((0.5, 0.875)));
        assert_eq!(m.category_at(0.9), Some(1));
        assert_eq!(m.category_at(0.4), None);
        let d = Marginal::Discrete {
            null_rate: 0.0,
            values: vec![1.0, 2.0, 5.0],
            probabilities: vec![0.5, 0.25, 0.25],
        };
        let d = d.prepare();
        assert_eq!(d.interval_of_range(1.5, 10.0), Some((0.5, 1.0)));
        assert_eq!(d.number_at(0.6), Some(2.0));
        assert_eq!(d.interval_of_number(3.0), None);
    }
}
