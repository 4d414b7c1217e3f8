//! The little dense linear algebra the copula needs (row-major `n × n`
//! matrices of a few dozen to a few hundred columns): Cholesky factors,
//! triangular solves, inverses and Gaussian conditioning.

/// A square row-major matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    pub n: usize,
    pub data: Vec<f64>,
}

impl Matrix {
    pub fn identity(n: usize) -> Matrix {
        let mut data = vec![0.0; n * n];
        for i in 0..n {
            data[i * n + i] = 1.0;
        }
        Matrix { n, data }
    }

    pub fn at(&self, i: usize, j: usize) -> f64 {
        self.data[i * self.n + j]
    }

    /// The sub-matrix of rows `rows` and columns `cols`.
    pub fn select(&self, rows: &[usize], cols: &[usize]) -> Vec<f64> {
        rows.iter()
            .flat_map(|&i| cols.iter().map(move |&j| self.at(i, j)))
            .collect()
    }

    /// The lower Cholesky factor, or `None` when the matrix is not
    /// positive definite.
    pub fn cholesky(&self) -> Option<Matrix> {
        cholesky(self.n, &self.data).map(|data| Matrix { n: self.n, data })
    }
}

/// Lower Cholesky factor of the `n × n` row-major matrix `a`.
pub fn cholesky(n: usize, a: &[f64]) -> Option<Vec<f64>> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let mut sum = a[i * n + j];
            for k in 0..j {
                sum -= l[i * n + k] * l[j * n + k];
            }
            if i == j {
                if sum <= 0.0 || !sum.is_finite() {
                    return None;
                }
                l[i * n + i] = sum.sqrt();
            } else {
                l[i * n + j] = sum / l[j * n + j];
            }
        }
    }
    Some(l)
}

/// Solves `A x = b` given the lower Cholesky factor `l` of `A`.
pub fn cholesky_solve(n: usize, l: &[f64], b: &[f64]) -> Vec<f64> {
    let mut y = b.to_vec();
    for i in 0..n {
        for k in 0..i {
            y[i] -= l[i * n + k] * y[k];
        }
        y[i] /= l[i * n + i];
    }
    for i in (0..n).rev() {
        for k in i + 1..n {
            y[i] -= l[k * n + i] * y[k];
        }
        y[i] /= l[i * n + i];
    }
    y
}

/// The inverse of `A` given its lower Cholesky factor.
pub fn cholesky_inverse(n: usize, l: &[f64]) -> Vec<f64> {
    let mut inv = vec![0.0; n * n];
    for j in 0..n {
        let mut e = vec![0.0; n];
        e[j] = 1.0;
        let col = cholesky_solve(n, l, &e);
        for i in 0..n {
            inv[i * n + j] = col[i];
        }
    }
    inv
}

/// A correlation matrix made positive definite: the smallest shrinkage
/// towards the identity (ρ ← (1 − λ) ρ) that gives a Cholesky factor.
pub fn nearest_definite(corr: &Matrix) -> (Matrix, Matrix, f64) {
    let mut lambda = 0.0;
    loop {
        let mut m = corr.clone();
        for i in 0..m.n {
            for j in 0..m.n {
                if i != j {
                    m.data[i * m.n + j] *= 1.0 - lambda;
                }
            }
        }
        if let Some(l) = m.cholesky() {
            return (m, l, lambda);
        }
        lambda = if lambda == 0.0 {
            1e-9
        } else {
            (lambda * 4.0).min(1.0)
        };
    }
}

/// The Gaussian `N(0, Σ)` conditioned on the coordinates `given`: for the
/// other coordinates `rest`, the regression matrix `B` (mean = B · z_given)
/// and the lower Cholesky factor of the conditional covariance.
#[derive(Debug, Clone)]
pub struct Conditional {
    pub rest: Vec<usize>,
    pub given: Vec<usize>,
    /// `rest.len() × given.len()`, row-major.
    pub regression: Vec<f64>,
    /// `rest.len() × rest.len()` lower factor.
    pub factor: Vec<f64>,
}

pub fn condition(sigma: &Matrix, given: &[usize]) -> Option<Conditional> {
    let rest: Vec<usize> = (0..sigma.n).filter(|i| !given.contains(i)).collect();
    let (g, r) = (given.len(), rest.len());
    let s_gg = sigma.select(given, given);
    let l_gg = cholesky(g, &s_gg)?;
    // B = Σ_rg Σ_gg⁻¹, row by row: Σ_gg b_i = Σ_gr[:, i].
    let mut regression = vec![0.0; r * g];
    for (ri, &i) in rest.iter().enumerate() {
        let rhs: Vec<f64> = given.iter().map(|&j| sigma.at(j, i)).collect();
        let b = cholesky_solve(g, &l_gg, &rhs);
        regression[ri * g..(ri + 1) * g].copy_from_slice(&b);
    }
    // Σ_rr − B Σ_gr.
    let mut cov = sigma.select(&rest, &rest);
    for a in 0..r {
        for b in 0..r {
            let mut s = 0.0;
            for k in 0..g {
                s += regression[a * g + k] * sigma.at(given[k], rest[b]);
            }
            cov[a * r + b] -= s;
        }
    }
    // Tiny negative pivots from rounding: add a jitter until it factors.
    let mut jitter = 0.0;
    let factor = loop {
        let mut c = cov.clone();
        for i in 0..r {
            c[i * r + i] += jitter;
        }
        if let Some(l) = cholesky(r, &c) {
            break l;
        }
        jitter = if jitter == 0.0 { 1e-12 } else { jitter * 10.0 };
        if jitter > 1e-3 {
            return None;
        }
    };
    Some(Conditional {
        rest,
        given: given.to_vec(),
        regression,
        factor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditioning_a_bivariate_normal() {
        let rho = 0.8;
        let sigma = Matrix {
            n: 2,
            data: vec![1.0, rho, rho, 1.0],
        };
        let c = condition(&sigma, &[0]).expect("definite");
        assert_eq!(c.rest, vec![1]);
        assert!((c.regression[0] - rho).abs() < 1e-15);
        assert!((c.factor[0] - (1.0 - rho * rho).sqrt()).abs() < 1e-15);
        let l = sigma.cholesky().expect("definite");
        let inv = cholesky_inverse(2, &l.data);
        let det = 1.0 - rho * rho;
        assert!((inv[0] - 1.0 / det).abs() < 1e-12 && (inv[1] + rho / det).abs() < 1e-12);
    }

    #[test]
    fn a_singular_correlation_is_shrunk_until_it_factors() {
        let sigma = Matrix {
            n: 2,
            data: vec![1.0, 1.0, 1.0, 1.0],
        };
        let (m, _, lambda) = nearest_definite(&sigma);
        assert!(lambda > 0.0 && lambda < 1e-6, "{lambda}");
        assert!(m.at(0, 1) < 1.0);
    }
}
