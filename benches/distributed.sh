#!/usr/bin/env bash
# Distributed training benchmark (issue 18): a kiln scheduler and executors
# (1 vcore each) on loopback, the training task against 1 and 2 executors,
# every figure from this one run, every model compared byte for byte.
#
#   bash benches/distributed.sh grid LAKE        # thesis grid (1,350 fits), fan-out tuning
#   bash benches/distributed.sh dp LAKE          # one GBT (20 x depth 5, maxBins 255), data-parallel
#   bash benches/distributed.sh dp-scheduling LAKE  # dp on 1 and 2 executors, tasks pulled and pushed
#   bash benches/distributed.sh forest LAKE      # one forest (20 trees x depth 5, maxBins 255),
#                                                # data-parallel, against the same forest fitted locally
#   bash benches/distributed.sh cap LAKE BYTES [CACHE]  # data-parallel, each executor in a
#                                                # memory cgroup of BYTES, its set cache CACHE
#   bash benches/distributed.sh fault MODE LAKE SECONDS   # SIGKILL an executor SECONDS in:
#                                                # MODE tuning (the demo's grid) or dp
#   bash benches/distributed.sh breakeven LAKE...  # data-parallel on 2 executors against
#                                                # one process, per lake size, and
#                                                # what auto chose there and why
#
# KILN_BENCH_SCHEDULING=push starts the cluster with pushed tasks (default pull).
# KILN_BENCH_EXECUTOR_LOG=kiln_models=debug logs each partition state an
# executor had to recompute (to $KILN_BENCH_DIR/executorN.log).
#
# LAKE holds the demo's feature table at some size (benches/scale.sh makes
# them: /tmp/kiln-scale/544511, .../8000000). Needs a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
KILN=${KILN:-target/release/kiln}
OUT=${KILN_BENCH_DIR:-/tmp/kiln-distributed}
PORT=${KILN_BENCH_PORT:-52050}
# How tasks reach executors (kiln's default: pull).
SCHEDULING=${KILN_BENCH_SCHEDULING:-pull}
[ -x "$KILN" ] || cargo build --release -p kiln-cli
mkdir -p "$OUT"
pids=()
stop_cluster() {
  # Each process's peak resident memory, then stop it.
  for p in "${pids[@]}"; do
    echo "$p $(tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | grep -oE '(scheduler|executor)' | head -1) $(grep VmHWM "/proc/$p/status" 2>/dev/null)" >> "$OUT/peaks.log"
    kill -9 "$p" 2>/dev/null || true
  done
  pids=()
  sleep 1
  rmdir /sys/fs/cgroup/kiln-bench-* /sys/fs/cgroup/memory/kiln-bench-* 2>/dev/null || true
  # Shuffle files of killed executors are never cleaned up by Ballista.
  rm -rf "$OUT"/work*
}
trap stop_cluster EXIT

# start_cluster N [executor command prefix...]
start_cluster() {
  local n=$1; shift
  KILN_LOG=warn "$KILN" scheduler --bind-port "$PORT" --task-scheduling "$SCHEDULING" > "$OUT/scheduler.log" 2>&1 &
  pids+=($!)
  sleep 1
  for i in $(seq 1 "$n"); do
    mkdir -p "$OUT/work$i"
    KILN_LOG=${KILN_BENCH_EXECUTOR_LOG:-warn} "$@" "$KILN" executor --scheduler-port "$PORT" \
      --bind-port $((PORT + 10 * i + 1)) --grpc-port $((PORT + 10 * i + 2)) \
      --vcores 1 --task-scheduling "$SCHEDULING" --work-dir "$OUT/work$i" > "$OUT/executor$i.log" 2>&1 &
    pids+=($!)
  done
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$PORT/readyz" 2>/dev/null | grep -q "$n executors registered" && return 0
    sleep 0.2
  done
  echo "cluster of $n executors did not start" >&2
  exit 1
}

