"""How long a read-your-writes token may hold a request up: bounded per request and per client.

A token (``X-RegionGuard-After``) names a write id that nobody signs: anyone can send a well-formed
token of a write that never existed, and every read would then ask the tiers again and again for
the reader's whole ``after_wait_s`` (2 s by default). So the middleware asks :class:`WaitBudget`
how long a request may wait, and tells it afterwards whether the write showed up:

- per request, all reads share one deadline (:class:`~regionguard_client.reader.BoundReader`),
  instead of one wait each;
- per token, a write id that was already waited for in vain gets one look and no wait: the
  answer would be the same (``stale``);
- per client, after ``strikes`` waits in a row that ended without the write, its tokens get one
  look and no wait until ``penalty_s`` has passed since the last of them; a write of its seen
  visible ends that at once. A client whose tokens never show costs at most ``strikes`` full
  waits per ``penalty_s``.

What was skipped, and why, is counted in :attr:`WaitBudget.skipped`. Memory is bounded: the
oldest clients and write ids are forgotten first. Written by hand: the policy is specific to our
tokens; it is pure (the clock is injected).
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable

__all__ = ["WaitBudget"]


class WaitBudget:
    def __init__(self, wait_s: float, *, strikes: int = 3, penalty_s: float = 60.0, remember: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if strikes < 1 or remember < 1:
            raise ValueError("strikes and remember must be at least 1")
        self.wait_s, self.strikes, self.penalty_s, self.remember = wait_s, strikes, penalty_s, remember
        self.clock = clock
        self._waited_in_vain: OrderedDict[str, None] = OrderedDict()  # write ids
        self._clients: OrderedDict[str, tuple[int, float]] = OrderedDict()  # client -> (strikes, last strike)
        #: requests whose token got no wait, by reason: ``token_waited_in_vain``, ``client_waited_in_vain``
        self.skipped: Counter[str] = Counter()

    def _strikes(self, client: str) -> int:
        n, last = self._clients.get(client, (0, 0.0))
        return n if self.clock() - last < self.penalty_s else 0

    def allowance(self, client: str, write_id: str) -> float:
        """Seconds a request of ``client`` carrying ``write_id`` may wait for it (all its reads together)."""
        if write_id in self._waited_in_vain:
            self.skipped["token_waited_in_vain"] += 1
            return 0.0
        if self._strikes(client) >= self.strikes:
            self.skipped["client_waited_in_vain"] += 1
            return 0.0
        return self.wait_s

    def settle(self, client: str, write_id: str, *, visible: bool, allowed_s: float) -> None:
        """What the request saw: the write ``visible``, or not within ``allowed_s`` (its allowance)."""
        if visible:
            self._clients.pop(client, None)
            self._waited_in_vain.pop(write_id, None)
            return
        if allowed_s <= 0:
            return  # a look without a wait: it costs nothing, and must not prolong a penalty
        self._waited_in_vain[write_id] = None
        self._waited_in_vain.move_to_end(write_id)
        n = self._strikes(client)
        self._clients.pop(client, None)
        self._clients[client] = (n + 1, self.clock())
        for seen in (self._waited_in_vain, self._clients):
            while len(seen) > self.remember:
                seen.popitem(last=False)
