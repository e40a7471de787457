"""The configuration reference (docs/configuration.md) is generated from the models and must be fresh."""

from pathlib import Path

from regionguard.ops.configref import END, START, render

README = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_readme_config_reference_is_fresh():
    text = README.read_text()
    assert START in text and END in text, "docs/configuration.md lacks the config reference markers"
    block = START + text.split(START, 1)[1].split(END, 1)[0] + END
    assert block == render(), "stale: run `python -m regionguard.ops.configref --write docs/configuration.md`"


def test_every_section_is_documented():
    out = render()
    for key in ("kafka.bootstrap", "regions.<region>.dsn", "tables.<table>.key", "health.interval_s",
                "breaker.consecutive_failures", "router.batch_max", "replay.max_rate", "metrics.host"):
        assert f"`{key}`" in out
