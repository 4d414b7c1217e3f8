#!/usr/bin/env bash
# Scale-up benchmark: how training cost grows with rows.
#
#   bash benches/scale.sh 544511 2000000 8000000     # needs a release build and
#                                                    # python3 with numpy pyarrow lightgbm scikit-learn
#
# For each row count: the demo's generate/extract/features tasks at that size
# (KILN_TRAINING_ROWS), then the training task alone (configs/bench/train_gbt.yaml:
# GBT 20 x depth 5, maxBins 255, no tuning) under /usr/bin/time, then LightGBM
# (same settings, 2 threads) on the same feature table. Prints one table row per
# size: rows, training-task wall seconds, kiln fit seconds, peak RSS of the whole
# `kiln submit` process, RSS bytes per training row, LightGBM fit seconds, the
# fit-time ratio and both test AUCs.
set -euo pipefail
cd "$(dirname "$0")/.."
KILN=${KILN:-target/release/kiln}
PY=${PYTHON:-python3}
BASE=${KILN_BENCH_DIR:-/tmp/kiln-scale}
[ -x "$KILN" ] || cargo build --release -p kiln-cli
mkdir -p "$BASE"
printf '%10s %9s %8s %9s %9s %9s %7s %9s %9s\n' rows task_s fit_s rss_MiB B/row lgbm_fit kiln/lgb auc_kiln auc_lgbm
for rows in "$@"; do
  lake="$BASE/$rows"
  export KILN_LAKE="file://$lake" KILN_TRAINING_ROWS=$rows
  for task in generate_training extract features; do
    "$KILN" submit --master 'local[2]' --only "$task" configs/indoor_outdoor.yaml > "$lake.$task.log" 2>&1 \
      || { echo "$task failed at $rows rows: see $lake.$task.log" >&2; exit 1; }
  done
  log="$lake.train.log"
  /usr/bin/time -v "$KILN" submit --master 'local[2]' configs/bench/train_gbt.yaml > "$log" 2>&1 \
    || { echo "training failed at $rows rows: see $log" >&2; exit 1; }
  task_s=$(awk '$1 == "train" && $2 ~ /s$/ { sub(/s$/, "", $2); print $2 }' "$log" | tail -1)
  rss_kb=$(awk -F: '/Maximum resident set size/ { gsub(/ /, "", $2); print $2 }' "$log")
  report=$(ls -d "$lake"/models/bench_gbt/v* | sort -V | tail -1)/report.json
  peers=$("$PY" benches/peers_on_kiln_features.py "$lake" --gbt-only)
  "$PY" - "$report" "$rows" "$task_s" "$rss_kb" "$peers" <<'PY'
import json, sys
report, rows, task_s, rss_kb, peers = sys.argv[1:]
m = json.load(open(report))["models"][0]
p = json.loads(peers)
train_rows = json.load(open(report))["train_rows"]
print(f"{int(rows):>10} {float(task_s):>9.1f} {m['fit_seconds']:>8.1f} {int(rss_kb) / 1024:>9.0f} "
      f"{int(rss_kb) * 1024 / train_rows:>9.0f} {p['fit_s']:>9.1f} {m['fit_seconds'] / p['fit_s']:>7.2f} "
      f"{m['test_metrics']['areaUnderROC']:>9.5f} {p['auc']:>9.5f}")
PY
done
