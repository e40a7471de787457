"""The read-your-writes wait budget (client/waitbudget.py): bounded per token and per client, pure."""

from __future__ import annotations

import pytest

from regionguard.client.consistency import MAX_TOKEN_LEN, BadToken, UnknownTokenRegion, WriteToken
from regionguard.client.waitbudget import WaitBudget
from regionguard.core.config import parse_config


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _vain(b: WaitBudget, client: str, wid: str) -> float:
    allowed = b.allowance(client, wid)
    b.settle(client, wid, visible=False, allowed_s=allowed)
    return allowed


def test_a_client_whose_tokens_never_show_gets_strikes_full_waits_per_penalty():
    clock = Clock()
    b = WaitBudget(2.0, strikes=3, penalty_s=60, clock=clock)
    assert [_vain(b, "m", f"w{i}") for i in range(5)] == [2.0, 2.0, 2.0, 0.0, 0.0]
    assert b.skipped == {"client_waited_in_vain": 2}
    assert b.allowance("other", "w9") == 2.0  # others are not held to m's record
    clock.now += 59.9
    assert b.allowance("m", "w10") == 0.0     # looks without a wait did not prolong the penalty...
    clock.now += 0.2
    assert [_vain(b, "m", f"x{i}") for i in range(4)] == [2.0, 2.0, 2.0, 0.0]  # ...which ends 60 s after the last


def test_a_visible_write_ends_the_penalty_and_a_vain_token_is_not_waited_for_again():
    b = WaitBudget(2.0, strikes=2, clock=Clock())
    _vain(b, "m", "a"), _vain(b, "m", "b")
    assert b.allowance("m", "c") == 0.0
    b.settle("m", "c", visible=True, allowed_s=0.0)
    assert b.allowance("m", "d") == 2.0
    assert b.allowance("someone", "a") == 0.0 and b.skipped["token_waited_in_vain"] == 1
    b.settle("someone", "a", visible=True, allowed_s=0.0)  # it did show up after all
    assert b.allowance("someone", "a") == 2.0


def test_memory_is_bounded():
    b = WaitBudget(1.0, strikes=1, remember=10, clock=Clock())
    for i in range(1000):
        _vain(b, f"c{i}", f"w{i}")
    assert len(b._clients) == 10 and len(b._waited_in_vain) == 10
    assert b.allowance("c999", "new") == 0.0 and b.allowance("c0", "new") == 1.0


CFG = parse_config({"regions": {"eu": {"dsn": "postgresql://a@h/db"}}, "tables": {"t": {"key": ["id"]}}})


@pytest.mark.parametrize("text, kind, reason", [
    ("garbage", BadToken, "malformed"),
    ("eu:" + "0" * MAX_TOKEN_LEN, BadToken, "malformed"),
    ("mars:00000000-0000-4000-8000-000000000000", UnknownTokenRegion, "unknown_region"),
])
def test_bad_tokens_say_their_reason_by_type(text, kind, reason):
    with pytest.raises(kind) as err:
        WriteToken.parse(text, CFG)
    assert err.value.reason == reason and len(str(err.value)) < 200
