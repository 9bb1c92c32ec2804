"""Vote counting shared by the voting-style strategies (pure)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ..answers import Answer, group
from .base import Candidate

# Sums of float weights that differ by less than this count as equal.
_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class Group:
    """Candidates whose extracted answers agree."""

    answer: Answer
    members: tuple[Candidate, ...]  # in the request's model order
    weight: float
    # Decides between equal weights before model order (weighted: summed log-odds).
    tiebreak: float = 0.0

    @property
    def exact(self) -> bool:
        """All members share one exact answer: no later answer can split this group."""
        first = self.members[0].answer
        return all(c.answer == first for c in self.members)


def ordered(candidates: Sequence[Candidate], model_order: Sequence[str]) -> list[Candidate]:
    rank = {model: i for i, model in enumerate(model_order)}
    return sorted(candidates, key=lambda c: (rank.get(c.model, len(rank)), c.order))


def tally(
    valid: Sequence[Candidate],
    model_order: Sequence[str],
    similarity: float,
    weight_of: Callable[[Candidate], float] = lambda _: 1.0,
    tiebreak_of: Callable[[Candidate], float] = lambda _: 0.0,
) -> list[Group]:
    """Groups of agreeing answers, strongest first.

    Grouping depends only on the set of answers (``answers.group``). Groups are ranked by
    weight, then tiebreak, then the position of their first member in the request's model
    order, so the result never depends on arrival times.
    """
    candidates = ordered(valid, model_order)
    indices = group([c.answer for c in candidates], similarity)
    members: dict[int, list[Candidate]] = {}
    for index, candidate in zip(indices, candidates, strict=True):
        members.setdefault(index, []).append(candidate)
    groups = [
        Group(
            m[0].answer,
            tuple(m),
            sum(weight_of(c) for c in m),
            sum(tiebreak_of(c) for c in m),
        )
        for m in members.values()
    ]
    # Weights within _EPSILON are equal: rank by rounded weight, then tiebreak; sorted()
    # is stable, so among equal ones first-appearance (model) order is kept.
    return sorted(groups, key=lambda g: (-round(g.weight / _EPSILON), -g.tiebreak))


def leader_is_safe(groups: Sequence[Group], remaining: Sequence[float]) -> bool:
    """True when no answers of the calls still running can change the winner.

    ``remaining`` holds the largest weight each running call's vote may carry (a vote
    weighs between 0 and its model's weight, which may be negative). The leader must be
    one exact answer (a merged free-text group could still be split by a later answer),
    and must stay strictly ahead when every running vote goes against it: its negative
    votes to itself, every positive vote to the strongest other group, existing or new.
    Existing groups never merge (``answers.group``), so that is the worst case.
    """
    if not groups or not groups[0].exact:
        return False
    gain = sum(w for w in remaining if w > 0)
    loss = sum(w for w in remaining if w < 0)
    leader_low = groups[0].weight + loss
    rivals = [g.weight + gain for g in groups[1:]]
    if remaining:
        rivals.append(gain if gain > 0 else max(remaining))  # a group of new answers only
    return all(leader_low > rival + _EPSILON for rival in rivals)


def representative(members: Sequence[Candidate]) -> Candidate:
    """The group's answer to return: the most confident member where logprobs say so,
    else the first in model order."""
    if all(c.mean_logprob is not None for c in members):
        return max(members, key=lambda c: c.mean_logprob or -math.inf)
    return members[0]


def names(groups: Sequence[Group]) -> tuple[tuple[str, ...], ...]:
    """The models of each group: what learned trust needs of a tally (``Selection.groups``)."""
    return tuple(tuple(c.model for c in g.members) for g in groups)


def summary(groups: Sequence[Group]) -> list[Mapping[str, object]]:
    return [
        {
            "answer": g.answer.key,
            "kind": g.answer.kind,
            "models": [c.model for c in g.members],
            "weight": round(g.weight, 6),
            **({"tiebreak": round(g.tiebreak, 6)} if g.tiebreak else {}),
        }
        for g in groups
    ]
