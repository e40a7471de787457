# The two README commands: `make demo` and `make test`. Each sets itself up.
.PHONY: setup demo test test-clients unit bench chaos

setup:
	@scripts/setup.sh

demo: setup
	.venv/bin/regionguard demo --out demo-out

# The whole suite on Apache Kafka 4 (one local KRaft node; BROKER=tansu or BROKER=host:port picks
# another), then the smoke set on the demo's embedded tansu (its restart loop 6 restarts instead of
# 12, to keep the whole suite under 30 minutes). First the client packages' own tests
# (clients/: mvn test, go test, node --test; `make test-clients` alone).
BROKER ?= apache
test:
	@scripts/setup.sh --test-tools
	scripts/test-clients.sh
	RG_BROKER=$(BROKER) .venv/bin/python -m pytest tests -q --durations=25
	RG_BROKER=tansu RG_RESTART_ITERATIONS=3 .venv/bin/python -m pytest tests -q -m smoke --durations=10

test-clients:
	scripts/test-clients.sh

unit: setup
	.venv/bin/python -m pytest tests/unit -q

# Benchmarks run on Apache Kafka 4 (one local KRaft node) by default, like the tests; BROKER=tansu
# or BROKER=host:port picks another (README, "Benchmarks on Apache Kafka beside tansu").
.PHONY: bench-latency bench-takeover bench-peer
bench: setup
	RG_BROKER=$(BROKER) .venv/bin/python bench/router_apply.py --n 200000
	RG_BROKER=$(BROKER) .venv/bin/python bench/replay.py --n 100000

# atomic write groups (issue 16): rows/s of groups of 10 against single-row writes, same run
.PHONY: bench-groups
bench-groups: setup
	RG_BROKER=$(BROKER) .venv/bin/python bench/groups.py --n 200000

# read-your-writes (issue 17): row committed -> wait_applied confirmed, p50/p99 at 1,000 writes/s
.PHONY: bench-ryw
bench-ryw: setup
	RG_BROKER=$(BROKER) .venv/bin/python bench/ryw.py --rate 1000 --duration 20

# end-to-end latency, produce -> row committed, p50/p99 at a steady 2,000 writes/s (router + health)
bench-latency: setup
	RG_BROKER=$(BROKER) .venv/bin/python bench/latency.py --rate 2000 --duration 30

# side by side with the peer (issues 15, 29): Kafka Connect standalone + the Debezium JDBC sink, same Apache
# Kafka and PostgreSQL, 5 alternated rounds of 200,000 upserts (plain, and resends overtaking a newer write),
# peer at tasks.max 2 and 4; rows appended to bench/results/peer.csv (bench/report.py makes the docs table).
# 200,000: at 50,000 the timed windows were 1-3 s and the ratio's range 0.78-7.30
bench-peer: setup
	RG_BROKER=apache .venv/bin/python bench/peer_sink.py --n 200000 --keys 100000 --runs plain,overtake --rounds 5 \
		--peer-configs t2-unnest,t4-unnest

# two routers share a region at 1,000 writes/s: SIGKILL of one, then a SIGTERM handover
bench-takeover: setup
	RG_BROKER=$(BROKER) .venv/bin/python bench/takeover.py --rate 1000

# health (issues 3, 12): outage detection per fault, flapping at 10% probe loss, heal -> closed after
# outages of 5/30/120 s (detection-long: 600 s too, and a 10-minute flapping run) (docs/health.md)
.PHONY: detection detection-long
detection: setup
	RG_BROKER=$(BROKER) .venv/bin/python bench/detection.py

detection-long: setup
	RG_BROKER=$(BROKER) .venv/bin/python bench/detection.py --duration 600 --long

# chaos (issue 4): the long fault schedule under load; prints the table of faults and outcomes and
# writes it to docs/chaos.md. The short schedule runs in `make test` (tests/chaos/test_chaos.py).
CHAOS_WRITES ?= 100000
CHAOS_FAULTS ?= 30
CHAOS_RATE ?= 400
chaos: setup
	.venv/bin/python -m tests.chaos.run --writes $(CHAOS_WRITES) --faults $(CHAOS_FAULTS) --rate $(CHAOS_RATE) --markdown docs/chaos.md

