//! Histogram tree growing shared by GBT and random forest: per-feature
//! histograms built in parallel (rayon), the sibling-subtraction trick, and a
//! learned default direction for missing values.

use crate::data::Binned;
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// A node of a fitted tree. Leaves carry `value` (a score for GBT, a class
/// distribution for random forest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    #[serde(rename = "f")]
    pub feature: u32,
    /// Go left when `x <= threshold`.
    #[serde(rename = "t")]
    pub threshold: f64,
    /// Where missing values (NaN) go.
    #[serde(rename = "d")]
    pub default_left: bool,
    #[serde(rename = "l")]
    pub left: u32,
    #[serde(rename = "r")]
    pub right: u32,
    #[serde(rename = "v", default, skip_serializing_if = "Vec::is_empty")]
    pub value: Vec<f64>,
}

impl Node {
    pub(crate) fn leaf(value: Vec<f64>) -> Self {
        Node {
            feature: 0,
            threshold: 0.0,
            default_left: true,
            left: 0,
            right: 0,
            value,
        }
    }

    pub fn is_leaf(&self) -> bool {
        self.left == 0 && self.right == 0
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    /// The leaf value for one row of raw features.
    #[inline]
    pub fn leaf<'a>(&'a self, row: &dyn Fn(usize) -> f64) -> &'a [f64] {
        &self.nodes[self.leaf_index(row)].value
    }

    /// The index of the leaf one row of raw features reaches.
    #[inline]
    pub fn leaf_index(&self, row: &dyn Fn(usize) -> f64) -> usize {
        self.leaf_index_from(0, row)
    }

    /// The index of the leaf a row reaches from node `start`, a node on its
    /// path (the leaf it reached while the tree was smaller); from the root
    /// when `start` is not a node of this tree.
    #[inline]
    pub fn leaf_index_from(&self, start: usize, row: &dyn Fn(usize) -> f64) -> usize {
        let mut i = if start < self.nodes.len() { start } else { 0 };
        loop {
            let n = &self.nodes[i];
            if n.is_leaf() {
                return i;
            }
            let x = row(n.feature as usize);
            let left = if x.is_nan() {
                n.default_left
            } else {
                x <= n.threshold
            };
            i = if left {
                n.left as usize
            } else {
                n.right as usize
            };
        }
    }

    pub fn depth(&self) -> usize {
        fn d(t: &Tree, i: usize) -> usize {
            let n = &t.nodes[i];
            if n.is_leaf() {
                0
            } else {
                1 + d(t, n.left as usize).max(d(t, n.right as usize))
            }
        }
        d(self, 0)
    }
}

/// What a learner optimizes: per-bin statistics, split gain and leaf value.
pub(crate) trait Objective: Sync {
    /// Statistics per bin.
    fn width(&self) -> usize;
    /// Per-row inputs of `rows`, in order. Gathered once per node, so the
    /// histogram passes read them sequentially instead of at random.
    fn gather(&self, rows: &[u32]) -> Vec<[f32; 2]>;
    /// Adds the statistics of `rows` (with their `gathered` inputs) into
    /// `hist`, laid out by `layout` (`width` values per bin); implemented
    /// with [`add_rows`].
    fn accumulate(
        &self,
        binned: &Binned,
        rows: &[u32],
        gathered: &[[f32; 2]],
        layout: &Layout,
        hist: &mut [f64],
    );
    /// The statistics of all the gathered rows (a node's totals).
    fn total(&self, gathered: &[[f32; 2]]) -> Vec<f64>;
    /// Instance count (weighted) of a statistics vector.
    fn count(&self, stats: &[f64]) -> f64;
    /// Gain of splitting `parent` into `left` and `right`; `None` if invalid.
    fn gain(&self, left: &[f64], right: &[f64], parent: &[f64]) -> Option<f64>;
    fn leaf_value(&self, stats: &[f64]) -> Vec<f64>;
}

/// The features a histogram holds and where each one's bins start.
pub(crate) struct Layout {
    /// Ascending.
    features: Vec<usize>,
    /// Where each listed feature's bins start (`width` values per bin).
    offsets: Vec<usize>,
    len: usize,
    width: usize,
    /// Every feature, in order: a row's codes map to offsets one to one.
    all: bool,
}

