"""The leader's decision logic, pure (no I/O): observations in, RegionState records out.

One :class:`~regionguard.core.breaker.CircuitBreaker` per region is fed by the
observations of *all* observers (health instances and routers' passive
observations, ``observer="router:<id>"``), through a quorum gate:

- an observer is *live* while its latest observation of the region is
  younger than ``health.observation_ttl_s`` (by local receive time);
- an observation that arrived more than ``observation_ttl_s`` later than
  its observer's observations usually do (a backlog delivered after a
  stall) is dropped: it says nothing about now. Its ``at`` is compared only
  with the same observer's other stamps (:mod:`.transit`), never with this
  host's clock, so observers whose clocks are off by seconds still count;
- a successful observation always counts as a success;
- a failed observation counts as a failure only when at least
  ``q`` live observers currently see the region failing (their latest
  observation failed); otherwise it is ignored as one observer's local
  problem. ``q`` is ``health.quorum`` when set, else a majority of the live
  observers (1 of 1, 2 of 2 or 3, 3 of 4 or 5), and never more than the
  live observers. So one health instance cut off from a region can't open
  it while another still reaches it, and a lone surviving instance still can.

Every instance runs a judge so liveness is warm; only the leader's is
:attr:`Judge.active` (feeds breakers and emits records). On becoming leader
:meth:`Judge.activate` restores every breaker from the last published
RegionState (``stats.breaker_state``, ``since`` for the elapsed open wait),
so a handover causes no transition, and continues ``seq``.

``seq`` per region is ``max(previous seq + 1, Unix time in ms)``: it increases
across leaders and even if the compacted topic was lost (memory broker
restart), so views that kept an old state never ignore the new leader.
Heartbeats repeat the current ``seq`` with ``heartbeat=true``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from ..core.breaker import BreakerState, CircuitBreaker, Transition, from_published, published
from ..core.config import Config
from ..core.models import Observation, RegionState
from .transit import Transits

log = logging.getLogger(__name__)

ACTIONS = ("force_open", "disable", "release")

#: An observer's shortest transit is remembered over this many observation TTLs (see .transit).
TRANSIT_WINDOW_TTLS = 10


def quorum(configured: int | None, live: int) -> int:
    """Failing live observers needed to count a failure: ``health.quorum`` or a majority, at most ``live``."""
    wanted = configured if configured is not None else live // 2 + 1
    return max(1, min(wanted, live))


@dataclass
class Seen:
    at: float  # local monotonic receive time
    ok: bool
    kind: str


@dataclass
class Decision:
    """A transition and the record that publishes it."""

    transition: Transition
    record: RegionState


@dataclass
class RegionJudge:
    region: str
    breaker: CircuitBreaker
    seen: dict[str, Seen] = field(default_factory=dict)
    seq: int = 0
    since: datetime | None = None
    reason: str = "initial"
    ignored_failures: int = 0  # failures below quorum

    def live(self, now: float, ttl: float) -> dict[str, Seen]:
        return {o: s for o, s in self.seen.items() if now - s.at <= ttl}


class Judge:
    def __init__(self, cfg: Config, observer: str, *, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.observer = observer
        self.clock = clock
        self.wall = wall
        self.active = False
        self.epoch = 0  # set above every epoch read at activation: fences a deposed leader
        self.control_offset: int | None = None
        self.transits = Transits(cfg.health.observation_ttl_s * TRANSIT_WINDOW_TTLS)
        self.regions: dict[str, RegionJudge] = {
            r: RegionJudge(r, CircuitBreaker(r, cfg.breaker, clock=clock)) for r in cfg.regions
        }

    # ---- leadership -----------------------------------------------------------------------
    def activate(self, last: dict[str, RegionState]) -> list[RegionState]:
        """Become the decider: restore from the last published states; return records to publish now.

        Regions with a known state get a heartbeat of it; regions never
        published get an initial ``closed`` record.
        """
        now_wall = self.wall()
        offsets = []
        out = []
        self.epoch = max((st.epoch for st in last.values()), default=0) + 1
        for r, rj in self.regions.items():
            st = last.get(r)
            rj.breaker = CircuitBreaker(r, self.cfg.breaker, clock=self.clock)
            if st is None:
                rj.seq = self._next_seq(0)
                rj.since = _dt(now_wall)
                rj.reason = "initial"
                out.append(self._record(rj, heartbeat=False))
                continue
            stats = st.stats or {}
            bstate = from_published(st.state.value, st.reason, stats.get("breaker_state"))
            since = st.since if st.since.tzinfo else st.since.replace(tzinfo=timezone.utc)
            rj.breaker.restore(bstate, opened_ago_s=max(0.0, now_wall - since.timestamp()),
                               openings=_int(stats.get("openings")), reason=st.reason)
            rj.seq, rj.since, rj.reason = st.seq, since, st.reason
            if isinstance(stats.get("control_offset"), int):
                offsets.append(stats["control_offset"])
            out.append(self._record(rj, heartbeat=True))
        self.control_offset = max(offsets) if offsets else None
        self.active = True
        return out

    def deactivate(self) -> None:
        self.active = False

    # ---- inputs ---------------------------------------------------------------------------
    def observe(self, obs: Observation) -> list[Decision]:
        rj = self.regions.get(obs.region)
        if rj is None:
            return []
        now = self.clock()
        ttl = self.cfg.health.observation_ttl_s
        at = obs.at.timestamp() if obs.at.tzinfo else obs.at.replace(tzinfo=timezone.utc).timestamp()
        if self.transits.late_by(obs.observer, at, now) > ttl:
            return []  # a backlog delivered late says nothing about now
        rj.seen[obs.observer] = Seen(now, obs.ok, obs.kind)
        if not self.active:
            return []
        if obs.ok:
            return self._decide(rj, rj.breaker.record(True, obs.latency_s))
        live = rj.live(now, ttl)
        failing = sum(1 for s in live.values() if not s.ok)
        if failing >= quorum(self.cfg.health.quorum, len(live)):
            return self._decide(rj, rj.breaker.record(False, obs.latency_s))
        rj.ignored_failures += 1
        return self._decide(rj, rj.breaker.tick())

    def tick(self) -> list[Decision]:
        if not self.active:
            return []
        out: list[Decision] = []
        for rj in self.regions.values():
            out += self._decide(rj, rj.breaker.tick())
        return out

    def command(self, region: str, action: str, reason: str = "") -> list[Decision]:
        rj = self.regions.get(region)
        if rj is None or not self.active:
            return []
        if action == "force_open":
            ts = rj.breaker.force_open(reason or "forced")
        elif action == "disable":
            ts = rj.breaker.disable(reason or "disabled")
        elif action == "release":
            ts = rj.breaker.release(reason or "released")
        else:
            log.warning("unknown breaker command %r for %s", action, region)
            return []
        return self._decide(rj, ts)

    def heartbeats(self) -> list[RegionState]:
        if not self.active:
            return []
        return [self._record(rj, heartbeat=True) for rj in self.regions.values()]

    # ---- records ----------------------------------------------------------------------------
    def _next_seq(self, prev: int) -> int:
        return max(prev + 1, int(self.wall() * 1000))

    def _decide(self, rj: RegionJudge, transitions: list[Transition]) -> list[Decision]:
        out = []
        for t in transitions:
            rj.seq = self._next_seq(rj.seq)
            rj.since = _dt(self.wall())
            rj.reason = t.reason
            out.append(Decision(t, self._record(rj, heartbeat=False, transition=t)))
        return out

    def _record(self, rj: RegionJudge, *, heartbeat: bool, transition: Transition | None = None) -> RegionState:
        state, reason = published(rj.breaker.state, rj.reason)
        now = self.clock()
        ttl = self.cfg.health.observation_ttl_s
        live = rj.live(now, ttl)
        stats: dict[str, Any] = dict(transition.stats) if transition else rj.breaker.stats()
        stats["breaker_state"] = rj.breaker.state.value
        stats["openings"] = rj.breaker.openings
        stats["quorum"] = quorum(self.cfg.health.quorum, len(live))
        stats["observers"] = {o: {"ok": s.ok, "kind": s.kind, "age_s": round(now - s.at, 3)}
                              for o, s in sorted(live.items())}
        stats["ignored_failures"] = rj.ignored_failures
        if self.control_offset is not None:
            stats["control_offset"] = self.control_offset
        return RegionState(region=rj.region, state=state, since=rj.since or _dt(self.wall()), seq=rj.seq,
                           epoch=self.epoch, reason=reason, observer=self.observer, heartbeat=heartbeat, stats=stats,
                           at=_dt(self.wall()))

    def breaker_state(self, region: str) -> BreakerState:
        return self.regions[region].breaker.state


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) else None
