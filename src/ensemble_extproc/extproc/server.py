"""The gRPC ext_proc server: one bidirectional stream per HTTP request.

The stream loop only moves messages; ``StreamHandler`` maps each message to one response;
``decide`` holds the policy.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from .. import headers as h
from .._pb.envoy.config.core.v3 import base_pb2 as core
from .._pb.envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from .._pb.envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from ..config import Address, Config
from ..errors import ApiError
from ..observability.logs import REQUEST_ID
from ..observability.metrics import ProcessorMetrics
from ..observability.tracing import Tracing
from ..rules import RequestView
from . import responses
from .decision import Decision, NeedBody, Passthrough, Reject, Reroute, decision_label
from .policy import DecisionPolicy, with_body

log = logging.getLogger(__name__)


def header_dict(header_map: core.HeaderMap) -> dict[str, str]:
    """Envoy's header list as a dict; repeated headers are joined with commas (RFC 9110)."""
    out: dict[str, str] = {}
    for header in header_map.headers:
        # Each field read builds a new Python object: read each once.
        key, raw = header.key, header.raw_value
        value = raw.decode("utf-8", "replace") if raw else header.value
        if key in out:
            value = f"{out[key]},{value}"
        out[key] = value
    return out


class StreamHandler:
    """State of one ext_proc stream (one HTTP request): its headers, until the body."""

    def __init__(self, policy: DecisionPolicy, metrics: ProcessorMetrics | None = None) -> None:
        self._policy = policy
        self._metrics = metrics
        self._view: RequestView | None = None
        self._spoofed: tuple[str, ...] = ()
        self._awaiting_body = False
        self.decision: Decision | None = None

    def close(self) -> None:
        """The stream ended (extproc.tracing's handler ends its span here)."""

    def handle(self, request: pb.ProcessingRequest) -> pb.ProcessingResponse | None:
        phase = request.WhichOneof("request")
        if request.observability_mode or phase is None:
            return None  # Envoy ignores answers in observability mode.
        if phase == "request_headers":
            return self._request_headers(request)
        if phase == "request_body":
            return self._request_body(request)
        # Phases the processor does not use (skipped by its processing mode) just go on.
        return responses.CONTINUE[phase]

    def _request_headers(self, request: pb.ProcessingRequest) -> pb.ProcessingResponse:
        headers = header_dict(request.request_headers.headers)
        REQUEST_ID.set(headers.get("x-request-id"))
        # Internal headers a client sent are removed, whatever the decision.
        self._spoofed = tuple([name for name in h.INTERNAL if name in headers])
        view = self._view = RequestView(path=headers.get(":path", ""), headers=headers)
        pending = not request.request_headers.end_of_stream
        return self._answer(self._policy.decide(view, body_pending=pending), "headers", view)

    def _request_body(self, request: pb.ProcessingRequest) -> pb.ProcessingResponse:
        if not self._awaiting_body or self._view is None:
            return responses.CONTINUE["request_body"]
        self._awaiting_body = False
        try:
            view = with_body(self._view, request.request_body.body)
        except ApiError as error:
            return self._answer(Reject(error), "body", self._view)
        return self._answer(self._policy.decide(view, body_pending=False), "body", view)

    def _answer(
        self, decision: Decision, phase: responses.Phase, view: RequestView
    ) -> pb.ProcessingResponse:
        self.decision = decision
        log.debug("decision %s", decision)
        if self._metrics is not None:
            self._count(decision, self._metrics)
        match decision:
            case NeedBody():
                self._awaiting_body = True
                return self._policy.await_body(self._spoofed)
            case Reject(error):
                return responses.reject(error)
            case Reroute():
                internal = self._policy.internal_headers(decision, view)
                facts = self._policy.facts(decision)
                return responses.reroute(phase, internal, self._spoofed, facts)
            case Passthrough():
                return self._policy.passthrough(phase, decision, self._spoofed)

    @staticmethod
    def _count(decision: Decision, metrics: ProcessorMetrics) -> None:
        match decision:
            case Reject(error):
                metrics.decisions["rejected", error.code] += 1
            case Passthrough() | Reroute():
                metrics.decisions[decision_label(decision), ""] += 1
                for ignored in decision.ignored:
                    metrics.ignored_signals[ignored.partition(":")[0]] += 1


class ExternalProcessor(pb_grpc.ExternalProcessorServicer):
    def __init__(self, config: Config, metrics: ProcessorMetrics | None = None) -> None:
        self.policy = DecisionPolicy(config)
        self.metrics = metrics

    def new_handler(self, context: Any) -> StreamHandler:
        """The handler of one stream (``context``: its gRPC call, read when tracing)."""
        return StreamHandler(self.policy, self.metrics)

    async def Process(
        self, request_iterator: AsyncIterator[pb.ProcessingRequest], context: Any
    ) -> AsyncIterator[pb.ProcessingResponse]:
        metrics = self.metrics
        handler = self.new_handler(context)
        if metrics is not None:
            metrics.streams_started += 1
        try:
            async for request in request_iterator:
                if metrics is not None and metrics.sampled():
                    started = time.perf_counter()
                    response = handler.handle(request)
                    phase = request.WhichOneof("request") or "none"
                    metrics.message_seconds.labels(phase).observe(time.perf_counter() - started)
                else:
                    response = handler.handle(request)
                if response is not None:
                    yield response
        finally:
            handler.close()
            if metrics is not None:
                metrics.streams_ended += 1


def create_server(
    config: Config,
    address: Address,
    metrics: ProcessorMetrics | None = None,
    tracing: Tracing | None = None,
) -> tuple[grpc.aio.Server, int]:
    """A configured, not yet started server and the port it bound (0 picks a free one)."""
    # grpc.aio enables SO_REUSEPORT by default: a stale server would keep serving the port.
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    servicer = ExternalProcessor(config, metrics)
    if tracing is not None:  # imports OpenTelemetry: only when tracing is on
        from .tracing import TracedExternalProcessor

        servicer = TracedExternalProcessor(config, metrics, tracing)
    pb_grpc.add_ExternalProcessorServicer_to_server(servicer, server)
    port = server.add_insecure_port(f"{address.host}:{address.port}")
    return server, port
