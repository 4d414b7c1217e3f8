//! The second reproduction model: a Chow-Liu tree, the Bayesian network
//! whose edges are the maximum-mutual-information spanning tree over the
//! columns, each cut into bins on its unit line (the copula's marginals:
//! a category, a discrete value, the missing values, or an equal-probability
//! slice of a continuous column is a bin). It keeps what a Gaussian copula
//! cannot: dependence that is not monotone (a category that shifts the
//! middle of a distribution, not its rank), between categories, and with
//! missingness, exactly up to the bins, along the strongest pairs.
//!
//! Fitted with the copula's pass 1 (marginals) and one more pass that
//! counts every pair of bins (integers: order-independent). Sampled by
//! ancestral sampling along the tree; under conditions, exactly, by
//! evidence propagated from the leaves to the root first (each bin weighted
//! by the share of it the condition allows), then a uniform position inside
//! the allowed part of each drawn bin.

use super::fit::{FitProgress, UnitsConfig, marginals, run_units_pass};
use super::marginal::Marginal;
use super::{CopulaColumn, CopulaParams, SourceInfo};
use arrow::array::ArrayRef;
use datafusion::dataframe::DataFrame;
use kiln_engine::table_pass::TablePass;
use kiln_engine::{KilnError, Result};
use rand::Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Most bins of a category-like column (the rest share the last bin).
const MAX_BINS: usize = 48;
/// Bins of a continuous column's non-missing values.
const CONTINUOUS_BINS: usize = 24;
/// Pseudo-count (spread as the child's marginal) of each conditional row.
const SMOOTHING: f64 = 1.0;

/// A fitted Chow-Liu tree (`model.json`, kind `chow_liu`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChowLiuTree {
    pub format_version: u32,
    /// `chow_liu`.
    pub kind: String,
    pub kiln_version: String,
    pub columns: Vec<CopulaColumn>,
    /// The columns (indices) that are nodes of the tree: not keys, not
    /// constant.
    pub dimensions: Vec<usize>,
    /// Per node: its bins' edges on the unit line (0 first, 1 last).
    pub edges: Vec<Vec<f64>>,
    /// Per node: its parent node (`None` for the root).
    pub parent: Vec<Option<usize>>,
    /// Nodes in sampling order, parents first.
    pub order: Vec<usize>,
    /// Per node: the root's bin probabilities, or P(bin | parent's bin) as a
    /// row-major `parent bins × bins` table.
    pub tables: Vec<Vec<f64>>,
    /// Per node: the mutual information (nats) of the edge to its parent.
    pub mutual_information: Vec<f64>,
    pub source: SourceInfo,
    pub params: CopulaParams,
}

/// A node's bin edges on the unit line.
fn bin_edges(marginal: &Marginal) -> Vec<f64> {
    let null = marginal.null_rate();
    let mut edges = vec![0.0];
    if null > 0.0 {
        edges.push(null);
    }
    let masses: Vec<f64> = match marginal {
        Marginal::Discrete { probabilities, .. } | Marginal::Categorical { probabilities, .. } => {
            probabilities.clone()
        }
        Marginal::Continuous { .. } | Marginal::Parametric { .. } => {
            vec![1.0 / CONTINUOUS_BINS as f64; CONTINUOUS_BINS]
        }
        Marginal::Null => Vec::new(),
    };
    let keep = masses.len().min(MAX_BINS - 1);
    let mut acc = 0.0;
    for p in &masses[..keep] {
        acc += p;
        edges.push(null + (1.0 - null) * acc.min(1.0));
    }
    edges.push(1.0);
    edges.dedup_by(|a, b| (*a - *b).abs() < 1e-15);
    if edges.len() < 2 {
        edges.push(1.0);
    }
    edges
}

fn bin_of(edges: &[f64], u: f64) -> usize {
    edges[1..edges.len() - 1].partition_point(|&e| e <= u)
}

/// What every partition of the tree's pass 2 needs: where rows fall on
/// the unit lines, each dimension's bin edges, and the pairs counted.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct PairConfig {
    units: UnitsConfig,
    edges: Vec<Vec<f64>>,
    /// (i, j), i < j, and where each pair's table starts in the counts.
    pairs: Vec<(usize, usize)>,
    offsets: Vec<usize>,
}