impl Layout {
    pub(crate) fn new(binned: &Binned, features: Vec<usize>, width: usize) -> Layout {
        let mut offsets = Vec::with_capacity(features.len());
        let mut len = 0;
        for &f in &features {
            offsets.push(len);
            len += binned.bins[f].n_bins() * width;
        }
        let all = features.len() == binned.n_features();
        Layout {
            features,
            offsets,
            len,
            width,
            all,
        }
    }

    /// Every feature of `binned`.
    pub(crate) fn all(binned: &Binned, width: usize) -> Layout {
        Layout::new(binned, (0..binned.n_features()).collect(), width)
    }

    /// `(feature, its bins' statistics)` for every feature of `hist`.
    pub(crate) fn features<'h>(&self, hist: &'h [f64]) -> impl Iterator<Item = (usize, &'h [f64])> {
        let ends = self.offsets.iter().skip(1).copied().chain([self.len]);
        self.features
            .iter()
            .zip(self.offsets.iter().zip(ends))
            .map(move |(f, (start, end))| (*f, &hist[*start..end]))
    }
}

/// Adds every row of `rows` into `hist`, row by row: for each of the
/// layout's features, `add(the bin's width statistics, the row's gathered
/// input)`. Row-major codes make this one cache line per row, and
/// consecutive additions go to different features' bins, so they do not
/// wait on each other.
#[inline]
pub(crate) fn add_rows(
    binned: &Binned,
    rows: &[u32],
    gathered: &[[f32; 2]],
    layout: &Layout,
    hist: &mut [f64],
    add: impl Fn(&mut [f64], [f32; 2]),
) {
    let nf = binned.n_features();
    let w = layout.width;
    crate::with_codes!(&binned.codes, |codes| {
        for (&r, &g) in rows.iter().zip(gathered) {
            let line = &codes[r as usize * nf..(r as usize + 1) * nf];
            if layout.all {
                for (&c, &o) in line.iter().zip(&layout.offsets) {
                    let at = o + c as usize * w;
                    add(&mut hist[at..at + w], g);
                }
            } else {
                for (&f, &o) in layout.features.iter().zip(&layout.offsets) {
                    let at = o + line[f] as usize * w;
                    add(&mut hist[at..at + w], g);
                }
            }
        }
    })
}

/// Rows per histogram block, at least.
const MIN_BLOCK_ROWS: usize = 16_384;
/// Blocks per node, at most.
const MAX_BLOCKS: usize = 16;

/// The blocks a node's rows are cut into: by their count alone, so the
/// same rows give the same blocks whatever the thread count.
fn blocks(rows: usize) -> usize {
    rows.div_ceil(MAX_BLOCKS).max(MIN_BLOCK_ROWS)
}

/// Builds one histogram per block of `n` rows with `build` (in parallel
/// when asked) and adds the blocks in order, so the sums are the same bits
/// whatever the thread count.
fn summed_in_blocks(
    n: usize,
    len: usize,
    parallel: bool,
    build: impl Fn(std::ops::Range<usize>) -> Vec<f64> + Sync,
) -> Vec<f64> {
    let block = blocks(n);
    if n <= block {
        return build(0..n);
    }
    let ranges: Vec<_> = (0..n)
        .step_by(block)
        .map(|s| s..(s + block).min(n))
        .collect();
    let built: Vec<Vec<f64>> = if parallel {
        ranges.into_par_iter().map(&build).collect()
    } else {
        ranges.into_iter().map(&build).collect()
    };
    let mut built = built.into_iter();
    let mut hist = built.next().unwrap_or_else(|| vec![0.0; len]);
    for b in built {
        for (h, x) in hist.iter_mut().zip(&b) {
            *h += x;
        }
    }
    hist
}

/// The histograms of `rows` with their `gathered` inputs.
fn histograms(
    binned: &Binned,
    rows: &[u32],
    gathered: &[[f32; 2]],
    obj: &dyn Objective,
    layout: &Layout,
    parallel: bool,
) -> Vec<f64> {
    summed_in_blocks(rows.len(), layout.len, parallel, |r| {
        let mut hist = vec![0.0; layout.len];
        obj.accumulate(binned, &rows[r.clone()], &gathered[r], layout, &mut hist);
        hist
    })
}

