#!/usr/bin/env bash
# The monitor's tests: Node unit tests of /client.js, the page's model and the
# replay player, then the end-to-end test of the monitor in headless Chromium
# against the broker binary that `cargo test` built. Installs what a fresh
# machine lacks (Debian's chromium, the npm packages); needs Node 20+.
set -euo pipefail
cd "$(dirname "$0")"

log() { printf '\n== browser: %s\n' "$*"; }

ensure_chromium() {
  [ -x "${CHROMIUM_PATH:-/usr/bin/chromium}" ] && return
  log "installing chromium"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
}

ensure_broker() {
  local bin="${TEST_BROKER_BIN:-../../target/debug/agent-events}"
  [ -x "$bin" ] && return
  log "building the broker"
  (cd ../.. && cargo build --quiet)
}

command -v node >/dev/null || { echo "node (20 or later) is required"; exit 1; }
ensure_chromium
ensure_broker

log "npm ci"
# playwright-core never downloads a browser; the variable makes sure of it.
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error

log "node --test"
node --test --test-concurrency=1 client.test.mjs model.test.mjs monitor.e2e.test.mjs analytics.e2e.test.mjs eventsource.e2e.test.mjs