impl PairConfig {
    fn bins(&self, k: usize) -> usize {
        self.edges[k].len() - 1
    }

    fn cells(&self) -> usize {
        self.pairs
            .iter()
            .map(|&(i, j)| self.bins(i) * self.bins(j))
            .sum()
    }
}

/// Counts of every pair of bins and of every bin (integers: exact and
/// order-independent).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct PairCounts {
    rows: u64,
    counts: Vec<u64>,
    singles: Vec<Vec<u64>>,
}

/// The tree's pass 2 as a [`TablePass`]: `kiln_chow_liu_counts`.
pub(crate) struct PairCountsPass;

impl TablePass for PairCountsPass {
    const NAME: &'static str = "kiln_chow_liu_counts";
    type Config = PairConfig;
    type State = PairCounts;

    fn start(config: &PairConfig) -> PairCounts {
        PairCounts {
            rows: 0,
            counts: vec![0; config.cells()],
            singles: (0..config.edges.len())
                .map(|k| vec![0; config.bins(k)])
                .collect(),
        }
    }

    fn update(config: &PairConfig, state: &mut PairCounts, arrays: &[ArrayRef]) -> Result<()> {
        let (units, n) = config.units.units(arrays)?;
        let d = config.edges.len();
        let edges = &config.edges;
        let codes: Vec<u16> = (0..n * d)
            .into_par_iter()
            .map(|x| bin_of(&edges[x % d], units[x]) as u16)
            .collect();
        let cells = config.cells();
        let local = (0..n)
            .into_par_iter()
            .fold(
                || vec![0u64; cells],
                |mut acc, r| {
                    let row = &codes[r * d..(r + 1) * d];
                    for (p, &(i, j)) in config.pairs.iter().enumerate() {
                        acc[config.offsets[p]
                            + row[i] as usize * config.bins(j)
                            + row[j] as usize] += 1;
                    }
                    acc
                },
            )
            .reduce(
                || vec![0u64; cells],
                |mut a, b| {
                    a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
                    a
                },
            );
        state
            .counts
            .iter_mut()
            .zip(local)
            .for_each(|(a, b)| *a += b);
        for r in 0..n {
            for k in 0..d {
                state.singles[k][codes[r * d + k] as usize] += 1;
            }
        }
        state.rows += n as u64;
        Ok(())
    }

    fn merge(_config: &PairConfig, state: &mut PairCounts, other: PairCounts) -> Result<()> {
        state
            .counts
            .iter_mut()
            .zip(other.counts)
            .for_each(|(a, b)| *a += b);
        for (a, b) in state.singles.iter_mut().zip(other.singles) {
            a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
        }
        state.rows += other.rows;
        Ok(())
    }

    fn size(state: &PairCounts) -> usize {
        8 * (state.counts.len() + state.singles.iter().map(Vec::len).sum::<usize>())
    }
}

