#!/usr/bin/env bash
# Inference at scale: the demo's 7-table inference batch at ROWS rows, left
# joined (the demo's `extract_inference`), then the feature pipeline, the GBT
# and the Parquet write (configs/bench/predict_batch.yaml `predict`), each
# under /usr/bin/time; then the same path on the rows of 1 % of the devices
# (`sample`), whose predictions must equal the full batch's for those rows.
#
#   bash benches/inference.sh 37976624        # needs a release build and python3 with pyarrow
#   KILN_PREDICT_CONF="datafusion.runtime.memory_limit=2G" bash benches/inference.sh 37976624
#
# The model is configs/bench/train_gbt.yaml's on the lake's feature table
# (trained first at KILN_TRAINING_ROWS, default 544511, if the lake has
# none). KILN_JOIN_CONF and KILN_PREDICT_CONF hold `--conf` settings
# (space-separated key=value) for the join and for the prediction tasks.
# Prints one row: batch rows, seconds and peak RSS of the join and of the
# prediction, their total, and the sample's check.
set -euo pipefail
cd "$(dirname "$0")/.."
KILN=${KILN:-target/release/kiln}
PY=${PYTHON:-python3}
ROWS=${1:?usage: benches/inference.sh ROWS}
BASE=${KILN_BENCH_DIR:-/tmp/kiln-inference}
lake=${KILN_BENCH_LAKE:-$BASE/lake}
[ -x "$KILN" ] || cargo build --release -p kiln-cli
mkdir -p "$lake"
export KILN_LAKE="file://$lake" KILN_INFERENCE_ROWS=$ROWS
confs() { for kv in $1; do printf -- '--conf\n%s\n' "$kv"; done; }
mapfile -t join_conf < <(confs "${KILN_JOIN_CONF:-}")
mapfile -t predict_conf < <(confs "${KILN_PREDICT_CONF:-}")
conf=()
run() { # log config task...
  local log=$1 config=$2; shift 2
  for task in "$@"; do
    "$KILN" submit --master 'local[2]' "${conf[@]}" --only "$task" "$config" >> "$log" 2>&1 \
      || { echo "$task failed: see $log" >&2; exit 1; }
  done
}
if [ ! -d "$lake/models/bench_gbt" ]; then
  run "$lake.train.log" configs/indoor_outdoor.yaml generate_training extract features
  run "$lake.train.log" configs/bench/train_gbt.yaml train
fi
# The batch is generated once per row count (generate_inference skips an existing one).
if [ "$(cat "$lake/raw/inference.rows" 2>/dev/null)" != "$ROWS" ]; then
  rm -rf "$lake/raw/inference"
  run "$lake.generate.log" configs/indoor_outdoor.yaml generate_inference
  echo "$ROWS" > "$lake/raw/inference.rows"
fi
rm -rf "$lake/extraction/inference" "$lake/extraction/inference_sample"
timed() { # name config task -> "seconds rss_MiB" (with the settings in `conf`)
  local log="$lake.$1.log"
  : > "$log"
  /usr/bin/time -v "$KILN" submit --master 'local[2]' "${conf[@]}" --only "$3" "$2" > "$log" 2>&1 \
    || { echo "$3 failed: see $log" >&2; exit 1; }
  awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i]; sec = s }
              /Maximum resident set size/ { rss = $2 / 1024 }
              END { printf "%.1f %.0f\n", sec, rss }' "$log"
}
conf=("${join_conf[@]}")
read -r join_s join_rss < <(timed join configs/indoor_outdoor.yaml extract_inference)
conf=("${predict_conf[@]}")
read -r predict_s predict_rss < <(timed predict configs/bench/predict_batch.yaml predict)
"$PY" - "$lake" <<'PY'
import sys, pyarrow as pa, pyarrow.compute as pc, pyarrow.dataset as ds, pyarrow.parquet as pq, os
lake = sys.argv[1]
t = ds.dataset(f"{lake}/extraction/inference/", format="parquet")
devices = pc.unique(t.to_table(columns=["device_id"])["device_id"]).sort()
keep = devices.slice(0, max(1, len(devices) // 100))
# pyarrow 26 cannot filter string_view columns: cast them to string first.
plain = pa.schema([f.with_type(pa.string()) if f.type == pa.string_view() else f for f in t.schema])
parts = []
for b in t.to_batches():
    b = b.cast(plain)
    parts.append(b.filter(pc.is_in(b.column("device_id"), value_set=keep)))
os.makedirs(f"{lake}/extraction/inference_sample", exist_ok=True)
pq.write_table(pa.Table.from_batches(parts, schema=plain),
               f"{lake}/extraction/inference_sample/part-00000.parquet")
os._exit(0)  # pyarrow 26 can crash while the interpreter shuts down
PY
run "$lake.sample.log" configs/bench/predict_batch.yaml sample
check=$("$PY" - "$lake" <<'PY'
import os, sys, pyarrow.compute as pc, pyarrow.dataset as ds
lake = sys.argv[1]
cols = ["sample_id", "probability", "prediction"]
small = ds.dataset(f"{lake}/predictions/bench_sample/", format="parquet").to_table(columns=cols).sort_by("sample_id")
full = ds.dataset(f"{lake}/predictions/bench_batch/", format="parquet").to_table(
    columns=cols, filter=pc.field("sample_id").isin(small["sample_id"])).sort_by("sample_id")
same = small.equals(full)
print(f"{small.num_rows}_rows_{'identical' if same else 'DIFFERENT'}", flush=True)
os._exit(0)
PY
)
printf '%10s %8s %9s %9s %11s %8s  %s\n' rows join_s join_MiB predict_s predict_MiB total_s sample
printf '%10s %8s %9s %9s %11s %8.1f  %s\n' "$ROWS" "$join_s" "$join_rss" "$predict_s" "$predict_rss" \
  "$(echo "$join_s + $predict_s" | bc)" "$check"
