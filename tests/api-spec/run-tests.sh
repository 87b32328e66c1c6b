#!/usr/bin/env bash
# The API reference suite (scripts/test runs it after cargo test): the
# AsyncAPI document of GET /api/ws and the OpenAPI document of
# GET /api/openapi.json, fetched from the broker binary that cargo built and
# validated by @asyncapi/parser and @apidevtools/swagger-parser from npm
# (versions pinned by package-lock.json); then the broker's real answers are
# checked against the documented schemas with Ajv. ../node-suite.sh provides
# Node, the binary and the npm packages.
set -euo pipefail
cd "$(dirname "$0")"
source ../node-suite.sh
AGENT_EVENTS_BIN="$bin" node --test spec.test.mjs