# fuzzer (issue 25): FUZZ_RECORDS seeded records, good and bad interleaved, through a real router and replayer
# across a region outage; prints one FUZZ line. FUZZ_SEED replays a run; FUZZ_EXCLUDE / FUZZ_INCLUDE pick the
# strategies by name (`.venv/bin/python -m tests.fuzz.run --list`); unset, the known bugs are left out.
# A short profile runs in `make test` (tests/fuzz/test_fuzz.py).
FUZZ_RECORDS ?= 100000
.PHONY: fuzz
fuzz: setup
	RG_BROKER=$(BROKER) .venv/bin/python -m tests.fuzz.run --records $(FUZZ_RECORDS) \
		$(if $(FUZZ_SEED),--seed $(FUZZ_SEED)) $(if $(FUZZ_INCLUDE),--include $(FUZZ_INCLUDE)) \
		$(if $(filter undefined,$(origin FUZZ_EXCLUDE)),,--exclude "$(FUZZ_EXCLUDE)")

# broker faults (issue 11): a private 3-node Apache Kafka cluster (replication 3, min.insync.replicas 2);
# SIGKILL and clean restart of a node, loss of the busiest leader and of the active KRaft controller,
# under load; writes its section of docs/chaos.md. A short schedule runs in `make test`
# (tests/chaos/test_broker_faults.py).
CHAOS_BROKER_WRITES ?= 25000
CHAOS_BROKER_FAULTS ?= 8
CHAOS_BROKER_RATE ?= 50
.PHONY: chaos-brokers
chaos-brokers: setup
	.venv/bin/python -m tests.chaos.run --broker-faults --nodes 3 --writes $(CHAOS_BROKER_WRITES) \
		--faults $(CHAOS_BROKER_FAULTS) --rate $(CHAOS_BROKER_RATE) --markdown docs/chaos.md

# regional (issue 26): three regions on 127.0.1.1-3 (a Kafka node, database and services each, producers
# everywhere); a full regional event of r0 and a partition of r1 (nftables: root) under load; prints the
# report and a last line REGIONAL events=... . The short version runs in `make test` (tests/chaos/test_regional.py).
REGIONAL_DOWN ?= 30
REGIONAL_PARTITION ?= 20
REGIONAL_EVENTS ?= full,partition
.PHONY: chaos-regional
chaos-regional:
	@scripts/setup.sh --test-tools
	.venv/bin/python -m tests.chaos.regional --down $(REGIONAL_DOWN) --partition $(REGIONAL_PARTITION) \
		--events $(REGIONAL_EVENTS) --png docs/img/regional-timeline.png

# The image's pinned dependencies (Dockerfile): requirements.lock from pyproject.toml. `lock` writes it
# (keeps the current pins where they still fit; UPGRADE=1 takes the newest); `lock-check` resolves again
# and fails when the committed lock differs, then installs it into a fresh venv as the Dockerfile does
# (5 minutes on the busy 2-core machine: too slow for `make test`, where tests/unit/test_lock.py checks
# the lock against pyproject.toml offline).
LOCK_FLAGS = --python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes --custom-compile-command "make lock" -q \
    --no-emit-package regionguard-client  # the SDK: installed from clients/python, like regionguard itself
.PHONY: lock lock-check k8s
lock: setup
	.venv/bin/uv pip compile pyproject.toml $(LOCK_FLAGS) $(if $(UPGRADE),--upgrade) -o requirements.lock

lock-check: setup
	@cp requirements.lock .venv/requirements.lock.check
	.venv/bin/uv pip compile pyproject.toml $(LOCK_FLAGS) -o .venv/requirements.lock.check
	@diff -u requirements.lock .venv/requirements.lock.check && echo "requirements.lock matches pyproject.toml"
	rm -rf .venv/lock-check && python3 -m venv .venv/lock-check
	.venv/lock-check/bin/pip install -q --require-hashes --no-deps -r requirements.lock
	.venv/lock-check/bin/pip install -q --no-deps ./clients/python . && .venv/lock-check/bin/pip check
	.venv/lock-check/bin/regionguard --version

# deploy/k8s/regionguard.yaml: the Helm chart rendered with its default values (tests/deploy/test_chart.py
# fails when the two differ)
k8s:
	@scripts/setup.sh --test-tools
	.venv/bin/python -m tests.deploy.render --write
