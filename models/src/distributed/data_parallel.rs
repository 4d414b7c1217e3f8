//! Data-parallel gradient boosting: the binned rows live in partitions
//! (in this process, or one file each in the lake read by Ballista
//! executors); the driver holds no codes while it grows the trees.
//!
//! Once per tree level the driver sends every partition a
//! [`LevelRequest`]: the trees so far, the tree being grown and the nodes
//! whose histograms it needs. Each partition brings its rows' scores up to
//! date (kept between levels where it ran before, else recomputed from the
//! trees; the same numbers either way), computes gradients and hessians,
//! **quantizes them to integers** (fixed point, 2^-24) and returns integer
//! (gradient, hessian, count) histograms. The driver adds them up — integer
//! sums are exact in any order — derives each larger sibling from its
//! parent minus the smaller one, and chooses the splits. The model is
//! therefore bit-identical whatever the number of partitions and executors
//! and whichever executor computed which partition.
//!
//! Binary `GBTClassifier` without early stopping; `subsamplingRate` draws
//! rows by a hash of (seed, iteration, row), so the sample does not depend
//! on the partitioning either.

use super::forest::{ForestLevel, fit_forest, forest_histograms};
use super::set_file::SetPart;
use crate::data::{FeatureBins, TrainingSet};
use crate::gbt::{GbtModel, GbtParams, Newton, sigmoid};
use crate::jobs::{FitJob, FitOutcome, FitRows, FitRunner};
use crate::model::{FittedModel, ModelParams};
use crate::tree::{Node, Objective, Tree, best_split, sampled_features};
use kiln_engine::{KilnError, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// Fixed-point scale of quantized gradients and hessians (|g| < 1 and
/// h ≤ 1/4 for logistic loss, so a partition of up to 2^38 rows cannot
/// overflow an i64 sum, and a sum converts to f64 exactly below 2^29 rows).
pub const GRADIENT_SCALE: f64 = (1u64 << 24) as f64;
/// (gradient, hessian, count) per bin.
const STATS: usize = 3;

/// Row sampling per iteration, the same whatever the partitioning.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Subsample {
    pub rate: f64,
    pub seed: u64,
}

impl Subsample {
    fn keeps(&self, iteration: usize, row: usize) -> bool {
        crate::sampling::unit(self.seed, iteration as u64, row as u64) < self.rate
    }
}

/// What the driver asks every partition for, once per tree level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelRequest {
    /// Identifies the fit, so a partition's kept scores are never reused
    /// by another fit.
    pub fit: u64,
    pub max_bins: usize,
    pub init: f64,
    /// The finished trees (their count is the iteration).
    pub trees: Vec<Tree>,
    /// The tree being grown; the nodes to build are among its leaves.
    pub tree: Tree,
    pub build: Vec<u32>,
    pub subsample: Option<Subsample>,
}

/// A partition's rows' scores, kept between levels of one fit.
#[derive(Debug, Default)]
pub struct PartState {
    fit: u64,
    applied: usize,
    scores: Vec<f64>,
    /// The iteration whose quantized gradients are in `grad` / `hess`.
    gradients_of: Option<usize>,
    grad: Vec<i32>,
    hess: Vec<i32>,
    /// The tree (by index) whose nodes `node_of` holds: each row's leaf
    /// when last routed, so the next level routes it on from there instead
    /// of from the root.
    routed: Option<usize>,
    node_of: Vec<u32>,
    /// Row lists per node to build, reused from level to level.
    rows_of: Vec<Vec<u32>>,
}

impl PartState {
    /// The fit whose scores these are.
    pub fn fit(&self) -> u64 {
        self.fit
    }

    /// The finished trees of `req` whose scores this state lacks, and
    /// whether it knows where the growing tree's rows are (else every row
    /// is routed from the root): what a task on this state recomputes.
    pub fn behind(&self, req: &LevelRequest) -> (usize, bool) {
        let fresh = self.fit != req.fit || self.applied > req.trees.len();
        let applied = if fresh { 0 } else { self.applied };
        let routed = !fresh && self.routed == Some(req.trees.len());
        (req.trees.len() - applied, routed)
    }

