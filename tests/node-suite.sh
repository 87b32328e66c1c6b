# Sourced by the Node suites' run-tests.sh (sse-node, api-spec), from their
# own folder: Node 18 or newer (installed from Debian when missing), the
# broker binary that cargo built in $bin (built when missing), and the npm
# packages of the folder's package-lock.json.

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
