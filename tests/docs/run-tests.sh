#!/usr/bin/env bash
# The docs suite (scripts/test runs it after cargo test): every example of
# docs/*.md, run by run-docs.mjs against the broker binary that cargo built,
# with nginx and redis-server for the proxy and cluster examples. Installs
# Node and nginx from Debian when they are missing.
set -euo pipefail
cd "$(dirname "$0")"
root="$(cd ../.. && pwd)"
source ../suite-lib.sh

ensure_node
ensure_nginx
# scripts/test installs redis-server; the cluster examples need it.
command -v redis-server >/dev/null || apt_install redis-server
find_broker "$root"

npm ci --no-audit --no-fund
TEST_BROKER_BIN="$BROKER_BIN" node run-docs.mjs "$@"
