"""The upstream's spans: one per ensemble request, one per call it makes.

Imported only when tracing is on (``app.create_app``). The ensemble span continues the
trace of the request's ``traceparent`` (Envoy's, when Envoy traces); each call to a
model endpoint is its child, one span per attempt (a retry is a second span with
``http.request.resend_count``), cancelled ones included, and carries its own
``traceparent`` to the endpoint. A call skipped by an open circuit is a span too, of no
length, with ``ensemble.call.status`` ``skipped``.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from opentelemetry import context as otel_context
from opentelemetry.trace import Span, SpanKind, StatusCode, set_span_in_context

from ..chat import ChatRequest
from ..config import Endpoint, EnsembleSettings
from ..observability import genai
from ..observability.tracing import Tracing
from ..paths import CHAT_COMPLETIONS
from ..strategies.base import Call, Candidate, Role, Status
from ..trust.service import TrustService
from .client import TRACE_HEADERS, Body, EndpointClient, Headers, Offer
from .orchestrator import Asked, Fanout, Outcome

ENSEMBLE_SPAN = "ensemble"


@dataclass(slots=True)
class _CallTrace:
    """One call's tracing state, in its own task: its role, its attempts so far, and the
    span of an attempt that was interrupted, ended once it is known why."""

    role: Role
    attempts: int = 0
    interrupted: Span | None = None


# Set by TracedFanout.call in the call's task (each call runs in a task of its own), read
# by TracedClient there; a task's context is its own, so calls never see each other's.
_CALL: contextvars.ContextVar[_CallTrace | None] = contextvars.ContextVar(
    "ensemble_call_trace", default=None
)


def _end(span: Span, attributes: genai.Attributes, error: bool) -> None:
    span.set_attributes(attributes)
    if error:
        span.set_status(StatusCode.ERROR, str(attributes.get(genai.CALL_ERROR, "")))
    span.end()


def _call_failed(candidate: Candidate) -> bool:
    """A span in error: the call failed or ran out of time; not one the ensemble stopped
    (cancelled) or never made (skipped)."""
    return candidate.status in (Status.ERROR, Status.TIMEOUT)


def _stopped(reason: str) -> genai.Attributes:
    """A call the orchestrator cancelled: its reasons start with ``cancelled:``, but for the
    ensemble's deadline (the call's status is then ``timeout``)."""
    status = genai.CANCELLED if reason.startswith("cancelled") else genai.TIMEOUT
    return {genai.CALL_STATUS: status, genai.ERROR_TYPE: status, genai.CALL_ERROR: reason}


class TracedClient:
    """An endpoint client whose every call is a client span, and carries its context."""

    def __init__(self, inner: EndpointClient, tracing: Tracing) -> None:
        self._inner = inner
        self._tracing = tracing

    def _start(
        self, endpoint: Endpoint, body: Body, client_headers: Headers
    ) -> tuple[Span, dict[str, str]]:
        trace = _CALL.get()
        role, attempt = Role.MEMBER, 1
        if trace is not None:
            trace.attempts += 1
            role, attempt = trace.role, trace.attempts
        attributes = genai.call_attributes(endpoint, role, attempt, body)
        span = self._tracing.tracer.start_span(
            f"{genai.CHAT} {body.get('model', endpoint.name)}",
            kind=SpanKind.CLIENT,
            attributes=attributes,
        )
        # The endpoint continues this call's span, not the client's or Envoy's.
        headers = {k: v for k, v in (client_headers or {}).items() if k not in TRACE_HEADERS}
        self._tracing.propagator.inject(headers, context=set_span_in_context(span))
        return span, headers

    async def complete(
        self, endpoint: Endpoint, body: Body, headers: Headers = None, offer: Offer | None = None
    ) -> Candidate:
        span, carried = self._start(endpoint, body, headers)
        try:
            candidate = await self._inner.complete(endpoint, body, carried, offer)
        except asyncio.CancelledError:
            trace = _CALL.get()
            if trace is None:
                _end(span, {genai.CALL_STATUS: genai.CANCELLED}, error=False)
            else:  # TracedFanout learns why: a timeout, or the ensemble's reason
                trace.interrupted = span
            raise
        except Exception as exc:  # the orchestrator turns it into a failed call
            span.record_exception(exc)
            _end(span, {genai.ERROR_TYPE: type(exc).__qualname__}, error=True)
            raise
        _end(span, genai.result_attributes(candidate), _call_failed(candidate))
        return candidate


class TracedFanout(Fanout):
    """A fan-out whose calls are traced (through ``TracedClient``), and which ends the span
    of a call that was interrupted once it knows why."""

    def __init__(
        self,
        tracing: Tracing,
        endpoints: Mapping[str, Endpoint],
        settings: EnsembleSettings,
        client: EndpointClient,
        trust: TrustService | None = None,
    ) -> None:
        super().__init__(endpoints, settings, TracedClient(client, tracing), trust)
        self._tracing = tracing

    async def call(self, call: Call, asked: Asked, offer: Offer | None = None) -> Candidate:
        trace = _CallTrace(call.role)
        _CALL.set(trace)
        try:
            candidate = await super().call(call, asked, offer)
        except asyncio.CancelledError as stop:
            if trace.interrupted is not None:
                reason = str(stop.args[0]) if stop.args else "cancelled"
                _end(trace.interrupted, _stopped(reason), error=False)
            raise
        if trace.interrupted is not None:  # the call's own time ran out (model_timeout)
            _end(trace.interrupted, genai.result_attributes(candidate), error=True)
        elif candidate.status is Status.SKIPPED:
            self._skipped(call, candidate)
        return candidate

    def _skipped(self, call: Call, candidate: Candidate) -> None:
        endpoint = self._endpoints[call.model]
        attributes = genai.call_attributes(
            endpoint, call.role, 0, {"model": endpoint.upstream_model}
        )
        attributes.update(genai.result_attributes(candidate))
        now = time.time_ns()  # not called: no time passed
        span = self._tracing.tracer.start_span(
            f"{genai.CHAT} {endpoint.upstream_model}",
            kind=SpanKind.CLIENT,
            attributes=attributes,
            start_time=now,
        )
        span.end(end_time=now)


def ensemble_attributes(outcome: Outcome, status: int) -> genai.Attributes:
    """What an ensemble's span says once it answered."""
    spec, selection, result = outcome.spec, outcome.selection, outcome.result
    attributes: genai.Attributes = {
        genai.STRATEGY: spec.strategy,
        genai.MODELS: list(spec.models),
        genai.MIN_RESPONSES: spec.min_responses,
        genai.OUTCOME: result,
        genai.CALLS_STARTED: outcome.calls_started,
        genai.CALLS_CANCELLED: outcome.calls_cancelled,
        genai.HTTP_STATUS: status,
    }
    if spec.profile:
        attributes[genai.PROFILE] = spec.profile
    # What the request cost in tokens: every call it caused, cancelled ones that reported.
    attributes.update(genai.usage_attributes(outcome.candidates))
    if selection is not None:
        winner = selection.winner
        attributes[genai.WINNER] = winner.model
        attributes[genai.RESPONSE_MODEL] = winner.response_model or winner.model
        attributes[genai.SELECTION_REASON] = selection.reason
        if winner.finish_reason is not None:
            attributes[genai.FINISH_REASONS] = [winner.finish_reason]
        if selection.agreement is not None:
            attributes[genai.AGREEMENT] = selection.agreement
    else:
        attributes[genai.ERROR_TYPE] = result
    return attributes


