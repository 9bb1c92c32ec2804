"""Server-sent events in the OpenAI chat-completions dialect (pure).

Parsing accumulates a streamed completion into one message (content, tool calls,
logprobs, usage); formatting turns a whole message into the chunks a client expects.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ..chat import content_text
from ..json_out import encode

DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"


class MalformedStream(ValueError):
    """An endpoint's stream that is not valid OpenAI SSE."""


_DECODE = msgspec.json.Decoder().decode


def loads(raw: bytes) -> Any:
    """An endpoint's JSON, as ``json.loads`` reads it (ValueError when it cannot), at a
    third of its cost: msgspec reads it, and what msgspec refuses (a lone surrogate, NaN,
    a number out of range, UTF-16) is read again by ``json``, whose answer is the
    reference."""
    try:
        return _DECODE(raw)
    except (msgspec.DecodeError, RecursionError):
        return json.loads(raw)


def event(payload: object) -> bytes:
    """One ``data:`` event of any JSON-encodable payload (a chunk, an error body)."""
    return b"data: " + encode(payload) + b"\n\n"


def parse_data_line(line: bytes) -> dict[str, Any] | None:
    """A chunk from one SSE line; None for blank lines, comments, other fields and [DONE]
    (check ``is_done`` first). Raises MalformedStream for a data line that is not JSON."""
    text = line.strip()
    if not text.startswith(b"data:"):
        return None
    data = text[5:].strip()
    if data == b"[DONE]":
        return None
    try:
        chunk = loads(data)
    except ValueError:
        # The line itself is not echoed: it is the endpoint's text, which may hold anything.
        raise MalformedStream(f"SSE data line is not JSON ({len(data)} bytes)") from None
    if not isinstance(chunk, dict):
        raise MalformedStream("SSE data line is not a JSON object")
    return chunk


def is_done(line: bytes) -> bool:
    return line.strip() == b"data: [DONE]"


def first_choice(answer: Mapping[str, Any]) -> dict[str, Any] | None:
    """The first choice of a completion or a chunk; None unless it is a JSON object."""
    choices = answer.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return choices[0]
    return None


def mean_logprob(choice: Mapping[str, Any]) -> float | None:
    """Mean token log-probability of a choice that carries logprobs."""
    return _mean(_token_logprobs(choice))


def _token_logprobs(choice: Mapping[str, Any]) -> list[float] | None:
    """The logprobs of a choice's tokens ([] without any); None when a token has none that
    is a number: then the answer has no mean, rather than the mean of a part of it."""
    logprobs = choice.get("logprobs")
    tokens = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(tokens, list):
        return []
    values = [token.get("logprob") if isinstance(token, dict) else None for token in tokens]
    numbers = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    return numbers if len(numbers) == len(tokens) else None


def _mean(logprobs: list[float] | None) -> float | None:
    """None for what is not a log-probability: Python reads an endpoint's NaN and Infinity,
    and the confidence made of them would reach the client as non-standard JSON. (-inf is
    one: probability 0.)"""
    if not logprobs:
        return None
    mean = sum(logprobs) / len(logprobs)
    return None if math.isnan(mean) or mean == math.inf else mean


@dataclass
class Accumulator:
    """Builds the whole message from a stream of chunks."""

    content: list[str] = field(default_factory=list)
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    logprobs: list[float] = field(default_factory=list)
    # A token came without a numeric logprob: the answer has no mean (see mean_logprob).
    unscored: bool = False
    # The endpoint's error event (its "error" object), summarised by the client.
    error: Mapping[str, Any] | None = None
    # The model the endpoint says answers (the chunks' "model").
    model: str | None = None

    def add(self, chunk: Mapping[str, Any]) -> None:
        if self.model is None and isinstance(chunk.get("model"), str):
            self.model = chunk["model"]
        if isinstance(chunk.get("error"), dict):
            self.error = chunk["error"]
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        choice = first_choice(chunk)
        if choice is None:
            return
        raw_delta = choice.get("delta")
        delta: Mapping[str, Any] = raw_delta if isinstance(raw_delta, dict) else {}
        if isinstance(delta.get("content"), str):
            self.content.append(delta["content"])
        for call in delta.get("tool_calls") or []:
            if isinstance(call, dict):
                self._add_tool_call(call)
        if isinstance(choice.get("finish_reason"), str):
            self.finish_reason = choice["finish_reason"]
        tokens = _token_logprobs(choice)
        if tokens is None:
            self.unscored = True
        else:
            self.logprobs += tokens

    def _add_tool_call(self, call: Mapping[str, Any]) -> None:
        index = call.get("index", 0)
        entry = self.tool_calls.setdefault(
            index if isinstance(index, int) else 0,
            {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
        )
        if call.get("id"):
            entry["id"] = call["id"]
        raw_function = call.get("function")
        function: Mapping[str, Any] = raw_function if isinstance(raw_function, dict) else {}
        if isinstance(function.get("name"), str):
            entry["function"]["name"] += function["name"]
        if isinstance(function.get("arguments"), str):
            entry["function"]["arguments"] += function["arguments"]

    def mean_logprob(self) -> float | None:
        """As ``mean_logprob`` of the whole answer's choice."""
        return None if self.unscored else _mean(self.logprobs)

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.content) or None}
        if self.tool_calls:
            message["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        return message

    @staticmethod
    def has_output(chunk: Mapping[str, Any]) -> bool:
        """Whether a chunk carries answer text or a tool call (what first_success races to)."""
        choice = first_choice(chunk)
        delta = choice.get("delta") if choice is not None else None
        return isinstance(delta, dict) and bool(delta.get("content") or delta.get("tool_calls"))


def _pieces(text: str, size: int = 24) -> list[str]:
    """Split text into chunks of about ``size`` characters, each ending after a space where
    there is one; joined, they are ``text`` exactly (leading and repeated spaces too)."""
    pieces: list[str] = []
    start = 0
    while len(text) - start > size:
        cut = text.rfind(" ", start, start + size)
        if cut < start:  # no space within reach: cut after the next one, if any
            cut = text.find(" ", start + size)
            if cut < 0:
                break
        pieces.append(text[start : cut + 1])
        start = cut + 1
    if start < len(text):
        pieces.append(text[start:])
    return pieces


def message_choices(message: Mapping[str, Any], finish_reason: str) -> list[dict[str, Any]]:
    """An answer already complete, as the choices of a stream's chunks, one per chunk (no
    usage, no [DONE])."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

    chunks = [chunk({"role": "assistant", "content": ""})]
    content = content_text(message.get("content"))
    if content:
        chunks += [chunk({"content": piece}) for piece in _pieces(content)]
    for index, call in enumerate(message.get("tool_calls") or []):
        if isinstance(call, dict):
            chunks.append(chunk({"tool_calls": [{"index": index, **call}]}))
    chunks.append(chunk({}, finish_reason))
    return chunks
