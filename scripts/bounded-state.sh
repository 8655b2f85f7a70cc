#!/usr/bin/env bash
# Bounded state under unbounded key cardinality: N points (default 50,000,000), every one of a
# series never seen before (host h0 … hN-1, one point each, spread over one day of event time),
# through a 1-minute window by host and an anomaly detector on every series, with the default
# state bounds. Prints the run summary (peak RSS, what the bounds did) as JSON on stdout.
#
# The generated file takes about 95 bytes per point (≈ 4.5 GiB for 50 M) under a temporary
# folder (TMPDIR), removed at the end.
# Usage: scripts/bounded-state.sh [POINTS] [WORKERS]
set -euo pipefail
cd "$(dirname "$0")/.."
points=${1:-50000000}
workers=${2:-2}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/alertflow/target}"
cargo build --release --bin alertflow >&2
bin="$CARGO_TARGET_DIR/release/alertflow"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$bin" gen metrics --series "$points" --points "$points" --interval 1d --disorder 2s --seed 3 --out "$dir/points.ndjson" >&2
cat > "$dir/pipeline.toml" <<'TOML'
[[source]]
name = "points"
type = "file"
path = "points.ndjson"
records = "metrics"

[[aggregate]]
name = "per_minute"
input = "points"
window = { type = "tumbling", size = "1m" }
group_by = ["host"]
functions = ["count", "avg", "p99"]

[[detect]]
name = "anomalies"
input = "points"
detector = "zscore"

[output]
path = "out"
TOML
"$bin" run "$dir/pipeline.toml" --workers "$workers" --json