/// The histograms of `rows`, each block gathering its own inputs (the same
/// sums as [`histograms`], without a serial gather of the whole node).
fn gathered_histograms(
    binned: &Binned,
    rows: &[u32],
    obj: &dyn Objective,
    layout: &Layout,
    parallel: bool,
) -> Vec<f64> {
    summed_in_blocks(rows.len(), layout.len, parallel, |r| {
        let rows = &rows[r];
        let mut hist = vec![0.0; layout.len];
        obj.accumulate(binned, rows, &obj.gather(rows), layout, &mut hist);
        hist
    })
}

/// How many features each node considers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum FeatureSubset {
    All,
    Count(usize),
}

pub(crate) struct GrowParams {
    pub max_depth: usize,
    pub min_instances: f64,
    pub min_gain: f64,
    pub subset: FeatureSubset,
    /// Build histograms with rayon (off inside already-parallel forests).
    pub parallel: bool,
    /// The statistics are sums of integers (class counts with bootstrap
    /// weights), exact in any order: a node with a feature subset then
    /// builds the histograms of its sampled features alone instead of all
    /// of them for sibling subtraction, with identical results.
    pub integer_stats: bool,
    pub draws: FeatureDraws,
}

/// Where a node's sampled features come from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum FeatureDraws {
    /// The tree's generator, in the order nodes are grown (depth-first).
    InGrowthOrder,
    /// A generator of the node's own ([`crate::sampling::node_rng`] of
    /// `seed` and the node's path), whatever order the nodes grow in.
    PerNode { seed: u64 },
}

impl GrowParams {
    /// The features the node at `path` considers (ascending).
    pub(crate) fn features(&self, nf: usize, rng: &mut ChaCha8Rng, path: u64) -> Vec<usize> {
        match self.draws {
            FeatureDraws::InGrowthOrder => sampled_features(self.subset, nf, rng),
            FeatureDraws::PerNode { seed } => {
                sampled_features(self.subset, nf, &mut crate::sampling::node_rng(seed, path))
            }
        }
    }
}

pub(crate) struct Split {
    pub feature: usize,
    pub bin: usize,
    pub default_left: bool,
    pub gain: f64,
}

/// The rows a tree grows on, kept in one buffer that every split
/// partitions in place: a node's rows are a range of it, and a child's
/// range lies inside its parent's. Reused from tree to tree, so growing
/// allocates no row lists (at 38M rows, allocating and copying them cost
/// a quarter of the fit).
#[derive(Debug, Default)]
pub(crate) struct RowOrder {
    rows: Vec<u32>,
    scratch: Vec<u32>,
}

impl RowOrder {
    pub(crate) fn new(rows: Vec<u32>) -> RowOrder {
        let scratch = vec![0; rows.len()];
        RowOrder { rows, scratch }
    }

    /// Starts the next tree on `rows`, keeping the buffers.
    pub(crate) fn reset(&mut self, rows: &[u32]) {
        self.rows.clear();
        self.rows.extend_from_slice(rows);
        self.scratch.resize(rows.len(), 0);
    }

    fn len(&self) -> usize {
        self.rows.len()
    }
}

struct Pending {
    node: usize,
    /// See [`crate::sampling::child_paths`].
    path: u64,
    rows: Range<usize>,
    hist: Vec<f64>,
    depth: usize,
}

/// Grows one tree on the rows of `order` (left in leaf order); adds split
/// gains to `importance` and calls `on_leaf(value, rows)` for every leaf
/// with the rows that reach it, in their given order.
pub(crate) fn grow(
    binned: &Binned,
    order: &mut RowOrder,
    obj: &dyn Objective,
    p: &GrowParams,
    rng: &mut ChaCha8Rng,
    importance: &mut [f64],
    on_leaf: &mut dyn FnMut(&[f64], &[u32]),
) -> Tree {
    let nf = binned.bins.len();
    match p.subset {
        FeatureSubset::Count(k) if p.integer_stats && k < nf => {
            grow_sampled(binned, order, obj, p, rng, importance, on_leaf)
        }
        _ => grow_subtracting(binned, order, obj, p, rng, importance, on_leaf),
    }
}

