#!/usr/bin/env bash
# The docs suite (scripts/test runs it after cargo test): every example of
# docs/*.md, run by run-docs.mjs against the broker binary that cargo built,
# with nginx, redis-server, sqlite3 and curl for the proxy, cluster and
# backup examples. Installs from Debian whatever of these is missing.
set -euo pipefail
cd "$(dirname "$0")"
root="$(cd ../.. && pwd)"
source ../suite-lib.sh

ensure_node
ensure_nginx
# The examples' other tools: redis-server (cluster), sqlite3 (backups), curl,
# jq (analytics, reference), python3 (the webhook receiver of notifications).
for tool in redis-server sqlite3 curl jq python3; do
  command -v "$tool" >/dev/null || apt_install "$tool"
done
find_broker "$root"

npm ci --no-audit --no-fund
TEST_BROKER_BIN="$BROKER_BIN" node run-docs.mjs "$@"
