"""The processor's decision for one request: pure, from headers and config."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .. import headers as h
from ..config import Config
from ..errors import ApiError
from ..spec import EnsembleSpec, asks_for_ensemble, spec_from_headers


@dataclass(frozen=True, slots=True)
class Passthrough:
    """Go on to the default model route, unchanged but for a spoofed routing header."""

    reason: str
    # The client sent the internal routing header: remove it and recompute the route.
    strip_route_header: bool


@dataclass(frozen=True, slots=True)
class Reroute:
    """Send the request to the ensemble upstream with this (normalised) spec."""

    spec: EnsembleSpec


@dataclass(frozen=True, slots=True)
class Reject:
    """Answer the client directly: its ensemble headers are wrong."""

    error: ApiError


Decision = Passthrough | Reroute | Reject


def decide(headers: Mapping[str, str], config: Config) -> Decision:
    spoofed = h.ROUTE in headers
    if not config.ensemble.enabled:
        return Passthrough("disabled", spoofed)
    try:
        if not asks_for_ensemble(headers):
            return Passthrough("not_requested", spoofed)
        return Reroute(spec_from_headers(headers, config))
    except ApiError as error:
        return Reject(error)
