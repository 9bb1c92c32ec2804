"""OpenTelemetry traces: the SDK set up for one process, when ``tracing`` is on.

Off by default, and then nothing here imports OpenTelemetry: the servers ask
``start_tracing`` for a ``Tracing`` and, given None, run exactly as without this module.
On, the SDK (the ``otel`` extra) exports over OTLP/gRPC with a batch processor; the
standard ``OTEL_*`` variables apply (endpoint, headers, TLS, sampler, resource, batch
sizes), and spans follow their parent's sampling decision (Envoy's, see docs/tracing.md).

What the spans say is in ``genai`` (attribute names) and in the parts that make them
(``extproc.tracing``, ``upstream.tracing``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config.model import TracingSettings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

INSTRUMENTATION = "ensemble_extproc"
# Variables that name the collector for the Python parts instead of tracing.collector.
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
PROTOCOL_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")


class TracingUnavailable(RuntimeError):
    """Tracing is on, but cannot start as configured (the extra is missing, a protocol)."""


@dataclass(frozen=True, slots=True)
class Tracing:
    """One process's tracer, and the W3C trace context propagator (what Envoy speaks)."""

    tracer: Tracer
    propagator: TraceContextTextMapPropagator
    provider: TracerProvider

    def shutdown(self) -> None:
        """Export what is still buffered; call once, when the process stops."""
        self.provider.shutdown()


def service_name(settings: TracingSettings, component: str, environ: Mapping[str, str]) -> str:
    """OTEL_SERVICE_NAME when set, else ``<tracing.service_name>-<component>``."""
    return environ.get("OTEL_SERVICE_NAME") or f"{settings.service_name}-{component}"


def start_tracing(
    settings: TracingSettings, component: str, environ: Mapping[str, str] | None = None
) -> Tracing | None:
    """The process's tracing, or None when it is off (and then nothing is imported)."""
    if not settings.enabled:
        return None
    environ = os.environ if environ is None else environ
    for name in PROTOCOL_VARIABLES:
        protocol = environ.get(name, "grpc").strip()
        if protocol != "grpc":
            raise TracingUnavailable(
                f"{name}={protocol!r}: traces are exported over OTLP/gRPC only; "
                f"unset {name} or set it to grpc"
            )
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ModuleNotFoundError as missing:
        raise TracingUnavailable(
            f"tracing.enabled needs the OpenTelemetry SDK ({missing.name} is missing): "
            "pip install 'ensemble-extproc[otel]', or turn tracing off"
        ) from missing
    # Resource.create also reads OTEL_RESOURCE_ATTRIBUTES; the sampler (parent-based,
    # always on, by default) comes from OTEL_TRACES_SAMPLER.
    resource = Resource.create({"service.name": service_name(settings, component, environ)})
    provider = TracerProvider(resource=resource)
    if any(environ.get(name) for name in ENDPOINT_VARIABLES):
        exporter = OTLPSpanExporter()  # the exporter reads the OTEL_EXPORTER_OTLP_* variables
    else:
        exporter = OTLPSpanExporter(endpoint=f"http://{settings.collector}", insecure=True)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer(INSTRUMENTATION)
    return Tracing(tracer, TraceContextTextMapPropagator(), provider)
