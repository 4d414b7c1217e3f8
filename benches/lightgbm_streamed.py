#!/usr/bin/env python3
"""LightGBM on kiln's feature table at any size: streamed, float32, timed in parts.

    python benches/lightgbm_streamed.py LAKE_DIR [--float64]

`peers_on_kiln_features.py` materialises the whole table as one float64
matrix, which at 38M rows x 58 features (17.7 GB) does not fit this machine
next to LightGBM. This runner reads LAKE_DIR/features/training/ in Arrow
batches straight into preallocated train and test matrices (float32 unless
--float64; 30.5M x 58 float32 is 7.1 GB), with the same split as kiln
(test: sample_id % 5 == 0) and the same model (GBT 20 x depth 5, 31 leaves,
learning rate 0.1, 2 threads). It prints one JSON line with:

- read_s: the Parquet read into the matrices;
- construct_s: LightGBM's Dataset construction (its binning);
- train_s: boosting alone, comparable with kiln's `fit_seconds` (kiln bins
  while reading, before its fit clock starts);
- fit_s: construct_s + train_s, what the sklearn API's fit measures;
- the test AUC and the peak RSS of this process.
"""
import glob
import json
import os
import resource
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "2")
import numpy as np
import pyarrow.parquet as pq
from sklearn.metrics import roc_auc_score
import lightgbm as lgb

lake = sys.argv[1]
dtype = np.float64 if "--float64" in sys.argv else np.float32
files = sorted(glob.glob(os.path.join(lake, "features/training/*.parquet")))
if not files:
    sys.exit(f"no Parquet files under {lake}/features/training/: run the demo's features task first")

t0 = time.perf_counter()
# Pass 1: the split sizes, from the sample_id column alone.
n_test = n_train = 0
width = None
for f in files:
    pf = pq.ParquetFile(f)
    for batch in pf.iter_batches(batch_size=1 << 20, columns=["sample_id"]):
        test = (batch.column(0).to_numpy() % 5) == 0
        n_test += int(test.sum())
        n_train += len(test) - int(test.sum())
    if width is None:
        first = pf.read_row_group(0, columns=["features"]).column(0)
        width = len(first[0])

X_train = np.empty((n_train, width), dtype=dtype)
X_test = np.empty((n_test, width), dtype=dtype)
y_train = np.empty(n_train, dtype=np.int32)
y_test = np.empty(n_test, dtype=np.int32)

# Pass 2: fill both matrices batch by batch (null vector elements -> NaN).
i_train = i_test = 0
for f in files:
    for batch in pq.ParquetFile(f).iter_batches(batch_size=1 << 20, columns=["sample_id", "label_indoor", "features"]):
        test = (batch.column(0).to_numpy() % 5) == 0
        y = batch.column(1).to_numpy()
        x = batch.column(2).flatten().to_numpy(zero_copy_only=False).reshape(-1, width)
        k = int(test.sum())
        X_test[i_test:i_test + k] = x[test]
        y_test[i_test:i_test + k] = y[test]
        X_train[i_train:i_train + len(y) - k] = x[~test]
        y_train[i_train:i_train + len(y) - k] = y[~test]
        i_test += k
        i_train += len(y) - k
        del x, batch
read_s = time.perf_counter() - t0

params = dict(objective="binary", num_iterations=20, max_depth=5, num_leaves=31, learning_rate=0.1,
              num_threads=2, seed=42, verbose=-1)
t = time.perf_counter()
train_set = lgb.Dataset(X_train, label=y_train, params={"verbose": -1}).construct()
construct_s = time.perf_counter() - t
t = time.perf_counter()
booster = lgb.train(params, train_set)
train_s = time.perf_counter() - t
t = time.perf_counter()
p = booster.predict(X_test)
predict_s = time.perf_counter() - t

print(json.dumps({
    "model": "lightgbm_gbt20_d5", "dtype": np.dtype(dtype).name,
    "train_rows": n_train, "test_rows": n_test, "features": width,
    "read_s": round(read_s, 2), "construct_s": round(construct_s, 2), "train_s": round(train_s, 2),
    "fit_s": round(construct_s + train_s, 2), "predict_rows_per_s": round(n_test / predict_s),
    "auc": round(roc_auc_score(y_test, p), 5),
    "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
}), flush=True)
os._exit(0)
