#!/usr/bin/env bash
# Install and start what the tests need: RabbitMQ running on 127.0.0.1:5672
# with the consistent-hash exchange plugin, PostgreSQL on 127.0.0.1:5432,
# moto_server (the SNS/SQS emulator), http_ece, standardwebhooks, websockets
# and zstandard from PyPI,
# cargo-nextest, and Debian's
# chromium + chromium-driver for the status page's browser test.
# Safe to run again: each step checks first.
set -euo pipefail

log() { echo "setup: $*" >&2; }

# RabbitMQ (installed on this machine kind; started if it is down).
if ! rabbitmqctl -q status >/dev/null 2>&1; then
  log "starting RabbitMQ"
  rabbitmq-server -detached >/dev/null 2>&1 || true
fi
if ! timeout 120 rabbitmqctl -q await_startup >/dev/null 2>&1; then
  log "RabbitMQ did not start"; exit 1
fi
# A test may have stopped the app (stop_app) and died before starting it again.
rabbitmqctl -q start_app >/dev/null 2>&1 || true
log "RabbitMQ is up"
# The scale-out source's exchange type (x-consistent-hash); enabling an
# enabled plugin is a no-op.
if ! rabbitmq-plugins list -e -m 2>/dev/null | grep -qx rabbitmq_consistent_hash_exchange; then
  log "enabling rabbitmq_consistent_hash_exchange"
  rabbitmq-plugins enable rabbitmq_consistent_hash_exchange >/dev/null
fi

# PostgreSQL for the cluster store's tests (cluster/tests): the machine's
# server on 127.0.0.1:5432, user postgres with trust auth; each test creates
# and drops its own database. Started if it is down.
if ! pg_isready -q -h 127.0.0.1 -p 5432 >/dev/null 2>&1; then
  log "starting PostgreSQL"
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    for version in $(ls /etc/postgresql); do
      pg_ctlcluster --skip-systemctl-redirect "$version" main start >/dev/null 2>&1 || true
    done
  else
    service postgresql start >/dev/null 2>&1 || true
  fi
  for _ in $(seq 1 60); do
    pg_isready -q -h 127.0.0.1 -p 5432 >/dev/null 2>&1 && break
    sleep 1
  done
fi
if ! pg_isready -q -h 127.0.0.1 -p 5432 >/dev/null 2>&1; then
  log "PostgreSQL did not start (127.0.0.1:5432)"; exit 1
fi
log "PostgreSQL is up"

# moto_server for the SNS backend's tests.
if ! command -v moto_server >/dev/null 2>&1; then
  log "installing moto[server] from PyPI"
  python3 -m pip install --quiet --disable-pip-version-check 'moto[server]>=5,<6'
fi
command -v moto_server >/dev/null 2>&1 || { log "moto_server not on PATH after install"; exit 1; }
log "moto_server: $(command -v moto_server)"

# http_ece (and cryptography) for the Web Push provider's tests: an
# independent RFC 8291 decryptor and VAPID signature check
# (backends/tests/fixtures/push/webpush_browser.py).
if ! python3 -c 'import http_ece, cryptography' >/dev/null 2>&1; then
  log "installing http_ece from PyPI"
  python3 -m pip install --quiet --disable-pip-version-check 'http_ece>=1.1,<2' 'cryptography>=41'
fi
python3 -c 'import http_ece, cryptography' || { log "http_ece not importable after install"; exit 1; }

# An independent gateway peer for tests/gateway_compression.rs
# (tests/fixtures/gateway/compressed_peer.py): the websockets client, and
# zstandard to decode `compress=zstd-stream` (zlib is in the standard library).
if ! python3 -c 'import websockets.sync.client, zstandard' >/dev/null 2>&1; then
  log "installing websockets and zstandard from PyPI"
  python3 -m pip install --quiet --disable-pip-version-check 'websockets>=13,<16' 'zstandard>=0.22,<1'
fi
python3 -c 'import websockets.sync.client, zstandard' || { log "websockets/zstandard not importable after install"; exit 1; }

# The test runner.
if ! cargo nextest --version >/dev/null 2>&1; then
  log "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

# Chromium and its WebDriver for the status page's browser test
# (tests/status_page.rs). Debian's packages: nothing downloads a browser build.
if ! command -v chromedriver >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then
  log "installing chromium and chromium-driver"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver
fi
log "chromedriver: $(command -v chromedriver)"

# The Standard Webhooks reference library, to verify subscription
# deliveries' signatures in tests/webhooks.rs.
if ! python3 -c 'import standardwebhooks' >/dev/null 2>&1; then
  log "installing standardwebhooks from PyPI"
  python3 -m pip install --quiet --disable-pip-version-check 'standardwebhooks>=1.0,<2'
fi
python3 -c 'import standardwebhooks' || { log "standardwebhooks not importable after install"; exit 1; }

# The docs and deploy checks (tests/openapi.rs, tests/deploy.rs):
# schemathesis drives the release binary against docs/openapi.json;
# kubernetes-validate checks deploy/kubernetes offline (it ships the
# Kubernetes schemas); promtool (Debian's prometheus) checks and unit-tests
# deploy/prometheus/alerts.yml.
if ! command -v schemathesis >/dev/null 2>&1 || ! command -v kubernetes-validate >/dev/null 2>&1; then
  log "installing schemathesis and kubernetes-validate from PyPI"
  python3 -m pip install --quiet --disable-pip-version-check 'schemathesis>=4.1,<5' 'kubernetes-validate>=1.30,<2'
fi
command -v schemathesis >/dev/null 2>&1 || { log "schemathesis not on PATH after install"; exit 1; }
command -v kubernetes-validate >/dev/null 2>&1 || { log "kubernetes-validate not on PATH after install"; exit 1; }
if ! command -v promtool >/dev/null 2>&1; then
  log "installing prometheus (for promtool)"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus
fi
log "promtool: $(command -v promtool)"
