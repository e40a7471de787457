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
