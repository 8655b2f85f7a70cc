#!/usr/bin/env bash
# W1 end to end, alertflow and DuckDB side by side on the same file.
#
# Generates 2,000,000 points (10,000 series every 10 s, ±2 s of disorder, seed 1), then runs,
# alternately and RUNS times each (default 5): `alertflow run examples/pipeline.toml` (NDJSON
# → 1-minute tumbling window by tenant/host/name → zstd Parquet) with WORKERS workers (default
# 2), and DuckDB's `COPY (SELECT … GROUP BY ts // 60000, tenant, host, name) TO … (FORMAT
# parquet)` straight from the NDJSON with as many threads. Prints every run and the medians.
# Usage: scripts/bench-w1.sh [RUNS] [WORKERS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
workers=${2:-2}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/alertflow/target}"
cargo build --release --bin alertflow >&2
bin="$CARGO_TARGET_DIR/release/alertflow"
py=$(scripts/python-env.sh)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$bin" gen metrics --series 10000 --points 2000000 --seed 1 --disorder 2s --out "$dir/points.ndjson"
cp examples/pipeline.toml "$dir/"
cat "$dir/points.ndjson" > /dev/null # warm the page cache for both

now() { date +%s.%N; }
af=()
dk=()
for i in $(seq "$runs"); do
  t0=$(now)
  "$bin" run "$dir/pipeline.toml" --workers "$workers" --json > "$dir/summary.json"
  t1=$(now)
  af+=("$(awk "BEGIN{print $t1 - $t0}")")
  t0=$(now)
  "$py" - "$dir" "$workers" <<'PY'
import duckdb, sys
d, threads = sys.argv[1], int(sys.argv[2])
con = duckdb.connect()
con.execute(f"SET threads = {threads}")
con.execute(f"""
COPY (
  SELECT to_timestamp((ts // 60000) * 60) AS window_start, tenant, host, name,
         count(*) AS count, sum(value) AS sum, min(value) AS min, max(value) AS max, avg(value) AS avg
  FROM read_json('{d}/points.ndjson', format = 'newline_delimited',
                 columns = {{ts: 'BIGINT', tenant: 'VARCHAR', host: 'VARCHAR', name: 'VARCHAR', value: 'DOUBLE'}})
  GROUP BY ts // 60000, tenant, host, name
) TO '{d}/duckdb.parquet' (FORMAT parquet, COMPRESSION zstd)""")
PY
  t1=$(now)
  dk+=("$(awk "BEGIN{print $t1 - $t0}")")
  printf 'run %d: alertflow %.3f s, duckdb %.3f s\n' "$i" "${af[-1]}" "${dk[-1]}"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ma=$(median "${af[@]}")
md=$(median "${dk[@]}")
rows=$(grep -o '"rows": [0-9]*' "$dir/summary.json" | head -1 | grep -o '[0-9]*')
printf 'median over %d runs, %d workers/threads, 2,000,000 points (per_minute rows: %s):\n' "$runs" "$workers" "$rows"
printf '  alertflow  %.3f s  %.2f M points/s\n' "$ma" "$(awk "BEGIN{print 2 / $ma}")"
printf '  duckdb     %.3f s  %.2f M points/s\n' "$md" "$(awk "BEGIN{print 2 / $md}")"
printf '  ratio alertflow/duckdb rate: %.2f\n' "$(awk "BEGIN{print $md / $ma}")"
