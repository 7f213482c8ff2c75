#!/usr/bin/env bash
# Run every test: installs and starts what the tests need, then runs the
# whole workspace's tests (unit, end-to-end against the real binary, real
# RabbitMQ and a real SNS API emulator, the docs, OpenAPI and deploy
# checks) and the doc tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# tests/openapi.rs runs schemathesis against the release binary, what users
# run (it fails, saying so, when target/release/event-pusher is missing).
cargo build --release --bin event-pusher
cargo nextest run --workspace --all-targets --no-fail-fast "$@"
cargo test --workspace --doc --quiet
