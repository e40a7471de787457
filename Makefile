# The two README commands: `make demo` and `make test`. Each sets itself up.
.PHONY: setup demo test unit bench chaos

setup:
	@scripts/setup.sh

demo: setup
	.venv/bin/regionguard demo --out demo-out

test:
	@scripts/setup.sh --test-tools
	.venv/bin/python -m pytest tests -q

unit: setup
	.venv/bin/python -m pytest tests/unit -q

bench: setup
	.venv/bin/python bench/router_apply.py --n 200000
	.venv/bin/python bench/replay.py --n 100000

# health (issue 3): outage detection per fault + flapping at 10% probe loss (docs/health.md)
.PHONY: detection detection-long
detection: setup
	.venv/bin/python bench/detection.py

detection-long: setup
	.venv/bin/python bench/detection.py --duration 600

# chaos (issue 4): the long fault schedule under load; prints the table of faults and outcomes and
# writes it to docs/chaos.md. The short schedule runs in `make test` (tests/chaos/test_chaos.py).
CHAOS_WRITES ?= 100000
CHAOS_FAULTS ?= 30
CHAOS_RATE ?= 400
chaos: setup
	.venv/bin/python -m tests.chaos.run --writes $(CHAOS_WRITES) --faults $(CHAOS_FAULTS) --rate $(CHAOS_RATE) --markdown docs/chaos.md
