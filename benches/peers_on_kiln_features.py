#!/usr/bin/env python3
"""LightGBM and scikit-learn on kiln's own feature table, same split as kiln.

    python benches/peers_on_kiln_features.py LAKE_DIR [--gbt-only]

Reads LAKE_DIR/features/training/ (kiln's `features` vector column), tests on
sample_id % 5 == 0, 2 threads, and prints JSON lines with fit seconds,
predict rows/s and test AUC for LightGBM GBT (20 x depth 5, lr 0.1) and
scikit-learn RandomForest (20 x depth 5).
"""
import json
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "2")
import numpy as np
import pyarrow.parquet as pq
from sklearn.metrics import roc_auc_score

lake = sys.argv[1]
tab = pq.read_table(os.path.join(lake, "features/training"), columns=["sample_id", "label_indoor", "features"])
features = tab.column("features").combine_chunks()
width = len(features[0])
# Flat values (null elements -> NaN), one row per vector: no Python lists.
X = features.flatten().to_numpy(zero_copy_only=False).astype(np.float64).reshape(-1, width)
y = tab.column("label_indoor").to_numpy()
test = (tab.column("sample_id").to_numpy() % 5) == 0


def run(name, model):
    t = time.perf_counter()
    model.fit(X[~test], y[~test])
    fit = time.perf_counter() - t
    t = time.perf_counter()
    p = model.predict_proba(X[test])[:, 1]
    pred = time.perf_counter() - t
    print(json.dumps({"model": name, "fit_s": round(fit, 3), "predict_rows_per_s": round(test.sum() / pred),
                      "auc": round(roc_auc_score(y[test], p), 5), "train_rows": int((~test).sum())}))


import lightgbm as lgb
from sklearn.ensemble import RandomForestClassifier

run("lightgbm_gbt20_d5", lgb.LGBMClassifier(n_estimators=20, max_depth=5, num_leaves=31, learning_rate=0.1, n_jobs=2, verbose=-1, random_state=42))
if "--gbt-only" not in sys.argv:
    run("sklearn_rf20_d5", RandomForestClassifier(n_estimators=20, max_depth=5, n_jobs=2, random_state=42))
