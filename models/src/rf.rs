//! `RandomForestClassifier`: bootstrap (Poisson) or subsampled trees grown
//! in parallel, per-node feature subsets, gini or entropy impurity; the
//! probability is the average of the trees' leaf class distributions.

use crate::data::{Binned, MAX_BINS, TrainingSet};
use crate::sampling::Bagging;
use crate::tree::{
    FeatureDraws, FeatureSubset, GrowParams, Layout, Objective, RowOrder, Tree, add_rows, grow,
};
use kiln_engine::{KilnError, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Impurity {
    Gini,
    Entropy,
}

/// Validated random-forest hyperparameters (Spark names and defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RfParams {
    pub num_trees: usize,
    pub max_depth: usize,
    pub bootstrap: bool,
    pub subsampling_rate: f64,
    /// auto (sqrt for a forest), all, onethird, sqrt, log2, a fraction or an integer.
    pub feature_subset_strategy: String,
    pub impurity: Impurity,
    pub min_instances_per_node: usize,
    pub min_info_gain: f64,
    pub max_bins: usize,
    pub seed: u64,
}

impl Default for RfParams {
    fn default() -> Self {
        RfParams {
            num_trees: 20,
            max_depth: 5,
            bootstrap: true,
            subsampling_rate: 1.0,
            feature_subset_strategy: "auto".into(),
            impurity: Impurity::Gini,
            min_instances_per_node: 1,
            min_info_gain: 0.0,
            max_bins: 32,
            seed: 42,
        }
    }
}

/// Features per node for a strategy.
pub fn feature_subset(strategy: &str, n: usize, forest: bool) -> Result<usize> {
    let n_f = n as f64;
    let k = match strategy {
        "auto" => {
            if forest {
                n_f.sqrt().ceil() as usize
            } else {
                n
            }
        }
        "all" => n,
        "sqrt" => n_f.sqrt().ceil() as usize,
        "log2" => n_f.log2().ceil().max(1.0) as usize,
        "onethird" => (n_f / 3.0).ceil() as usize,
        s => {
            if let Ok(i) = s.parse::<usize>() {
                i
            } else if let Ok(f) = s.parse::<f64>() {
                if !(f > 0.0 && f <= 1.0) {
                    return Err(KilnError::config(format!(
                        "featureSubsetStrategy fraction {f} must be in (0, 1]"
                    )));
                }
                (f * n_f).ceil() as usize
            } else {
                return Err(KilnError::config_fix(
                    format!("unknown featureSubsetStrategy '{s}'"),
                    "use auto, all, onethird, sqrt, log2, a fraction in (0, 1] or an integer",
                ));
            }
        }
    };
    Ok(k.clamp(1, n.max(1)))
}

impl RfParams {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(KilnError::config(format!("RandomForestClassifier: {m}")));
        if self.num_trees == 0 {
            return bad("numTrees must be >= 1".into());
        }
        if self.max_depth > 30 {
            return bad(format!("maxDepth {} is above 30", self.max_depth));
        }
        if !(self.subsampling_rate > 0.0 && self.subsampling_rate <= 1.0) {
            return bad(format!(
                "subsamplingRate {} must be in (0, 1]",
                self.subsampling_rate
            ));
        }
        if !(2..=MAX_BINS).contains(&self.max_bins) {
            return bad(format!(
                "maxBins {} must be in 2..={MAX_BINS}",
                self.max_bins
            ));
        }
        feature_subset(&self.feature_subset_strategy, 10, true)?;
        Ok(())
    }

    /// Fits on `rows` of `data` (row indices into the set, ascending).
    pub fn fit(&self, data: &TrainingSet, rows: &[u32]) -> Result<RfModel> {
        self.validate()?;
        let k = data.class_count(rows)?;
        let binned = data.binned(self.max_bins)?;
        let n = data.n_rows();
        let nf = data.n_features();
        let subset = self.subset(nf)?;
        let bagging = self.bagging();
        let weight = bagging.weights();
        let grown: Vec<(Tree, Vec<f64>)> = (0..self.num_trees)
            .into_par_iter()
            .map(|t| {
                let mut weights = vec![0.0f64; n];
                let mut bag = Vec::with_capacity(rows.len());
                for &r in rows {
                    let w = weight(t, r as usize);
                    if w > 0 {
                        weights[r as usize] = f64::from(w);
                        bag.push(r);
                    }
                }
                let obj = ClassCounts {
                    labels: &data.labels,
                    weights: &weights,
                    k,
                    impurity: self.impurity,
                };
                let params = self.grow_params(subset, t);
                let mut importance = vec![0.0; nf];
                let tree = grow(
                    binned,
                    &mut RowOrder::new(bag),
                    &obj,
                    &params,
                    // Unused: the draws are per node.
                    &mut ChaCha8Rng::seed_from_u64(self.seed),
                    &mut importance,
                    &mut |_, _| {},
                );
                (tree, importance)
            })
            .collect();
        Ok(RfModel::of_trees(k, grown))
    }

    /// Tree `t`'s rows: a row's weight depends on (seed, t, row) only.
    pub(crate) fn bagging(&self) -> Bagging {
        Bagging {
            bootstrap: self.bootstrap,
            rate: self.subsampling_rate,
            seed: self.seed,
        }
    }

    /// The features each node of tree `t` considers: `subset` drawn by
    /// (the tree's seed, the node's path), in whatever order nodes grow.
    pub(crate) fn grow_params(&self, subset: FeatureSubset, t: usize) -> GrowParams {
        GrowParams {
            max_depth: self.max_depth,
            min_instances: self.min_instances_per_node as f64,
            min_gain: self.min_info_gain,
            subset,
            parallel: false,
            integer_stats: true,
            draws: FeatureDraws::PerNode {
                seed: self.seed ^ (t as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            },
        }
    }

    /// How many features each node considers out of `nf`.
    pub(crate) fn subset(&self, nf: usize) -> Result<FeatureSubset> {
        let per_node = feature_subset(&self.feature_subset_strategy, nf, self.num_trees > 1)?;
        Ok(if per_node >= nf {
            FeatureSubset::All
        } else {
            FeatureSubset::Count(per_node)
        })
    }
}

