//! Value generators compiled once per generator: distributions built,
//! timestamps parsed and rounding factors computed before the first row.

use super::SynthRng;
use super::rules::{self, Gen, Literal};
use kiln_engine::error::{KilnError, Result};
use rand::Rng;
use rand::distr::Uniform;
use rand_distr::{Distribution, Exp, LogNormal, Normal, StandardNormal};

/// What kind of values a column holds while a chunk is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Num,
    Bool,
    Cat,
    Text,
}

pub(super) enum Continuous {
    Uniform { min: f64, span: f64 },
    Normal(Normal<f64>),
    LogNormal(LogNormal<f64>),
    Exp(Exp<f64>),
}

impl Continuous {
    #[inline]
    fn sample(&self, rng: &mut SynthRng) -> f64 {
        match self {
            Continuous::Uniform { min, span } => min + span * rng.random::<f64>(),
            Continuous::Normal(d) => d.sample(rng),
            Continuous::LogNormal(d) => d.sample(rng),
            Continuous::Exp(d) => d.sample(rng),
        }
    }
}

/// One compiled branch generator of a column.
pub(super) enum Sampler {
    Continuous {
        dist: Continuous,
        min: f64,
        max: f64,
        /// 10^digits when rounding.
        scale: Option<f64>,
    },
    IntRange(Uniform<i64>),
    Categorical {
        cumulative: Vec<f64>,
        codes: Vec<u32>,
        /// `guide[b]`: the first index whose cumulative weight exceeds
        /// `b / GUIDE_BUCKETS`, where the search for a draw in bucket `b`
        /// starts (the same result as a linear scan, in about one step).
        guide: Vec<u32>,
    },
    Bool(f64),
    Num(f64),
    ConstBool(bool),
    Text(String),
    TimestampRange {
        start: f64,
        span: f64,
    },
    TimestampSequence {
        start: f64,
        span: f64,
        min_gap_ms: f64,
        gap_span_ms: f64,
    },
    Walk {
        start: f64,
        step_std: f64,
    },
    Template(String),
    UniqueId(i64),
}

/// Buckets of a categorical sampler's guide table.
const GUIDE_BUCKETS: usize = 64;

/// Per-(entity, column) state of sequences and walks.
#[derive(Default)]
pub(super) struct SeqState {
    last: Option<f64>,
}

impl Sampler {
    /// Compiles `g`; `dict` maps categorical values to codes of the column.
    pub(super) fn compile(g: &Gen, dict: &[String], rule: &str) -> Result<Sampler> {
        let bad = |e: String| KilnError::config(format!("rule for column '{rule}': {e}"));
        // A truncated, optionally rounded draw from `dist`.
        let continuous =
            |dist: Continuous, min: Option<f64>, max: Option<f64>, round: &Option<i32>| {
                Sampler::Continuous {
                    dist,
                    min: min.unwrap_or(f64::NEG_INFINITY),
                    max: max.unwrap_or(f64::INFINITY),
                    scale: round.map(|d| 10f64.powi(d)),
                }
            };
        Ok(match g {
            Gen::Uniform { min, max, round } => continuous(
                Continuous::Uniform {
                    min: *min,
                    span: max - min,
                },
                Some(*min),
                Some(*max),
                round,
            ),
            Gen::Normal {
                mean,
                std,
                min,
                max,
                round,
            } => continuous(
                Continuous::Normal(Normal::new(*mean, *std).map_err(|e| bad(e.to_string()))?),
                *min,
                *max,
                round,
            ),
            Gen::Lognormal {
                mu,
                sigma,
                min,
                max,
                round,
            } => continuous(
                Continuous::LogNormal(LogNormal::new(*mu, *sigma).map_err(|e| bad(e.to_string()))?),
                *min,
                *max,
                round,
            ),
            Gen::Exponential {
                rate,
                min,
                max,
                round,
            } => continuous(
                Continuous::Exp(Exp::new(*rate).map_err(|e| bad(e.to_string()))?),
                *min,
                *max,
                round,
            ),
            Gen::IntRange { min, max } => Sampler::IntRange(
                Uniform::new_inclusive(*min, *max).map_err(|e| bad(e.to_string()))?,
            ),
            Gen::Categorical { values, weights } => {
                let cumulative: Vec<f64> = weights
                    .iter()
                    .scan(0.0, |acc, w| {
                        *acc += w;
                        Some(*acc)
                    })
                    .collect();
                let last = cumulative.len().saturating_sub(1);
                let guide = (0..GUIDE_BUCKETS)
                    .map(|b| {
                        let floor = b as f64 / GUIDE_BUCKETS as f64;
                        cumulative.iter().position(|c| *c > floor).unwrap_or(last) as u32
                    })
                    .collect();
                Sampler::Categorical {
                    cumulative,
                    codes: values
                        .iter()
                        .map(|v| dict.iter().position(|d| d == v).unwrap_or(0) as u32)
                        .collect(),
                    guide,
                }
            }
            Gen::Bool { p } => Sampler::Bool(*p),
            Gen::Constant { value } => match value {
                Literal::Bool(b) => Sampler::ConstBool(*b),
                Literal::Number(x) => Sampler::Num(*x),
                Literal::Text(t) => Sampler::Text(t.clone()),
            },
            Gen::TimestampRange { start, end } => {
                let (a, b) = (
                    rules::parse_ts_ms(start, rule)?,
                    rules::parse_ts_ms(end, rule)?,
                );
                Sampler::TimestampRange {
                    start: a as f64,
                    span: (b - a) as f64,
                }
            }
            Gen::TimestampSequence {
                start,
                end,
                min_gap_s,
                max_gap_s,
            } => {
                let (a, b) = (
                    rules::parse_ts_ms(start, rule)?,
                    rules::parse_ts_ms(end, rule)?,
                );
                Sampler::TimestampSequence {
                    start: a as f64,
                    span: (b - a) as f64,
                    min_gap_ms: min_gap_s * 1000.0,
                    gap_span_ms: (max_gap_s - min_gap_s) * 1000.0,
                }
            }
            Gen::Walk { start, step_std } => Sampler::Walk {
                start: *start,
                step_std: *step_std,
            },
            Gen::Template { pattern } => Sampler::Template(pattern.clone()),
            Gen::UniqueId { start } => Sampler::UniqueId(*start),
        })
    }