def tracing_middleware(
    tracing: Tracing,
    outcome_key: web.RequestKey[Outcome],
    chat_key: web.RequestKey[ChatRequest],
) -> Middleware:
    """The ensemble span around each chat completion (other paths are not traced)."""

    @web.middleware
    async def traced(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path != CHAT_COMPLETIONS:
            return await handler(request)
        parent = tracing.propagator.extract(request.headers)
        span = tracing.tracer.start_span(ENSEMBLE_SPAN, context=parent, kind=SpanKind.SERVER)
        # Current while the handler runs: the calls' tasks inherit it as their parent.
        token = otel_context.attach(set_span_in_context(span, parent))
        try:
            response = await handler(request)
        except BaseException as exc:  # cancelled: the client (Envoy) went away
            cancelled = isinstance(exc, asyncio.CancelledError)
            span.set_attribute(
                genai.ERROR_TYPE, genai.CANCELLED if cancelled else type(exc).__qualname__
            )
            span.end()
            raise
        finally:
            otel_context.detach(token)
        _finish(span, request.get(chat_key), request.get(outcome_key), response.status)
        return response

    return traced


def _finish(span: Span, chat: ChatRequest | None, outcome: Outcome | None, status: int) -> None:
    if chat is not None:
        span.set_attributes(genai.request_attributes(chat.body))
    if outcome is not None:
        span.update_name(f"{ENSEMBLE_SPAN} {outcome.spec.strategy}")
        span.set_attributes(ensemble_attributes(outcome, status))
    else:  # refused before an ensemble ran (a client mistake, overload)
        span.set_attributes({genai.HTTP_STATUS: status})
        if status >= 400:
            span.set_attribute(genai.ERROR_TYPE, str(status))
    if status >= 500:
        span.set_status(StatusCode.ERROR)
    span.end()