    /// Whether this state is where the previous level left it (mid-tree
    /// with the rows routed, or a new tree's first level one finished tree
    /// behind): then `req` costs only its histograms.
    pub fn is_current(&self, req: &LevelRequest) -> bool {
        match self.behind(req) {
            (0, routed) => routed,
            (1, _) => req.tree.nodes.len() == 1 && self.routed == Some(req.trees.len() - 1),
            _ => false,
        }
    }
}

/// The integer histograms of `req.build` over one partition's rows:
/// `build.len() × features × bins × 3` values (bins = the widest feature).
pub fn part_histograms(
    part: &SetPart,
    state: &mut PartState,
    req: &LevelRequest,
) -> Result<Vec<i64>> {
    let binned = part.set.binned(req.max_bins)?;
    let n = part.set.n_rows();
    if state.fit != req.fit || state.applied > req.trees.len() || state.scores.len() != n {
        *state = PartState {
            fit: req.fit,
            scores: vec![req.init; n],
            ..PartState::default()
        };
    }
    for (t, tree) in req.trees.iter().enumerate().skip(state.applied) {
        // The tree grown last: its rows are part of the way down already.
        let routed = state.routed == Some(t) && state.node_of.len() == n;
        for (r, score) in state.scores.iter_mut().enumerate() {
            let start = if routed { state.node_of[r] as usize } else { 0 };
            let leaf = tree.leaf_index_from(start, &|f| binned.value(f, r));
            *score += tree.nodes[leaf].value[0];
        }
    }
    state.applied = req.trees.len();
    let iteration = req.trees.len();
    if state.routed != Some(iteration) || state.node_of.len() != n {
        state.node_of.clear();
        state.node_of.resize(n, 0);
        state.routed = Some(iteration);
    }
    if state.gradients_of != Some(iteration) {
        state.grad.resize(n, 0);
        state.hess.resize(n, 0);
        for r in 0..n {
            let p = sigmoid(state.scores[r]);
            let y = f64::from(part.set.labels[r] == 1);
            state.grad[r] = ((p - y) * GRADIENT_SCALE).round() as i32;
            state.hess[r] = ((p * (1.0 - p)).max(1e-16) * GRADIENT_SCALE).round() as i32;
        }
        state.gradients_of = Some(iteration);
    }
    let slot_of: Vec<Option<usize>> = {
        let mut s = vec![None; req.tree.nodes.len()];
        for (k, node) in req.build.iter().enumerate() {
            if let Some(slot) = s.get_mut(*node as usize) {
                *slot = Some(k);
            }
        }
        s
    };
    let rows_of = &mut state.rows_of;
    rows_of.resize_with(req.build.len(), Vec::new);
    rows_of.iter_mut().for_each(Vec::clear);
    for (r, node) in state.node_of.iter_mut().enumerate() {
        if let Some(s) = req.subsample
            && !s.keeps(iteration, part.first_row + r)
        {
            continue;
        }
        let leaf = req
            .tree
            .leaf_index_from(*node as usize, &|f| binned.value(f, r));
        *node = leaf as u32;
        if let Some(Some(k)) = slot_of.get(leaf) {
            rows_of[*k].push(r as u32);
        }
    }
    let nf = binned.n_features();
    let width = widest(&binned.bins) * STATS;
    let mut hist = vec![0i64; req.build.len() * nf * width];
    for (k, rows) in rows_of.iter().enumerate() {
        let node = &mut hist[k * nf * width..(k + 1) * nf * width];
        crate::with_codes!(&binned.codes, |codes| {
            for &r in rows {
                let r = r as usize;
                let (g, h) = (i64::from(state.grad[r]), i64::from(state.hess[r]));
                for (f, &c) in codes[r * nf..(r + 1) * nf].iter().enumerate() {
                    let b = f * width + c as usize * STATS;
                    node[b] += g;
                    node[b + 1] += h;
                    node[b + 2] += 1;
                }
            }
        })
    }
    Ok(hist)
}

/// The bins of the widest feature (every feature's histogram is that wide).
pub(super) fn widest(bins: &[FeatureBins]) -> usize {
    bins.iter().map(FeatureBins::n_bins).max().unwrap_or(0)
}

/// One level's work for every partition: of a boosted tree, or of all
/// trees of a forest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LevelWork {
    Boosting(LevelRequest),
    Forest(ForestLevel),
}

