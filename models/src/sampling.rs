//! Draws that depend only on what they are for — (seed, tree, row) for a
//! row's bootstrap weight, (seed, node path) for a node's features — not
//! on the order rows or nodes are visited. A forest grown depth-first in
//! one process and one grown level by level over partitions of the rows
//! ([`crate::distributed::forest`]) therefore draw the same.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// splitmix64's finalizer of (seed, a, b).
fn mix(seed: u64, a: u64, b: u64) -> u64 {
    let mut x =
        seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A uniform in [0, 1) drawn by (seed, a, b).
pub fn unit(seed: u64, a: u64, b: u64) -> f64 {
    (mix(seed, a, b) >> 11) as f64 / (1u64 << 53) as f64
}

/// Poisson(`mean`) by inversion of the uniform `u`; `p0` is `exp(-mean)`.
fn poisson(u: f64, mean: f64, p0: f64) -> u32 {
    let (mut k, mut p) = (0u32, p0);
    let mut cdf = p;
    // The cap only guards against a mean this crate never passes (≤ 1).
    while u >= cdf && k < 1000 {
        k += 1;
        p *= mean / f64::from(k);
        cdf += p;
    }
    k
}

/// The rows of each tree of a forest: a row's weight in tree `t` is a
/// function of (seed, t, row) alone.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bagging {
    /// Poisson(`rate`) weights (Spark's bootstrap); else each row is kept
    /// (weight 1) with probability `rate`.
    pub bootstrap: bool,
    pub rate: f64,
    pub seed: u64,
}

impl Bagging {
    /// `weight(tree, row)`: the row's weight in the tree (0: not in its bag).
    pub fn weights(&self) -> impl Fn(usize, usize) -> u32 + '_ {
        let p0 = (-self.rate).exp();
        move |tree, row| {
            let u = || unit(self.seed, tree as u64 + 1, row as u64);
            if self.bootstrap {
                poisson(u(), self.rate, p0)
            } else {
                u32::from(self.rate >= 1.0 || u() < self.rate)
            }
        }
    }
}

/// The generator of one node's feature draw: the root's path is 1, a
/// node `p`'s children are `2p` and `2p + 1`.
pub fn node_rng(seed: u64, path: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix(seed, path, 0x5EED))
}

/// A node's children's paths (left, right); the path saturates past depth
/// 62, where it no longer tells nodes apart (trees are at most 30 deep).
pub fn child_paths(path: u64) -> (u64, u64) {
    let left = path.saturating_mul(2);
    (left, left.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The weights follow the distribution they are drawn from.
    #[test]
    fn bootstrap_weights_are_poisson_and_subsamples_keep_the_rate() {
        let n = 200_000;
        let bag = Bagging {
            bootstrap: true,
            rate: 1.0,
            seed: 7,
        };
        let weight = bag.weights();
        let mut counts = [0usize; 4];
        for r in 0..n {
            counts[(weight(3, r) as usize).min(3)] += 1;
        }
        // Poisson(1): P(0) = P(1) = e^-1, P(2) = e^-1 / 2.
        let e = (-1.0f64).exp();
        for (k, expected) in [(0, e), (1, e), (2, e / 2.0)] {
            let got = counts[k] as f64 / n as f64;
            assert!((got - expected).abs() < 0.005, "P({k}) = {got}");
        }
        let half = Bagging {
            bootstrap: false,
            rate: 0.5,
            seed: 7,
        };
        let kept = (0..n).filter(|r| half.weights()(0, *r) == 1).count() as f64 / n as f64;
        assert!((kept - 0.5).abs() < 0.005, "{kept}");
        // Trees draw differently; the same tree and row always the same.
        assert_ne!(
            (0..64).map(|r| weight(0, r)).collect::<Vec<_>>(),
            (0..64).map(|r| weight(1, r)).collect::<Vec<_>>()
        );
        assert_eq!(weight(5, 99), bag.weights()(5, 99));
    }
}
