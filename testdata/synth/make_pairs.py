"""Builds the real/synthetic table pairs of the SDMetrics parity test.

Run from the repository root (once; the outputs are checked in):
    kiln generate configs/generators/indoor_outdoor.yaml --rows 6000 --seed 7 --out /tmp/kiln-eval/real/
    python testdata/synth/make_pairs.py /tmp/kiln-eval/real/
Needs numpy, pandas, pyarrow.
"""
import sys

import numpy as np
import pandas as pd

real = pd.read_parquet(sys.argv[1])
out = "testdata/synth/"
real.to_parquet(out + "generated_real.parquet", index=False)

# A perturbed copy: numeric noise, shuffled categories, extra nulls,
# repeated rows and a value outside the real range.
rng = np.random.default_rng(11)
syn = real.sample(frac=1.0, random_state=3, replace=True).reset_index(drop=True)
for col in syn.columns:
    s = syn[col]
    if col in ("sample_id", "device_id"):
        continue
    if pd.api.types.is_float_dtype(s):
        scale = np.nanstd(s.to_numpy(dtype="float64")) or 1.0
        noise = rng.normal(0.0, 0.15 * scale, len(s))
        syn[col] = (s.to_numpy(dtype="float64") + noise).astype(s.dtype)
    elif pd.api.types.is_integer_dtype(s):
        flip = rng.random(len(s)) < 0.1
        vals = s.to_numpy().copy()
        vals[flip] = vals[flip] + rng.integers(-3, 4, flip.sum())
        syn[col] = vals.astype(s.dtype)
    elif pd.api.types.is_bool_dtype(s):
        flip = rng.random(len(s)) < 0.1
        syn[col] = np.where(flip, ~s.to_numpy(), s.to_numpy())
    elif s.dtype == object:
        flip = rng.random(len(s)) < 0.15
        shuffled = s.sample(frac=1.0, random_state=5).to_numpy()
        syn[col] = np.where(flip, shuffled, s.to_numpy())
# Values never seen in the real table.
syn.loc[0, "network_type"] = "SATELLITE"
syn.loc[1, "rsrp"] = np.float32(10.0)
syn.to_parquet(out + "generated_perturbed.parquet", index=False)

# Edge cases: a constant column, an all-null column, few rows.
edge = pd.DataFrame({
    "x": rng.normal(0, 1, 400),
    "y": np.nan,
    "k": 5.0,
    "c": rng.choice(["a", "b", "c"], 400),
    "t": pd.to_datetime("2024-01-01") + pd.to_timedelta(rng.integers(0, 86400, 400), unit="s"),
    "b": rng.random(400) < 0.3,
})
edge["z"] = edge["x"] * 0.8 + rng.normal(0, 0.3, 400)
edge["d"] = np.where(edge["x"] > 0, "pos", "neg")
edge.to_parquet(out + "edge_real.parquet", index=False)
edge2 = edge.copy()
edge2["x"] = edge2["x"] + rng.normal(0.2, 0.5, 400)
edge2["z"] = rng.normal(0, 1, 400)
edge2["c"] = rng.choice(["a", "b", "d"], 400)
edge2["d"] = rng.choice(["pos", "neg"], 400)
edge2.to_parquet(out + "edge_synthetic.parquet", index=False)
