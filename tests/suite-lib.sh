# Shared by the tests/*/run-tests.sh suites (sourced, not run): install what a
# suite needs from Debian when it is missing, and find the broker binary that
# cargo test built. Root on CI, so apt-get runs directly.

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "$@" >/dev/null
}

# Node 18 or newer, with npm.
ensure_node() {
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "installing nodejs and npm"
    apt_install nodejs npm
  fi
  local major
  major="$(node -p 'process.versions.node.split(".")[0]')"
  if [ "$major" -lt 18 ]; then
    echo "Node 18 or newer is needed (fetch, node --test); found $(node --version)"
    exit 1
  fi
}

# nginx; sets NGINX_BIN (it lives in /usr/sbin, which a non-login PATH may lack).
ensure_nginx() {
  NGINX_BIN="$(PATH="$PATH:/usr/sbin:/sbin" command -v nginx || true)"
  if [ -z "$NGINX_BIN" ]; then
    echo "installing nginx"
    # Debian's package also enables a default site on port 80; no test uses it.
    apt_install nginx-light || apt_install nginx
    NGINX_BIN="$(PATH="$PATH:/usr/sbin:/sbin" command -v nginx)"
  fi
  export NGINX_BIN
}

# The broker binary (TEST_BROKER_BIN, or the debug build of the workspace at
# $1, built if missing); sets BROKER_BIN.
find_broker() {
  local root="$1" target_dir="${CARGO_TARGET_DIR:-target}"
  case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac
  BROKER_BIN="${TEST_BROKER_BIN:-$target_dir/debug/agent-events}"
  if [ ! -x "$BROKER_BIN" ]; then
    (cd "$root" && cargo build --bin agent-events)
  fi
  export BROKER_BIN
}