/// Every node builds all features' histograms; the larger child's come
/// from the parent's minus the smaller child's.
fn grow_subtracting(
    binned: &Binned,
    order: &mut RowOrder,
    obj: &dyn Objective,
    p: &GrowParams,
    rng: &mut ChaCha8Rng,
    importance: &mut [f64],
    on_leaf: &mut dyn FnMut(&[f64], &[u32]),
) -> Tree {
    let w = obj.width();
    let layout = Layout::all(binned, w);
    let build = |rows: &[u32]| gathered_histograms(binned, rows, obj, &layout, p.parallel);
    let mut nodes = vec![Node::leaf(Vec::new())];
    let root_hist = build(&order.rows);
    let mut queue = vec![Pending {
        node: 0,
        path: 1,
        rows: 0..order.len(),
        hist: root_hist,
        depth: 0,
    }];
    while let Some(cur) = queue.pop() {
        let parent = node_stats(&cur.hist, binned.bins.first().map_or(0, |b| b.n_bins()), w);
        let split = if cur.depth < p.max_depth && obj.count(&parent) >= 2.0 * p.min_instances {
            let features = p.features(binned.bins.len(), rng, cur.path);
            let hists = layout
                .features(&cur.hist)
                .filter(|(f, _)| features.binary_search(f).is_ok());
            best_split(hists, &parent, obj, p)
        } else {
            None
        };
        let Some(split) = split else {
            let value = obj.leaf_value(&parent);
            on_leaf(&value, &order.rows[cur.rows]);
            nodes[cur.node].value = value;
            continue;
        };
        importance[split.feature] += split.gain;
        let (left_rows, right_rows) = partition(binned, &split, order, cur.rows, p.parallel);
        let (small, small_is_left) = if left_rows.len() <= right_rows.len() {
            (&left_rows, true)
        } else {
            (&right_rows, false)
        };
        let small_hist = build(&order.rows[small.clone()]);
        let mut large_hist = cur.hist;
        for (l, s) in large_hist.iter_mut().zip(&small_hist) {
            *l -= s;
        }
        let (left_hist, right_hist) = if small_is_left {
            (small_hist, large_hist)
        } else {
            (large_hist, small_hist)
        };
        let l = add_children(&mut nodes, cur.node, binned, &split);
        let (left_path, right_path) = crate::sampling::child_paths(cur.path);
        // Depth-first: right pushed first so the left child is grown first.
        queue.push(Pending {
            node: l + 1,
            path: right_path,
            rows: right_rows,
            hist: right_hist,
            depth: cur.depth + 1,
        });
        queue.push(Pending {
            node: l,
            path: left_path,
            rows: left_rows,
            hist: left_hist,
            depth: cur.depth + 1,
        });
    }
    Tree { nodes }
}

/// A node's statistics: the sum over the bins of its first feature.
fn node_stats(hist: &[f64], n_bins: usize, w: usize) -> Vec<f64> {
    let mut s = vec![0.0; w];
    for b in 0..n_bins {
        for k in 0..w {
            s[k] += hist[b * w + k];
        }
    }
    s
}

/// Each node builds the histograms of its sampled features alone (no
/// subtraction, so no histogram of the unsampled ones is ever built).
fn grow_sampled(
    binned: &Binned,
    order: &mut RowOrder,
    obj: &dyn Objective,
    p: &GrowParams,
    rng: &mut ChaCha8Rng,
    importance: &mut [f64],
    on_leaf: &mut dyn FnMut(&[f64], &[u32]),
) -> Tree {
    let w = obj.width();
    let mut nodes = vec![Node::leaf(Vec::new())];
    let mut queue = vec![(0usize, 1u64, 0..order.len(), 0usize)];
    while let Some((node, path, range, depth)) = queue.pop() {
        let rows = &order.rows[range.clone()];
        let gathered = obj.gather(rows);
        let parent = obj.total(&gathered);
        let split = if depth < p.max_depth && obj.count(&parent) >= 2.0 * p.min_instances {
            let features = p.features(binned.bins.len(), rng, path);
            let layout = Layout::new(binned, features, w);
            let hist = histograms(binned, rows, &gathered, obj, &layout, p.parallel);
            best_split(layout.features(&hist), &parent, obj, p)
        } else {
            None
        };
        let Some(split) = split else {
            let value = obj.leaf_value(&parent);
            on_leaf(&value, rows);
            nodes[node].value = value;
            continue;
        };
        importance[split.feature] += split.gain;
        let (left_rows, right_rows) = partition(binned, &split, order, range, p.parallel);
        let l = add_children(&mut nodes, node, binned, &split);
        let (left_path, right_path) = crate::sampling::child_paths(path);
        // Depth-first, left child first (the order of the rng draws).
        queue.push((l + 1, right_path, right_rows, depth + 1));
        queue.push((l, left_path, left_rows, depth + 1));
    }
    Tree { nodes }
}

