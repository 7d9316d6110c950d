#!/usr/bin/env bash
# What the shared tier costs and saves: warm `go mod download all` from a
# gateway's own directory vs from the bucket, and cold with and without the
# shared tier (see benches/shared_tier.rs). Loopback only; the bucket is a
# SeaweedFS server the bench starts. MODGATE_BENCH_ROUNDS=N for more rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/test-deps.sh
export PATH="$PWD/target/test-tools/go/bin:$PATH"
exec cargo bench --bench shared_tier
