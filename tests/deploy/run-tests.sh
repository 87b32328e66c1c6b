#!/usr/bin/env bash
# The deployment suite (scripts/test runs it after cargo test): the shipped
# nginx configuration in front of the broker binary that cargo built, and the
# shipped systemd unit checked by systemd-analyze. Installs nginx (and Node)
# from Debian when they are missing.
set -euo pipefail
cd "$(dirname "$0")"
root="$(cd ../.. && pwd)"

source ../suite-lib.sh

ensure_node
ensure_nginx
echo "nginx: $NGINX_BIN ($("$NGINX_BIN" -v 2>&1))"
find_broker "$root"
bin="$BROKER_BIN"

# The unit: systemd-analyze checks its syntax and directives. It also wants
# ExecStart's binary, User= and EnvironmentFile to exist, which only an
# installed system has, so it checks a copy pointing at the built binary.
if command -v systemd-analyze >/dev/null; then
  unit_dir="$(mktemp -d)"
  trap 'rm -rf "$unit_dir"' EXIT
  sed -e "s|^ExecStart=.*|ExecStart=$bin|" \
      -e "s|^User=.*|User=root|" -e "s|^Group=.*|Group=root|" \
      -e "s|^EnvironmentFile=.*|EnvironmentFile=-$unit_dir/env|" \
      "$root/deploy/agent-events.service" > "$unit_dir/agent-events.service"
  grep -q "^ExecStart=$bin\$" "$unit_dir/agent-events.service"
  # verify exits 0 on an unknown or unparsable directive and only warns, so
  # any warning fails the suite.
  if out="$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no "$unit_dir/agent-events.service" 2>&1)" && [ -z "$out" ]; then
    echo "systemd-analyze verify: deploy/agent-events.service is valid"
  else
    echo "$out"
    echo "systemd-analyze verify: deploy/agent-events.service has the problems above"
    exit 1
  fi
else
  echo "systemd-analyze is not installed: the systemd unit is not verified"
fi

npm ci --no-audit --no-fund
TEST_BROKER_BIN="$bin" node --test nginx.test.mjs
