#!/usr/bin/env bash
# The docs suite (scripts/test runs it after cargo test): every example of
# docs/*.md, run by run-docs.mjs against the broker binary that cargo built
# (with nginx and redis-server for the proxy and cluster examples). Installs
# Node and nginx from Debian when they are missing.
set -euo pipefail
cd "$(dirname "$0")"
root="$(cd ../.. && pwd)"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "installing nodejs and npm"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq nodejs npm >/dev/null
fi
# nginx for the reverse-proxy examples (tests/deploy installs it too).
if ! PATH="$PATH:/usr/sbin:/sbin" command -v nginx >/dev/null; then
  echo "installing nginx"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq nginx-light >/dev/null || apt-get install -y -qq nginx >/dev/null
fi
# scripts/test installs redis-server; the cluster examples need it.
command -v redis-server >/dev/null || { echo "redis-server is needed for the cluster examples (scripts/test installs it)"; exit 1; }

target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac
bin="${TEST_BROKER_BIN:-$target_dir/debug/agent-events}"
if [ ! -x "$bin" ]; then
  (cd "$root" && cargo build --bin agent-events)
fi

npm ci --no-audit --no-fund
TEST_BROKER_BIN="$bin" node run-docs.mjs "$@"
