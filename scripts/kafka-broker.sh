#!/usr/bin/env bash
# A Kafka-compatible broker on loopback for the end-to-end tests and benchmarks: Tansu 0.6
# (Apache-licensed, written in Rust, installed from crates.io), in-memory storage.
#
#   scripts/kafka-broker.sh            installs Tansu if needed, starts it (if not already
#                                      listening) and prints the broker address on stdout
#   scripts/kafka-broker.sh --install  only installs
#   scripts/kafka-broker.sh --stop     stops the broker this script started
#
# The binary is cached under ~/.cache/alertflow/tools (its cold build takes ~12 minutes on two
# cores), the broker's pid and log under ~/.cache/alertflow/tansu. Port: $ALERTFLOW_KAFKA_PORT
# (default 19092).
set -euo pipefail
tools="${ALERTFLOW_TOOLS:-$HOME/.cache/alertflow/tools}"
state="$HOME/.cache/alertflow/tansu"
port="${ALERTFLOW_KAFKA_PORT:-19092}"
bin="$tools/bin/tansu"
mkdir -p "$state"

install() {
    if [[ -x "$bin" ]]; then
        return
    fi
    echo "installing tansu 0.6 into $tools (about 12 minutes cold) …" >&2
    nice -n 19 \
        cargo install tansu --version '^0.6' --locked --features dynostore --root "$tools" >&2
}

listening() {
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}

case "${1:-}" in
    --install)
        install
        exit 0
        ;;
    --stop)
        if [[ -f "$state/pid" ]]; then
            kill "$(cat "$state/pid")" 2>/dev/null || true
            rm -f "$state/pid"
        fi
        exit 0
        ;;
esac

install
if ! listening; then
    "$bin" broker \
        --storage-engine "memory://tansu/" \
        --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://127.0.0.1:$port" \
        >"$state/broker.log" 2>&1 &
    echo $! >"$state/pid"
    for _ in $(seq 100); do
        listening && break
        sleep 0.1
    done
    if ! listening; then
        echo "error: tansu did not start listening on 127.0.0.1:$port; see $state/broker.log" >&2
        exit 1
    fi
fi
echo "127.0.0.1:$port"
