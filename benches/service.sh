#!/usr/bin/env bash
# Load on `kiln serve`: job status and job list requests against a server
# holding 10,000 jobs while two jobs run, on SQLite and on PostgreSQL.
# The load generator is oha (crates.io), installed here when missing. The
# server and oha share this machine's cores. Each figure is also given as
# a ratio to /health (no database) measured in the same run.
#
#   benches/service.sh [sqlite|postgres|both] [SECONDS] [CONNECTIONS]
#
# KILN_BENCH_JOBS=0 measures an idle server (no job running).
#
# PostgreSQL: KILN_BENCH_POSTGRES_URL, or a throwaway cluster from
# .ci/postgres. Goal (issue 12): >= 2,000 req/s with p99 < 25 ms.
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:-both}
seconds=${2:-15}
connections=${3:-16}
cargo build --release --locked -p kiln-cli
kiln="${CARGO_TARGET_DIR:-target}/release/kiln"
oha=$(command -v oha || true)
if [ -z "$oha" ]; then
  cargo install oha --locked --root target/bench-tools
  oha=target/bench-tools/bin/oha
fi
work=$(mktemp -d /tmp/kiln-bench-service.XXXXXX)
chmod 755 "$work" # the PostgreSQL cluster below runs as its own user
trap 'kill $(jobs -p) 2>/dev/null || true; .ci/postgres stop "$work/pg" || true; rm -rf "$work"' EXIT

load() { # URL -> "req/s p50_ms p99_ms"
  "$oha" --no-tui --output-format json -z "${seconds}s" -c "$connections" "$1" 2>/dev/null | python3 -c '
import json, sys
r = json.load(sys.stdin)
s, p = r["summary"], r["latencyPercentiles"]
ok = r.get("statusCodeDistribution", {})
print("%.0f %.2f %.2f %s" % (s["requestsPerSec"], p["p50"] * 1e3, p["p99"] * 1e3, ",".join("%s:%s" % kv for kv in ok.items())))'
}

bench() { # NAME DB_URL SEED_COMMAND
  local name=$1 db=$2
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  KILN_HOME="$work/home-$name" "$kiln" serve --bind "127.0.0.1:$port" --db "$db" --lake "$work/lake-$name/" \
    --workers 2 --per-user-running 2 --master 'local[1]' > "$work/serve-$name.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do grep -q "listening on" "$work/serve-$name.log" && break; sleep 0.2; done
  local base="http://127.0.0.1:$port"
  # 10,000 finished jobs, written straight into the database.
  python3 - "$name" "$db" <<'PY'
import sys, json, subprocess, time, uuid
name, db = sys.argv[1], sys.argv[2]
now = int(time.time() * 1000)
rows = []
for i in range(10000):
    rows.append("('%s', 'local', 'generate', '{}', 'succeeded', 1, 3, 7200000, %d, '[]', %d, %d, %d)"
                % (uuid.uuid4().hex, now - i, now - i, now - i, now - i))
sql = ("INSERT INTO jobs (id, owner, job_type, params, state, attempts, max_attempts, time_limit_ms, "
       "not_before_ms, outputs, created_ms, started_ms, finished_ms) VALUES " + ",".join(rows) + ";")
if name == "sqlite":
    import sqlite3
    c = sqlite3.connect(db[len("sqlite:"):], timeout=30)
    c.executescript(sql)
    c.commit()
else:
    subprocess.run(["psql", "-q", db, "-f", "-"], input=sql.encode(), check=True)
PY
  # Long jobs: two run (the per-user limit) during the whole load; each
  # generates the demo's 37 columns until its 40 s time limit stops it.
  [ "${KILN_BENCH_JOBS:-2}" = 0 ] || python3 - "$base" "$work" <<'PY'
import json, sys, urllib.request
base, work = sys.argv[1], sys.argv[2]
rules = open("configs/generators/indoor_outdoor.yaml").read()
for seed in range(1, 5):
    body = json.dumps({"type": "generate", "time_limit_seconds": 40,
                       "params": {"rules": rules, "rows": 100000000, "seed": seed}}).encode()
    req = urllib.request.Request(base + "/api/v1/jobs", body, {"content-type": "application/json"})
    with urllib.request.urlopen(req) as r, open("%s/job-%d.json" % (work, seed), "wb") as f:
        f.write(r.read())
PY
  local id
  id=$(curl -sf "$base/api/v1/jobs?limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["jobs"][0]["id"])')
  sleep 1
  local health status list
  load "$base/health" > /dev/null # warm-up
  health=$(load "$base/health")
  status=$(load "$base/api/v1/jobs/$id/status")
  list=$(load "$base/api/v1/jobs?limit=20")
  local running
  running=$(curl -sf "$base/api/v1/jobs?state=running" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["jobs"]))')
  python3 - "$name" "$health" "$status" "$list" "$running" <<'PY'
import sys
name, health, status, lst, running = sys.argv[1:]
h = float(health.split()[0])
for what, line in (("health (reference)", health), ("job status", status), ("job list (20 of 10,000)", lst)):
    rps, p50, p99, codes = line.split()
    print("%-8s %-24s %8s req/s  p50 %6s ms  p99 %6s ms  ratio to health %.2f  [%s]"
          % (name, what, rps, p50, p99, float(rps) / h, codes))
print("%-8s jobs running during the load: %s" % (name, running))
PY
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$work/lake-$name"
}

case "$which" in
  sqlite|both) bench sqlite "sqlite:$work/service.sqlite" ;;
esac
case "$which" in
  postgres|both)
    url=${KILN_BENCH_POSTGRES_URL:-$(.ci/postgres start "$work/pg" 55434)}
    bench postgres "$url" ;;
esac
