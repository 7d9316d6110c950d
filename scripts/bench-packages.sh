#!/usr/bin/env bash
# Cold and warm `pip install` and `npm install` through modgate's endpoints
# against the same client straight to the same local mirror (see
# benches/packages_cache.rs).
# Loopback only. MODGATE_BENCH_ROUNDS=N for more rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/test-deps.sh
exec cargo bench --bench packages_cache
