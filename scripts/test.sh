#!/usr/bin/env bash
# The test command of the README. Builds the release binary, prepares the independent Python
# checkers (DuckDB + pyarrow, in a virtualenv under ~/.cache), then runs every test of the
# workspace. Extra arguments go to `cargo test` (e.g. `scripts/test.sh -p alertflow-model`).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/alertflow/target}"

if py=$(scripts/python-env.sh); then
  export ALERTFLOW_PYTHON="$py"
elif [ "${CI:-}" = "true" ]; then
  echo "error: the Python checkers (DuckDB, pyarrow) could not be installed" >&2
  exit 1
else
  echo "warning: the Python checkers could not be installed; tests that need them will say so and skip" >&2
fi

cargo build --release --bin alertflow
export ALERTFLOW_BIN="$CARGO_TARGET_DIR/release/alertflow"
cargo test --release --workspace "$@"