impl LevelWork {
    /// One partition's histograms; a boosting level brings `state` (the
    /// partition's scores) up to date, a forest level keeps none.
    pub fn part_histograms(&self, part: &SetPart, state: &mut PartState) -> Result<Vec<i64>> {
        match self {
            LevelWork::Boosting(req) => part_histograms(part, state, req),
            LevelWork::Forest(req) => forest_histograms(part, req),
        }
    }
}

/// Where the partitions are: sums their histograms for one level.
pub trait LevelBackend: Send + Sync {
    /// The sum over every partition of [`LevelWork::part_histograms`].
    fn histograms(&self, work: &LevelWork) -> Result<Vec<i64>>;
    fn partitions(&self) -> usize;
}

/// Partitions held in this process, computed in parallel (rayon).
pub struct InProcess {
    parts: Vec<SetPart>,
    states: Vec<std::sync::Mutex<PartState>>,
}

impl InProcess {
    /// `set` cut into `partitions` row ranges.
    pub fn new(set: &TrainingSet, partitions: usize) -> Self {
        let parts: Vec<SetPart> = row_ranges(set.n_rows(), partitions)
            .into_iter()
            .map(|range| slice(set, range))
            .collect();
        let states = parts.iter().map(|_| Default::default()).collect();
        InProcess { parts, states }
    }
}

impl LevelBackend for InProcess {
    fn histograms(&self, work: &LevelWork) -> Result<Vec<i64>> {
        use rayon::prelude::*;
        let hists: Vec<Vec<i64>> = self
            .parts
            .par_iter()
            .zip(&self.states)
            .map(|(part, state)| {
                let mut state = state
                    .lock()
                    .map_err(|_| KilnError::internal("a partition's state", "poisoned"))?;
                work.part_histograms(part, &mut state)
            })
            .collect::<Result<_>>()?;
        sum_histograms(hists)
    }

    fn partitions(&self) -> usize {
        self.parts.len()
    }
}

/// Adds partitions' histograms (exact: integers).
pub fn sum_histograms(hists: impl IntoIterator<Item = Vec<i64>>) -> Result<Vec<i64>> {
    let mut total: Option<Vec<i64>> = None;
    for h in hists {
        match &mut total {
            None => total = Some(h),
            Some(t) if t.len() == h.len() => t.iter_mut().zip(&h).for_each(|(a, b)| *a += b),
            Some(t) => {
                return Err(KilnError::internal(
                    "data-parallel histograms",
                    format!(
                        "a partition returned {} values, another {}",
                        h.len(),
                        t.len()
                    ),
                ));
            }
        }
    }
    total.ok_or_else(|| KilnError::internal("data-parallel histograms", "no partitions"))
}

/// `n` rows cut into `partitions` contiguous, nearly equal ranges.
pub fn row_ranges(n: usize, partitions: usize) -> Vec<Range<usize>> {
    let p = partitions.clamp(1, n.max(1));
    (0..p).map(|i| (i * n / p)..((i + 1) * n / p)).collect()
}

/// Rows `range` of `set` as a partition.
pub fn slice(set: &TrainingSet, range: Range<usize>) -> SetPart {
    SetPart {
        set: TrainingSet {
            labels: set.labels[range.clone()].to_vec(),
            feature_names: set.feature_names.clone(),
            binnings: set.binnings.iter().map(|b| b.rows(range.clone())).collect(),
            checksum: set.checksum,
        },
        set_rows: set.n_rows(),
        first_row: range.start,
    }
}

/// What the driver knows of the set: boundaries and label counts.
#[derive(Debug, Clone)]
pub struct SetSummary {
    /// Per `maxBins`, the boundaries of every feature.
    pub binnings: Vec<(usize, Vec<FeatureBins>)>,
    pub rows: usize,
    pub positives: usize,
    pub classes: usize,
}

impl SetSummary {
    /// Every feature's boundaries for `max_bins`.
    pub fn bins(&self, max_bins: usize) -> Result<&[FeatureBins]> {
        self.binnings
            .iter()
            .find(|(m, _)| *m == max_bins)
            .map(|(_, b)| b.as_slice())
            .ok_or_else(|| {
                KilnError::internal(
                    "a data-parallel fit",
                    format!("no binning for maxBins {max_bins}"),
                )
            })
    }