/// Fits a Chow-Liu tree to `df`.
pub async fn fit_tree(
    df: DataFrame,
    source_uri: &str,
    params: &CopulaParams,
    progress: &(dyn Fn(FitProgress) + Sync),
) -> Result<ChowLiuTree> {
    let m = marginals(&df, params, progress).await?;
    let dims = m.dimensions();
    let d = dims.len();
    let edges: Vec<Vec<f64>> = dims
        .iter()
        .map(|&c| bin_edges(&m.columns[c].marginal))
        .collect();
    let bins: Vec<usize> = edges.iter().map(|e| e.len() - 1).collect();
    // Pair (i < j) tables, then the singles.
    let pairs: Vec<(usize, usize)> = (0..d)
        .flat_map(|i| (i + 1..d).map(move |j| (i, j)))
        .collect();
    let offsets: Vec<usize> = pairs
        .iter()
        .scan(0, |acc, &(i, j)| {
            let at = *acc;
            *acc += bins[i] * bins[j];
            Some(at)
        })
        .collect();
    let units = UnitsConfig::new(&m, &dims, params.seed);
    let config = PairConfig {
        units,
        edges,
        pairs,
        offsets,
    };
    let PairCounts {
        counts, singles, ..
    } = run_units_pass::<PairCountsPass>(df, &config, &config.units, |s| s.rows, progress).await?;
    let PairConfig {
        edges,
        pairs,
        offsets,
        ..
    } = config;
    let total = m.rows as f64;
    // Mutual information of every pair.
    let mi: Vec<f64> = pairs
        .par_iter()
        .enumerate()
        .map(|(p, &(i, j))| {
            let mut sum = 0.0;
            for a in 0..bins[i] {
                for b in 0..bins[j] {
                    let c = counts[offsets[p] + a * bins[j] + b] as f64;
                    if c > 0.0 {
                        let (ca, cb) = (singles[i][a] as f64, singles[j][b] as f64);
                        sum += c / total * (c * total / (ca * cb)).ln();
                    }
                }
            }
            sum.max(0.0)
        })
        .collect();
    let pair_index = |i: usize, j: usize| {
        let (a, b) = if i < j { (i, j) } else { (j, i) };
        pairs.iter().position(|&p| p == (a, b))
    };
    // Prim's maximum spanning tree from node 0; ties broken by index.
    let mut parent: Vec<Option<usize>> = vec![None; d];
    let mut order = Vec::with_capacity(d);
    let mut in_tree = vec![false; d];
    let mut best: Vec<(f64, Option<usize>)> = vec![(f64::NEG_INFINITY, None); d];
    if d > 0 {
        best[0] = (0.0, None);
    }
    for _ in 0..d {
        let Some(v) = (0..d)
            .filter(|&v| !in_tree[v])
            .max_by(|&a, &b| best[a].0.total_cmp(&best[b].0).then(b.cmp(&a)))
        else {
            break;
        };
        in_tree[v] = true;
        parent[v] = best[v].1;
        order.push(v);
        for w in 0..d {
            if !in_tree[w]
                && let Some(p) = pair_index(v, w)
                && mi[p] > best[w].0
            {
                best[w] = (mi[p], Some(v));
            }
        }
    }
    let mut tables = Vec::with_capacity(d);
    let mut mutual_information = vec![0.0; d];
    for v in 0..d {
        let marginal: Vec<f64> = singles[v].iter().map(|&c| c as f64 / total).collect();
        match parent[v] {
            None => tables.push(marginal),
            Some(u) => {
                let p = pair_index(u, v).ok_or_else(|| {
                    KilnError::internal("fitting the tree", std::io::Error::other("no pair"))
                })?;
                mutual_information[v] = mi[p];
                let (bu, bv) = (bins[u], bins[v]);
                let mut t = vec![0.0; bu * bv];
                for a in 0..bu {
                    let cell = |b: usize| {
                        let (i, j) = pairs[p];
                        let (ai, bj) = if (i, j) == (u, v) { (a, b) } else { (b, a) };
                        counts[offsets[p] + ai * bins[j] + bj] as f64
                    };
                    let row_total: f64 = (0..bv).map(cell).sum();
                    for b in 0..bv {
                        t[a * bv + b] =
                            (cell(b) + SMOOTHING * marginal[b]) / (row_total + SMOOTHING);
                    }
                }
                tables.push(t);
            }
        }
    }
    Ok(ChowLiuTree {
        format_version: super::FORMAT_VERSION,
        kind: "chow_liu".into(),
        kiln_version: env!("CARGO_PKG_VERSION").into(),
        columns: m.columns,
        dimensions: dims,
        edges,
        parent,
        order,
        tables,
        mutual_information,
        source: SourceInfo {
            uri: source_uri.to_string(),
            rows: m.rows,
            fingerprint: format!("{:016x}", m.fingerprint),
        },
        params: params.clone(),
    })
}

/// Draws from the tree, possibly under per-node evidence.
#[derive(Debug, Clone)]
pub struct TreeDraw {
    /// Per node: the allowed unit-line intervals (`None`: anything).
    allowed: Vec<Option<Vec<(f64, f64)>>>,
    /// Per node and bin: the evidence of the node's subtree.
    lambda: Vec<Vec<f64>>,
}

