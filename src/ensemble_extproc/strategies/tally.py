"""Vote counting shared by the voting-style strategies (pure)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ..answers import Answer, group
from .base import Candidate


@dataclass(frozen=True, slots=True)
class Group:
    """Candidates whose extracted answers agree."""

    answer: Answer
    members: tuple[Candidate, ...]  # in the request's model order
    weight: float


def ordered(candidates: Sequence[Candidate], model_order: Sequence[str]) -> list[Candidate]:
    rank = {model: i for i, model in enumerate(model_order)}
    return sorted(candidates, key=lambda c: (rank.get(c.model, len(rank)), c.order))


def tally(
    valid: Sequence[Candidate],
    model_order: Sequence[str],
    similarity: float,
    weight_of: Callable[[Candidate], float] = lambda _: 1.0,
) -> list[Group]:
    """Groups of agreeing answers, strongest first.

    Grouping runs in the request's model order, and ties in weight go to the group whose
    first member comes earliest in it, so the result never depends on arrival times.
    """
    candidates = ordered(valid, model_order)
    indices = group([c.answer for c in candidates], similarity)
    members: dict[int, list[Candidate]] = {}
    for index, candidate in zip(indices, candidates, strict=True):
        members.setdefault(index, []).append(candidate)
    groups = [Group(m[0].answer, tuple(m), sum(weight_of(c) for c in m)) for m in members.values()]
    # sorted() is stable: among equal weights, first-appearance (model) order is kept.
    return sorted(groups, key=lambda g: -g.weight)


def leader_is_safe(groups: Sequence[Group], remaining_weight: float) -> bool:
    """True when the calls still running cannot overtake or tie the leading group."""
    if not groups:
        return False
    runner_up = groups[1].weight if len(groups) > 1 else 0.0
    return groups[0].weight > runner_up + remaining_weight + 1e-12


def representative(members: Sequence[Candidate]) -> Candidate:
    """The group's answer to return: the most confident member where logprobs say so,
    else the first in model order."""
    if all(c.mean_logprob is not None for c in members):
        return max(members, key=lambda c: c.mean_logprob or -math.inf)
    return members[0]


def summary(groups: Sequence[Group]) -> list[Mapping[str, object]]:
    return [
        {
            "answer": g.answer.key,
            "kind": g.answer.kind,
            "models": [c.model for c in g.members],
            "weight": round(g.weight, 6),
        }
        for g in groups
    ]
