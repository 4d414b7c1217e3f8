//! Validity: whether synthetic values could be real ones, with SDMetrics'
//! definitions (its DiagnosticReport's "Data Validity"):
//! - `BoundaryAdherence` (numerical, datetime): the share of synthetic
//!   values within the real minimum and maximum;
//! - `CategoryAdherence` (categorical, boolean): the share of synthetic
//!   values that occur in the real column;
//! - `KeyUniqueness` (id): the share of synthetic keys that are neither
//!   missing nor repeated.
//!
//! A missing synthetic value is valid when the real column has missing
//! values too, and invalid otherwise (except for keys, where it never is).

use super::FrameRef;
use crate::frame::{NULL_CODE, SdType, Values};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};

#[derive(Debug, Clone, Serialize)]
pub struct Validity {
    /// Mean of every column's score.
    pub score: Option<f64>,
    pub boundary_adherence: BTreeMap<String, Option<f64>>,
    pub category_adherence: BTreeMap<String, Option<f64>>,
    pub key_uniqueness: BTreeMap<String, Option<f64>>,
}

/// The validity section.
pub fn validity(real: FrameRef<'_>, synthetic: FrameRef<'_>) -> Validity {
    let scores: Vec<(usize, Option<f64>)> = (0..real.names.len())
        .into_par_iter()
        .map(|c| {
            let score = match (real.types[c], &real.columns[c], &synthetic.columns[c]) {
                (SdType::Id, Values::Codes(_), Values::Codes(s)) => Some(key_uniqueness(s)),
                (_, Values::Numbers(r), Values::Numbers(s)) => boundary_adherence(r, s),
                (_, Values::Codes(r), Values::Codes(s)) => Some(category_adherence(r, s)),
                _ => None,
            };
            (c, score)
        })
        .collect();
    let mut out = Validity {
        score: None,
        boundary_adherence: BTreeMap::new(),
        category_adherence: BTreeMap::new(),
        key_uniqueness: BTreeMap::new(),
    };
    for &(c, score) in &scores {
        let name = real.names[c].clone();
        match (real.types[c], &real.columns[c]) {
            (SdType::Id, _) => out.key_uniqueness.insert(name, score),
            (_, Values::Numbers(_)) => out.boundary_adherence.insert(name, score),
            (_, Values::Codes(_)) => out.category_adherence.insert(name, score),
        };
    }
    let defined: Vec<f64> = scores.iter().filter_map(|(_, s)| *s).collect();
    out.score = (!defined.is_empty()).then(|| defined.iter().sum::<f64>() / defined.len() as f64);
    out
}

/// `None` when the real column has no values (no range to adhere to) or no
/// synthetic value is left to judge.
pub fn boundary_adherence(real: &[f64], synthetic: &[f64]) -> Option<f64> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    let mut nullable = false;
    for &v in real {
        if v.is_nan() {
            nullable = true;
        } else {
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    if lo > hi {
        return None;
    }
    let (mut judged, mut inside) = (0usize, 0usize);
    for &v in synthetic {
        if v.is_nan() && nullable {
            continue;
        }
        judged += 1;
        inside += usize::from(v >= lo && v <= hi);
    }
    (judged > 0).then(|| inside as f64 / judged as f64)
}

pub fn category_adherence(real: &[u32], synthetic: &[u32]) -> f64 {
    let known: HashSet<u32> = real.iter().copied().collect();
    let nullable = known.contains(&NULL_CODE);
    let valid = synthetic
        .iter()
        .filter(|&&c| {
            if c == NULL_CODE {
                nullable
            } else {
                known.contains(&c)
            }
        })
        .count();
    valid as f64 / synthetic.len().max(1) as f64
}

pub fn key_uniqueness(synthetic: &[u32]) -> f64 {
    let mut seen = HashSet::with_capacity(synthetic.len());
    let bad = synthetic
        .iter()
        .filter(|&&c| c == NULL_CODE || !seen.insert(c))
        .count();
    1.0 - bad as f64 / synthetic.len().max(1) as f64
}