impl RfModel {
    /// The forest of `grown` (each tree with its split gains per
    /// feature): a tree's importances are normalized before they are
    /// summed, as Spark does.
    pub(crate) fn of_trees(num_classes: usize, grown: Vec<(Tree, Vec<f64>)>) -> RfModel {
        let nf = grown.first().map_or(0, |(_, imp)| imp.len());
        let mut importance = vec![0.0; nf];
        let mut trees = Vec::with_capacity(grown.len());
        for (t, imp) in grown {
            let s: f64 = imp.iter().sum();
            if s > 0.0 {
                for (a, b) in importance.iter_mut().zip(&imp) {
                    *a += b / s;
                }
            }
            trees.push(t);
        }
        let s: f64 = importance.iter().sum();
        if s > 0.0 {
            importance.iter_mut().for_each(|x| *x /= s);
        }
        RfModel {
            num_classes,
            trees,
            feature_importances: importance,
        }
    }
}

/// Weighted class counts per bin.
pub(crate) struct ClassCounts<'a> {
    pub labels: &'a [u32],
    pub weights: &'a [f64],
    pub k: usize,
    pub impurity: Impurity,
}

impl ClassCounts<'_> {
    /// The objective alone, for choosing splits from histograms built
    /// elsewhere (no rows to gather).
    pub(crate) fn splits_only(k: usize, impurity: Impurity) -> ClassCounts<'static> {
        ClassCounts {
            labels: &[],
            weights: &[],
            k,
            impurity,
        }
    }

    fn impurity_of(&self, s: &[f64]) -> f64 {
        let n: f64 = s.iter().sum();
        if n <= 0.0 {
            return 0.0;
        }
        match self.impurity {
            Impurity::Gini => 1.0 - s.iter().map(|c| (c / n) * (c / n)).sum::<f64>(),
            Impurity::Entropy => -s
                .iter()
                .filter(|c| **c > 0.0)
                .map(|c| (c / n) * (c / n).log2())
                .sum::<f64>(),
        }
    }
}

impl Objective for ClassCounts<'_> {
    fn width(&self) -> usize {
        self.k
    }
    /// (label, bootstrap weight): small integers, exact in `f32`.
    fn gather(&self, rows: &[u32]) -> Vec<[f32; 2]> {
        rows.iter()
            .map(|&r| {
                [
                    self.labels[r as usize] as f32,
                    self.weights[r as usize] as f32,
                ]
            })
            .collect()
    }
    fn accumulate(
        &self,
        binned: &Binned,
        rows: &[u32],
        gathered: &[[f32; 2]],
        layout: &Layout,
        hist: &mut [f64],
    ) {
        add_rows(
            binned,
            rows,
            gathered,
            layout,
            hist,
            |bin, [label, weight]| {
                bin[label as usize] += f64::from(weight);
            },
        )
    }
    fn total(&self, gathered: &[[f32; 2]]) -> Vec<f64> {
        let mut s = vec![0.0; self.k];
        for [label, weight] in gathered {
            s[*label as usize] += f64::from(*weight);
        }
        s
    }
    fn count(&self, s: &[f64]) -> f64 {
        s.iter().sum()
    }
    fn gain(&self, l: &[f64], r: &[f64], p: &[f64]) -> Option<f64> {
        let (nl, nr) = (self.count(l), self.count(r));
        let n = nl + nr;
        Some(self.impurity_of(p) - (nl / n) * self.impurity_of(l) - (nr / n) * self.impurity_of(r))
    }
    fn leaf_value(&self, s: &[f64]) -> Vec<f64> {
        let n: f64 = s.iter().sum();
        s.iter()
            .map(|c| if n > 0.0 { c / n } else { 1.0 / self.k as f64 })
            .collect()
    }
}

