"""The strategy contract: what a strategy sees, what it may ask for, what it returns.

A strategy is a *plan*: a generator that yields steps (launch these calls, wait, cancel
the rest) and receives the progress after each one. It never does I/O itself; the
orchestrator owns calls, deadlines and cancellation, so sequential strategies (cascade,
hedging, early stop) need no timing code of their own.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Protocol

from msgspec import Meta, Struct

from ..answers import Answer, message_answer
from ..chat import content_text
from ..cost.model import CallCost
from .settings import StrategySettings

if TYPE_CHECKING:  # trust imports this module (Candidate): no import cycle at run time
    from ..trust.weights import WeightPlan

# A truncated answer (``length``) is still the model's answer to the request as sent; a
# filtered one is not.
ACCEPTED_FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "function_call", None})


class Status(StrEnum):
    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"  # not called: the endpoint's circuit breaker is open
    OVER_BUDGET = "over_budget"  # not called: its estimated cost would pass the cost cap


class Failure(StrEnum):
    """Why an ERROR candidate failed, for retries, circuit breakers and metrics."""

    HTTP = "http"  # the endpoint answered an error status (see http_status)
    CONNECTION = "connection"  # no answer: refused, reset, broken mid-way
    BAD_ANSWER = "bad_answer"  # an answer that is not a usable completion
    MALFORMED_STREAM = "malformed_stream"
    TOO_LARGE = "too_large"
    ERROR_EVENT = "error_event"  # the endpoint's stream ended with an error event
    INTERNAL = "internal"  # a bug on our side


class Role(StrEnum):
    MEMBER = "member"  # answers the client's request; votes
    JUDGE = "judge"  # picks among members' answers (reranking)
    AGGREGATOR = "aggregator"  # writes one answer from members' answers (fusion)


Tokens = Annotated[int, Meta(ge=0)]


class Usage(Struct, frozen=True):
    """OpenAI's token counts (a response's ``usage``, as it is on the wire)."""

    prompt_tokens: Tokens
    completion_tokens: Tokens
    total_tokens: Tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.total_tokens + other.total_tokens,
        )


@dataclass(frozen=True, slots=True)
class Candidate:
    """One call's answer (or failure) within an ensemble."""

    model: str
    status: Status
    message: Mapping[str, Any] | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
    latency_ms: float = 0.0
    error: str | None = None
    # Position in completion order (0 = finished first); -1 until the orchestrator sets it.
    order: int = -1
    role: Role = Role.MEMBER
    # Mean log-probability of the answer's tokens, when the endpoint returned logprobs.
    mean_logprob: float | None = None
    # Transport facts for retries: why it failed, the endpoint's HTTP status and its
    # Retry-After (seconds).
    failure: Failure | None = None
    http_status: int | None = None
    retry_after: float | None = None
    attempts: int = 1
    # False: never sent to the endpoint (circuit open, over the cost cap, deadline passed).
    sent: bool = True
    # usage was counted by the gateway, not reported by the model (a stream that broke
    # and was resumed: see upstream.resume).
    usage_counted: bool = False
    # What the call cost, set by the orchestrator from the model's price.
    cost: CallCost | None = None
    # The model the endpoint says answered (its response's "model"), for traces.
    response_model: str | None = None
    # The extracted answer, computed once when the candidate is made (its answer arrived)
    # and carried along by dataclasses.replace; pass None with a new message to redo it.
    extracted: Answer | None = field(default=None, compare=False, repr=False)
    # ``valid``, worked out once: strategies, the response and metrics ask it many times.
    _valid: bool = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.extracted is None:
            object.__setattr__(self, "extracted", message_answer(self.message))
        valid = (
            self.status is Status.OK
            and (bool(self.content.strip()) or bool(self.tool_calls))
            and self.finish_reason in ACCEPTED_FINISH_REASONS
        )
        object.__setattr__(self, "_valid", valid)

    @property
    def content(self) -> str:
        return content_text(self.message.get("content")) if self.message else ""

    @property
    def tool_calls(self) -> Sequence[Any]:
        calls = self.message.get("tool_calls") if self.message else None
        return calls if isinstance(calls, list) else []

    @property
    def valid(self) -> bool:
        """An answer a strategy may select: it arrived, says something, and was not filtered."""
        return self._valid

    @property
    def answer(self) -> Answer:
        extracted = self.extracted
        return extracted if extracted is not None else message_answer(self.message)

    @property
    def invalid_reason(self) -> str:
        if self.error:
            return self.error
        if self.finish_reason not in ACCEPTED_FINISH_REASONS:
            return f"finish_reason {self.finish_reason!r}"
        return "empty answer"


