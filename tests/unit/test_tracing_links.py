"""core/tracing.py: links from records' traceparent headers (pure; no tracer provider needed)."""

from __future__ import annotations

from regionguard.core.tracing import links_of
from regionguard.core.writes import Record


def _rec(headers) -> Record:
    return Record("t", 0, 0, b"k", None, list(headers), None)


def test_a_valid_traceparent_becomes_a_link_and_garbage_is_skipped():
    good = _rec([("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")])
    links = links_of([good, _rec([("traceparent", b"not a traceparent")]), _rec([("traceparent", b"\xff\xfe")]),
                      _rec([])])
    assert [f"{ln.context.trace_id:032x}" for ln in links] == ["4bf92f3577b34da6a3ce929d0e0e4736"]


def test_links_stop_at_the_limit():
    recs = [_rec([("traceparent", f"00-{i + 1:032x}-00f067aa0ba902b7-01".encode())]) for i in range(5)]
    assert len(links_of(recs, limit=3)) == 3
