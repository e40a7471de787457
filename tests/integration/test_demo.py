"""``regionguard demo`` end to end, as a new user runs it (a subprocess, no config)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


def test_demo_runs_the_drill_and_reports(pg_available, tmp_path) -> None:
    out = tmp_path / "demo-out"
    t0 = time.monotonic()
    # the demo's embedded default is tansu, whatever broker the rest of the suite runs on
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP", "RG_BROKER")}
    proc = subprocess.run([sys.executable, "-m", "regionguard.cli", "demo", "--out", str(out)],
                          capture_output=True, text=True, timeout=360, cwd=tmp_path, env=env)
    took = time.monotonic() - t0
    text = proc.stdout + proc.stderr
    # the first five fields never change; the group counts are appended at the end
    m = re.search(r"^RESULT produced=(\d+) applied=(\d+) lost=(\d+) duplicates=(\d+) dead_lettered=(\d+)"
                  r" groups=(\d+) groups_held=(\d+) groups_replayed=(\d+)$", proc.stdout, re.M)
    assert m, text[-4000:]
    produced, applied, lost, duplicates, dead, groups, groups_held, groups_replayed = map(int, m.groups())
    assert (lost, duplicates) == (0, 0), text[-4000:]
    assert proc.returncode == 0, text[-4000:]
    assert produced > 1000 and applied > 0.8 * produced and dead > 0
    # orders with items, some held during eu's outage and replayed whole (a held group may still be shed
    # or expire, so replayed <= held)
    assert groups > 0 and 0 < groups_replayed <= groups_held, m.group(0)
    assert proc.stdout.strip().splitlines()[-1] == m.group(0)  # the machine-readable line comes last
    report = (out / "report.md").read_text()
    assert "## Phases" in report and "outage" in report and "replayed" in report and m.group(0) in report
    assert f"replayed whole {groups_replayed}" in report and "partial_groups 0, split_groups 0" in report
    # data residency: the consent write was held for eu (the checker then finds it applied there, nowhere else)
    assert "consent write" in report and "may not be stored in us (allowed_regions)" in report
    png = out / "timeline.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    print(f"demo took {took:.1f} s")
