"""The processor's span: one per ext_proc stream, saying what it decided.

Imported only when tracing is on (``server.create_server``). The parent is the trace
context Envoy sends in the stream's gRPC metadata (its span of the ext_proc call), else
the request's own ``traceparent`` (a client's, when Envoy does not trace).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.trace import Span, SpanKind, StatusCode

from .._pb.envoy.config.core.v3 import base_pb2 as core
from .._pb.envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from ..config import Config
from ..observability import genai
from ..observability.metrics import ProcessorMetrics
from ..observability.tracing import Tracing
from ..rules import RequestView
from . import responses
from .decision import Decision, NeedBody, Passthrough, Reject, Reroute, decision_label
from .policy import DecisionPolicy
from .server import ExternalProcessor, StreamHandler

SPAN_NAME = "ensemble decision"
TRACE_KEYS = ("traceparent", "tracestate")


def decision_attributes(decision: Decision, phase: str) -> genai.Attributes:
    """What a final decision says (``phase``: headers or body, where it was made)."""
    attributes: genai.Attributes = {genai.DECISION_PHASE: phase}
    match decision:
        case Reject(error):
            attributes[genai.DECISION] = "rejected"
            attributes[genai.ERROR_TYPE] = error.code or error.type
            attributes[genai.HTTP_STATUS] = error.status
        case Reroute(spec=spec):
            attributes[genai.DECISION] = decision_label(decision)
            attributes[genai.STRATEGY] = spec.strategy
            attributes[genai.MODELS] = list(spec.models)
            attributes[genai.MIN_RESPONSES] = spec.min_responses
            if spec.profile:
                attributes[genai.PROFILE] = spec.profile
        case Passthrough(reason=reason):
            attributes[genai.DECISION] = decision_label(decision)
            attributes[genai.DECISION_REASON] = reason
    if isinstance(decision, Passthrough | Reroute) and decision.confidence is not None:
        attributes[genai.CONFIDENCE] = decision.confidence
    return attributes


def _trace_headers(headers: core.HeaderMap) -> dict[str, str]:
    return {
        header.key: (header.raw_value.decode("latin-1") if header.raw_value else header.value)
        for header in headers.headers
        if header.key in TRACE_KEYS
    }


class TracedStreamHandler(StreamHandler):
    """A stream handler whose stream is a span, from its headers to its final decision."""

    def __init__(
        self,
        policy: DecisionPolicy,
        metrics: ProcessorMetrics | None,
        tracing: Tracing,
        metadata: Iterable[tuple[str, Any]],
    ) -> None:
        super().__init__(policy, metrics)
        self._tracing = tracing
        self._metadata = {key: value for key, value in metadata if key in TRACE_KEYS}
        self._span: Span | None = None

    def handle(self, request: pb.ProcessingRequest) -> pb.ProcessingResponse | None:
        if self._span is None and request.WhichOneof("request") == "request_headers":
            carrier: Mapping[str, str] = self._metadata or _trace_headers(
                request.request_headers.headers
            )
            parent = self._tracing.propagator.extract(carrier)
            self._span = self._tracing.tracer.start_span(
                SPAN_NAME, context=parent, kind=SpanKind.SERVER
            )
        return super().handle(request)

    def _answer(
        self, decision: Decision, phase: responses.Phase, view: RequestView
    ) -> pb.ProcessingResponse:
        response = super()._answer(decision, phase, view)
        span = self._span
        if span is not None and span.is_recording() and not isinstance(decision, NeedBody):
            span.set_attributes(decision_attributes(decision, phase))
            if isinstance(decision, Reject) and decision.error.status >= 500:
                span.set_status(StatusCode.ERROR)
            span.end()
        return response

    def close(self) -> None:
        span = self._span
        if span is not None and span.is_recording():  # no decision: the stream ended first
            span.set_attribute(genai.DECISION_REASON, "the stream ended before a decision")
            span.end()


class TracedExternalProcessor(ExternalProcessor):
    def __init__(self, config: Config, metrics: ProcessorMetrics | None, tracing: Tracing) -> None:
        super().__init__(config, metrics)
        self._tracing = tracing

    def new_handler(self, context: Any) -> StreamHandler:
        return TracedStreamHandler(
            self.policy, self.metrics, self._tracing, context.invocation_metadata() or ()
        )
