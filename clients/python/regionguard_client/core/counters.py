"""The counters the client's own threads keep: background errors and restarts, refused states.

``regionguard_background_errors_total``, ``regionguard_background_restarts_total``
(core/supervise.py) and ``regionguard_region_state_refused_total`` (core/stategate.py) count
what happens in threads the client runs too (the region-state view's follower, the
read-your-writes watcher). With prometheus-client installed (every service has it; an app gets
it with the ``metrics`` extra) they are Prometheus counters in the default registry, so an app's
own /metrics shows them; without it they count nothing, and the WARNING lines of core/supervise.py
still say what happened. The service's metrics module re-exports them: one definition, so one
registration. Ours by hand only for the absent case: three counters are not worth a dependency.
"""

from __future__ import annotations

from typing import Any

try:
    from prometheus_client import Counter
except ImportError:  # the light install (pip install regionguard-client): no metrics library
    Counter = None  # type: ignore[assignment,misc]


class Uncounted:
    """Stands in for a counter when prometheus-client is absent: ``labels(...).inc()`` does nothing."""

    def labels(self, *values: Any, **named: Any) -> "Uncounted":
        return self

    def inc(self, amount: float = 1) -> None:
        pass


def _counter(name: str, doc: str, labels: list[str]) -> Any:
    return Uncounted() if Counter is None else Counter(name, doc, labels)


REGION_STATE_REFUSED = _counter("regionguard_region_state_refused_total",
                                "Region-state records a view refused (future_at, epoch_jump)", ["reason"])
# every service (core/supervise.py): nothing dies or is dropped silently
BACKGROUND_ERRORS = _counter("regionguard_background_errors_total",
                             "Exceptions caught in background threads, loops and handlers (kind: exception type)",
                             ["component", "kind"])
BACKGROUND_RESTARTS = _counter("regionguard_background_restarts_total",
                               "Background threads and loops restarted after an error", ["component"])

__all__ = ["BACKGROUND_ERRORS", "BACKGROUND_RESTARTS", "REGION_STATE_REFUSED", "Uncounted"]
