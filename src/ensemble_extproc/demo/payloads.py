"""What a demo answer looks like on the wire: a chat completion, or the chunks of its stream.

An answer is either text or one tool call. Either way it is cut into pieces (word pieces
of the text, token-like pieces of the tool call's JSON arguments): a stream sends one
piece per chunk, and the pieces set how long an answer takes under ``token_delay_ms``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "Answer",
    "JSONObject",
    "StreamPlan",
    "ToolCallAnswer",
    "argument_pieces",
    "completion_body",
    "error_body",
    "stream_plan",
    "word_pieces",
]

JSONObject = dict[str, Any]

_WORD_PIECE_RE: Final = re.compile(r"\s*\S+\s*")
# Words, runs of spaces, runs of punctuation: '{"city":"Paris"}' -> {" city ":" Paris "}
_ARGUMENT_PIECE_RE: Final = re.compile(r"\w+|\s+|[^\w\s]+")


@dataclass(frozen=True, slots=True)
class ToolCallAnswer:
    id: str  # "call_<hex>"
    name: str
    arguments: str  # compact JSON, as OpenAI sends it


@dataclass(frozen=True, slots=True)
class Answer:
    id: str
    created: int
    model: str
    content: str  # "" for a tool call
    finish_reason: str
    usage: dict[str, int]
    logprobs: JSONObject | None  # choices[0].logprobs of a non-streamed answer
    # What each content chunk of the stream carries: word pieces of the content, or
    # pieces of the tool call's arguments.
    pieces: tuple[str, ...]
    tool_call: ToolCallAnswer | None = None


@dataclass(frozen=True, slots=True)
class StreamPlan:
    """The chunks of a streamed answer, without the final ``data: [DONE]``."""

    head: JSONObject  # the role chunk (with the tool call's id and name)
    body: tuple[JSONObject, ...]  # one chunk per piece, paced by token_delay_ms
    tail: tuple[JSONObject, ...]  # the finish_reason chunk, then the usage chunk if asked


def word_pieces(text: str) -> list[str]:
    """Split into words, each keeping its surrounding whitespace: "".join() == text."""
    pieces: list[str] = _WORD_PIECE_RE.findall(text)
    if not pieces:
        return [text] if text else []
    return pieces


def argument_pieces(arguments: str) -> list[str]:
    """Split JSON text into token-like pieces: "".join() == arguments."""
    pieces: list[str] = _ARGUMENT_PIECE_RE.findall(arguments)
    return pieces


def error_body(message: str, type: str, code: str | None = None) -> JSONObject:
    """A provider's OpenAI-style error body (the demo's own faults and failures)."""
    return {"error": {"message": message, "type": type, "param": None, "code": code}}


def completion_body(answer: Answer) -> JSONObject:
    message: JSONObject = {"role": "assistant", "content": answer.content}
    if answer.tool_call is not None:
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [_tool_call(answer.tool_call)],
        }
    choice = {
        "index": 0,
        "message": message,
        "finish_reason": answer.finish_reason,
        "logprobs": answer.logprobs,
    }
    return {
        **_envelope(answer, "chat.completion"),
        "choices": [choice],
        "usage": answer.usage,
    }


def stream_plan(answer: Answer, include_usage: bool) -> StreamPlan:
    def chunk(delta: JSONObject, finish: str | None = None, logprobs: object = None) -> JSONObject:
        choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        out: JSONObject = {**_envelope(answer, "chat.completion.chunk"), "choices": [choice]}
        if include_usage:
            out["usage"] = None  # as OpenAI: only the final usage chunk carries it
        return out

    call = answer.tool_call
    if call is None:
        head = chunk({"role": "assistant", "content": ""})
        tokens = answer.logprobs["content"] if answer.logprobs is not None else None
        body = [
            # With logprobs asked for, each chunk carries those of its own piece: the
            # same values as the non-streamed answer.
            chunk({"content": piece}, logprobs={"content": [tokens[index]]} if tokens else None)
            for index, piece in enumerate(answer.pieces)
        ]
    else:
        # The id and name come first, then the arguments piece by piece.
        opening = {"index": 0, **_tool_call(call, arguments="")}
        head = chunk({"role": "assistant", "content": None, "tool_calls": [opening]})
        body = [
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
            for piece in answer.pieces
        ]
    tail = [chunk({}, answer.finish_reason)]
    if include_usage:
        tail.append(
            {**_envelope(answer, "chat.completion.chunk"), "choices": [], "usage": answer.usage}
        )
    return StreamPlan(head, tuple(body), tuple(tail))


def _tool_call(call: ToolCallAnswer, arguments: str | None = None) -> JSONObject:
    return {
        "id": call.id,
        "type": "function",
        "function": {
            "name": call.name,
            "arguments": call.arguments if arguments is None else arguments,
        },
    }


def _envelope(answer: Answer, obj: str) -> JSONObject:
    return {
        "id": answer.id,
        "object": obj,
        "created": answer.created,
        "model": answer.model,
        "system_fingerprint": "demo",
    }
