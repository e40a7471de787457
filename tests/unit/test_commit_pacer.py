"""The router lane's commit pacing (router/commits.py): coalesced, at most once per interval, nothing lost."""

from regionguard.router.commits import CommitPacer


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_the_first_settled_offsets_go_at_once_then_at_most_once_per_interval():
    clock = Clock()
    pacer = CommitPacer(interval_s=0.5, clock=clock)
    pacer.settled({0: 10})
    assert pacer.due() == {0: 10}
    pacer.settled({0: 20, 1: 5})
    clock.t += 0.25
    assert pacer.due() == {}  # too soon: held back
    pacer.settled({0: 30})
    clock.t += 0.25
    assert pacer.due() == {0: 30, 1: 5}  # coalesced: the newest offset of each partition
    assert pacer.due() == {}


def test_nothing_due_when_nothing_settled_and_an_idle_interval_does_not_delay_the_next():
    clock = Clock()
    pacer = CommitPacer(interval_s=0.5, clock=clock)
    assert pacer.due() == {}
    clock.t += 5
    pacer.settled({3: 7})
    assert pacer.due() == {3: 7}


def test_flush_hands_out_everything_whenever_the_last_send_was():
    clock = Clock()
    pacer = CommitPacer(interval_s=0.5, clock=clock)
    pacer.settled({0: 1})
    assert pacer.due() == {0: 1}
    pacer.settled({0: 2, 4: 9})
    assert pacer.due() == {}
    assert pacer.flush() == {0: 2, 4: 9}
    assert pacer.flush() == {}


def test_dropped_partitions_are_not_sent_later():
    clock = Clock()
    pacer = CommitPacer(interval_s=0.5, clock=clock)
    pacer.settled({0: 1})
    pacer.due()
    pacer.settled({0: 2, 1: 3, 2: 4})
    pacer.drop(p for p in (0, 2))  # revoked, or committed synchronously
    clock.t += 0.5
    assert pacer.due() == {1: 3}