    pub fn of(set: &TrainingSet) -> Result<Self> {
        Ok(SetSummary {
            binnings: set
                .binnings
                .iter()
                .map(|b| (b.max_bins, b.bins.clone()))
                .collect(),
            rows: set.n_rows(),
            positives: set.labels.iter().filter(|l| **l == 1).count(),
            classes: set.validate(false)?,
        })
    }
}

/// Checks that `params` can be fitted data-parallel; the error names the fix.
pub fn check_params(params: &GbtParams, classes: usize) -> Result<()> {
    params.validate()?;
    if classes != 2 {
        return Err(KilnError::config_fix(
            format!(
                "distribution: data_parallel fits binary GBTClassifier; the label has {classes} classes"
            ),
            "use distribution: tuning or local for more than two classes, or a RandomForestClassifier (data-parallel for any number of classes)",
        ));
    }
    if params.validation_fraction > 0.0 {
        return Err(KilnError::config_fix(
            "distribution: data_parallel does not support validationFraction (early stopping)",
            "set validationFraction: 0 and choose maxIter, or use distribution: tuning or local",
        ));
    }
    Ok(())
}

/// A node waiting for its histogram.
struct Open {
    node: u32,
    depth: usize,
    /// Built by the partitions, or its parent's minus its sibling's.
    derive_from: Option<(std::rc::Rc<Vec<i64>>, u32)>,
}

/// How a data-parallel fit went, for the run report.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LevelStats {
    pub partitions: usize,
    /// Round trips to the partitions (one per tree level with nodes to split).
    pub levels: usize,
    /// Wall time of those round trips, and per trip.
    pub levels_seconds: f64,
    pub seconds_per_level: f64,
}