    pub(super) fn kind(&self) -> Kind {
        match self {
            Sampler::Categorical { .. } => Kind::Cat,
            Sampler::Bool(_) | Sampler::ConstBool(_) => Kind::Bool,
            Sampler::Text(_) | Sampler::Template(_) => Kind::Text,
            _ => Kind::Num,
        }
    }

    /// A number (for `Kind::Num` samplers).
    #[inline]
    pub(super) fn num(&self, rng: &mut SynthRng, state: &mut SeqState, row: i64) -> f64 {
        match self {
            Sampler::Continuous {
                dist,
                min,
                max,
                scale,
            } => {
                // Truncation by rejection (16 tries), then clamping.
                let mut x = dist.sample(rng);
                let mut tries = 0;
                while (x < *min || x > *max) && tries < 16 {
                    x = dist.sample(rng);
                    tries += 1;
                }
                let x = x.clamp(*min, *max);
                match scale {
                    Some(f) => round_half_away(x * f) / f,
                    None => x,
                }
            }
            Sampler::IntRange(d) => d.sample(rng) as f64,
            Sampler::Num(x) => *x,
            Sampler::TimestampRange { start, span } => (start + span * rng.random::<f64>()).floor(),
            Sampler::TimestampSequence {
                start,
                span,
                min_gap_ms,
                gap_span_ms,
            } => {
                let t = match state.last {
                    None => (start + span * rng.random::<f64>()).floor(),
                    Some(prev) => prev + (min_gap_ms + gap_span_ms * rng.random::<f64>()).round(),
                };
                state.last = Some(t);
                t
            }
            Sampler::Walk { start, step_std } => {
                let x = match state.last {
                    None => *start,
                    Some(prev) => prev + step_std * rng.sample::<f64, _>(StandardNormal),
                };
                state.last = Some(x);
                x
            }
            Sampler::UniqueId(start) => (start + row) as f64,
            _ => f64::NAN,
        }
    }

    #[inline]
    pub(super) fn boolean(&self, rng: &mut SynthRng) -> bool {
        match self {
            Sampler::Bool(p) => rng.random::<f64>() < *p,
            Sampler::ConstBool(b) => *b,
            _ => false,
        }
    }

    #[inline]
    pub(super) fn category(&self, rng: &mut SynthRng) -> u32 {
        match self {
            Sampler::Categorical {
                cumulative,
                codes,
                guide,
            } => {
                // The first index whose cumulative weight exceeds `u`, or the
                // last one; no index before `guide[bucket]` can qualify.
                let u = rng.random::<f64>();
                let last = cumulative.len().saturating_sub(1);
                let mut i = guide[(u * GUIDE_BUCKETS as f64) as usize] as usize;
                while i < last && u >= cumulative[i] {
                    i += 1;
                }
                codes[i]
            }
            _ => 0,
        }
    }

