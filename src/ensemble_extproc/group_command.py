"""``ensemble-extproc group``: how a list of answers groups, for "why did voting pick this?".

Reads a JSON list of answers on stdin (texts, or OpenAI assistant messages with
``content`` / ``tool_calls``) and prints a JSON list of groups, strongest first, as voting
ranks them: the canonical answer, its kind, the votes and the indices of the answers in
it. Each answer is made into a candidate and counted by the strategies' own ``tally``: the
same extraction and grouping code path as voting.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TextIO

from .strategies import Candidate, Status
from .strategies.tally import tally


class InputError(ValueError):
    """The input is not a JSON list of answer texts or messages."""


def groups_of(answers: list[Any], similarity: float) -> list[dict[str, Any]]:
    candidates = [_candidate(index, answer) for index, answer in enumerate(answers)]
    names = [c.model for c in candidates]
    return [
        {
            "answer": g.answer.key,
            "kind": g.answer.kind,
            "votes": len(g.members),
            "indices": [names.index(c.model) for c in g.members],
        }
        for g in tally(candidates, names, similarity)
    ]


def _candidate(index: int, answer: Any) -> Candidate:
    if isinstance(answer, str):
        message: Mapping[str, Any] = {"role": "assistant", "content": answer}
    elif isinstance(answer, Mapping):
        message = answer
    else:
        raise InputError(f"answer {index} must be a string or a message object, got {answer!r}")
    return Candidate(str(index), Status.OK, message=message, finish_reason="stop")


def run(stdin: TextIO, stdout: TextIO, similarity: float) -> None:
    try:
        answers = json.load(stdin)
    except (ValueError, RecursionError) as exc:
        raise InputError(f"stdin is not JSON: {exc}") from None
    if not isinstance(answers, list):
        raise InputError('stdin must be a JSON list of answers, e.g. ["42", "The answer is 42."]')
    json.dump(groups_of(answers, similarity), stdout, ensure_ascii=False)
    stdout.write("\n")
