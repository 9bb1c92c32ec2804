"""What a strategy sees (candidates) and what it returns (a selection)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

# A truncated answer (``length``) is still the model's answer to the request as sent; a
# filtered one is not.
ACCEPTED_FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "function_call", None})


class Status(StrEnum):
    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.total_tokens + other.total_tokens,
        )


@dataclass(frozen=True, slots=True)
class Candidate:
    """One model's answer (or failure) within an ensemble."""

    model: str
    status: Status
    message: Mapping[str, Any] | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
    latency_ms: float = 0.0
    error: str | None = None
    # Position in completion order (0 = finished first); -1 until the orchestrator sets it.
    order: int = -1

    @property
    def content(self) -> str:
        content = self.message.get("content") if self.message else None
        return content if isinstance(content, str) else ""

    @property
    def tool_calls(self) -> Sequence[Any]:
        calls = self.message.get("tool_calls") if self.message else None
        return calls if isinstance(calls, list) else []

    @property
    def valid(self) -> bool:
        """An answer a strategy may select: it arrived, says something, and was not filtered."""
        return (
            self.status is Status.OK
            and (bool(self.content.strip()) or bool(self.tool_calls))
            and self.finish_reason in ACCEPTED_FINISH_REASONS
        )


@dataclass(frozen=True, slots=True)
class Selection:
    winner: Candidate
    # Share of valid answers that agree with the winner, where the strategy measures it.
    agreement: float | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


class Strategy(Protocol):
    """An aggregation rule. Pure: no I/O, no clocks; the orchestrator does the calls."""

    name: str
    # The quorum this strategy needs by nature when the request sets none (None: config's).
    natural_min_responses: int | None

    def enough(self, valid: Sequence[Candidate], pending: int) -> bool:
        """True once the answers in hand decide the outcome (the rest may be cancelled)."""
        ...

    def select(self, valid: Sequence[Candidate], model_order: Sequence[str]) -> Selection:
        """Choose among valid candidates (never empty). ``model_order`` is the request's."""
        ...