    pub(super) fn text(&self, rng: &mut SynthRng, row: i64, entity: i64) -> String {
        match self {
            Sampler::Text(t) => t.clone(),
            Sampler::Template(p) => render_template(p, rng, row, entity),
            _ => String::new(),
        }
    }
}

/// `f64::round` without a libm call (the baseline x86-64 target has no
/// rounding instruction); exact for |x| < 2^52.
#[inline]
fn round_half_away(x: f64) -> f64 {
    if x.abs() < 4_503_599_627_370_496.0 {
        let r = (x.abs() + 0.5) as i64 as f64;
        r.copysign(x)
    } else {
        x
    }
}

fn render_template(pattern: &str, rng: &mut SynthRng, row: i64, entity: i64) -> String {
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            out.push_str(&rest[open..]);
            return out;
        };
        let spec = &rest[open + 1..open + close];
        let (kind, count) = spec
            .split_once(':')
            .map(|(k, n)| (k, n.parse::<usize>().unwrap_or(1)))
            .unwrap_or((spec, 1));
        let alphabet: &[u8] = match kind {
            "digits" => b"0123456789",
            "upper" => b"ABCDEFGHIJKLMNOPQRSTUVWXYZ",
            "lower" => b"abcdefghijklmnopqrstuvwxyz",
            "hex" => b"0123456789abcdef",
            "row" => {
                out.push_str(&row.to_string());
                rest = &rest[open + close + 1..];
                continue;
            }
            "entity" => {
                out.push_str(&entity.to_string());
                rest = &rest[open + close + 1..];
                continue;
            }
            _ => {
                out.push_str(&rest[open..open + close + 1]);
                rest = &rest[open + close + 1..];
                continue;
            }
        };
        for _ in 0..count {
            out.push(alphabet[rng.random_range(0..alphabet.len())] as char);
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn truncated_rounded_normal_stays_in_bounds() {
        let g = Gen::Normal {
            mean: 0.0,
            std: 10.0,
            min: Some(-1.0),
            max: Some(1.0),
            round: Some(1),
        };
        let s = Sampler::compile(&g, &[], "x").expect("compiles");
        let mut rng = SynthRng::seed_from_u64(1);
        let mut state = SeqState::default();
        for _ in 0..10_000 {
            let x = s.num(&mut rng, &mut state, 0);
            assert!((-1.0..=1.0).contains(&x), "{x}");
            assert_eq!((x * 10.0).round() / 10.0, x);
        }
    }

    #[test]
    fn guided_categorical_matches_a_linear_scan() {
        let weights = vec![
            0.55, 0.12, 0.0, 0.09, 0.05, 0.05, 0.02, 0.045, 0.025, 0.01, 0.035,
        ];
        let values: Vec<String> = (0..weights.len()).map(|i| format!("v{i}")).collect();
        let g = Gen::Categorical {
            values: values.clone(),
            weights: weights.clone(),
        };
        let s = Sampler::compile(&g, &values, "c").expect("compiles");
        let cumulative: Vec<f64> = weights
            .iter()
            .scan(0.0, |acc, w| {
                *acc += w;
                Some(*acc)
            })
            .collect();
        let (mut a, mut b) = (SynthRng::seed_from_u64(3), SynthRng::seed_from_u64(3));
        for _ in 0..100_000 {
            let u = b.random::<f64>();
            let linear = cumulative
                .iter()
                .position(|c| u < *c)
                .unwrap_or(cumulative.len() - 1) as u32;
            assert_eq!(s.category(&mut a), linear, "u = {u}");
        }
    }

    #[test]
    fn rounding_matches_std_round() {
        for x in [
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.5,
            2.5,
            -2.5,
            12.345,
            -12.345,
            1e17,
            f64::NAN,
        ] {
            let (a, b) = (round_half_away(x), x.round());
            assert!(a == b || (a.is_nan() && b.is_nan()), "{x}: {a} vs {b}");
        }
    }

    #[test]
    fn template_fills_placeholders() {
        let mut rng = SynthRng::seed_from_u64(1);
        let s = render_template("dev-{upper:2}-{digits:3}-{row}-{entity}", &mut rng, 7, 3);
        let parts: Vec<&str> = s.split('-').collect();
        assert_eq!(parts[0], "dev");
        assert!(parts[1].len() == 2 && parts[1].chars().all(|c| c.is_ascii_uppercase()));
        assert!(parts[2].len() == 3 && parts[2].chars().all(|c| c.is_ascii_digit()));
        assert_eq!(&parts[3..], ["7", "3"]);
    }
}
