#!/usr/bin/env bash
# The Node suite (scripts/test runs it after cargo test): a real EventSource
# client and the AG-UI schemas of @ag-ui/core, both from npm, against the
# broker binary that cargo built (../node-suite.sh: Node, the binary, npm ci).
set -euo pipefail
cd "$(dirname "$0")"
source ../node-suite.sh
AGENT_EVENTS_BIN="$bin" node --test sse.test.mjs
