#!/usr/bin/env bash
# Cold and warm `pip install` through modgate's PyPI endpoint against the
# same pip straight to the same local mirror (see benches/pypi_cache.rs).
# Loopback only. MODGATE_BENCH_ROUNDS=N for more rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/test-deps.sh
exec cargo bench --bench pypi_cache
