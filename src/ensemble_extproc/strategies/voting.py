"""voting: the most common answer after normalisation wins.

Answers are compared after case folding, whitespace collapsing and dropping trailing
punctuation, so "Paris." and " paris" are one vote. Ties go to the group whose first
member comes earliest in the request's model order, which does not depend on timing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .base import Candidate, Selection

_SPACE = re.compile(r"\s+")
# ASCII and CJK sentence ends.
_TRAILING_PUNCT = ".!?;:,\u3002\uff01\uff1f"


def normalise(text: str) -> str:
    collapsed = _SPACE.sub(" ", text).strip().casefold()
    return collapsed.rstrip(_TRAILING_PUNCT).rstrip()


def vote_key(candidate: Candidate) -> str:
    if candidate.tool_calls and not candidate.content.strip():
        # Tool calls vote by function name and arguments, so identical calls agree.
        return "tool_calls:" + repr(
            [
                (call.get("function", {}).get("name"), call.get("function", {}).get("arguments"))
                for call in candidate.tool_calls
                if isinstance(call, dict)
            ]
        )
    return normalise(candidate.content)


class Voting:
    name = "voting"
    natural_min_responses: int | None = None

    def enough(self, valid: Sequence[Candidate], pending: int) -> bool:
        return pending == 0

    def select(self, valid: Sequence[Candidate], model_order: Sequence[str]) -> Selection:
        rank = {model: i for i, model in enumerate(model_order)}
        ordered = sorted(valid, key=lambda c: (rank.get(c.model, len(rank)), c.order))
        groups: dict[str, list[Candidate]] = {}
        for candidate in ordered:
            groups.setdefault(vote_key(candidate), []).append(candidate)
        # dicts keep insertion order, so max() keeps the earliest group among equals.
        winning = max(groups.values(), key=len)
        votes = {key: len(members) for key, members in groups.items()}
        return Selection(
            winner=winning[0],
            agreement=len(winning) / len(ordered),
            details={"votes": len(winning), "valid_votes": len(ordered), "groups": len(votes)},
        )
