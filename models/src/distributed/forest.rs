//! Data-parallel random forests: every tree of the forest grows at once,
//! one level of all trees per round trip to the partitions.
//!
//! Once per level the driver sends every partition a [`ForestLevel`]: the
//! growing trees and, for each node to split, the features it considers.
//! A partition routes its rows down each tree from the root (no state is
//! kept between levels, so any executor can compute any partition) and
//! returns integer class-count histograms weighted by each row's
//! bootstrap weight in that tree. The driver adds them up (exact in any
//! order) and chooses the splits.
//!
//! A row's weight depends on (seed, tree, row) and a node's features on
//! (tree seed, node path) ([`crate::sampling`]), exactly as in
//! [`RfParams::fit`]; the statistics are integers and the splits are
//! chosen by the same code. So the forest is not only independent of the
//! partitioning and the executors: it is the forest a local fit grows,
//! node for node (its nodes renumbered to the local, depth-first order).

use super::data_parallel::{LevelBackend, LevelStats, LevelWork, SetSummary, widest};
use super::set_file::SetPart;
use crate::rf::{ClassCounts, RfModel, RfParams};
use crate::sampling::{Bagging, child_paths};
use crate::tree::{GrowParams, Node, Objective, Tree, best_split};
use kiln_engine::{KilnError, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// A node whose histograms a level builds, and the features it considers
/// (ascending).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeFeatures {
    pub tree: u32,
    pub node: u32,
    pub features: Vec<u32>,
}

/// What the driver asks every partition for, once per level of the forest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForestLevel {
    pub max_bins: usize,
    pub classes: usize,
    pub bagging: Bagging,
    /// The growing trees.
    pub trees: Vec<Tree>,
    pub build: Vec<NodeFeatures>,
}

impl ForestLevel {
    /// Where each built node's histograms start, and the values in all:
    /// per node, per feature, `width` bins × classes.
    fn offsets(&self, width: usize) -> (Vec<usize>, usize) {
        let mut total = 0;
        let offsets = self
            .build
            .iter()
            .map(|b| {
                let at = total;
                total += b.features.len() * width * self.classes;
                at
            })
            .collect();
        (offsets, total)
    }
}

/// The integer class-count histograms of `req.build` over one
/// partition's rows (see [`ForestLevel::offsets`] for the layout).
pub fn forest_histograms(part: &SetPart, req: &ForestLevel) -> Result<Vec<i64>> {
    const WHAT: &str = "a data-parallel forest level";
    let binned = part.set.binned(req.max_bins)?;
    let (nf, k) = (binned.n_features(), req.classes);
    let width = widest(&binned.bins);
    // Per tree and node: its index in `build`.
    let mut slot: Vec<Vec<Option<usize>>> = req
        .trees
        .iter()
        .map(|t| vec![None; t.nodes.len()])
        .collect();
    for (i, b) in req.build.iter().enumerate() {
        let s = slot
            .get_mut(b.tree as usize)
            .and_then(|s| s.get_mut(b.node as usize))
            .ok_or_else(|| KilnError::internal(WHAT, "a node outside its trees"))?;
        *s = Some(i);
        if b.features.iter().any(|f| *f as usize >= nf) {
            return Err(KilnError::internal(WHAT, "a feature outside the set"));
        }
    }
    if let Some(l) = part.set.labels.iter().find(|l| **l as usize >= k) {
        return Err(KilnError::internal(
            WHAT,
            format!("label {l} in a set of {k} classes"),
        ));
    }
    let (offsets, total) = req.offsets(width);
    let mut hist = vec![0i64; total];
    let weight = req.bagging.weights();
    crate::with_codes!(&binned.codes, |codes| {
        for (r, label) in part.set.labels.iter().enumerate() {
            let row_codes = &codes[r * nf..(r + 1) * nf];
            for (t, tree) in req.trees.iter().enumerate() {
                let weight = weight(t, part.first_row + r);
                if weight == 0 {
                    continue;
                }
                let leaf = tree.leaf_index_from(0, &|f| binned.value(f, r));
                let Some(i) = slot[t][leaf] else {
                    continue;
                };
                let base = offsets[i] + *label as usize;
                for (j, f) in req.build[i].features.iter().enumerate() {
                    let bin = row_codes[*f as usize] as usize;
                    hist[base + (j * width + bin) * k] += i64::from(weight);
                }
            }
        }
    });
    Ok(hist)
}

/// A tree of the forest being grown.
struct Growing {
    tree: Tree,
    /// Each node's split gain (0 for leaves), by node index.
    gains: Vec<f64>,
    grow: GrowParams,
}

/// A node waiting for its histograms.
struct Open {
    tree: usize,
    node: u32,
    path: u64,
    depth: usize,
    features: Vec<usize>,
}

