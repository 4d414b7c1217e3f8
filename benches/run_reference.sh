#!/usr/bin/env bash
# End-to-end benchmark runner: kiln and the reference peers on the same data,
# in the same session, reported as ratios.
#
#   bash benches/run_reference.sh            # needs a release build and python3 with
#                                            # numpy pyarrow lightgbm scikit-learn (see ../shared/reference/README.md)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
KILN=target/release/kiln
LAKE=${KILN_BENCH_LAKE:-/tmp/kiln-bench-lake}
[ -x "$KILN" ] || cargo build --release -p kiln-cli

echo "== demo pipeline (generate, extract, features, train with CV, predict)"
start=$(date +%s.%N)
KILN_LAKE="file://$LAKE" "$KILN" submit --master 'local[2]' configs/indoor_outdoor.yaml
echo "demo wall time: $(echo "$(date +%s.%N) - $start" | bc) s"

echo "== kiln single fits (GBT 20 x d5, RF 20 x d5)"
KILN_LAKE="file://$LAKE" "$KILN" submit --master 'local[2]' configs/bench/train_single.yaml
report=$(ls -d "$LAKE"/models/bench/v* | sort -V | tail -1)/report.json
"$PY" - "$report" <<'PY' > /tmp/kiln-bench-kiln.json
import json, sys
r = json.load(open(sys.argv[1]))
for m in r["models"]:
    print(json.dumps({"model": m["classname"], "fit_s": round(m["fit_seconds"], 3), "predict_rows_per_s": round(m.get("predict_rows_per_second", 0)), "auc": round(m["test_metrics"]["areaUnderROC"], 5)}))
PY
cat /tmp/kiln-bench-kiln.json

echo "== peers on kiln's feature table"
"$PY" benches/peers_on_kiln_features.py "$LAKE" | tee /tmp/kiln-bench-peers.json

"$PY" - <<'PY'
import json
k = {json.loads(l)["model"]: json.loads(l) for l in open("/tmp/kiln-bench-kiln.json")}
p = {json.loads(l)["model"]: json.loads(l) for l in open("/tmp/kiln-bench-peers.json")}
g, l = k["GBTClassifier"], p["lightgbm_gbt20_d5"]
r, s = k["RandomForestClassifier"], p["sklearn_rf20_d5"]
print(f"GBT fit time kiln/LightGBM = {g['fit_s'] / l['fit_s']:.2f}x   AUC kiln {g['auc']} vs LightGBM {l['auc']} (diff {g['auc'] - l['auc']:+.4f})")
print(f"RF  fit time kiln/sklearn  = {r['fit_s'] / s['fit_s']:.2f}x   AUC kiln {r['auc']} vs sklearn {s['auc']} (diff {r['auc'] - s['auc']:+.4f})")
print(f"GBT predict throughput kiln/LightGBM = {g['predict_rows_per_s'] / l['predict_rows_per_s']:.2f}x ({g['predict_rows_per_s']} vs {l['predict_rows_per_s']} rows/s)")
print(f"RF  predict throughput kiln/sklearn  = {r['predict_rows_per_s'] / s['predict_rows_per_s']:.2f}x ({r['predict_rows_per_s']} vs {s['predict_rows_per_s']} rows/s)")
PY
