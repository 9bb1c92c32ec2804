"""Confidence signals for adaptive ensembling, and how they combine (pure).

A signal reads a request and returns a confidence in [0, 1] that a single model answers it
well, or None when it has nothing to say (e.g. its header is absent). Add your own by
naming a factory in config: ``type: "python:my_package.signals:make_signal"``; the factory
receives the signal's config and returns an object with ``name``, ``needs_body`` and
``confidence(request)``.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..config.model import SignalConfig
from ..errors import ConfigError
from ..rules import RequestView
from .difficulty import DifficultyWeights
from .difficulty import confidence as difficulty_confidence

PLUGIN_PREFIX = "python:"


class Signal(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def needs_body(self) -> bool: ...

    def confidence(self, request: RequestView) -> float | None: ...


@dataclass(frozen=True, slots=True)
class Reading:
    """A signal's confidence, or why it gave none."""

    name: str
    value: float | None
    weight: float
    ignored: str | None = None  # e.g. "not a number in [0, 1]"


class InvalidReading(ValueError):
    """A signal's input was present but unusable (counted, never the client's error)."""


@dataclass(frozen=True, slots=True)
class HeaderSignal:
    """A confidence set by an upstream router or classifier, e.g. the vLLM semantic
    router's ``x-vsr-selected-confidence``. The first header present counts."""

    names: tuple[str, ...]
    name: str = "header"
    needs_body: bool = False

    def confidence(self, request: RequestView) -> float | None:
        for header in self.names:
            raw = request.headers.get(header)
            if raw is None:
                continue
            try:
                value = float(raw)
            except ValueError:
                raise InvalidReading(f"{header}: {raw[:40]!r} is not a number") from None
            if not 0.0 <= value <= 1.0 or math.isnan(value):
                raise InvalidReading(f"{header}: {value} is not in [0, 1]")
            return value
        return None


@dataclass(frozen=True, slots=True)
class DifficultySignal:
    """The built-in prompt-difficulty estimate: cheap features of the last user message."""

    weights: DifficultyWeights
    name: str = "difficulty"
    needs_body: bool = True

    def confidence(self, request: RequestView) -> float | None:
        if request.body is None:
            return None
        text = "\n".join(t for t in (request.system_prompt, request.last_user_message) if t)
        return difficulty_confidence(text, self.weights)


def _plugin(kind: str, config: SignalConfig, key: str) -> Signal:
    target = kind.removeprefix(PLUGIN_PREFIX)
    module_name, _, attr = target.partition(":")
    try:
        factory: Callable[[SignalConfig], Signal] = getattr(
            importlib.import_module(module_name), attr
        )
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(
            key, f"cannot load signal {target!r}: {exc}", "use python:<module>:<factory>"
        ) from exc
    return factory(config)


def build_signals(configs: Sequence[SignalConfig]) -> list[tuple[Signal, float]]:
    built: list[tuple[Signal, float]] = []
    for i, config in enumerate(configs):
        key = f"adaptive.signals[{i}].type"
        if config.type == "header":
            signal: Signal = HeaderSignal(config.headers)
        elif config.type == "difficulty":
            signal = DifficultySignal(config.weights)
        else:
            signal = _plugin(config.type, config, key)
        built.append((signal, config.weight))
    return built


def read(signals: Sequence[tuple[Signal, float]], request: RequestView) -> list[Reading]:
    readings = []
    for signal, weight in signals:
        try:
            readings.append(Reading(signal.name, signal.confidence(request), weight))
        except InvalidReading as exc:
            readings.append(Reading(signal.name, None, weight, ignored=str(exc)))
    return readings


def combine(readings: Sequence[Reading], how: str) -> float | None:
    """``min``: the least confident signal decides; ``mean``: weighted by signal weight."""
    present = [r for r in readings if r.value is not None]
    if not present:
        return None
    if how == "min":
        return min(r.value for r in present if r.value is not None)
    total = sum(r.weight for r in present)
    return sum((r.value or 0.0) * r.weight for r in present) / total