fn overlap(a: (f64, f64), b: (f64, f64)) -> (f64, f64) {
    (a.0.max(b.0), a.1.min(b.1))
}

impl TreeDraw {
    /// Plans draws under `allowed` (per node; a zero-width interval is an
    /// exact value). `None` when the evidence has no probability.
    pub fn plan(tree: &ChowLiuTree, allowed: Vec<Option<Vec<(f64, f64)>>>) -> Option<TreeDraw> {
        let d = tree.dimensions.len();
        let share: Vec<Vec<f64>> = (0..d)
            .map(|v| {
                let e = &tree.edges[v];
                (0..e.len() - 1)
                    .map(|b| match &allowed[v] {
                        None => 1.0,
                        Some(intervals) => {
                            let width = e[b + 1] - e[b];
                            intervals
                                .iter()
                                .map(|&iv| {
                                    let (lo, hi) = overlap(iv, (e[b], e[b + 1]));
                                    if hi > lo {
                                        (hi - lo) / width
                                    } else if hi == lo && iv.0 == iv.1 && width > 0.0 {
                                        // An exact value: the bin's density.
                                        1.0 / width
                                    } else {
                                        0.0
                                    }
                                })
                                .sum::<f64>()
                        }
                    })
                    .collect()
            })
            .collect();
        // λ from the leaves up, starting from each bin's allowed share.
        let mut lambda = share;
        for &v in tree.order.iter().rev() {
            if let Some(u) = tree.parent[v] {
                let (bu, bv) = (lambda[u].len(), lambda[v].len());
                let message: Vec<f64> = (0..bu)
                    .map(|a| {
                        (0..bv)
                            .map(|b| tree.tables[v][a * bv + b] * lambda[v][b])
                            .sum()
                    })
                    .collect();
                for (l, m) in lambda[u].iter_mut().zip(message) {
                    *l *= m;
                }
            }
        }
        let root_mass: f64 = tree
            .order
            .first()
            .map(|&r| {
                tree.tables[r]
                    .iter()
                    .zip(&lambda[r])
                    .map(|(p, l)| p * l)
                    .sum()
            })
            .unwrap_or(1.0);
        (root_mass > 0.0).then_some(TreeDraw { allowed, lambda })
    }

    /// One row's unit-line positions, per node.
    pub fn row(&self, tree: &ChowLiuTree, rng: &mut impl Rng, out: &mut [f64]) {
        let mut bin = vec![0usize; out.len()];
        for &v in &tree.order {
            let weights: Vec<f64> = match tree.parent[v] {
                None => tree.tables[v]
                    .iter()
                    .zip(&self.lambda[v])
                    .map(|(p, l)| p * l)
                    .collect(),
                Some(u) => {
                    let bv = self.lambda[v].len();
                    let a = bin[u];
                    (0..bv)
                        .map(|b| tree.tables[v][a * bv + b] * self.lambda[v][b])
                        .collect()
                }
            };
            let total: f64 = weights.iter().sum();
            let mut pick = rng.random::<f64>() * total;
            let mut b = 0;
            while b + 1 < weights.len() && pick >= weights[b] {
                pick -= weights[b];
                b += 1;
            }
            bin[v] = b;
            let e = &tree.edges[v];
            let t = rng.random::<f64>();
            out[v] = match &self.allowed[v] {
                None => e[b] + t * (e[b + 1] - e[b]),
                Some(intervals) => {
                    // Uniform over the allowed part of the bin.
                    let parts: Vec<(f64, f64)> = intervals
                        .iter()
                        .map(|&iv| overlap(iv, (e[b], e[b + 1])))
                        .filter(|(lo, hi)| hi >= lo)
                        .collect();
                    let length: f64 = parts.iter().map(|(lo, hi)| hi - lo).sum();
                    if length <= 0.0 {
                        parts.first().map(|p| p.0).unwrap_or(e[b])
                    } else {
                        let mut at = t * length;
                        let mut u = parts[parts.len() - 1].1;
                        for (lo, hi) in &parts {
                            if at <= hi - lo {
                                u = lo + at;
                                break;
                            }
                            at -= hi - lo;
                        }
                        u
                    }
                }
            };
        }
    }
}
