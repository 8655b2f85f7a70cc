#!/usr/bin/env bash
# Prepares the Python environment of the independent oracles (tests/python/*.py): a virtualenv
# with duckdb, pyarrow and kafka-python (the foreign Kafka client of the end-to-end test).
# Prints the venv's python path as its only stdout line, e.g.
#   PY=$(scripts/python-env.sh) && "$PY" tests/python/check_window.py …
# Idempotent: the second run only checks that both modules import (no pip call).
# Location: $ALERTFLOW_VENV (default ~/.cache/alertflow/venv). Python: $PYTHON (default python3).
set -euo pipefail

venv="${ALERTFLOW_VENV:-$HOME/.cache/alertflow/venv}"
python="${PYTHON:-python3}"
py="$venv/bin/python"

# Everything but the final path goes to stderr, so callers can capture stdout.
if [[ ! -x "$py" ]]; then
    if ! command -v "$python" >/dev/null 2>&1; then
        echo "error: $python not found (install python3, e.g. apt-get install python3 python3-venv)" >&2
        exit 1
    fi
    mkdir -p "$(dirname "$venv")"
    if ! "$python" -m venv "$venv" >&2; then
        rm -rf "$venv"
        echo "error: '$python -m venv' failed; on Debian/Ubuntu: apt-get install python3-venv" >&2
        exit 1
    fi
fi

if ! "$py" -c 'import duckdb, pyarrow, pyarrow.dataset, kafka' >/dev/null 2>&1; then
    echo "installing duckdb, pyarrow and kafka-python into $venv …" >&2
    "$py" -m pip install --quiet --disable-pip-version-check "duckdb==2.0.0" "pyarrow==26.0.1" "kafka-python==3.0.12" >&2
    "$py" -c 'import duckdb, pyarrow, pyarrow.dataset, kafka' >&2
fi

echo "$py"
