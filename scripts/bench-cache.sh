#!/usr/bin/env bash
# Cold and warm `go mod download all` through modgate's module cache, each
# path against the same client straight to the same local mirror (see
# benches/gomod_cache.rs). Loopback only. MODGATE_BENCH_ROUNDS=N for more rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/test-deps.sh
export PATH="$PWD/target/test-tools/go/bin:$PATH"
exec cargo bench --bench gomod_cache
