#!/usr/bin/env bash
# The deployment suite (scripts/test runs it after cargo test): the shipped
# nginx configuration in front of the broker binary that cargo built, and the
# shipped systemd unit checked by systemd-analyze. Installs nginx (and Node)
# from Debian when they are missing.
set -euo pipefail
cd "$(dirname "$0")"
root="$(cd ../.. && pwd)"

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "$@" >/dev/null
}

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "installing nodejs and npm"
  apt_install nodejs npm
fi
# nginx is usually in /usr/sbin, which a non-login PATH may lack.
nginx_bin="$(PATH="$PATH:/usr/sbin:/sbin" command -v nginx || true)"
if [ -z "$nginx_bin" ]; then
  echo "installing nginx"
  # Debian's package starts a default site on port 80; the test never uses it.
  apt_install nginx-light || apt_install nginx
  nginx_bin="$(PATH="$PATH:/usr/sbin:/sbin" command -v nginx)"
fi
echo "nginx: $nginx_bin ($("$nginx_bin" -v 2>&1))"

target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac
bin="${TEST_BROKER_BIN:-$target_dir/debug/agent-events}"
if [ ! -x "$bin" ]; then
  (cd "$root" && cargo build --bin agent-events)
fi

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
  if out="$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no "$unit_dir/agent-events.service" 2>&1)"; then
    echo "systemd-analyze verify: deploy/agent-events.service is valid"
  else
    echo "$out"
    echo "systemd-analyze verify failed on deploy/agent-events.service"
    exit 1
  fi
else
  echo "systemd-analyze is not installed: the systemd unit is not verified"
fi

npm ci --no-audit --no-fund
TEST_BROKER_BIN="$bin" NGINX_BIN="$nginx_bin" node --test nginx.test.mjs
