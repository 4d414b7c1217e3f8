//! The standard normal distribution: CDF, quantile function and draws
//! truncated to a union of intervals, accurate far into the tails (a rare
//! range condition lands there).

use rand::Rng;

const SQRT_2: f64 = std::f64::consts::SQRT_2;

/// Φ(x).
pub fn cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x / SQRT_2)
}

/// 1 − Φ(x), without cancellation for large x.
pub fn upper(x: f64) -> f64 {
    0.5 * libm::erfc(x / SQRT_2)
}

/// Φ⁻¹(p): Acklam's rational approximation refined by one Halley step
/// (about 1e-15 relative error); ±∞ at 0 and 1.
pub fn quantile(p: f64) -> f64 {
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    if p > 0.5 {
        // Upper half through the lower tail, where p has full precision.
        return -lower_quantile(1.0 - p);
    }
    lower_quantile(p)
}

/// Φ⁻¹ of an upper-tail probability q = 1 − Φ(x): returns x.
pub fn upper_quantile(q: f64) -> f64 {
    if q <= 0.0 {
        return f64::INFINITY;
    }
    if q >= 1.0 {
        return f64::NEG_INFINITY;
    }
    -lower_quantile(q)
}

/// x with Φ(x) = p, for p ≤ 0.5.
fn lower_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let x = if p < 0.02425 {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    };
    // One Halley step on Φ(x) − p.
    let e = cdf(x) - p;
    let u = e * (2.0 * std::f64::consts::PI).sqrt() * (x * x / 2.0).exp();
    if u.is_finite() {
        x - u / (1.0 + x * u / 2.0)
    } else {
        x
    }
}

/// A draw of N(mean, sd²) restricted to the union of `intervals` (bounds in
/// the variable's own units, ±∞ allowed), by inversion: exact, never
/// rejection, whatever the mass of the intervals. `None` when the union
/// has zero mass.
pub fn truncated(rng: &mut impl Rng, mean: f64, sd: f64, intervals: &[(f64, f64)]) -> Option<f64> {
    if sd <= 0.0 {
        return intervals
            .iter()
            .any(|&(a, b)| a <= mean && mean <= b)
            .then_some(mean);
    }
    let masses: Vec<f64> = intervals
        .iter()
        .map(|&(a, b)| mass((a - mean) / sd, (b - mean) / sd))
        .collect();
    let total: f64 = masses.iter().sum();
    if total <= 0.0 || total.is_nan() {
        // Beyond double precision in every interval: the nearest bound.
        let nearest = intervals
            .iter()
            .map(|&(a, b)| mean.clamp(a, b))
            .min_by(|x, y| (x - mean).abs().total_cmp(&(y - mean).abs()))?;
        return nearest.is_finite().then_some(nearest);
    }
    let mut pick = rng.random::<f64>() * total;
    let mut k = 0;
    while k + 1 < masses.len() && pick >= masses[k] {
        pick -= masses[k];
        k += 1;
    }
    let (a, b) = intervals[k];
    let z = within((a - mean) / sd, (b - mean) / sd, rng.random::<f64>());
    Some(mean + sd * z)
}

/// Φ(b) − Φ(a), computed in the tail where it is precise.
fn mass(a: f64, b: f64) -> f64 {
    if a > 0.0 {
        upper(a) - upper(b)
    } else {
        cdf(b) - cdf(a)
    }
}

/// The standard normal's quantile at fraction `t` of the mass in [a, b].
fn within(a: f64, b: f64, t: f64) -> f64 {
    let z = if a > 0.0 {
        let (qa, qb) = (upper(a), upper(b));
        upper_quantile(qa - t * (qa - qb))
    } else {
        let (pa, pb) = (cdf(a), cdf(b));
        quantile(pa + t * (pb - pa))
    };
    z.clamp(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn quantile_inverts_the_cdf_into_the_tails() {
        for &p in &[
            1e-300,
            1e-20,
            1e-9,
            0.001,
            0.02425,
            0.3,
            0.5,
            0.7,
            0.999,
            1.0 - 1e-12,
        ] {
            let x = quantile(p);
            let back = cdf(x);
            assert!(((back - p) / p).abs() < 1e-12, "p {p}: x {x}, Φ(x) {back}");
        }
        assert!((quantile(0.975) - 1.959_963_984_540_054).abs() < 1e-14);
        for &q in &[1e-300, 1e-30, 1e-5] {
            let x = upper_quantile(q);
            assert!(((upper(x) - q) / q).abs() < 1e-12, "q {q}: x {x}");
        }
    }

    #[test]
    fn truncated_draws_stay_inside_rare_intervals() {
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(1);
        // 8 to 9 standard deviations above the mean: mass ~6e-16.
        for _ in 0..1000 {
            let z = truncated(&mut rng, 0.0, 1.0, &[(8.0, 9.0)]).expect("draw");
            assert!((8.0..=9.0).contains(&z), "{z}");
        }
        // A union: both parts are hit in proportion to their mass.
        let mut left = 0;
        for _ in 0..20_000 {
            let z = truncated(&mut rng, 0.0, 1.0, &[(-10.0, -1.0), (2.0, 10.0)]).expect("draw");
            assert!(z <= -1.0 || z >= 2.0);
            left += usize::from(z < 0.0);
        }
        let expected = cdf(-1.0) / (cdf(-1.0) + upper(2.0));
        assert!((left as f64 / 20_000.0 - expected).abs() < 0.01);
    }
}