/// Partitions the node's rows `range` of `order` in place, stably: the
/// rows that go left, then those that go right, each in their order.
/// Returns the two ranges. Blocks are partitioned into the scratch buffer
/// (in parallel when asked), then copied back; the same rows give the
/// same order whatever the thread count.
fn partition(
    binned: &Binned,
    split: &Split,
    order: &mut RowOrder,
    range: Range<usize>,
    parallel: bool,
) -> (Range<usize>, Range<usize>) {
    let goes_left = |r: u32| {
        let c = binned.code(split.feature, r as usize);
        if c == 0 {
            split.default_left
        } else {
            c <= split.bin
        }
    };
    // A block's lefts from the front of its scratch, its rights from the
    // back (so reversed); returns the count of lefts.
    let split_block = |(rows, out): (&[u32], &mut [u32])| {
        let (mut left, mut right) = (0, out.len());
        for &r in rows {
            if goes_left(r) {
                out[left] = r;
                left += 1;
            } else {
                right -= 1;
                out[right] = r;
            }
        }
        left
    };
    let rows = &mut order.rows[range.clone()];
    let scratch = &mut order.scratch[range.clone()];
    let block = blocks(rows.len());
    let parallel = parallel && rows.len() > block;
    let lefts: Vec<usize> = if parallel {
        let blocks = rows.par_chunks(block).zip(scratch.par_chunks_mut(block));
        blocks.map(split_block).collect()
    } else {
        let blocks = rows.chunks(block).zip(scratch.chunks_mut(block));
        blocks.map(split_block).collect()
    };
    // Each block's lefts and rights go to their places among all blocks'.
    let n_left: usize = lefts.iter().sum();
    let (mut to_left, mut to_right) = rows.split_at_mut(n_left);
    let mut places = Vec::with_capacity(lefts.len());
    for (from, &left) in scratch.chunks(block).zip(&lefts) {
        let (l, rest) = std::mem::take(&mut to_left).split_at_mut(left);
        to_left = rest;
        let (r, rest) = std::mem::take(&mut to_right).split_at_mut(from.len() - left);
        to_right = rest;
        places.push((from, left, l, r));
    }
    let place = |(from, left, l, r): (&[u32], usize, &mut [u32], &mut [u32])| {
        l.copy_from_slice(&from[..left]);
        for (to, from) in r.iter_mut().zip(from[left..].iter().rev()) {
            *to = *from;
        }
    };
    if parallel {
        places.into_par_iter().for_each(place);
    } else {
        places.into_iter().for_each(place);
    }
    let mid = range.start + n_left;
    (range.start..mid, mid..range.end)
}

/// Turns leaf `node` into a split with two new leaves; returns the left one.
fn add_children(nodes: &mut Vec<Node>, node: usize, binned: &Binned, split: &Split) -> usize {
    let l = nodes.len();
    nodes.push(Node::leaf(Vec::new()));
    nodes.push(Node::leaf(Vec::new()));
    let n = &mut nodes[node];
    n.feature = split.feature as u32;
    n.threshold = binned.bins[split.feature].upper(split.bin);
    n.default_left = split.default_left;
    n.left = l as u32;
    n.right = l as u32 + 1;
    l
}

