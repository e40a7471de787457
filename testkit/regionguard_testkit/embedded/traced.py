"""Test kit: a regionguard command with an OpenTelemetry tracer provider that writes spans to a file.

::

    python -m regionguard_testkit.embedded.traced --spans FILE router --config rg.yaml ...

installs the SDK's tracer provider with a processor that appends each ended
span as one JSON line to ``FILE`` (name, trace and span ids, attributes, and
its links' trace and span ids), then runs the ordinary CLI. This stands in for
``opentelemetry-instrument`` with an exporter: a test reads the file as it
would read a topic. Needs the ``otel`` extra.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Sequence

__all__ = ["install", "main"]


def install(path: str) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    lock = threading.Lock()

    class JsonLines(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            with lock, open(path, "a", encoding="utf-8") as f:
                for s in spans:
                    f.write(json.dumps({
                        "name": s.name,
                        "trace_id": f"{s.context.trace_id:032x}",
                        "span_id": f"{s.context.span_id:016x}",
                        "attributes": dict(s.attributes or {}),
                        "links": [{"trace_id": f"{ln.context.trace_id:032x}",
                                   "span_id": f"{ln.context.span_id:016x}"} for ln in s.links],
                    }) + "\n")
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLines()))
    trace.set_tracer_provider(provider)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 2 or argv[0] != "--spans":
        print("usage: python -m regionguard_testkit.embedded.traced --spans FILE <regionguard args>",
              file=sys.stderr)
        return 2
    install(argv[1])
    from regionguard.cli import main as cli_main

    return cli_main(argv[2:])


if __name__ == "__main__":
    sys.exit(main())
