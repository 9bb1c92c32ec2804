"""What judges and aggregators read and write: the request as text, candidates, verdicts."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .base import Candidate

# Fields of the client's request that a judge or aggregator call must not inherit.
HELPER_CALL_DROPS: Mapping[str, Any] = {
    "tools": None,
    "tool_choice": None,
    "parallel_tool_calls": None,
    "functions": None,
    "function_call": None,
    "logprobs": None,
    "top_logprobs": None,
    "n": None,
    "stream": None,
    "stream_options": None,
}

_CANDIDATE = re.compile(r"candidate\s*(?:number\s*)?#?\s*(\d+)", re.IGNORECASE)
_INTEGER = re.compile(r"(?<![\d.])(\d+)(?![\d.])")
# A number longer than this names no candidate; int() would refuse thousands of digits.
_MAX_DIGITS = 9


def _number(text: str) -> int:
    """A verdict's number; 0 (never a candidate) for one that cannot be one: too long, or
    digits int() does not read (such as '²', which str.isdigit() accepts; int() reads
    exactly the str.isdecimal() ones)."""
    text = text.strip()
    if not text.isdecimal() or len(text) > _MAX_DIGITS:
        return 0
    return int(text)


def candidate_text(candidate: Candidate) -> str:
    if candidate.content.strip():
        return candidate.content
    calls = []
    for call in candidate.tool_calls:
        function = call.get("function", {}) if isinstance(call, dict) else {}
        calls.append(f"tool call: {function.get('name')}({function.get('arguments', '')})")
    return "\n".join(calls)


def _from_json(text: str) -> int | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, dict):
        for item in value.values():
            if isinstance(item, int) and not isinstance(item, bool):
                return item
            if isinstance(item, str) and item.strip().isdigit():
                return _number(item)
    return None


def parse_verdict(text: str, count: int) -> int | None:
    """The candidate number (1-based) a judge chose, or None when it cannot be read.

    Understands a bare number, "Candidate 2", JSON such as {"best": 2}, and a sentence with
    one number in range; a verdict naming several different candidates is unreadable.
    """
    stripped = text.strip().strip("`").strip()
    if stripped.startswith("json"):
        stripped = stripped[4:].strip()
    found = _from_json(stripped)
    if found is None:
        named = {_number(n) for n in _CANDIDATE.findall(stripped)}
        if len(named) == 1:
            found = named.pop()
        elif not named:
            numbers = {_number(n) for n in _INTEGER.findall(stripped)}
            numbers = {n for n in numbers if 1 <= n <= count}
            found = numbers.pop() if len(numbers) == 1 else None
    return found if found is not None and 1 <= found <= count else None


def candidate_texts(candidates: Sequence[Candidate]) -> list[str]:
    return [candidate_text(c) for c in candidates]
