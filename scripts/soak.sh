#!/usr/bin/env bash
# The soak: modgate's release binary under tunnels, forwards, intercepted
# cold and warm module downloads, a failing and stalling mirror and a
# reload every 30 s, all at once, for MINUTES (default 10, at most 240).
# Prints requests, errors, p99, RSS and open descriptors every minute;
# exits 1 on any error that is not an injected failure, on a reload that
# did not take, or on RSS or descriptor growth from minute 2 to the end.
# Everything runs on loopback. Needs what scripts/test.sh installs.
#
#   scripts/soak.sh [MINUTES]
set -euo pipefail
cd "$(dirname "$0")/.."

minutes="${1:-10}"
if ! [[ "$minutes" =~ ^[0-9]+$ ]] || (( minutes < 1 || minutes > 240 )); then
    echo "usage: scripts/soak.sh [MINUTES]   (1 to 240, default 10)" >&2
    exit 2
fi
MODGATE_SOAK_MINUTES="$minutes" cargo bench --quiet --bench soak