# train CONFIG LAKE MASTER NAME: prints "seconds md5 mode seconds_per_level levels fit_seconds"
train() {
  local config=$1 lake=$2 master=$3 name=$4 log="$OUT/$4.log"
  local repo
  repo=$(awk '/path_model_repository:/ { print $2 }' "$config" | tail -1)
  rm -rf "${lake:?}/$repo"
  local started ended
  started=$(date +%s.%N)
  KILN_LAKE="file://$lake" KILN_HOME="$OUT/home" "$KILN" submit --master "$master" --only train "$config" > "$log" 2>&1 \
    || { echo "$name failed: see $log" >&2; exit 1; }
  ended=$(date +%s.%N)
  python3 - "$lake/$repo" "$(echo "$ended - $started" | bc)" "$OUT/$name.reason" <<'PY'
import hashlib, json, sys
repo, seconds, reason = sys.argv[1:]
report = json.load(open(f"{repo}/v1/report.json"))
open(reason, "w").write(report["distribution"]["reason"] + "\n")
digest = hashlib.md5(open(f"{repo}/v1/model.json", "rb").read()).hexdigest()[:12]
model = report["models"][0]
details = model.get("fit_details") or {}
per_level = details.get("seconds_per_level")
print(seconds, digest, report["distribution"]["mode"],
      "-" if per_level is None else f"{per_level:.3f}", details.get("levels", "-"),
      f"{model['tuning_and_fit_seconds']:.1f}")
PY
}

compare() { # name1 result1 name2 result2
  read -r s1 h1 m1 l1 n1 f1 <<< "$2"; read -r s2 h2 m2 l2 n2 f2 <<< "$4"
  printf '%-36s task %7.1f s  tuning+fit %7.1f s  model %s  mode %-13s  s/level %s  levels %s\n' "$1" "$s1" "$f1" "$h1" "$m1" "$l1" "$n1"
  printf '%-36s task %7.1f s  tuning+fit %7.1f s  model %s  mode %-13s  s/level %s  levels %s\n' "$3" "$s2" "$f2" "$h2" "$m2" "$l2" "$n2"
  printf 'ratio %s / %s: task %.2f, tuning+fit %.2f; models %s\n' "$1" "$3" "$(echo "$s1 / $s2" | bc -l)" \
    "$(echo "$f1 / $f2" | bc -l)" "$([ "$h1" = "$h2" ] && echo identical || echo DIFFERENT)"
}

