"""OpenTelemetry: one span per batch, linked to the traces of the writes in it.

A write's producer may send a W3C ``traceparent`` header (it follows the write
onto held copies and dead letters, core/writes.py). When OpenTelemetry is set
up in the process -- ``pip install regionguard[otel]`` and run the service
under ``opentelemetry-instrument`` (or any code that installs a tracer
provider before the service starts) -- the router and the replayer record a
span per batch (``regionguard.router.batch``, ``regionguard.replayer.batch``)
with a link to each write's trace, so a trace of the producer's request shows
where its write went, and when.

A batch span has links, not a parent: one batch carries the writes of many
traces. Without a tracer provider (the default), nothing is done per record:
reading every record's headers measured as an eighth of the replayer's CPU
(core/readahead.py), so the headers are read only while spans are recorded.
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Iterator

from .writes import Record

try:  # an optional extra: the services run without it
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # pragma: no cover - exercised where the extra is absent
    trace = None  # type: ignore[assignment]

__all__ = ["MAX_LINKS", "batch_span", "links_of", "recording"]

#: OpenTelemetry's default span link limit: a larger batch links its first writes' traces
MAX_LINKS = 128

_propagator = TraceContextTextMapPropagator() if trace is not None else None


def recording() -> bool:
    """A tracer provider is installed (not the API's no-op proxy)."""
    if trace is None:
        return False
    return not isinstance(trace.get_tracer_provider(), (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


def links_of(recs: Iterable[Record], limit: int = MAX_LINKS) -> list:
    """A link to the trace of each record that carries a valid ``traceparent`` (first ``limit``)."""
    out: list = []
    if _propagator is None:
        return out
    for rec in recs:
        value = rec.header("traceparent")
        if value is None:
            continue
        try:
            ctx = _propagator.extract({"traceparent": value.decode("ascii")})
        except (UnicodeDecodeError, ValueError):
            continue  # a malformed header is the producer's business, never the batch's
        sc = trace.get_current_span(ctx).get_span_context()
        if sc.is_valid:
            out.append(trace.Link(sc))
            if len(out) >= limit:
                break
    return out


@contextlib.contextmanager
def batch_span(service: str, region: str, recs: list[Record]) -> Iterator[None]:
    """A span around one batch of ``service`` for ``region`` (nothing at all when not recording)."""
    if not recording():
        yield
        return
    tracer = trace.get_tracer("regionguard")
    with tracer.start_as_current_span(
            f"regionguard.{service}.batch", kind=trace.SpanKind.CONSUMER, links=links_of(recs),
            attributes={"regionguard.region": region, "regionguard.service": service,
                        "messaging.system": "kafka", "messaging.batch.message_count": len(recs),
                        "messaging.destination.name": recs[0].topic if recs else ""},
            # a batch abandoned on a rebalance or at shutdown is control flow, not an error
            record_exception=False, set_status_on_exception=False):
        yield
