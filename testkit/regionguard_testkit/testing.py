"""Drive region states from tests and drills, without running the health service.

:class:`StatePublisher` publishes RegionState records to ``<prefix>region-state``
exactly as the health service does (the topic is the contract): a new ``seq``
per change, and heartbeats that republish the current state. Use it to test
an application's degraded paths against a real broker::

    with StatePublisher(cfg, heartbeat_s=0.2) as pub:   # all regions closed, heartbeating
        pub.set("eu", "open", reason="drill")
        ...
        pub.pause_heartbeats()                          # views turn stale after stale_after_s
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone

from regionguard.core.config import Config
from regionguard.core.flags import next_seq
from regionguard.core.kafka import Confirmer, make_producer
from regionguard.core.log import rdkafka_log
from regionguard.core.models import RegionState, State

__all__ = ["StatePublisher"]


class StatePublisher:
    def __init__(self, cfg: Config, *, heartbeat_s: float | None = None, observer: str = "test",
                 initial: str | None = "closed", start_seq: int = 0) -> None:
        self.cfg = cfg
        self.heartbeat_s = heartbeat_s if heartbeat_s is not None else cfg.health.heartbeat_s
        self.observer = observer
        # not idempotent: an idempotent producer stalls when a test broker restarts without its data
        self.producer = make_producer(cfg, **{"linger.ms": 0, "enable.idempotence": False,
                                                   "logger": rdkafka_log})
        self.current: dict[str, RegionState] = {}
        self._seq: int | None = start_seq or None
        self._lock = threading.Lock()
        self._beating = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._initial = initial

    def start(self) -> "StatePublisher":
        if self._initial is not None:
            for region in self.cfg.regions:
                self.set(region, self._initial, reason="initial")
        self._beating.set()
        self._thread = threading.Thread(target=self._run, name="rg-test-heartbeat", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.producer.flush(5)

    def __enter__(self) -> "StatePublisher":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _send(self, records: list[RegionState]) -> None:
        c = Confirmer()
        for r in records:
            c.produce(self.producer, self.cfg.topic("region-state"), r.model_dump_json().encode(), key=r.region.encode())
        c.wait(self.producer, timeout=10)

    def set(self, region: str, state: str, *, reason: str = "", seq: int | None = None) -> RegionState:
        """Publish a new state (next seq unless given); delivery is confirmed."""
        with self._lock:
            now = datetime.now(timezone.utc)
            if seq is None:
                # time-based like the health service's, so it also outranks states it published
                self._seq = seq = next_seq(self._seq, now)
            rs = RegionState(region=region, state=State(state), since=now, seq=seq, reason=reason,
                             observer=self.observer, at=now)
            self.current[region] = rs
            self._send([rs])
        return rs

    def heartbeat(self) -> None:
        with self._lock:
            now = datetime.now(timezone.utc)
            self._send([s.model_copy(update={"heartbeat": True, "at": now}) for s in self.current.values()])

    def pause_heartbeats(self) -> None:
        self._beating.clear()

    def resume_heartbeats(self) -> None:
        self._beating.set()

    def _run(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            if self._beating.is_set():
                try:
                    self.heartbeat()
                except Exception:  # noqa: BLE001 - e.g. during a broker restart: next beat
                    pass
