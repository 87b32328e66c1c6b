#!/usr/bin/env bash
# The API reference suite (scripts/test runs it after cargo test): the
# AsyncAPI document of GET /api/ws and the OpenAPI document of
# GET /api/openapi.json, fetched from the broker binary that cargo built and
# validated by @asyncapi/parser and @apidevtools/swagger-parser from npm
# (versions pinned by package-lock.json); then the broker's real answers are
# checked against the documented schemas with Ajv. Installs Node from Debian
# when it is missing.
set -euo pipefail
cd "$(dirname "$0")"
root="$(cd ../.. && pwd)"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "installing nodejs and npm"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq nodejs npm >/dev/null
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 18 ]; then
  echo "Node 18 or newer is needed (fetch, node --test); found $(node --version)"
  exit 1
fi

target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac
bin="${AGENT_EVENTS_BIN:-$target_dir/debug/agent-events}"
if [ ! -x "$bin" ]; then
  (cd "$root" && cargo build --bin agent-events)
fi

npm ci --no-audit --no-fund
AGENT_EVENTS_BIN="$bin" node --test spec.test.mjs
