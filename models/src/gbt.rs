//! `GBTClassifier`: gradient-boosted trees with logistic loss (softmax for
//! more than two classes), Newton leaf values, shrinkage, L2 regularization,
//! row subsampling and early stopping on a validation fraction.
//!
//! Parameter names and defaults follow Spark ML. Split gain is the Newton
//! gain (LightGBM / XGBoost) rather than Spark's variance reduction on
//! pseudo-residuals; `minInfoGain` applies to that gain.

use crate::data::{Binned, MAX_BINS, TrainingSet};
use crate::tree::{
    FeatureDraws, FeatureSubset, GrowParams, Layout, Objective, RowOrder, Tree, add_rows, grow,
};
use kiln_engine::{KilnError, Result};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Validated GBT hyperparameters (Spark names and defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct GbtParams {
    pub max_iter: usize,
    pub max_depth: usize,
    pub step_size: f64,
    pub min_instances_per_node: usize,
    pub min_info_gain: f64,
    pub subsampling_rate: f64,
    pub feature_subset_strategy: String,
    pub max_bins: usize,
    pub seed: u64,
    /// L2 regularization of leaf values (LightGBM's `lambda_l2`).
    pub reg_lambda: f64,
    /// Minimum hessian sum per leaf (LightGBM's `min_sum_hessian_in_leaf`).
    pub min_sum_hessian: f64,
    /// Fraction held out for early stopping (0 disables it).
    pub validation_fraction: f64,
    /// Stop after this many iterations without validation improvement.
    pub early_stopping_rounds: usize,
}

impl Default for GbtParams {
    fn default() -> Self {
        GbtParams {
            max_iter: 20,
            max_depth: 5,
            step_size: 0.1,
            min_instances_per_node: 1,
            min_info_gain: 0.0,
            subsampling_rate: 1.0,
            feature_subset_strategy: "all".into(),
            max_bins: 32,
            seed: 42,
            reg_lambda: 0.0,
            min_sum_hessian: 1e-3,
            validation_fraction: 0.0,
            early_stopping_rounds: 5,
        }
    }
}

impl GbtParams {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(KilnError::config(format!("GBTClassifier: {m}")));
        if self.max_iter == 0 {
            return bad("maxIter must be >= 1".into());
        }
        if self.max_depth > 30 {
            return bad(format!("maxDepth {} is above 30", self.max_depth));
        }
        if !(self.step_size > 0.0 && self.step_size <= 1.0) {
            return bad(format!("stepSize {} must be in (0, 1]", self.step_size));
        }
        if !(self.subsampling_rate > 0.0 && self.subsampling_rate <= 1.0) {
            return bad(format!(
                "subsamplingRate {} must be in (0, 1]",
                self.subsampling_rate
            ));
        }
        if !(0.0..1.0).contains(&self.validation_fraction) {
            return bad(format!(
                "validationFraction {} must be in [0, 1)",
                self.validation_fraction
            ));
        }
        if self.reg_lambda < 0.0 || self.min_info_gain < 0.0 {
            return bad("regLambda and minInfoGain must be >= 0".into());
        }
        if !(2..=MAX_BINS).contains(&self.max_bins) {
            return bad(format!(
                "maxBins {} must be in 2..={MAX_BINS}",
                self.max_bins
            ));
        }
        crate::rf::feature_subset(&self.feature_subset_strategy, 10, false)?;
        Ok(())
    }

    /// How trees grow for `nf` features: the depth, instance and gain limits
    /// and the features each node considers.
    pub(crate) fn grow_params(
        &self,
        nf: usize,
        parallel: bool,
        integer_stats: bool,
    ) -> Result<GrowParams> {
        let subset = match crate::rf::feature_subset(&self.feature_subset_strategy, nf, false)? {
            s if s >= nf => FeatureSubset::All,
            s => FeatureSubset::Count(s),
        };
        Ok(GrowParams {
            max_depth: self.max_depth,
            min_instances: self.min_instances_per_node as f64,
            min_gain: self.min_info_gain,
            subset,
            parallel,
            integer_stats,
            draws: FeatureDraws::InGrowthOrder,
        })
    }

    /// Fits on `rows` of `data` (row indices into the set, ascending).
    pub fn fit(&self, data: &TrainingSet, fit_rows: &[u32]) -> Result<GbtModel> {
        self.validate()?;
        let k = data.class_count(fit_rows)?;
        let binned = data.binned(self.max_bins)?;
        let n = data.n_rows();
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let mut all: Vec<u32> = fit_rows.to_vec();
        let (train, valid): (Vec<u32>, Vec<u32>) = if self.validation_fraction > 0.0 {
            all.shuffle(&mut rng);
            let cut = ((all.len() as f64) * self.validation_fraction) as usize;
            let (v, t) = all.split_at(cut);
            let (mut t, mut v) = (t.to_vec(), v.to_vec());
            t.sort_unstable();
            v.sort_unstable();
            (t, v)
        } else {
            (all, Vec::new())
        };
        let outputs = if k == 2 { 1 } else { k };
        // Initial scores from the class priors.
        let mut prior = vec![0.0; k];
        for r in &train {
            prior[data.labels[*r as usize] as usize] += 1.0;
        }
        let nt = train.len() as f64;
        let init: Vec<f64> = if k == 2 {
            let p = (prior[1] / nt).clamp(1e-12, 1.0 - 1e-12);
            vec![(p / (1.0 - p)).ln()]
        } else {
            prior.iter().map(|c| (c / nt).max(1e-12).ln()).collect()
        };
        let mut scores: Vec<f64> = (0..n).flat_map(|_| init.iter().copied()).collect();
        let nf = data.n_features();
        let grow_params = self.grow_params(nf, true, false)?;
        let mut trees: Vec<Vec<Tree>> = Vec::new();
        let mut importance = vec![0.0; nf];
        let (mut best_loss, mut best_iter, mut since_best) = (f64::INFINITY, 0usize, 0usize);
        let mut grad_hess = vec![[0.0f32; 2]; n];
        // Rows whose scores the leaves do not update (validation rows, and
        // rows left out by subsampling) are scored by traversal.
        let mut in_bag = vec![false; n];
        let mut order = RowOrder::default();
        for _ in 0..self.max_iter {
            let rows: Vec<u32> = if self.subsampling_rate < 1.0 {
                let mut r = train.clone();
                r.shuffle(&mut rng);
                r.truncate(((train.len() as f64) * self.subsampling_rate).ceil() as usize);
                r.sort_unstable();
                r
            } else {
                train.clone()
            };
            let mut round = Vec::with_capacity(outputs);
            for c in 0..outputs {
                let current = &scores;
                for_rows_in_parallel(&mut grad_hess, &train, |r, gh| {
                    let y = data.labels[r] as usize;
                    let p = if outputs == 1 {
                        sigmoid(current[r])
                    } else {
                        softmax_at(&current[r * k..(r + 1) * k], c)
                    };
                    let target = if outputs == 1 {
                        (y == 1) as u8 as f64
                    } else {
                        (y == c) as u8 as f64
                    };
                    *gh = [(p - target) as f32, (p * (1.0 - p)).max(1e-16) as f32];
                });
                let obj = Newton {
                    grad_hess: &grad_hess,
                    lambda: self.reg_lambda,
                    min_hessian: self.min_sum_hessian,
                    step: self.step_size,
                };
                order.reset(&rows);
                let tree = grow(
                    binned,
                    &mut order,
                    &obj,
                    &grow_params,
                    &mut rng,
                    &mut importance,
                    &mut |value, leaf_rows| {
                        for &r in leaf_rows {
                            scores[r as usize * outputs + c] += value[0];
                        }
                    },
                );
                round.push(tree);
            }
            // The leaves updated the rows they were grown on; score the rest
            // (from codes: a tree routes a bin's representative like its values).
            if rows.len() < fit_rows.len() {
                in_bag.iter_mut().for_each(|b| *b = false);
                for &r in &rows {
                    in_bag[r as usize] = true;
                }
                for r in fit_rows.iter().map(|r| *r as usize).filter(|r| !in_bag[*r]) {
                    for (c, t) in round.iter().enumerate() {
                        let v = t.leaf(&|f| binned.value(f, r))[0];
                        scores[r * outputs + c] += v;
                    }
                }
            }
            trees.push(round);
            if !valid.is_empty() {
                let loss = valid
                    .iter()
                    .map(|&r| {
                        let r = r as usize;
                        let y = data.labels[r] as usize;
                        let p = if outputs == 1 {
                            let p = sigmoid(scores[r]);
                            if y == 1 { p } else { 1.0 - p }
                        } else {
                            softmax_at(&scores[r * k..(r + 1) * k], y)
                        };
                        -p.max(1e-15).ln()
                    })
                    .sum::<f64>()
                    / valid.len() as f64;
                if loss < best_loss - 1e-12 {
                    (best_loss, best_iter, since_best) = (loss, trees.len(), 0);
                } else {
                    since_best += 1;
                    if since_best >= self.early_stopping_rounds {
                        break;
                    }
                }
            }
        }
        if !valid.is_empty() {
            trees.truncate(best_iter.max(1));
        }
        let total: f64 = importance.iter().sum();
        if total > 0.0 {
            importance.iter_mut().for_each(|x| *x /= total);
        }
        Ok(GbtModel {
            num_classes: k,
            init,
            trees,
            feature_importances: importance,
        })
    }
}

