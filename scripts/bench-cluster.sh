#!/usr/bin/env bash
# Scaling: the foundation's W1 run (2,000,000 points, examples/pipeline.toml: NDJSON → 1-minute
# tumbling window by host → zstd Parquet) with 1, 2 and 4 worker threads in one process, and
# as a cluster of 2 processes × 1 worker on loopback (timely's TCP between them), RUNS times
# each (default 3), alternating. Prints every run's wall time and throughput, then the medians.
# The exchange cost per record is (2 processes − 2 threads) / 2,000,000 points. Then 2 threads
# and 2 processes × 1 again with checkpoints (state_dir, the default 10 s interval, at most
# one per 100 ms of wall time: several per run): what the cluster's checkpoint coordination
# costs over one process's.
# Usage: scripts/bench-cluster.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/alertflow/target}"
cargo build --release --bin alertflow >&2
bin="$CARGO_TARGET_DIR/release/alertflow"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$bin" gen metrics --series 10000 --points 2000000 --seed 1 --disorder 2s --out "$dir/points.ndjson"
cp examples/pipeline.toml "$dir/"
mkdir -p "$dir/ckpt"
{ printf '[engine]\nstate_dir = "state"\ncheckpoint_min_wall_interval = "100ms"\n\n'; sed 's#path = "points.ndjson"#path = "../points.ndjson"#' examples/pipeline.toml; } > "$dir/ckpt/pipeline.toml"
cat "$dir/points.ndjson" > /dev/null # warm the page cache
points=2000000

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
declare -A times
for i in $(seq "$runs"); do
  for w in 1 2 4; do
    t0=$(now)
    "$bin" run "$dir/pipeline.toml" --workers "$w" --json > /dev/null
    t1=$(now)
    times["threads-$w"]+="$(awk "BEGIN{print $t1 - $t0}") "
  done
  for p in "$dir/pipeline.toml" "$dir/ckpt/pipeline.toml"; do
    suffix=""
    if [[ "$p" == */ckpt/* ]]; then
      suffix="-ckpt"
      t0=$(now)
      "$bin" run "$p" --workers 2 --json > /dev/null
      t1=$(now)
      times["threads-2$suffix"]+="$(awk "BEGIN{print $t1 - $t0}") "
    fi
    printf '127.0.0.1:%s\n127.0.0.1:%s\n' "$(free_port)" "$(free_port)" > "$dir/hosts.txt"
    t0=$(now)
    "$bin" run "$p" --workers 1 --processes 2 --process-id 1 --hostfile "$dir/hosts.txt" --json > /dev/null &
    other=$!
    "$bin" run "$p" --workers 1 --processes 2 --process-id 0 --hostfile "$dir/hosts.txt" --json > /dev/null
    wait "$other"
    t1=$(now)
    times["processes-2x1$suffix"]+="$(awk "BEGIN{print $t1 - $t0}") "
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
for k in threads-1 threads-2 threads-4 processes-2x1 threads-2-ckpt processes-2x1-ckpt; do
  m=$(echo "${times[$k]}" | median)
  printf '%-14s runs: %s  median %.3f s = %.2f M points/s\n' "$k" "${times[$k]}" "$m" "$(awk "BEGIN{print $points / $m / 1e6}")"
done
t2=$(echo "${times[threads-2]}" | median)
p2=$(echo "${times[processes-2x1]}" | median)
printf 'exchange cost: (%.3f - %.3f) s / %d points = %.0f ns per point\n' "$p2" "$t2" "$points" "$(awk "BEGIN{print ($p2 - $t2) / $points * 1e9}")"