/// The features a node considers (ascending).
pub(crate) fn sampled_features(
    subset: FeatureSubset,
    nf: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<usize> {
    match subset {
        FeatureSubset::All => (0..nf).collect(),
        FeatureSubset::Count(k) if k >= nf => (0..nf).collect(),
        FeatureSubset::Count(k) => {
            let mut f = sample(rng, nf, k.max(1)).into_vec();
            f.sort_unstable();
            f
        }
    }
}

/// The best split among `(feature, histogram)` pairs, in their order.
pub(crate) fn best_split<'h>(
    hists: impl Iterator<Item = (usize, &'h [f64])>,
    parent: &[f64],
    obj: &dyn Objective,
    p: &GrowParams,
) -> Option<Split> {
    let w = obj.width();
    let mut best: Option<Split> = None;
    let mut left = vec![0.0; w];
    let mut left_m = vec![0.0; w];
    let mut right = vec![0.0; w];
    for (f, h) in hists {
        let nb = h.len() / w;
        let missing = &h[0..w];
        left.iter_mut().for_each(|x| *x = 0.0);
        for b in 1..nb - 1 {
            for k in 0..w {
                left[k] += h[b * w + k];
            }
            for default_left in [false, true] {
                for k in 0..w {
                    left_m[k] = left[k] + if default_left { missing[k] } else { 0.0 };
                    right[k] = parent[k] - left_m[k];
                }
                if obj.count(&left_m) < p.min_instances.max(1e-9)
                    || obj.count(&right) < p.min_instances.max(1e-9)
                {
                    continue;
                }
                if let Some(g) = obj.gain(&left_m, &right, parent)
                    && g > p.min_gain
                    && best.as_ref().is_none_or(|s| g > s.gain)
                {
                    best = Some(Split {
                        feature: f,
                        bin: b,
                        default_left,
                        gain: g,
                    });
                }
                if missing.iter().all(|m| *m == 0.0) {
                    break;
                }
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Dataset;
    use crate::gbt::Newton;

    /// Parallel blocks give the serial result bit for bit: the partition
    /// keeps row order, and histograms gathered per block equal those of
    /// a node gathered whole.
    #[test]
    fn parallel_partition_and_block_gathers_match_serial() -> kiln_engine::Result<()> {
        let n = 3 * MIN_BLOCK_ROWS + 123;
        let columns = crate::data::columns_with_missing(n, 4, 7);
        let mut next = crate::data::uniform(11);
        let data = Dataset {
            labels: (0..n).map(|r| u32::from(columns[0][r] > 0.5)).collect(),
            columns,
            feature_names: (0..4).map(|f| format!("f{f}")).collect(),
        };
        let binned = Binned::new(&data, 32)?;
        // Every third row, as a node's ascending rows.
        let rows: Vec<u32> = (0..n as u32).filter(|r| r % 3 != 1).collect();
        let split = Split {
            feature: 2,
            bin: 11,
            default_left: true,
            gain: 0.0,
        };
        // In place and stable: the order `Iterator::partition` gives.
        let goes_left = |r: &&u32| {
            let c = binned.code(split.feature, **r as usize);
            if c == 0 {
                split.default_left
            } else {
                c <= split.bin
            }
        };
        let (left, right): (Vec<u32>, Vec<u32>) = rows.iter().partition(goes_left);
        for parallel in [false, true] {
            // Past the front, as a child's range.
            let mut order = RowOrder::new([vec![7, 3], rows.clone()].concat());
            let (l, r) = partition(&binned, &split, &mut order, 2..rows.len() + 2, parallel);
            assert_eq!(
                (l.start, r.start, r.end),
                (2, 2 + left.len(), rows.len() + 2)
            );
            assert_eq!((&order.rows[l], &order.rows[r]), (&left[..], &right[..]));
            assert_eq!(&order.rows[..2], &[7, 3]);
        }
        assert!(rows.len() > 2 * MIN_BLOCK_ROWS && !left.is_empty() && !right.is_empty());

        let grad_hess: Vec<[f32; 2]> = (0..n)
            .map(|_| [next() as f32 - 0.5, next() as f32 / 4.0])
            .collect();
        let obj = Newton {
            grad_hess: &grad_hess,
            lambda: 0.0,
            min_hessian: 1.0,
            step: 0.1,
        };
        let layout = Layout::all(&binned, obj.width());
        let whole = histograms(&binned, &rows, &obj.gather(&rows), &obj, &layout, false);
        for parallel in [false, true] {
            let blocks = gathered_histograms(&binned, &rows, &obj, &layout, parallel);
            assert!(
                whole
                    .iter()
                    .zip(&blocks)
                    .all(|(a, b)| a.to_bits() == b.to_bits())
            );
        }
        Ok(())
    }
}