/// Fits `params` on every row of the partitioned set; `fit` identifies
/// this fit to the partitions.
pub fn fit_gbt(
    params: &GbtParams,
    summary: &SetSummary,
    backend: &dyn LevelBackend,
    fit: u64,
) -> Result<(GbtModel, LevelStats)> {
    check_params(params, summary.classes)?;
    let bins = summary.bins(params.max_bins)?;
    let nf = bins.len();
    let width = widest(bins) * STATS;
    let p = (summary.positives as f64 / summary.rows as f64).clamp(1e-12, 1.0 - 1e-12);
    let init = (p / (1.0 - p)).ln();
    // Integer statistics: exact in any order (the partitions' sums).
    let grow = params.grow_params(nf, false, true)?;
    let newton = Newton {
        grad_hess: &[],
        lambda: params.reg_lambda,
        min_hessian: params.min_sum_hessian,
        step: params.step_size,
    };
    let subsample = (params.subsampling_rate < 1.0).then_some(Subsample {
        rate: params.subsampling_rate,
        seed: params.seed,
    });
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    let mut importance = vec![0.0; nf];
    let mut trees: Vec<Tree> = Vec::new();
    let (mut levels, mut levels_seconds) = (0usize, 0.0f64);
    let to_stats = |ints: &[i64]| -> Vec<f64> {
        vec![
            ints[0] as f64 / GRADIENT_SCALE,
            ints[1] as f64 / GRADIENT_SCALE,
            ints[2] as f64,
        ]
    };
    let needs_split = |depth: usize, count: i64| {
        depth < params.max_depth && count as f64 >= 2.0 * params.min_instances_per_node as f64
    };
    for _ in 0..params.max_iter {
        let mut tree = Tree {
            nodes: vec![Node::leaf(Vec::new())],
        };
        let mut open = vec![Open {
            node: 0,
            depth: 0,
            derive_from: None,
        }];
        while !open.is_empty() {
            let build: Vec<u32> = open
                .iter()
                .filter(|o| o.derive_from.is_none())
                .map(|o| o.node)
                .chain(
                    open.iter()
                        .filter_map(|o| o.derive_from.as_ref().map(|d| d.1)),
                )
                .collect::<std::collections::BTreeSet<u32>>()
                .into_iter()
                .collect();
            let level_started = std::time::Instant::now();
            let merged = backend.histograms(&LevelWork::Boosting(LevelRequest {
                fit,
                max_bins: params.max_bins,
                init,
                trees: trees.clone(),
                tree: tree.clone(),
                build: build.clone(),
                subsample,
            }))?;
            levels += 1;
            levels_seconds += level_started.elapsed().as_secs_f64();
            let block = nf * width;
            if merged.len() != build.len() * block {
                return Err(KilnError::internal(
                    "a data-parallel fit",
                    format!(
                        "{} histogram values for {} nodes",
                        merged.len(),
                        build.len()
                    ),
                ));
            }
            let built = |node: u32| -> Option<&[i64]> {
                build
                    .iter()
                    .position(|b| *b == node)
                    .map(|k| &merged[k * block..(k + 1) * block])
            };
            let mut next = Vec::new();
            for o in std::mem::take(&mut open) {
                let hist: Vec<i64> = match &o.derive_from {
                    None => built(o.node).map(<[i64]>::to_vec),
                    Some((parent, sibling)) => {
                        built(*sibling).map(|s| parent.iter().zip(s).map(|(p, s)| p - s).collect())
                    }
                }
                .ok_or_else(|| {
                    KilnError::internal("a data-parallel fit", "a node's histogram is missing")
                })?;
                let node_ints = feature_stats(&hist[..width], width);
                let parent = to_stats(&node_ints);
                let hist_f: Vec<f64> = hist.chunks(STATS).flat_map(to_stats).collect();
                let split = if needs_split(o.depth, node_ints[2]) {
                    let features = sampled_features(grow.subset, nf, &mut rng);
                    let hists = features
                        .into_iter()
                        .map(|f| (f, &hist_f[f * width..f * width + bins[f].n_bins() * STATS]));
                    best_split(hists, &parent, &newton, &grow)
                } else {
                    None
                };
                let Some(split) = split else {
                    tree.nodes[o.node as usize].value = newton.leaf_value(&parent);
                    continue;
                };
                importance[split.feature] += split.gain;
                let f = split.feature;
                let fh = &hist[f * width..(f + 1) * width];
                let mut left = [0i64; STATS];
                for b in 1..=split.bin {
                    (0..STATS).for_each(|s| left[s] += fh[b * STATS + s]);
                }
                if split.default_left {
                    (0..STATS).for_each(|s| left[s] += fh[s]);
                }
                let right: Vec<i64> = (0..STATS).map(|s| node_ints[s] - left[s]).collect();
                let l = tree.nodes.len() as u32;
                tree.nodes.push(Node::leaf(Vec::new()));
                tree.nodes.push(Node::leaf(Vec::new()));
                let n = &mut tree.nodes[o.node as usize];
                n.feature = f as u32;
                n.threshold = bins[f].upper(split.bin);
                n.default_left = split.default_left;
                n.left = l;
                n.right = l + 1;
                let depth = o.depth + 1;
                let (split_left, split_right) =
                    (needs_split(depth, left[2]), needs_split(depth, right[2]));
                if !split_left {
                    tree.nodes[l as usize].value = newton.leaf_value(&to_stats(&left));
                }
                if !split_right {
                    tree.nodes[l as usize + 1].value = newton.leaf_value(&to_stats(&right));
                }
                if split_left || split_right {
                    // Build the smaller child (also when only its sibling
                    // splits further); the larger is the parent minus it.
                    let (small, large) = if left[2] <= right[2] {
                        (l, l + 1)
                    } else {
                        (l + 1, l)
                    };
                    let parent_hist = std::rc::Rc::new(hist);
                    for (child, needed) in [(l, split_left), (l + 1, split_right)] {
                        if !needed {
                            continue;
                        }
                        next.push(Open {
                            node: child,
                            depth,
                            derive_from: (child == large)
                                .then(|| (std::rc::Rc::clone(&parent_hist), small)),
                        });
                    }
                }
            }
            open = next;
        }
        trees.push(tree);
    }
    let total: f64 = importance.iter().sum();
    if total > 0.0 {
        importance.iter_mut().for_each(|x| *x /= total);
    }
    let model = GbtModel {
        num_classes: 2,
        init: vec![init],
        trees: trees.into_iter().map(|t| vec![t]).collect(),
        feature_importances: importance,
    };
    let stats = LevelStats {
        partitions: backend.partitions(),
        levels,
        levels_seconds,
        seconds_per_level: levels_seconds / levels.max(1) as f64,
    };
    Ok((model, stats))
}

