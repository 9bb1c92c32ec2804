"""Resuming a relayed stream that broke midway (pure): which failures, on which model,
and what the calls of the chain are said to have used.

When the call being relayed to a streaming client fails after its first chunk (the
connection drops, an error event, a malformed line, it stalls past its timeout), the
client already has part of an answer. Where an endpoint declares that it continues a
partial assistant message (``models[].continuation``), the orchestrator asks it to
continue the text the client has, and relays that continuation on the same stream: the
client sees one answer. A continuation that breaks in turn is resumed again, from all the
text sent so far, on the next model. Elsewhere the stream ends with an error event.

Which model resumes: the members in the request's order that declare a continuation
style and have not failed in this ensemble (the broken model included). A call that was
cancelled (it lost the relay race, or was never needed) is not held against its model. The
continuation is a new call: a running call's own answer would not follow on from the
text sent.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace

from ..continuation import Style
from ..strategies.base import Candidate, Continuation, Failure, Status, Usage

# Failures after which a stream may be resumed. Not a filtered or empty answer (the model
# finished: another one would not do better from its text), nor one over
# max_response_bytes (continuing would make it longer still); and not a cancelled call
# (the ensemble is ending).
_BROKEN = frozenset({Status.ERROR, Status.TIMEOUT, Status.SKIPPED})


def resumable(candidate: Candidate) -> bool:
    """Whether a relayed call that failed may be continued by another model (a skipped
    or refused continuation too: the next model may take it over)."""
    return candidate.status in _BROKEN and candidate.failure is not Failure.TOO_LARGE


def next_resumer(
    order: Sequence[str], failed: Collection[str], style: Callable[[str], Style | None]
) -> str | None:
    """The model to continue the stream: the first in ``order`` that can, and has not
    failed in this ensemble."""
    for model in order:
        if model not in failed and style(model) is not None:
            return model
    return None


@dataclass(frozen=True, slots=True)
class Resume:
    """One break of the relayed stream, and what became of it."""

    broken: str
    # The model asked to continue; None when none could (the reason says why).
    resumed_on: str | None
    # The broken call's share of what the client has: content chunks and characters.
    chunks: int
    chars: int
    reason: str


class EchoFilter:
    """The text of a continuation, less a repeat of the text it continues.

    Some servers answer a prefix request with the prefix and its continuation; most send
    the continuation alone. While what arrived is still the start of the prefix it is held
    back; once it holds the whole prefix that repeat is dropped; once it differs it is
    passed on as it is.
    """

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._held = ""
        self._open = bool(prefix)

    def feed(self, text: str) -> str:
        if not self._open or not text:
            return text
        held = self._held + text
        if len(held) < len(self._prefix) and self._prefix.startswith(held):
            self._held = held
            return ""
        self._open = False
        self._held = ""
        return held[len(self._prefix) :] if held.startswith(self._prefix) else held

    def flush(self) -> str:
        """At the end: what was held was the start of an answer, not a repeat."""
        held, self._held, self._open = self._held, "", False
        return held


def joined(candidate: Candidate, continues: Continuation) -> Candidate:
    """A continuation's candidate with the whole answer (the text it continued, then its
    own), which is what the client got."""
    if candidate.message is None:
        return candidate
    echo = EchoFilter(continues.text)
    own = echo.feed(candidate.content) + echo.flush()
    message = {**candidate.message, "content": continues.text + own}
    return replace(candidate, message=message, extracted=None)


def counted_usage(
    chain: Sequence[tuple[Candidate, int]], last: Candidate | None
) -> list[Candidate]:
    """The broken calls of a chain (each with the chunks it relayed), with the usage
    they are counted: a broken stream never reports its own.

    Completion tokens: its chunks (OpenAI-compatible servers stream about a token each).
    Prompt tokens: those the next call of the chain reported or was counted, less those
    chunks (the next call's prompt is this one's plus the text it relayed; exact between
    replicas of one model, a fair count between models). Unknown when the chain did not
    end in a call that reported usage. A call that relayed nothing (never sent: its circuit
    was open; refused; broken before its first chunk) is not counted: what it cost, if
    anything, is not known from the stream.
    """
    out: list[Candidate] = []
    prompt = last.usage.prompt_tokens if last is not None and last.usage is not None else None
    for candidate, chunks in reversed(chain):
        if prompt is None or not chunks:
            out.append(candidate)
            continue
        prompt = max(0, prompt - chunks)
        usage = Usage(prompt, chunks, prompt + chunks)
        out.append(replace(candidate, usage=usage, usage_counted=True))
    return out[::-1]