mode=$1; shift
case "$mode" in
  grid)
    lake=$1
    start_cluster 1; one=$(train configs/bench/thesis_grid.yaml "$lake" "df://127.0.0.1:$PORT" grid-1); stop_cluster
    start_cluster 2; two=$(train configs/bench/thesis_grid.yaml "$lake" "df://127.0.0.1:$PORT" grid-2); stop_cluster
    compare "thesis grid, 1 executor" "$one" "thesis grid, 2 executors" "$two"
    ;;
  dp)
    lake=$1
    local_run=$(KILN_DISTRIBUTION=data_parallel train configs/bench/train_gbt.yaml "$lake" 'local[2]' dp-local)
    start_cluster 1; one=$(KILN_DISTRIBUTION=data_parallel train configs/bench/train_gbt.yaml "$lake" "df://127.0.0.1:$PORT" dp-1); stop_cluster
    start_cluster 2; two=$(KILN_DISTRIBUTION=data_parallel train configs/bench/train_gbt.yaml "$lake" "df://127.0.0.1:$PORT" dp-2); stop_cluster
    float=$(KILN_DISTRIBUTION=local train configs/bench/train_gbt.yaml "$lake" 'local[2]' float-local)
    compare "data-parallel, 1 executor" "$one" "data-parallel, 2 executors" "$two"
    compare "data-parallel, local[2]" "$local_run" "float GBT, local[2]" "$float"
    for name in dp-local float-local; do
      grep -E "^ +GBTClassifier" "$OUT/$name.log" | tail -1 | sed "s/^/$name test metrics: /"
    done
    ;;
  dp-scheduling)
    # The data-parallel GBT on 1 and 2 executors, pulling tasks (kiln's
    # default) and with tasks pushed by the scheduler.
    lake=$1
    for SCHEDULING in pull push; do
      start_cluster 1; one=$(KILN_DISTRIBUTION=data_parallel train configs/bench/train_gbt.yaml "$lake" "df://127.0.0.1:$PORT" "dp-$SCHEDULING-1"); stop_cluster
      start_cluster 2; two=$(KILN_DISTRIBUTION=data_parallel train configs/bench/train_gbt.yaml "$lake" "df://127.0.0.1:$PORT" "dp-$SCHEDULING-2"); stop_cluster
      compare "dp $SCHEDULING, 1 executor" "$one" "dp $SCHEDULING, 2 executors" "$two"
    done
    ;;
  forest)
    lake=$1 config=configs/bench/train_forest.yaml
    start_cluster 1; one=$(KILN_DISTRIBUTION=data_parallel train $config "$lake" "df://127.0.0.1:$PORT" forest-dp-1); stop_cluster
    start_cluster 2; two=$(KILN_DISTRIBUTION=data_parallel train $config "$lake" "df://127.0.0.1:$PORT" forest-dp-2); stop_cluster
    local_dp=$(KILN_DISTRIBUTION=data_parallel train $config "$lake" 'local[2]' forest-dp-local)
    local_fit=$(KILN_DISTRIBUTION=local train $config "$lake" 'local[2]' forest-local)
    compare "forest data-parallel, 1 executor" "$one" "forest data-parallel, 2 executors" "$two"
    compare "forest data-parallel, local[2]" "$local_dp" "forest local fit, local[2]" "$local_fit"
    compare "forest data-parallel, 2 executors" "$two" "forest local fit, local[2]" "$local_fit"
    ;;
  in-cgroup) # BYTES CMD...: CMD in a fresh memory cgroup of at most BYTES
    size=${1%B}; bytes=$(numfmt --from=iec "${size%i}"); shift
    if [ -w /sys/fs/cgroup/cgroup.subtree_control ]; then
      group=/sys/fs/cgroup/kiln-bench-$$; mkdir "$group"; echo "$bytes" > "$group/memory.max"
      echo 0 > "$group/memory.swap.max" 2>/dev/null || true
    else
      group=/sys/fs/cgroup/memory/kiln-bench-$$; mkdir "$group"; echo "$bytes" > "$group/memory.limit_in_bytes"
    fi
    echo $$ > "$group/cgroup.procs"
    exec "$@"
    ;;
  cap)
    lake=$1 cap=$2 cache=${3:-$2}
    # Each executor in a memory cgroup of CAP bytes (resident memory and
    # page cache; exceeding it is an OOM kill), its set cache below the cap.
    start_cluster 2 env KILN_TRAINING_CACHE_MEMORY="$cache" bash "$0" in-cgroup "$cap"
    capped=$(KILN_DISTRIBUTION=data_parallel train configs/bench/train_gbt.yaml "$lake" "df://127.0.0.1:$PORT" dp-capped)
    stop_cluster
    free=$(KILN_DISTRIBUTION=data_parallel train configs/bench/train_gbt.yaml "$lake" 'local[2]' dp-uncapped)
    compare "data-parallel, capped executors" "$capped" "data-parallel, local, no cap" "$free"
    # In a subshell: train exits the script when the run fails, as it should here.
    if (KILN_TRAIN_MEMORY_LIMIT="$cap" KILN_DISTRIBUTION=local train configs/bench/train_gbt.yaml "$lake" 'local[2]' local-capped) > /dev/null 2>&1; then
      echo "one process trained under $cap as well"
    else
      echo "one process refuses under $cap: $(grep -m1 -E 'needs about' "$OUT/local-capped.log" || tail -1 "$OUT/local-capped.log")"
    fi
    ;;
  fault)
    which=$1 lake=$2 after=$3
    config=configs/indoor_outdoor.yaml; export KILN_DISTRIBUTION=tuning
    [ "$which" = dp ] && { config=configs/bench/train_gbt.yaml; export KILN_DISTRIBUTION=data_parallel; }
    start_cluster 2; clean=$(train "$config" "$lake" "df://127.0.0.1:$PORT" "fault-$which-clean"); stop_cluster
    start_cluster 2
    victim=${pids[2]}
    (sleep "$after"; kill -9 "$victim") &
    hit=$(train "$config" "$lake" "df://127.0.0.1:$PORT" "fault-$which-killed"); stop_cluster
    compare "$which, undisturbed" "$clean" "$which, executor killed at ${after}s" "$hit"
    ;;
  breakeven)
    for lake in "$@"; do
      start_cluster 2
      dp=$(KILN_DISTRIBUTION=data_parallel train configs/bench/train_gbt.yaml "$lake" "df://127.0.0.1:$PORT" "breakeven-dp")
      KILN_DISTRIBUTION=auto train configs/bench/train_gbt.yaml "$lake" "df://127.0.0.1:$PORT" "breakeven-auto" > /dev/null
      stop_cluster
      lo=$(KILN_DISTRIBUTION=local train configs/bench/train_gbt.yaml "$lake" 'local[2]' "breakeven-local")
      rows=$(grep -m1 -oE 'train [0-9]+ rows' "$OUT/breakeven-local.log" | grep -oE '[0-9]+')
      echo "== $rows training rows ($lake)"
      compare "data-parallel, 2 executors" "$dp" "one process, 2 threads" "$lo"
      echo "auto on this cluster: $(cat "$OUT/breakeven-auto.reason")"
    done
    ;;
  *)
    sed -n 2,22p "$0"; exit 2 ;;
esac
