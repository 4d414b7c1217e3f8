#!/usr/bin/env bash
# Reproduction benchmark: kiln's Gaussian copula and Chow-Liu tree against SDV's
# GaussianCopulaSynthesizer on the demo's training table (544,511 x 37) and a
# 100k-row sample of it, measured in one run on the same data.
#
#   bash benches/synth.sh            # needs a release build and a python with sdv, sdmetrics, pyarrow
#                                    # (PYTHON=...; e.g. python -m venv v && v/bin/pip install sdv pyarrow)
#
# Per table and model: fit seconds and peak RSS, seconds and peak RSS to
# sample 1M rows, and the SDMetrics overall quality score of a 50k-row
# sample against 50k real rows (the same rows for every model); then the
# ratios SDV / kiln. Finally kiln samples 10M rows and reports its peak RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
KILN=${KILN:-target/release/kiln}
PY=${PYTHON:-python3}
BASE=${KILN_BENCH_DIR:-/tmp/kiln-synth-bench}
SCORE_ROWS=${SCORE_ROWS:-50000}
[ -x "$KILN" ] || cargo build --release -p kiln-cli
rm -rf "$BASE" && mkdir -p "$BASE"

timed() { # timed LOG CMD... -> prints "seconds peak_MiB"
  local log=$1; shift
  /usr/bin/time -f '%e %M' -o "$log.time" "$@" > "$log" 2>&1 || { cat "$log" >&2; exit 1; }
  awk '{ printf "%s %.0f\n", $1, $2 / 1024 }' "$log.time"
}

"$KILN" generate configs/generators/indoor_outdoor.yaml --rows 544511 --seed 42 --out "$BASE/full/" > /dev/null 2>&1
"$PY" - "$BASE" <<'PY'
import sys, pyarrow.parquet as pq
base = sys.argv[1]
t = pq.read_table(base + "/full/")
pq.write_table(t, base + "/full.parquet")
import numpy as np
idx = np.sort(np.random.default_rng(0).choice(t.num_rows, 100_000, replace=False))
pq.write_table(t.take(idx), base + "/100k.parquet")
PY

printf '%-6s %-16s %9s %9s %10s %10s %8s\n' table model fit_s fit_MiB sample1M_s sample_MiB quality
for table in 100k full; do
  real="$BASE/$table.parquet"
  read -r kfit kfit_mb < <(timed "$BASE/$table.kiln.fit" "$KILN" reproduce fit "$real" --type sample_id=id --seed 1 --out "$BASE/$table.kiln.model/")
  read -r ksamp ksamp_mb < <(timed "$BASE/$table.kiln.sample" "$KILN" reproduce sample "$BASE/$table.kiln.model/" --rows 1000000 --seed 2 --out "$BASE/$table.kiln.out/")
  kq=$("$PY" benches/synth_sdv.py score "$real" "$BASE/$table.kiln.out/" "$SCORE_ROWS" 0)
  printf '%-6s %-16s %9s %9s %10s %10s %8s\n' "$table" kiln_copula "$kfit" "$kfit_mb" "$ksamp" "$ksamp_mb" "$kq"
  read -r tfit tfit_mb < <(timed "$BASE/$table.tree.fit" "$KILN" reproduce fit "$real" --model chow_liu --type sample_id=id --seed 1 --out "$BASE/$table.tree.model/")
  read -r tsamp tsamp_mb < <(timed "$BASE/$table.tree.sample" "$KILN" reproduce sample "$BASE/$table.tree.model/" --rows 1000000 --seed 2 --out "$BASE/$table.tree.out/")
  tq=$("$PY" benches/synth_sdv.py score "$real" "$BASE/$table.tree.out/" "$SCORE_ROWS" 0)
  printf '%-6s %-16s %9s %9s %10s %10s %8s\n' "$table" kiln_chow_liu "$tfit" "$tfit_mb" "$tsamp" "$tsamp_mb" "$tq"
  read -r _ sfit_mb < <(timed "$BASE/$table.sdv.fit" "$PY" benches/synth_sdv.py fit "$real" "$BASE/$table.sdv.pkl")
  sfit=$(head -1 "$BASE/$table.sdv.fit")
  read -r _ ssamp_mb < <(timed "$BASE/$table.sdv.sample" "$PY" benches/synth_sdv.py sample "$BASE/$table.sdv.pkl" 1000000 "$BASE/$table.sdv.parquet")
  ssamp=$(head -1 "$BASE/$table.sdv.sample")
  sq=$("$PY" benches/synth_sdv.py score "$real" "$BASE/$table.sdv.parquet" "$SCORE_ROWS" 0)
  printf '%-6s %-16s %9s %9s %10s %10s %8s\n' "$table" sdv_copula "$sfit" "$sfit_mb" "$ssamp" "$ssamp_mb" "$sq"
  awk -v a="$sfit" -v b="$kfit" -v c="$ssamp" -v d="$ksamp" -v e="$sq" -v f="$kq" -v t="$table" \
    'BEGIN { printf "%-6s sdv/kiln copula: fit %.1fx, sample %.1fx; quality kiln copula - sdv = %+.4f\n", t, a / b, c / d, f - e }'
done
read -r s10 m10 < <(timed "$BASE/full.kiln.sample10M" "$KILN" reproduce sample "$BASE/full.kiln.model/" --rows 10000000 --seed 3 --out "$BASE/full.kiln.10M/")
echo "kiln 10M rows sampled in ${s10}s, peak RSS ${m10} MiB"
