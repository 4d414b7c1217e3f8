#!/usr/bin/env python3
"""Reference drift statistics for kiln's `models::drift` (golden file).

Writes `cases.json` beside this script: for each case the raw reference
values (what a model's profile is built from), the raw batch values, and
the statistics computed here with numpy and scipy:

- ks:  scipy.stats.ks_2samp(reference, batch).statistic (NaN dropped);
- psi: population stability index over the reference's deciles: the edges
       are reference values (the distinct value at which the cumulative
       reference count first reaches q/10 of the total, q = 1..9, dropped
       when it is the largest value; deduplicated), bins (e_{i-1}, e_i]
       with the last bin open; proportions floored at 1e-4;
       psi = sum((q - p) * ln(q / p));
- js:  scipy.spatial.distance.jensenshannon(p, q, base=2) on the same bins
       (unfloored);
- missing shares: NaN / all values, reference and batch.

Every case keeps at most 4096 distinct reference values, where kiln's
profile holds the values exactly (beyond that it merges neighbours).

Run: python3 testdata/drift/reference.py   (numpy and scipy)
"""

import json
import math
import os

import numpy as np
from scipy.spatial.distance import jensenshannon
from scipy.stats import ks_2samp

PSI_BINS = 10
PSI_FLOOR = 1e-4


def edges(values, counts):
    n = counts.sum()
    cumulative = np.cumsum(counts)
    out = []
    for q in range(1, PSI_BINS):
        j = int(np.argmax(cumulative * PSI_BINS >= q * n))
        if j + 1 < len(values) and (not out or out[-1] != j):
            out.append(j)
    return out


def statistics(reference, batch):
    ref = reference[~np.isnan(reference)]
    bat = batch[~np.isnan(batch)]
    missing_reference = float(np.isnan(reference).mean()) if len(reference) else 0.0
    missing_batch = float(np.isnan(batch).mean()) if len(batch) else 0.0
    values, counts = np.unique(ref, return_counts=True)
    e = edges(values, counts)
    upper = values[e]
    # Bin of x: the first edge >= x (x <= e_i), else the open last bin.
    p = np.bincount(np.searchsorted(upper, ref, side="left"), minlength=len(e) + 1) / len(ref)
    q = np.bincount(np.searchsorted(upper, bat, side="left"), minlength=len(e) + 1) / len(bat)
    pf, qf = np.maximum(p, PSI_FLOOR), np.maximum(q, PSI_FLOOR)
    psi = float(np.sum((qf - pf) * np.log(qf / pf)))
    return {
        "ks": float(ks_2samp(ref, bat).statistic),
        "psi": psi,
        "js": float(jensenshannon(p, q, base=2)),
        "missing_reference": missing_reference,
        "missing_batch": missing_batch,
    }


def with_missing(rng, x, share):
    x = x.copy()
    x[rng.random(len(x)) < share] = np.nan
    return x


def main():
    rng = np.random.default_rng(20261130)
    cases = []

    def add(name, reference, batch):
        cases.append(
            {
                "name": name,
                "reference": [None if math.isnan(v) else v for v in reference.tolist()],
                "batch": [None if math.isnan(v) else v for v in batch.tolist()],
                "expected": statistics(reference, batch),
            }
        )

    # A signal strength in dB, rounded to 0.1 like the generator's rsrp.
    rsrp = np.round(rng.normal(-100, 10, 20000), 1)
    add("rsrp same distribution", with_missing(rng, rsrp, 0.06),
        with_missing(rng, np.round(rng.normal(-100, 10, 5000), 1), 0.06))
    add("rsrp mean shifted by -10 dB", with_missing(rng, rsrp, 0.06),
        with_missing(rng, np.round(rng.normal(-110, 10, 5000), 1), 0.2))
    # A category index (StringIndexer output) with another mix.
    activity = rng.choice(8, 20000, p=[0.36, 0.26, 0.05, 0.12, 0.12, 0.06, 0.02, 0.01]).astype(float)
    add("activity same mix", activity, rng.choice(8, 5000, p=[0.36, 0.26, 0.05, 0.12, 0.12, 0.06, 0.02, 0.01]).astype(float))
    add("activity other mix", activity, rng.choice(8, 5000, p=[0.1, 0.1, 0.3, 0.3, 0.1, 0.05, 0.03, 0.02]).astype(float))
    # A flag, and a batch that falls outside the reference entirely.
    flag = (rng.random(3000) < 0.3).astype(float)
    add("binary flag", flag, (rng.random(1000) < 0.5).astype(float))
    add("batch beyond the reference", np.round(rng.uniform(0, 1, 2000), 3), np.round(rng.uniform(5, 6, 700), 3))
    # Heavy ties and a long tail (light in lux).
    lux = np.round(np.exp(rng.normal(4, 2, 8000)), 0)
    add("lux long tail", lux, np.round(np.exp(rng.normal(4.5, 2, 3000)), 0))

    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cases.json")
    with open(out, "w") as f:
        json.dump({"generated_by": "testdata/drift/reference.py", "cases": cases}, f)
    for c in cases:
        print(c["name"], {k: round(v, 6) for k, v in c["expected"].items()})


if __name__ == "__main__":
    main()
