#!/usr/bin/env bash
# Run every test: installs and starts what the tests need, then runs the
# whole workspace's tests (unit, end-to-end against the real binary, real
# RabbitMQ and a real SNS API emulator) and the doc tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo nextest run --workspace --all-targets --no-fail-fast "$@"
cargo test --workspace --doc --quiet
