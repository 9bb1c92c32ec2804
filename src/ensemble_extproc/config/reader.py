"""Typed access to a YAML mapping, with errors that name the key path."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypeVar

from ..errors import ConfigError

T = TypeVar("T")


def type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


class Section:
    """One mapping of the config file, read key by key; unknown keys are errors."""

    def __init__(self, raw: object, path: str, allowed: frozenset[str]) -> None:
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise ConfigError(path, f"must be a mapping, got {type_name(raw)}")
        unknown = sorted(str(key) for key in raw if key not in allowed)
        if unknown:
            raise ConfigError(
                f"{path}.{unknown[0]}" if path else unknown[0],
                "unknown key",
                f"allowed keys here: {', '.join(sorted(allowed))}",
            )
        self.raw: Mapping[str, Any] = raw
        self.path = path

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def has(self, name: str) -> bool:
        return name in self.raw

    def get(self, name: str, kind: type[T], default: T) -> T:
        if name not in self.raw or self.raw[name] is None:
            return default
        return self.require(name, kind)

    def require(self, name: str, kind: type[T]) -> T:
        if name not in self.raw:
            raise ConfigError(self.key(name), "is required")
        value = self.raw[name]
        # YAML reads 5 as int where a float is expected; bool is not a number here.
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise ConfigError(
                self.key(name), f"must be {kind.__name__}, got {type_name(value)} {value!r}"
            )
        return value

    def positive(self, name: str, kind: type[T], default: T) -> T:
        value = self.get(name, kind, default)
        # YAML's .nan passes "> 0" unnoticed and .inf overflows every duration.
        if not value > 0:  # type: ignore[operator]
            raise ConfigError(self.key(name), f"must be > 0, got {value!r}")
        if not math.isfinite(value):  # type: ignore[arg-type]
            raise ConfigError(self.key(name), f"must be a finite number, got {value!r}")
        return value