/// Fits the forest `params` on every row of the partitioned set.
pub fn fit_forest(
    params: &RfParams,
    summary: &SetSummary,
    backend: &dyn LevelBackend,
) -> Result<(RfModel, LevelStats)> {
    const WHAT: &str = "a data-parallel forest";
    params.validate()?;
    let bins = summary.bins(params.max_bins)?;
    let (nf, k) = (bins.len(), summary.classes);
    let width = widest(bins);
    let subset = params.subset(nf)?;
    let obj = ClassCounts::splits_only(k, params.impurity);
    // The draws are per node; `features` ignores this generator.
    let mut unused = ChaCha8Rng::seed_from_u64(params.seed);
    let mut forest: Vec<Growing> = (0..params.num_trees)
        .map(|t| Growing {
            tree: Tree {
                nodes: vec![Node::leaf(Vec::new())],
            },
            gains: vec![0.0],
            grow: params.grow_params(subset, t),
        })
        .collect();
    // Every root is built: its class counts are its leaf value if it
    // does not split.
    let mut open: Vec<Open> = forest
        .iter()
        .enumerate()
        .map(|(t, g)| Open {
            tree: t,
            node: 0,
            path: 1,
            depth: 0,
            features: g.grow.features(nf, &mut unused, 1),
        })
        .collect();
    let to_f64 = |ints: &[i64]| ints.iter().map(|v| *v as f64).collect::<Vec<f64>>();
    let (mut levels, mut levels_seconds) = (0usize, 0.0f64);
    while !open.is_empty() {
        let req = ForestLevel {
            max_bins: params.max_bins,
            classes: k,
            bagging: params.bagging(),
            trees: forest.iter().map(|g| g.tree.clone()).collect(),
            build: open
                .iter()
                .map(|o| NodeFeatures {
                    tree: o.tree as u32,
                    node: o.node,
                    features: o.features.iter().map(|f| *f as u32).collect(),
                })
                .collect(),
        };
        let started = std::time::Instant::now();
        let (offsets, total) = req.offsets(width);
        let merged = backend.histograms(&LevelWork::Forest(req))?;
        levels += 1;
        levels_seconds += started.elapsed().as_secs_f64();
        if merged.len() != total {
            return Err(KilnError::internal(
                WHAT,
                format!("{} histogram values, {total} expected", merged.len()),
            ));
        }
        let mut next = Vec::new();
        for (o, at) in open.into_iter().zip(offsets) {
            let feature_hist = |j: usize, f: usize| {
                let start = at + j * width * k;
                &merged[start..start + bins[f].n_bins() * k]
            };
            // The node's class counts: any feature's bins add up to them.
            let first = *o
                .features
                .first()
                .ok_or_else(|| KilnError::internal(WHAT, "a node with no features drawn"))?;
            let stats = {
                let mut s = vec![0i64; k];
                for bin in feature_hist(0, first).chunks(k) {
                    s.iter_mut().zip(bin).for_each(|(a, b)| *a += b);
                }
                to_f64(&s)
            };
            let g = &mut forest[o.tree];
            let split =
                if o.depth < g.grow.max_depth && obj.count(&stats) >= 2.0 * g.grow.min_instances {
                    let hists: Vec<(usize, Vec<f64>)> = o
                        .features
                        .iter()
                        .enumerate()
                        .map(|(j, &f)| (f, to_f64(feature_hist(j, f))))
                        .collect();
                    best_split(
                        hists.iter().map(|(f, h)| (*f, h.as_slice())),
                        &stats,
                        &obj,
                        &g.grow,
                    )
                } else {
                    None
                };
            let Some(split) = split else {
                g.tree.nodes[o.node as usize].value = obj.leaf_value(&stats);
                continue;
            };
            let j = o
                .features
                .iter()
                .position(|f| *f == split.feature)
                .ok_or_else(|| KilnError::internal(WHAT, "a split on a feature not drawn"))?;
            let fh = feature_hist(j, split.feature);
            let mut left = vec![0i64; k];
            let bins_left = (1..=split.bin).chain(split.default_left.then_some(0));
            for b in bins_left {
                left.iter_mut()
                    .zip(&fh[b * k..(b + 1) * k])
                    .for_each(|(a, v)| *a += v);
            }
            let left = to_f64(&left);
            let right: Vec<f64> = stats.iter().zip(&left).map(|(p, l)| p - l).collect();
            let l = g.tree.nodes.len() as u32;
            g.tree.nodes.push(Node::leaf(Vec::new()));
            g.tree.nodes.push(Node::leaf(Vec::new()));
            g.gains.extend([0.0, 0.0]);
            g.gains[o.node as usize] = split.gain;
            let n = &mut g.tree.nodes[o.node as usize];
            n.feature = split.feature as u32;
            n.threshold = bins[split.feature].upper(split.bin);
            n.default_left = split.default_left;
            n.left = l;
            n.right = l + 1;
            let depth = o.depth + 1;
            let (left_path, right_path) = child_paths(o.path);
            for (child, path, counts) in [(l, left_path, left), (l + 1, right_path, right)] {
                if depth < g.grow.max_depth && obj.count(&counts) >= 2.0 * g.grow.min_instances {
                    next.push(Open {
                        tree: o.tree,
                        node: child,
                        path,
                        depth,
                        features: g.grow.features(nf, &mut unused, path),
                    });
                } else {
                    g.tree.nodes[child as usize].value = obj.leaf_value(&counts);
                }
            }
        }
        open = next;
    }
    let grown = forest
        .into_iter()
        .map(|g| depth_first(&g.tree, &g.gains, nf))
        .collect();
    let stats = LevelStats {
        partitions: backend.partitions(),
        levels,
        levels_seconds,
        seconds_per_level: levels_seconds / levels.max(1) as f64,
    };
    Ok((RfModel::of_trees(k, grown), stats))
}