/// Sets `values[r]` with `set(r, &mut values[r])` for each of `rows`
/// in parallel over fixed ranges of the row index when `rows` ascend
/// (serially otherwise).
fn for_rows_in_parallel<T: Send>(
    values: &mut [T],
    rows: &[u32],
    set: impl Fn(usize, &mut T) + Sync,
) {
    const RANGE: usize = 1 << 16;
    if !rows.is_sorted() {
        for &r in rows {
            set(r as usize, &mut values[r as usize]);
        }
        return;
    }
    values
        .par_chunks_mut(RANGE)
        .enumerate()
        .for_each(|(i, chunk)| {
            let (lo, hi) = (i * RANGE, i * RANGE + chunk.len());
            let first = rows.partition_point(|&r| (r as usize) < lo);
            for &r in rows[first..].iter().take_while(|&&r| (r as usize) < hi) {
                set(r as usize, &mut chunk[r as usize - lo]);
            }
        });
}

pub(crate) fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn softmax_at(s: &[f64], c: usize) -> f64 {
    let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
    (s[c] - m).exp() / z
}

/// Newton boosting objective: per-bin (gradient, hessian, count).
pub(crate) struct Newton<'a> {
    /// Gradient and hessian per row, in `f32` (LightGBM's `score_t`): half
    /// the memory and bandwidth of `f64`; the histograms sum them in `f64`.
    pub grad_hess: &'a [[f32; 2]],
    pub lambda: f64,
    pub min_hessian: f64,
    pub step: f64,
}

