"""Golden numbers of kiln's parametric copula marginals, from scipy.

    python3 testdata/copula/parametric.py > testdata/copula/parametric.json

For each sample: scipy's fits (norm.fit; uniform.fit; lognorm.fit with
floc=0; truncnorm with the sample's mean and standard deviation cut to its
min and max, as kiln defines it), the KS statistic (scipy.stats.kstest),
CDF values and quantiles, and the family with the smallest KS statistic
(ties: norm, truncnorm, uniform, lognorm).
"""
import json

import numpy as np
from scipy import stats

rng = np.random.default_rng(20261130)
SAMPLES = {
    "normal": rng.normal(-95.0, 8.0, 400),
    "uniform": rng.uniform(10.0, 30.0, 300),
    "lognormal": rng.lognormal(1.5, 0.6, 500),
    "skewed_bounded": np.clip(rng.gamma(2.0, 3.0, 350), 0.5, 20.0),
}
ORDER = ["norm", "truncnorm", "uniform", "lognorm"]
PPF_AT = [0.0, 0.001, 0.1, 0.25, 0.5, 0.75, 0.9, 0.999, 1.0]


def fitted(name, x):
    if name == "norm":
        loc, scale = stats.norm.fit(x)
        return [loc, scale], stats.norm(loc, scale)
    if name == "uniform":
        loc, scale = stats.uniform.fit(x)
        return [loc, loc + scale], stats.uniform(loc, scale)
    if name == "lognorm":
        if x.min() <= 0:
            return None
        s, _, scale = stats.lognorm.fit(x, floc=0)
        return [float(np.log(scale)), s], stats.lognorm(s, 0, scale)
    if name == "truncnorm":
        loc, scale, lo, hi = x.mean(), x.std(), x.min(), x.max()
        a, b = (lo - loc) / scale, (hi - loc) / scale
        return [loc, scale, lo, hi], stats.truncnorm(a, b, loc, scale)
    raise ValueError(name)


cases = []
for case, x in SAMPLES.items():
    x = np.asarray(x, dtype=float)
    lo, hi = x.min(), x.max()
    points = list(np.linspace(lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo), 9))
    fits = {}
    for name in ORDER:
        f = fitted(name, x)
        if f is None:
            continue
        params, dist = f
        # Quantiles at 0 and 1 only for the bounded families (±inf or 0
        # for the others).
        fits[name] = {
            "params": [float(v) for v in params],
            "ks": float(stats.kstest(x, dist.cdf).statistic),
            "points": [float(p) for p in points],
            "cdf": [float(dist.cdf(p)) for p in points],
            "ppf_at": [p for p in PPF_AT if 0.0 < p < 1.0 or name in ("uniform", "truncnorm")],
            "ppf": [],
        }
        fits[name]["ppf"] = [
            float(np.clip(dist.ppf(p), lo, hi)) if name == "truncnorm" else float(dist.ppf(p))
            for p in fits[name]["ppf_at"]
        ]
    auto = min(fits, key=lambda n: (fits[n]["ks"], ORDER.index(n)))
    cases.append({"name": case, "sample": [float(v) for v in x], "fits": fits, "auto": auto})

print(json.dumps(cases, indent=1))
