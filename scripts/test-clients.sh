#!/usr/bin/env bash
# The client packages' own tests (clients/, docs/clients.md): mvn test, go test, node --test, each on
# the shared vectors of schemas/vectors/. `make test` runs it before the Python suite, which runs the
# packages' command lines against a real broker (test_partitioning.py, test_conformance.py).
# Maven runs offline once it has resolved this pom's dependencies (a marker per pom version under
# ~/.cache/regionguard), so later runs touch no registry. A missing toolchain fails here: the
# packages are the project's, not optional examples. Prints each package's seconds.
set -euo pipefail
cd "$(dirname "$0")/../clients"
cache=${RG_CACHE_DIR:-$HOME/.cache/regionguard}
mkdir -p "$cache"

timed() {  # NAME CMD...: run CMD, then print how long it took
  local name=$1 start=$SECONDS
  shift
  "$@"
  echo "test-clients: $name passed in $((SECONDS - start)) s"
}

marker="$cache/mvn-resolved-$(sha256sum java/pom.xml | cut -c1-16)"
offline=()
[ -e "$marker" ] && offline=(-o)
java_tests() {  # Surefire's counts and any error, not Maven's INFO lines
  mvn -B -ntp "${offline[@]}" -f java/pom.xml test | grep -E "Tests run:|BUILD|ERROR|FAIL"
}
timed "java (mvn test)" java_tests
touch "$marker"

(cd go && GOTOOLCHAIN=local timed "go (go test ./...)" go test -count=1 ./...)

if [ ! -d node/node_modules/@platformatic/kafka ] || [ ! -d node/node_modules/uuid ] || [ ! -e node/node_modules/.bin/node ]; then
  (cd node && npm install --no-audit --no-fund --silent)
fi
# on the package's own Node.js 22 (its devDependency `node`: @platformatic/kafka needs 22.22+)
(cd node && timed "node (node --test)" node_modules/.bin/node --test test/*.test.js)