/// A [`FitRunner`] for final fits of binary GBTs and of forests, each
/// fitted data-parallel over `backend`'s partitions.
pub struct DataParallelFits {
    pub summary: SetSummary,
    pub backend: Box<dyn LevelBackend>,
    /// Where the partitions are, for reports.
    pub location: &'static str,
}

impl FitRunner for DataParallelFits {
    fn run_all(&self, _data: &TrainingSet, jobs: &[FitJob]) -> Result<Vec<FitOutcome>> {
        static FITS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        jobs.iter()
            .map(|job| {
                let started = std::time::Instant::now();
                check_estimator(&job.params, self.summary.classes)?;
                if job.rows != FitRows::All || !job.score_sizes.is_empty() {
                    return Err(KilnError::config_fix(
                        "distribution: data_parallel fits final models, not tuning folds",
                        "drop the grid (tune on a sample with distribution: tuning first), or use distribution: tuning",
                    ));
                }
                // Any id unique in this process: results do not depend on it.
                let fit = (std::process::id() as u64) << 32
                    | FITS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let backend = self.backend.as_ref();
                let (model, stats) = match &job.params {
                    ModelParams::GBTClassifier(params) => {
                        let (m, stats) = fit_gbt(params, &self.summary, backend, fit)?;
                        (FittedModel::GBTClassifier(m), stats)
                    }
                    ModelParams::RandomForestClassifier(params) => {
                        let (m, stats) = fit_forest(params, &self.summary, backend)?;
                        (FittedModel::RandomForestClassifier(m), stats)
                    }
                };
                Ok(FitOutcome {
                    scores: Vec::new(),
                    model: job.keep_model.then_some(model),
                    seconds: started.elapsed().as_secs_f64(),
                    details: serde_json::to_value(stats).ok(),
                })
            })
            .collect()
    }

    fn describe(&self) -> String {
        format!(
            "data-parallel over {} partitions {}",
            self.backend.partitions(),
            self.location
        )
    }
}

/// Checks that `params` can be fitted data-parallel on a set of
/// `classes`: any forest, a binary GBT without early stopping.
pub fn check_estimator(params: &ModelParams, classes: usize) -> Result<()> {
    match params {
        ModelParams::GBTClassifier(p) => check_params(p, classes),
        ModelParams::RandomForestClassifier(p) => p.validate(),
    }
}

