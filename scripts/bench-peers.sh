#!/usr/bin/env bash
# Measures modgate side by side with other forward proxies and with no proxy,
# on the forward-proxy benchmark harness (W1 tunnel throughput, W2 tunnel
# setup rate, W3 forwarded requests, W4 memory per idle tunnel, W5 big
# headers), and prints its table of medians with modgate as `custom`.
#
#   scripts/bench-peers.sh HARNESS_DIR [harness options]
#   scripts/bench-peers.sh ../bench --rounds 2 --proxies direct,squid,custom
#   scripts/bench-peers.sh ../bench --rounds 1 --proxies squid,custom --only W2,W3
#
# HARNESS_DIR holds the harness's run.sh (it starts its own nginx origin on
# 127.0.0.1:18080/18443 and the peers it compares). modgate is built in
# release and run as an office runs it: the JSON access log on, written to a
# file; interception and the module cache off (the workloads are plain
# tunnels and forwards); `deny_destinations = []` because the origin is on
# loopback. The JSON results go to target/bench/peers-<date>.json.
set -euo pipefail
cd "$(dirname "$0")/.."

harness="${1:?usage: scripts/bench-peers.sh HARNESS_DIR [harness options]}"
shift
[ -x "$harness/run.sh" ] || { echo "no run.sh in $harness" >&2; exit 2; }
[ $# -gt 0 ] || set -- --rounds 2 --proxies direct,squid,custom

cargo build --release --quiet
work="$PWD/target/bench"
mkdir -p "$work"
port=19000
cat > "$work/modgate-bench.toml" <<EOF
[proxy]
listen = ["127.0.0.1:$port"]
allow_clients = ["127.0.0.0/8"]
deny_destinations = []
connect_ports = [18080, 18443]
max_connections = 50000
max_connections_per_client = 50000
[intercept]
enabled = false
[gomod]
verify = "off"
[cache]
enabled = false
[admin]
listen = ""
[log]
access_log = "$work/access.log"
EOF
rm -f "$work/access.log"
out="$work/peers-$(date +%F)-$(git rev-parse --short HEAD).json"
PROXY_CMD="$PWD/target/release/modgate run --config $work/modgate-bench.toml" \
PROXY_PORT=$port "$harness/run.sh" peers --out "$out" "$@"
echo "access log lines written: $(wc -l < "$work/access.log")"