impl Objective for Newton<'_> {
    fn width(&self) -> usize {
        3
    }
    fn gather(&self, rows: &[u32]) -> Vec<[f32; 2]> {
        rows.iter().map(|&r| self.grad_hess[r as usize]).collect()
    }
    fn accumulate(
        &self,
        binned: &Binned,
        rows: &[u32],
        gathered: &[[f32; 2]],
        layout: &Layout,
        hist: &mut [f64],
    ) {
        add_rows(binned, rows, gathered, layout, hist, |bin, [g, h]| {
            bin[0] += f64::from(g);
            bin[1] += f64::from(h);
            bin[2] += 1.0;
        })
    }
    fn total(&self, gathered: &[[f32; 2]]) -> Vec<f64> {
        let mut s = vec![0.0; 3];
        for [g, h] in gathered {
            s[0] += f64::from(*g);
            s[1] += f64::from(*h);
            s[2] += 1.0;
        }
        s
    }
    fn count(&self, s: &[f64]) -> f64 {
        s[2]
    }
    fn gain(&self, l: &[f64], r: &[f64], p: &[f64]) -> Option<f64> {
        if l[1] < self.min_hessian || r[1] < self.min_hessian {
            return None;
        }
        let score = |s: &[f64]| s[0] * s[0] / (s[1] + self.lambda);
        Some(0.5 * (score(l) + score(r) - score(p)))
    }
    fn leaf_value(&self, s: &[f64]) -> Vec<f64> {
        vec![-self.step * s[0] / (s[1] + self.lambda).max(1e-16)]
    }
}

/// A fitted GBT model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GbtModel {
    pub num_classes: usize,
    pub init: Vec<f64>,
    /// Per iteration: one tree (binary) or one per class.
    pub trees: Vec<Vec<Tree>>,
    pub feature_importances: Vec<f64>,
}

impl GbtModel {
    /// Class probabilities for one row.
    pub fn predict_proba(&self, row: &dyn Fn(usize) -> f64) -> Vec<f64> {
        let mut s = self.init.clone();
        for round in &self.trees {
            for (c, t) in round.iter().enumerate() {
                s[c] += t.leaf(row)[0];
            }
        }
        if s.len() == 1 {
            let p = sigmoid(s[0]);
            vec![1.0 - p, p]
        } else {
            (0..s.len()).map(|c| softmax_at(&s, c)).collect()
        }
    }
}

impl crate::model::Estimator for GbtParams {
    type Model = GbtModel;

    fn validate(&self) -> Result<()> {
        GbtParams::validate(self)
    }

    fn max_bins(&self) -> usize {
        self.max_bins
    }

    fn fit(&self, data: &TrainingSet, rows: &[u32]) -> Result<GbtModel> {
        GbtParams::fit(self, data, rows)
    }

    /// Without early stopping, the first `m` rounds of a fit are the fit
    /// with `maxIter` m.
    fn ensemble_size(&self) -> Option<usize> {
        (self.validation_fraction == 0.0).then_some(self.max_iter)
    }

    fn with_ensemble_size(&self, size: usize) -> Self {
        GbtParams {
            max_iter: size,
            ..self.clone()
        }
    }

    fn fit_cost(&self) -> f64 {
        (self.max_iter * (self.max_depth + 1)) as f64
    }

    /// Per row of the set: gradient and hessian (8 B), scores (8 B per
    /// output), the in-bag mask, the training and bagged row lists and a
    /// node's gathered gradients (the root's: 8 B).
    fn working_bytes(&self, set_rows: usize, classes: usize) -> u64 {
        let outputs = if classes <= 2 { 1 } else { classes } as u64;
        set_rows as u64 * (8 + 8 * outputs + 1 + 4 + 4 + 4 + 8)
    }
}

impl crate::model::Classifier for GbtModel {
    fn truncated(&self, size: usize) -> Self {
        let mut m = self.clone();
        m.trees.truncate(size);
        m
    }

    fn predict_proba(&self, row: &dyn Fn(usize) -> f64) -> Vec<f64> {
        GbtModel::predict_proba(self, row)
    }

    fn num_classes(&self) -> usize {
        self.num_classes
    }

    fn feature_importances(&self) -> &[f64] {
        &self.feature_importances
    }
}
