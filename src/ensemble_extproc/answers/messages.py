"""Answers of OpenAI assistant messages: content text, or tool calls."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from ..chat import content_text
from .locate import extract
from .model import EMPTY, Answer


def tool_calls_key(tool_calls: Sequence[object]) -> str:
    """A canonical key for an OpenAI ``message.tool_calls`` list.

    Function names and arguments, in call order; arguments that are JSON are re-serialised
    with sorted keys and no spaces, others are the raw string stripped. Ids and non-dict
    entries are ignored.
    """
    calls: list[list[str]] = []
    for call in tool_calls:
        if not isinstance(call, Mapping):
            continue
        function = call.get("function")
        if not isinstance(function, Mapping):
            function = {}
        name = function.get("name")
        calls.append([name if isinstance(name, str) else "", _canonical_arguments(function)])
    return json.dumps(calls, ensure_ascii=False, separators=(",", ":"))


def message_answer(message: Mapping[str, object] | None) -> Answer:
    """The extracted answer of an OpenAI assistant message.

    Content text is extracted; without content, tool calls give a ``tool_calls`` answer;
    with neither the answer is empty.
    """
    if message is None:
        return EMPTY
    content = content_text(message.get("content"))
    if content.strip():
        return extract(content)
    tool_calls = message.get("tool_calls")
    if (
        isinstance(tool_calls, Sequence)
        and not isinstance(tool_calls, str | bytes)
        and any(isinstance(call, Mapping) for call in tool_calls)
    ):
        return Answer("tool_calls", tool_calls_key(tool_calls))
    return EMPTY


def _canonical_arguments(function: Mapping[object, object]) -> str:
    arguments = function.get("arguments")
    if arguments is None:
        return ""
    if not isinstance(arguments, str):
        return _canonical_json(arguments) or str(arguments)
    try:
        parsed = json.loads(arguments)
    except (ValueError, RecursionError):
        return arguments.strip()
    return _canonical_json(parsed) or arguments.strip()


def _canonical_json(value: object) -> str | None:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        return None