/// `tree` with its nodes numbered as a depth-first grower numbers them
/// (a split's children get the next two indices when the split is
/// grown, left subtree first), and its importances summed in that order.
fn depth_first(tree: &Tree, gains: &[f64], nf: usize) -> (Tree, Vec<f64>) {
    let mut nodes = vec![Node::leaf(Vec::new())];
    let mut importance = vec![0.0; nf];
    let mut stack = vec![(0usize, 0usize)];
    while let Some((from, to)) = stack.pop() {
        let mut node = tree.nodes[from].clone();
        if !node.is_leaf() {
            importance[node.feature as usize] += gains[from];
            let l = nodes.len();
            nodes.extend([Node::leaf(Vec::new()), Node::leaf(Vec::new())]);
            stack.push((node.right as usize, l + 1));
            stack.push((node.left as usize, l));
            (node.left, node.right) = (l as u32, l as u32 + 1);
        }
        nodes[to] = node;
    }
    (Tree { nodes }, importance)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Dataset, TrainingSet};
    use crate::distributed::data_parallel::InProcess;
    use crate::rf::Impurity;

    /// Three classes, ten features (three informative), missing values.
    fn data(n: usize) -> Dataset {
        let columns = crate::data::columns_with_missing(n, 10, 0x5eed_f0e5);
        let labels = (0..n)
            .map(|r| {
                let s = columns[0][r].max(0.0) + columns[3][r].max(0.0) - columns[7][r].max(0.0);
                u32::from(s > 0.5) + u32::from(s > 1.2)
            })
            .collect();
        Dataset {
            columns,
            labels,
            feature_names: (0..10).map(|f| format!("f{f}")).collect(),
        }
    }

    /// The forest grown level by level over partitions is the local
    /// forest, whatever the partitioning: bootstrap or subsampled rows,
    /// sampled or all features, both impurities, two and three classes.
    #[test]
    fn the_forest_is_the_local_forest_for_any_partitioning() -> Result<()> {
        let three = TrainingSet::from_dataset(&data(4000), &[32, 16])?;
        let mut binary = data(4000);
        binary
            .labels
            .iter_mut()
            .for_each(|l| *l = u32::from(*l > 0));
        let two = TrainingSet::from_dataset(&binary, &[32])?;
        let cases = [
            (&three, RfParams::default()),
            (
                &three,
                RfParams {
                    num_trees: 7,
                    max_depth: 7,
                    bootstrap: false,
                    subsampling_rate: 0.7,
                    impurity: Impurity::Entropy,
                    min_instances_per_node: 5,
                    max_bins: 16,
                    seed: 9,
                    ..RfParams::default()
                },
            ),
            (
                &two,
                RfParams {
                    num_trees: 4,
                    feature_subset_strategy: "all".into(),
                    subsampling_rate: 0.6,
                    min_info_gain: 0.001,
                    ..RfParams::default()
                },
            ),
            (
                &two,
                RfParams {
                    num_trees: 1,
                    max_depth: 0,
                    ..RfParams::default()
                },
            ),
        ];
        for (set, params) in cases {
            let all: Vec<u32> = (0..set.n_rows() as u32).collect();
            let local = params.fit(set, &all)?;
            let summary = SetSummary::of(set)?;
            for partitions in [1, 3, 8] {
                let (forest, stats) =
                    fit_forest(&params, &summary, &InProcess::new(set, partitions))?;
                // One round trip per depth that has nodes to split.
                assert!((1..=params.max_depth.max(1)).contains(&stats.levels));
                assert!(
                    forest == local,
                    "{params:?} on {partitions} partitions: the forest differs"
                );
            }
            if params.max_depth > 0 {
                assert!(local.trees.iter().all(|t| t.depth() >= 3), "{params:?}");
            }
        }
        Ok(())
    }
}
