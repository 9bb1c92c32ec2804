"""The processor's decision for one request, from three sources in a fixed order.

1. ``x-ensemble-enable: false`` wins over everything (and ``ensemble.enabled: false``).
2. Header: ``x-ensemble-*`` headers, when ``header_control`` allows this client.
3. Rules: ``"model": "<profile>"`` in the body, then the config rules, first match wins.
4. Adaptive: the request's confidence below ``adaptive.threshold``, if admitted (a
   confidence header only from a source that is believed: ``believed``).
5. Otherwise the default route.

Pure but for ``admit`` (the adaptive sampling/rate gate), which the caller supplies.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ..adaptive.signals import HeaderSignal, Signal, combine, read
from ..config import Config
from ..errors import ApiError, ErrorCode
from ..rules import RequestView, first_match, lookup
from ..scope import scope
from ..spec import EnsembleSpec, asks_for_ensemble, parse_enable, spec_from_headers


@dataclass(frozen=True, slots=True)
class Passthrough:
    """Go on to the default model route."""

    reason: str = "none"
    confidence: float | None = None
    # Signals whose input was unusable (e.g. a confidence header that is not a number).
    ignored: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Reroute:
    """Send the request to the ensemble upstream with this spec."""

    spec: EnsembleSpec
    source: str  # header | rule:<name> | adaptive
    confidence: float | None = None
    ignored: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Reject:
    """Answer the client directly: its ensemble headers are wrong or not allowed."""

    error: ApiError


@dataclass(frozen=True, slots=True)
class NeedBody:
    """A rule or signal reads the body: decide again when it arrives."""


Decision = Passthrough | Reroute | Reject | NeedBody
# The common answers, made once (decisions are immutable).
NOTHING = Passthrough()
DISABLED = Passthrough("disabled")
NEED_BODY = NeedBody()
Admit = Callable[[RequestView], tuple[bool, str]]

MODEL_RULE = "model"  # the implicit rule "the body's model names a profile"


def client_key(headers: Mapping[str, str]) -> str:
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return headers.get("x-api-key", "").strip()


def header_control_allows(headers: Mapping[str, str], config: Config) -> bool:
    if config.client_api_keys:
        key = client_key(headers).encode()
        if not any(hmac.compare_digest(key, k.encode()) for k in config.client_api_keys):
            return False
    required = config.header_control.require_header
    if required is not None:
        return headers.get(required.name, "") in required.values
    return True


def decide(
    view: RequestView,
    config: Config,
    signals: Sequence[tuple[Signal, float]],
    admit: Admit,
    *,
    body_pending: bool,
) -> Decision:
    """``body_pending``: a body follows and some source reads it (see ``needs_body``)."""
    headers = view.headers
    try:
        enable = parse_enable(headers)
        if enable is False or not config.ensemble.enabled:
            return DISABLED
        if config.header_control.enabled and asks_for_ensemble(headers, enable):
            if not header_control_allows(headers, config):
                return Reject(
                    ApiError(
                        ErrorCode.ENSEMBLE_HEADERS_NOT_ALLOWED,
                        "this client may not ask for an ensemble with x-ensemble-* headers",
                    )
                )
            return Reroute(spec_from_headers(headers, config), "header")
    except ApiError as error:
        return Reject(error)
    if body_pending:
        return NEED_BODY
    model = lookup(view.body, "model")
    if isinstance(model, str) and model in config.profiles:
        return Reroute(config.profiles[model], f"rule:{MODEL_RULE}")
    rule = first_match(config.rules, view)
    if rule is not None:
        return Reroute(config.profiles[rule.profile], f"rule:{rule.name}")
    return _adaptive(view, config, signals, admit)


def needs_body(config: Config) -> bool:
    """Whether any decision source reads the request body (computed once, at start-up).

    Any profile does: a body's ``model`` may name it. The same reasons decide which
    requests Envoy sends to the processor at all (``scope``), so the two cannot disagree.
    """
    return scope(config).reads_body


def believed(
    signals: Sequence[tuple[Signal, float]], headers: Mapping[str, str], config: Config
) -> tuple[list[tuple[Signal, float]], tuple[str, ...]]:
    """The signals whose input is believed for this request, and why others are not.

    A confidence header comes from whoever set it last. With the semantic router's
    processor configured, that is the router: Envoy removes clients' copies at the edge.
    Without one, it is the client: its low confidence would buy it an ensemble, so it
    counts only for a client that ``header_control`` would let ask for one (its API keys,
    its required header)."""
    if config.semantic_router.extproc is not None or header_control_allows(headers, config):
        return list(signals), ()
    kept, dropped = [], []
    for signal, weight in signals:
        if isinstance(signal, HeaderSignal):
            if any(name in headers for name in signal.names):
                dropped.append(f"{signal.name}: set by a client that header_control does not allow")
        else:
            kept.append((signal, weight))
    return kept, tuple(dropped)


def _adaptive(
    view: RequestView, config: Config, signals: Sequence[tuple[Signal, float]], admit: Admit
) -> Decision:
    settings = config.adaptive
    if not settings.enabled:
        return NOTHING
    signals, untrusted = believed(signals, view.headers, config)
    readings = read(signals, view)
    ignored = untrusted + tuple(r.ignored for r in readings if r.ignored)
    confidence = combine(readings, settings.combine)
    if confidence is None or confidence >= settings.threshold:
        return Passthrough("none", confidence, ignored)
    admitted, why = admit(view)
    if not admitted:
        return Passthrough(f"adaptive: {why}", confidence, ignored)
    return Reroute(config.profiles[settings.profile], "adaptive", confidence, ignored)


def decision_label(decision: Decision) -> str:
    """What ``x-ensemble-decision`` says: header | rule:<name> | adaptive | none."""
    return decision.source if isinstance(decision, Reroute) else "none"


__all__ = [
    "Decision",
    "NeedBody",
    "Passthrough",
    "Reject",
    "Reroute",
    "decide",
    "decision_label",
]
