#!/usr/bin/env bash
# The test command of the README. Builds the release binary, prepares the independent Python
# checkers (DuckDB + pyarrow + kafka-python, in a virtualenv under ~/.cache) and a loopback Kafka
# broker (Tansu, scripts/kafka-broker.sh), then runs every test of the workspace. Extra
# arguments go to `cargo test` (e.g. `scripts/test.sh -p alertflow-model`).
set -euo pipefail
cd "$(dirname "$0")/.."
# Cargo's own target folder (shared with `cargo run --release -- demo`) unless CARGO_TARGET_DIR
# says otherwise; CI points it at ~/.cache so later runs on the same machine are fast.
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"

if py=$(scripts/python-env.sh); then
  export ALERTFLOW_PYTHON="$py"
elif [ "${CI:-}" = "true" ]; then
  echo "error: the Python checkers (DuckDB, pyarrow) could not be installed" >&2
  exit 1
else
  echo "warning: the Python checkers could not be installed; tests that need them will say so and skip" >&2
fi

# A Kafka-compatible broker (Tansu) on loopback for the Kafka end-to-end tests.
if kafka=$(scripts/kafka-broker.sh); then
  export ALERTFLOW_KAFKA="$kafka"
elif [ "${CI:-}" = "true" ]; then
  echo "error: the Kafka broker (scripts/kafka-broker.sh) could not be started" >&2
  exit 1
else
  echo "warning: no Kafka broker; the Kafka end-to-end tests will say so and skip" >&2
fi

# Foreign PostgreSQL clients for the serving tests, installed once if missing (the tests skip
# without them, except in CI where they fail): `psql` (Debian's postgresql-client), the
# PostgreSQL JDBC driver with a JDK to compile its client (default-jdk-headless,
# libpostgresql-jdbc-java), as Java BI tools connect, and the psqlODBC driver with unixODBC's
# `isql` (odbc-postgresql, unixodbc). Also Prometheus (below).
missing=()
command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
command -v javac >/dev/null 2>&1 || missing+=(default-jdk-headless)
[ -f /usr/share/java/postgresql.jar ] || missing+=(libpostgresql-jdbc-java)
command -v isql >/dev/null 2>&1 || missing+=(unixodbc)
[ -f /usr/lib/x86_64-linux-gnu/odbc/psqlodbcw.so ] || missing+=(odbc-postgresql)
# A real Prometheus server (2.42) for the push-ingest test: it scrapes alertflow, sends it
# alerts as to an Alertmanager, and remote-writes its samples to it.
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  if ! { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
    echo "warning: could not install ${missing[*]} (apt-get failed); the tests needing them will skip (and fail in CI)" >&2
  fi
fi

cargo build --release --bin alertflow
export ALERTFLOW_BIN="$target_dir/release/alertflow"
cargo test --release --workspace "$@"
if [ -n "${ALERTFLOW_PYTHON:-}" ]; then
  "$ALERTFLOW_PYTHON" tests/python/test_check_window.py
fi
