#!/usr/bin/env bash
# Issue 3's memory target: 1,000,000 open fingerprints in at most 1 GiB of RSS.
#
# Writes N (default 1,000,000) distinct alerts — 10 tenants, 20 alert names, 500 services, one
# instance each — firing once within 4 minutes of event time, so with `resolve_timeout = 5m`
# all are open together; then runs, RUNS times (default 3), `alertflow run` with dedup,
# suppress and correlate at their defaults, 1-minute Parquet files, WORKERS workers (default
# 2), and prints each run's wall time and peak RSS (`/usr/bin/time`).
# Usage: scripts/bench-open-alerts.sh [RUNS] [WORKERS] [N]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
workers=${2:-2}
n=${3:-1000000}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/alertflow/target}"
cargo build --release --bin alertflow >&2
bin="$CARGO_TARGET_DIR/release/alertflow"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
python3 - "$dir/alerts.ndjson" "$n" <<'PY'
import json, sys
path, n = sys.argv[1], int(sys.argv[2])
t0 = 1767225600000  # 2026-01-01T00:00:00Z
with open(path, "w") as f:
    for i in range(n):
        f.write(json.dumps({
            "ts": t0 + i * 240_000 // n, "tenant": f"t{i % 10}", "alertname": f"Alert{i % 20}",
            "severity": "warning", "status": "firing", "service": f"svc{i % 500}",
            "instance": f"host-{i}", "annotations": {"summary": "something is wrong"},
        }) + "\n")
PY
cat > "$dir/p.toml" <<'TOML'
[[source]]
name = "alerts"
type = "file"
path = "alerts.ndjson"
records = "alerts"

[dedup]
resolve_timeout = "5m"

[output]
path = "out"
file_span = "1m"
TOML
cat "$dir/alerts.ndjson" > /dev/null # page cache
for i in $(seq "$runs"); do
  rm -rf "$dir/out"
  /usr/bin/time -f "run $i: %e s, peak RSS %M KB" "$bin" run "$dir/p.toml" --workers "$workers" > /dev/null
done