/// The node's (gradient, hessian, count) sums: any one feature's bins
/// add up to them (every row is in exactly one bin of each feature).
fn feature_stats(feature_hist: &[i64], width: usize) -> [i64; STATS] {
    let mut s = [0i64; STATS];
    for b in 0..width / STATS {
        (0..STATS).for_each(|k| s[k] += feature_hist[b * STATS + k]);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Dataset;

    fn data(n: usize) -> Dataset {
        let x: Vec<f64> = (0..n).map(|i| ((i * 37) % 101) as f64).collect();
        let z: Vec<f64> = (0..n)
            .map(|i| {
                if i % 11 == 0 {
                    f64::NAN
                } else {
                    ((i * 53) % 89) as f64
                }
            })
            .collect();
        let w: Vec<f64> = (0..n).map(|i| ((i * 7) % 13) as f64).collect();
        let labels = (0..n)
            .map(|i| u32::from((x[i] + z[i].max(0.0) > 95.0) ^ (i % 13 == 0)))
            .collect();
        Dataset {
            columns: vec![x, z, w],
            labels,
            feature_names: vec!["x".into(), "z".into(), "w".into()],
        }
    }

    /// Partitions with a fresh state for every level.
    struct Forgetful(InProcess);

    impl LevelBackend for Forgetful {
        fn histograms(&self, work: &LevelWork) -> Result<Vec<i64>> {
            let hists = self
                .0
                .parts
                .iter()
                .map(|part| work.part_histograms(part, &mut PartState::default()))
                .collect::<Result<Vec<_>>>()?;
            sum_histograms(hists)
        }

        fn partitions(&self) -> usize {
            self.0.parts.len()
        }
    }

    #[test]
    fn the_model_does_not_depend_on_the_partitioning() -> Result<()> {
        let set = TrainingSet::from_dataset(&data(3000), &[32])?;
        let summary = SetSummary::of(&set)?;
        for params in [
            GbtParams {
                max_iter: 8,
                max_depth: 4,
                ..GbtParams::default()
            },
            GbtParams {
                max_iter: 6,
                max_depth: 3,
                subsampling_rate: 0.7,
                feature_subset_strategy: "2".into(),
                min_instances_per_node: 20,
                ..GbtParams::default()
            },
        ] {
            let (one, stats) = fit_gbt(&params, &summary, &InProcess::new(&set, 1), 1)?;
            assert!(
                stats.levels >= params.max_iter
                    && stats.levels <= params.max_iter * params.max_depth
            );
            // Partitions that keep nothing between levels (as after a lost
            // executor) route every row from the root: the same model as
            // routing on from each row's last node.
            let (fresh, _) = fit_gbt(&params, &summary, &Forgetful(InProcess::new(&set, 3)), 3)?;
            assert_eq!(
                serde_json::to_string(&one).ok(),
                serde_json::to_string(&fresh).ok()
            );
            for partitions in [2, 3, 7] {
                let (many, _) = fit_gbt(&params, &summary, &InProcess::new(&set, partitions), 2)?;
                assert_eq!(
                    serde_json::to_string(&one).ok(),
                    serde_json::to_string(&many).ok(),
                    "{partitions} partitions"
                );
            }
            assert_eq!(one.trees.len(), params.max_iter);
            // Close to the float fit: similar quality, and without row or
            // feature sampling (whose draws differ) the same first split.
            let float = params.fit(&set, &set.all_rows())?;
            if params.subsampling_rate == 1.0 && params.feature_subset_strategy == "all" {
                let root = |m: &GbtModel| {
                    (
                        m.trees[0][0].nodes[0].feature,
                        m.trees[0][0].nodes[0].threshold,
                    )
                };
                assert_eq!(root(&one), root(&float));
            }
            let binned = set.binned(32)?;
            let auc = |m: &GbtModel| {
                let proba: Vec<Vec<f64>> = (0..set.n_rows())
                    .map(|r| m.predict_proba(&|f| binned.value(f, r)))
                    .collect();
                crate::metrics::Metrics::compute(&set.labels, &proba).area_under_roc
            };
            assert!(
                (auc(&one) - auc(&float)).abs() < 0.005,
                "{} vs {}",
                auc(&one),
                auc(&float)
            );
        }
        Ok(())
    }

    /// Two-byte codes (1,000 bins over a feature of 3,000 distinct values)
    /// merge into the same model whatever the partitioning, and it is the
    /// model grown in one process from the same integer histograms.
    #[test]
    fn wide_codes_do_not_depend_on_the_partitioning() -> Result<()> {
        let mut d = data(3000);
        d.columns[0] = (0..3000).map(|i| (i as f64 * 0.37).sin()).collect();
        let set = TrainingSet::from_dataset(&d, &[1000])?;
        assert!(matches!(
            set.binned(1000)?.codes,
            crate::data::Codes::Wide(_)
        ));
        let summary = SetSummary::of(&set)?;
        let params = GbtParams {
            max_iter: 5,
            max_depth: 4,
            max_bins: 1000,
            ..GbtParams::default()
        };
        let (one, _) = fit_gbt(&params, &summary, &InProcess::new(&set, 1), 1)?;
        let (three, _) = fit_gbt(&params, &summary, &InProcess::new(&set, 3), 2)?;
        assert_eq!(
            serde_json::to_string(&one).ok(),
            serde_json::to_string(&three).ok()
        );
        assert!(one.trees.iter().flatten().any(|t| t.nodes.len() > 1));
        Ok(())
    }

    #[test]
    fn unsupported_params_name_the_fix() {
        let early = GbtParams {
            validation_fraction: 0.2,
            ..GbtParams::default()
        };
        let err = check_params(&early, 2)
            .expect_err("early stopping")
            .to_string();
        assert!(err.contains("validationFraction"), "{err}");
        let err = check_params(&GbtParams::default(), 3)
            .expect_err("3 classes")
            .to_string();
        assert!(err.contains("3 classes"), "{err}");
    }
}
