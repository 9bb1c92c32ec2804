"""What the voting strategies use from what was learned (pure).

``plan_weights`` turns a key's ``TrustView`` (or nothing yet) into a ``WeightPlan`` for
one ensemble's members:

- ``accuracy(model)``: the accuracy to weigh a vote with, and ``source(model)`` where it
  came from: ``learned`` (enough evidence), ``configured`` (the model's configured
  accuracy: the prior, and the fallback until there is enough evidence) or ``weight``
  (no accuracy at all: the strategy uses the configured ``weight``).
- ``multiplier(model)``: how much of an independent vote the member's vote is worth.
  Members of a flagged pair share a vote in proportion to their excess agreement: a
  member counts ``1 / (1 + sum of kappa)`` over the ensemble's members it is flagged
  with (Kish's design effect with kappa as the correlation). Three clones (kappa 1) each
  count a third, together one vote; independent members count 1.
- ``voices(models)``: how many independent voices a set of agreeing members is (members
  that move together count once): cascade's agreement check.
- ``alternatives(configured)``: k for log-odds weights, configured or learned (1/c).
- ``details()``: what the response's ``ensemble`` object reports.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .model import TrustView

# As strategies/weighted.py: a "perfect" model must not get an infinite weight.
_P_MIN, _P_MAX = 0.01, 0.99


@dataclass(frozen=True, slots=True)
class MemberWeight:
    model: str
    # None: neither learned nor configured (the strategy uses the configured weight).
    accuracy: float | None
    source: str  # learned | configured | weight
    interval: tuple[float, float] | None
    multiplier: float  # share of an independent vote (1: independent)
    group: tuple[str, ...]  # the members it moves with, itself included


@dataclass(frozen=True, slots=True)
class WeightPlan:
    key: str | None
    members: Mapping[str, MemberWeight]
    groups: tuple[tuple[str, ...], ...]
    # k learned from c (1/c) once c is learned; None before.
    learned_alternatives: float | None = None

    def alternatives(self, configured: int | None) -> float | None:
        """k for log-odds weights: the configured one, else the learned one, else None."""
        return float(configured) if configured is not None else self.learned_alternatives

    def accuracy(self, model: str) -> float | None:
        member = self.members.get(model)
        return member.accuracy if member is not None else None

    def source(self, model: str) -> str:
        member = self.members.get(model)
        return member.source if member is not None else "weight"

    def multiplier(self, model: str) -> float:
        member = self.members.get(model)
        return member.multiplier if member is not None else 1.0

    def voices(self, models: Iterable[str]) -> int:
        """Independent voices among ``models``: each group of members that move together
        counts once."""
        seen: set[tuple[str, ...]] = set()
        for model in models:
            member = self.members.get(model)
            seen.add(member.group if member is not None else (model,))
        return len(seen)

    def details(self, weights: Mapping[str, float] | None = None) -> dict[str, Any]:
        """The ``ensemble.weights`` object: per member the weight used (when given), the
        accuracy behind it and its source, the correlation multiplier; the groups."""
        sources = {m.source for m in self.members.values()}
        return {
            "source": sources.pop() if len(sources) == 1 else "mixed",
            "trust_key": self.key,
            "members": {
                model: {
                    **(
                        {"weight": round(weights[model], 6)} if weights and model in weights else {}
                    ),
                    "accuracy": None if m.accuracy is None else round(m.accuracy, 4),
                    "interval": None if m.interval is None else [round(x, 4) for x in m.interval],
                    "source": m.source,
                    "multiplier": round(m.multiplier, 4),
                }
                for model, m in self.members.items()
            },
            "groups": [list(g) for g in self.groups],
        }


def plan_weights(
    view: TrustView | None,
    models: Sequence[str],
    configured: Mapping[str, float],
    *,
    learned: bool = True,
    correlation: bool = True,
) -> WeightPlan:
    """The weights of one ensemble of ``models``.

    ``configured``: the configured accuracies (models without one are absent).
    ``learned``: use learned accuracies where there is enough evidence (``weights:
    learned``); ``correlation``: discount members that move together.
    """
    present = set(models)
    kappa: dict[str, float] = dict.fromkeys(models, 0.0)
    groups: tuple[tuple[str, ...], ...] = ()
    if view is not None and correlation:
        for pair in view.flagged:
            if pair.a in present and pair.b in present:
                kappa[pair.a] += pair.kappa
                kappa[pair.b] += pair.kappa
        groups = tuple(
            inside for g in view.groups if len(inside := tuple(m for m in g if m in present)) > 1
        )
    group_of = {m: g for g in groups for m in g}
    members = {}
    for model in models:
        estimate = view.members.get(model) if view is not None else None
        accuracy: float | None
        span: tuple[float, float] | None = None
        if learned and estimate is not None and estimate.learned:
            accuracy, source, span = estimate.accuracy, "learned", (estimate.low, estimate.high)
        elif model in configured:
            accuracy, source = configured[model], "configured"
        else:
            accuracy, source = None, "weight"
        members[model] = MemberWeight(
            model=model,
            accuracy=accuracy,
            source=source,
            interval=span,
            multiplier=1.0 / (1.0 + kappa[model]),
            group=group_of.get(model, (model,)),
        )
    return WeightPlan(
        view.key if view is not None else None, members, groups, alternatives_of(view, None)
    )


def log_odds(accuracy: float, alternatives: float = 1.0) -> float:
    """ln(k p / (1 - p)): the vote weight of an independent member of accuracy p whose
    wrong answers spread over k alternatives (the same rule as strategies/weighted.py)."""
    p = min(max(accuracy, _P_MIN), _P_MAX)
    return math.log(alternatives * p / (1.0 - p))


def alternatives_of(view: TrustView | None, configured: int | None) -> float | None:
    """k for log-odds weights: configured, else learned from c (k = 1/c), else None."""
    if configured is not None:
        return float(configured)
    if view is None or not view.wrong_agreement_learned or view.wrong_agreement <= 0:
        return None
    return max(1.0, 1.0 / view.wrong_agreement)
