"""Continuing a partial assistant message: the styles an endpoint may declare
(``models[].continuation``), the request that asks for a continuation, and how a server
reads one (pure; the upstream writes it, the demo models read it).

- ``continue_final_message``: vLLM's (and SGLang's) extra parameters: the messages end with
  the partial assistant message, ``"continue_final_message": true,
  "add_generation_prompt": false``.
- ``prefill``: the messages end with the partial assistant message, which the server
  continues (Anthropic-style prefill, as several OpenAI-compatible servers accept it).
- ``prefix``: the same message with ``"prefix": true`` (Mistral, DeepSeek).

An endpoint that declares none starts a new answer after a trailing assistant message:
it cannot continue one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, get_args

from .cost.estimate import LIMIT_FIELDS

Style = Literal["continue_final_message", "prefill", "prefix"]
STYLES: tuple[Style, ...] = get_args(Style)


def continuation_body(
    body: Mapping[str, Any], text: str, tokens: int, style: Style
) -> dict[str, Any]:
    """``body`` asking for the continuation of ``text`` (``tokens`` long, about): the
    partial message appended, and the answer's token limits less what it already used."""
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if style == "prefix":
        message["prefix"] = True
    out = {**body, "messages": [*body.get("messages", []), message]}
    if style == "continue_final_message":
        out["continue_final_message"] = True
        out["add_generation_prompt"] = False
    for name in LIMIT_FIELDS:  # the completion limits it shares with the answer it continues
        limit = out.get(name)
        if isinstance(limit, int) and not isinstance(limit, bool):
            out[name] = max(1, limit - tokens)
    return out


class ContinuationRefused(ValueError):
    """A request for a continuation that the server would refuse (vLLM's 400)."""


def requested_continuation(body: Mapping[str, Any], style: Style | None) -> str | None:
    """What a server declaring ``style`` is asked to continue: the trailing assistant
    message's text, or None for a request for a new answer."""
    messages = body.get("messages")
    last = messages[-1] if isinstance(messages, list) and messages else None
    final = last if isinstance(last, Mapping) and last.get("role") == "assistant" else None
    if style == "continue_final_message" and body.get("continue_final_message") is True:
        if body.get("add_generation_prompt", True) is not False:
            # vLLM's own rule (its add_generation_prompt defaults to true).
            raise ContinuationRefused(
                "continue_final_message and add_generation_prompt cannot both be true"
            )
        if final is None:
            raise ContinuationRefused(
                "continue_final_message needs a final assistant message to continue"
            )
    elif (
        final is None
        or style not in ("prefill", "prefix")
        or (style == "prefix" and final.get("prefix") is not True)
    ):
        return None
    content = final.get("content")
    return content if isinstance(content, str) else ""
