"""Optional OpenTelemetry tracing (`pip install 'responses-gateway[otel]'`): a server span per
HTTP request, exported over OTLP (configured by the standard `OTEL_*` variables) or printed."""

from __future__ import annotations

from typing import Any


class TracingUnavailableError(RuntimeError):
    """`GATEWAY_OTEL` asks for tracing but the `otel` extra is not installed."""


def create_tracer(exporter: str) -> tuple[Any, Any]:
    """A (tracer, provider) pair; the caller shuts the provider down (it flushes spans)."""
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SimpleSpanProcessor,
        )
    except ImportError as exc:
        raise TracingUnavailableError(
            "GATEWAY_OTEL is set but OpenTelemetry is not installed: "
            "pip install 'responses-gateway[otel]'"
        ) from exc
    provider = TracerProvider(resource=Resource.create({"service.name": "responses-gateway"}))
    if exporter == "console":
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise TracingUnavailableError(
                "GATEWAY_OTEL=otlp needs the OTLP exporter: pip install 'responses-gateway[otel]'"
            ) from exc
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider.get_tracer("responses-gateway"), provider