# ----------------------------------------------------------------------------- steps


@dataclass(frozen=True, slots=True)
class Call:
    """One model call. By default the client's body, with ``model`` rewritten."""

    model: str
    role: Role = Role.MEMBER
    # Fields merged into the client's body (e.g. {"logprobs": True}).
    extra: Mapping[str, Any] = field(default_factory=dict)
    # Messages replacing the client's (judge and aggregator prompts).
    messages: Sequence[Mapping[str, Any]] | None = None
    # When the client streams, relay this call's output to it live. Among several relayed
    # calls, the first to produce output is committed to and the others are cancelled.
    relay: bool = False
    # Continue this partial answer (a relayed stream that broke, see upstream.resume).
    continues: Continuation | None = None


@dataclass(frozen=True, slots=True)
class Continuation:
    """The answer so far of a stream that broke: the text the client has, and how many
    chunks carried it (about one token each)."""

    text: str
    tokens: int


@dataclass(frozen=True, slots=True)
class Launch:
    calls: tuple[Call, ...]


@dataclass(frozen=True, slots=True)
class Wait:
    """Until at least one running call finishes, or ``seconds`` pass (hedging)."""

    seconds: float | None = None


@dataclass(frozen=True, slots=True)
class CancelRest:
    """Cancel every call still running: the outcome is decided."""

    reason: str


Step = Launch | Wait | CancelRest


@dataclass(frozen=True, slots=True)
class Progress:
    """What the plan knows after a step."""

    # Every finished call so far, in completion order (cancelled calls are not here).
    finished: tuple[Candidate, ...]
    # Calls launched and not finished yet.
    running: tuple[Call, ...] = ()
    deadline_passed: bool = False

    def running_members(self) -> tuple[str, ...]:
        return tuple(c.model for c in self.running if c.role is Role.MEMBER)

    def members(self) -> tuple[Candidate, ...]:
        return tuple(c for c in self.finished if c.role is Role.MEMBER)

    def valid_members(self) -> tuple[Candidate, ...]:
        return tuple(c for c in self.finished if c.role is Role.MEMBER and c.valid)


@dataclass(frozen=True, slots=True)
class Selection:
    """The plan's result: the answer to return, and why."""

    winner: Candidate
    # Share of valid member answers that agree with the winner, where measured.
    agreement: float | None = None
    # Why this answer won, for the ``ensemble`` object.
    reason: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)
    # Replaces the winner's message (e.g. a mean of numeric answers).
    message: Mapping[str, Any] | None = None
    # The groups of agreeing answers the strategy counted (model names, every valid
    # member answer in exactly one), handed to learned trust so that it does not group
    # the same answers again. None: the strategy did not group them all.
    groups: tuple[tuple[str, ...], ...] | None = None


# None: the plan could not produce an answer (quorum not met).
Plan = Generator[Step, Progress, Selection | None]


@dataclass(frozen=True, slots=True)
class Context:
    """Everything a plan may read: the request, its spec, the strategy settings."""

    models: tuple[str, ...]
    min_responses: int
    request: Mapping[str, Any]
    settings: StrategySettings
    # Per model: configured weight and (optional) accuracy.
    weights: Mapping[str, float] = field(default_factory=dict)
    accuracies: Mapping[str, float] = field(default_factory=dict)
    # This ensemble's weights from learned trust (trust.weights): accuracies learned or
    # configured, correlation multipliers, groups of members that move together. None:
    # trust is off: configured accuracies, independent members (weighted.weight_plan).
    weight_plan: WeightPlan | None = None
    # Ask every member to the end: this ensemble is a sample for learned trust, which
    # needs answers that an early stop did not choose. The answer must be the one the
    # plan would give without it (strategies that may stop early, see Strategy).
    complete: bool = False


class Strategy(Protocol):
    """An aggregation rule, registered by name. Strategies subclass it for its defaults:
    no config key needed, no helper model, every member asked and awaited."""

    name: str
    # The quorum this strategy needs by nature when the request sets none (None: config's).
    natural_min_responses: int | None = None

    def missing_setting(self, settings: StrategySettings) -> str | None:
        """The config key this strategy needs but does not have (e.g. a judge model)."""
        return None

    def helpers(self, settings: StrategySettings) -> tuple[str, ...]:
        """Models it calls besides the members (a judge, an aggregator)."""
        return ()

    def may_stop_early(self, ctx: Context) -> bool:
        """Whether the plan may leave members unasked or cancelled depending on the
        answers. Learned trust then counts only ensembles run with ``ctx.complete``: the
        others are a biased sample (an early stop keeps easy questions' slow members out)."""
        return False

    def plan(self, ctx: Context) -> Plan: ...
