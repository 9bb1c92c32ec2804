"""The processor's per-process decision state: compiled signals and the admission gate.

``decide`` stays pure; this object binds it to what is built once at start-up and turns a
decision into what Envoy and the upstream are told (internal headers, dynamic metadata).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from google.protobuf import struct_pb2

from .. import headers as h
from .._pb.envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from ..adaptive.gate import AdmissionGate
from ..adaptive.signals import build_signals
from ..body import check_content_encoding, parse_json_object
from ..chat import prompt_text
from ..config import Config
from ..errors import ApiError
from ..internal import Binding, sign
from ..paths import is_chat_completion
from ..rules import RequestView
from ..scope import scope
from ..spec import cap_header, parse_max_cost, with_cost_cap
from . import responses
from .decision import (
    DISABLED,
    NOTHING,
    Decision,
    Passthrough,
    Reject,
    Reroute,
    decide,
    decision_label,
    needs_body,
)

log = logging.getLogger(__name__)

NOT_A_CHAT_COMPLETION = Passthrough("not a chat completion")


def with_body(view: RequestView, raw: bytes) -> RequestView:
    """The view once the body is in: parsed once, here. Not standard JSON: the client's 400."""
    body = parse_json_object(raw) if raw else {}
    last_user, system = prompt_text(body)
    return RequestView(view.path, view.headers, body, last_user, system)


class DecisionPolicy:
    def __init__(self, config: Config, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        adaptive = config.adaptive
        # Plugins fail at start-up; none is loaded while adaptive ensembling is off.
        self._signals = build_signals(adaptive.signals) if adaptive.enabled else []
        self._gate = AdmissionGate(adaptive.sample_rate, adaptive.max_per_second)
        self._clock = clock
        self._needs_body = needs_body(config)
        # The rendered routes never ask about a chat completion outside the scope; an Envoy
        # that asks about every request (a hand-made bootstrap, an EnvoyExtensionPolicy on
        # a whole Gateway) gets the same answer for it without reading any source.
        needed = scope(config)
        self._scope = None if needed.every_chat_completion else frozenset(needed.headers)
        self._outside = NOTHING if config.ensemble.enabled else DISABLED
        # Answers that depend on nothing in the request, built once (the common case: a
        # pass-through with nothing to remove costs no message building). Keyed by phase
        # and reason, a handful of fixed strings; grpc serialises a message afresh for
        # each write and nothing changes these.
        self._passthrough: dict[tuple[responses.Phase, str], pb.ProcessingResponse] = {}
        self._await_body = responses.await_body(())

    def decide(self, view: RequestView, *, body_pending: bool) -> Decision:
        """``body_pending``: a body follows the headers (asked for only if a source reads it)."""
        headers = view.headers
        if not is_chat_completion(headers.get(":method", ""), headers.get(":path", view.path)):
            # Only a chat completion can be ensembled: anything else is plain traffic, which
            # Envoy proxies to the default model (or answers 404/405), whatever it asks.
            return NOT_A_CHAT_COMPLETION
        if body_pending:
            # A chat completion's body may be read here, by the upstream or by neither: one
            # rule for all of them, whatever the route.
            try:
                check_content_encoding(headers)
            except ApiError as error:
                return Reject(error)
        if self._scope is not None and self._scope.isdisjoint(headers):
            return self._outside
        pending = body_pending and self._needs_body
        decision = decide(view, self.config, self._signals, self._admit, body_pending=pending)
        try:
            if isinstance(decision, Reroute):
                # Whoever decided, the client's cost cap (checked, signed) goes with the spec.
                decision = replace(
                    decision, spec=with_cost_cap(decision.spec, headers, self.config)
                )
            elif isinstance(decision, Passthrough):
                # One call to the default model: no ensemble to cap, but a bad cap is a 400.
                parse_max_cost(headers)
        except ApiError as error:
            return Reject(error)
        if isinstance(decision, Passthrough | Reroute) and decision.ignored:
            log.debug("ignored signal input: %s", "; ".join(decision.ignored))
        return decision

    def _admit(self, view: RequestView) -> tuple[bool, str]:
        return self._gate.admit(view.headers.get("x-request-id"))

    def internal_headers(self, decision: Reroute, view: RequestView) -> dict[str, str]:
        """What the upstream is told, signed for this one request (``view``'s headers)."""
        spec = decision.spec
        values = {
            h.ROUTE: h.ROUTE_VALUE,
            h.MODELS: ",".join(spec.models),
            h.STRATEGY: spec.strategy,
            h.MIN_RESPONSES: str(spec.min_responses),
            h.PROFILE: spec.profile or "",
            h.DECISION: decision.source,
            h.TIMEOUT: f"{spec.timeout_seconds:g}" if spec.timeout_seconds else "",
            # Overwrites the client's copy with the cap the ensemble keeps to.
            h.MAX_COST: cap_header(spec),
        }
        if self.config.internal_secret is not None:
            binding = Binding(
                view.headers.get(h.REQUEST_ID, ""),
                view.headers.get(":method", ""),
                view.headers.get(":path", view.path),
            )
            values[h.SIGNATURE] = sign(self.config.internal_secret, values, binding, self._clock())
        # Absent values are signed as "" and read back as "" by the upstream.
        return {name: value for name, value in values.items() if value}

    def passthrough(
        self, phase: responses.Phase, decision: Passthrough, spoofed: Sequence[str]
    ) -> pb.ProcessingResponse:
        """Go on to the default route: the prebuilt answer unless something in it is this
        request's own (headers to remove, a confidence)."""
        if spoofed or decision.confidence is not None:
            return responses.passthrough(phase, spoofed, self.facts(decision))
        key = (phase, decision.reason)
        answer = self._passthrough.get(key)
        if answer is None:
            answer = self._passthrough[key] = responses.passthrough(phase, (), self.facts(decision))
        return answer

    def await_body(self, spoofed: Sequence[str]) -> pb.ProcessingResponse:
        return responses.await_body(spoofed) if spoofed else self._await_body

    def facts(self, decision: Passthrough | Reroute) -> struct_pb2.Struct:
        """Dynamic metadata for Envoy: response headers and access logs read it."""
        facts = {"decision": decision_label(decision)}
        if decision.confidence is not None:
            facts["confidence"] = f"{decision.confidence:.3f}"
        if isinstance(decision, Reroute):
            facts["strategy"] = decision.spec.strategy
            facts["models"] = ",".join(decision.spec.models)
            if decision.spec.profile:
                facts["profile"] = decision.spec.profile
        else:
            facts["reason"] = decision.reason
        return responses.metadata(self.config.metadata_namespace, facts)
