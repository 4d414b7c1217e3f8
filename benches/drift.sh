#!/usr/bin/env bash
# Drift-monitoring overhead: BatchPrediction of the same rows with and
# without `monitor_drift`, alternately, in one session.
#
#   bash benches/drift.sh [ROWS]          # default 2000000; needs a release build
#
# Builds the demo's feature table at ROWS rows (generate, extract, features),
# trains configs/bench/train_gbt.yaml on it (GBT 20 x depth 5, 58 features),
# then runs the `plain` and `monitored` tasks of configs/bench/drift_predict.yaml
# three times each, alternating, and prints each task's seconds, the medians
# and their ratio (monitored / plain).
set -euo pipefail
cd "$(dirname "$0")/.."
KILN=${KILN:-target/release/kiln}
ROWS=${1:-2000000}
BASE=${KILN_BENCH_DIR:-/tmp/kiln-drift}
[ -x "$KILN" ] || cargo build --release -p kiln-cli
lake="$BASE/$ROWS"
mkdir -p "$lake"
export KILN_LAKE="file://$lake" KILN_TRAINING_ROWS=$ROWS
if [ ! -d "$lake/models/bench_gbt" ]; then
  for task in generate_training extract features; do
    "$KILN" submit --master 'local[2]' --only "$task" configs/indoor_outdoor.yaml > "$lake.$task.log" 2>&1 \
      || { echo "$task failed: see $lake.$task.log" >&2; exit 1; }
  done
  "$KILN" submit --master 'local[2]' configs/bench/train_gbt.yaml > "$lake.train.log" 2>&1 \
    || { echo "training failed: see $lake.train.log" >&2; exit 1; }
fi
seconds() { # task name -> its seconds in the run summary
  awk -v t="$1" '$1 == t && $2 ~ /s$/ { sub(/s$/, "", $2); print $2 }' "$2" | tail -1
}
plain=() monitored=()
for i in 1 2 3; do
  for task in plain monitored; do
    log="$lake.$task.$i.log"
    "$KILN" submit --master 'local[2]' --only "$task" configs/bench/drift_predict.yaml > "$log" 2>&1 \
      || { echo "$task failed: see $log" >&2; exit 1; }
    s=$(seconds "$task" "$log")
    echo "run $i $task: ${s}s"
    if [ "$task" = plain ]; then plain+=("$s"); else monitored+=("$s"); fi
  done
done
python3 - "${plain[@]}" "${monitored[@]}" <<'PY'
import statistics, sys
v = [float(x) for x in sys.argv[1:]]
plain, monitored = statistics.median(v[:3]), statistics.median(v[3:])
print(f"median plain {plain:.2f}s, monitored {monitored:.2f}s, ratio {monitored / plain:.3f} "
      f"(overhead {100 * (monitored / plain - 1):+.1f} %)")
PY
grep -h "drift:" "$lake".monitored.*.log | tail -1