/// A fitted forest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RfModel {
    pub num_classes: usize,
    pub trees: Vec<Tree>,
    pub feature_importances: Vec<f64>,
}

impl RfModel {
    pub fn predict_proba(&self, row: &dyn Fn(usize) -> f64) -> Vec<f64> {
        let mut p = vec![0.0; self.num_classes];
        for t in &self.trees {
            for (a, b) in p.iter_mut().zip(t.leaf(row)) {
                *a += b;
            }
        }
        let n = self.trees.len() as f64;
        p.iter_mut().for_each(|x| *x /= n);
        p
    }
}

impl crate::model::Estimator for RfParams {
    type Model = RfModel;

    fn validate(&self) -> Result<()> {
        RfParams::validate(self)
    }

    fn max_bins(&self) -> usize {
        self.max_bins
    }

    fn fit(&self, data: &TrainingSet, rows: &[u32]) -> Result<RfModel> {
        RfParams::fit(self, data, rows)
    }

    /// Tree `t` depends on the seed and `t` alone, so the first `m` trees
    /// are the forest with `numTrees` m (one tree is not a forest for
    /// `auto`, hence the bound).
    fn ensemble_size(&self) -> Option<usize> {
        (self.num_trees > 1).then_some(self.num_trees)
    }

    fn with_ensemble_size(&self, size: usize) -> Self {
        RfParams {
            num_trees: size,
            ..self.clone()
        }
    }

    fn fit_cost(&self) -> f64 {
        (self.num_trees * (self.max_depth + 1)) as f64
    }

    /// Per row of the set and tree grown at a time (one per thread): the
    /// bootstrap weights (8 B), the bag and the partitioned row lists
    /// (8 B) and a node's gathered labels and weights (at most half: 8 B).
    fn working_bytes(&self, set_rows: usize, _classes: usize) -> u64 {
        let threads = rayon::current_num_threads().min(self.num_trees) as u64;
        set_rows as u64 * 24 * threads
    }
}

impl crate::model::Classifier for RfModel {
    fn truncated(&self, size: usize) -> Self {
        let mut m = self.clone();
        m.trees.truncate(size);
        m
    }

    fn predict_proba(&self, row: &dyn Fn(usize) -> f64) -> Vec<f64> {
        RfModel::predict_proba(self, row)
    }

    fn num_classes(&self) -> usize {
        self.num_classes
    }

    fn feature_importances(&self) -> &[f64] {
        &self.feature_importances
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Binned, Dataset};

    #[test]
    fn sampled_histograms_grow_the_same_trees_as_subtraction() -> Result<()> {
        // Ten features, three informative, with missing values.
        let n = 3000;
        let columns = crate::data::columns_with_missing(n, 10, 0x2545_f491);
        let labels: Vec<u32> = (0..n)
            .map(|r| {
                let s = columns[0][r].max(0.0) + columns[3][r].max(0.0) - columns[7][r].max(0.0);
                u32::from(s > 0.5) + u32::from(s > 1.2)
            })
            .collect();
        let data = Dataset {
            columns,
            labels,
            feature_names: (0..10).map(|f| format!("f{f}")).collect(),
        };
        let binned = Binned::new(&data, 32)?;
        let bag = Bagging {
            bootstrap: true,
            rate: 1.0,
            seed: 5,
        };
        let weights: Vec<f64> = (0..n).map(|r| f64::from(bag.weights()(0, r))).collect();
        let rows: Vec<u32> = (0..n as u32)
            .filter(|r| weights[*r as usize] > 0.0)
            .collect();
        for impurity in [Impurity::Gini, Impurity::Entropy] {
            let obj = ClassCounts {
                labels: &data.labels,
                weights: &weights,
                k: 3,
                impurity,
            };
            let grown = |integer_stats: bool| {
                let params = GrowParams {
                    max_depth: 6,
                    min_instances: 2.0,
                    min_gain: 0.0,
                    subset: FeatureSubset::Count(3),
                    parallel: false,
                    integer_stats,
                    draws: FeatureDraws::PerNode { seed: 11 },
                };
                let mut importance = vec![0.0; 10];
                let mut leaves = Vec::new();
                let tree = grow(
                    &binned,
                    &mut RowOrder::new(rows.clone()),
                    &obj,
                    &params,
                    &mut ChaCha8Rng::seed_from_u64(11),
                    &mut importance,
                    &mut |v, r| leaves.push((v.to_vec(), r.len())),
                );
                (tree, importance, leaves)
            };
            let (sampled, subtracted) = (grown(true), grown(false));
            assert!(sampled.0.depth() >= 3, "a real tree: {:?}", sampled.0);
            assert_eq!(sampled, subtracted, "{impurity:?}");
        }
        Ok(())
    }
}
