"""What the voting strategies use from what was learned (pure).

``plan_weights`` turns a key's ``TrustView`` (or nothing yet) into a ``WeightPlan`` for
one ensemble's members, carried by the strategy's context (``Context.plan``):

- ``accuracy(model)``: the accuracy to weigh a vote with, and ``source(model)`` where it
  came from: ``learned`` (enough evidence), ``configured`` (the model's configured
  accuracy: the prior, and the fallback until there is enough evidence), ``default``
  (learning, nothing configured, not enough evidence yet: ``trust.default_accuracy``) or
  ``weight`` (no accuracy at all: the strategy uses the configured ``weight``).
- ``multiplier(model)``: how much of an independent vote the member's vote is worth.
  Members of a flagged pair share a vote in proportion to their excess agreement: a
  member counts ``1 / (1 + sum of kappa)`` over the ensemble's members it is flagged
  with (Kish's design effect with kappa as the correlation). Three clones (kappa 1) each
  count a third, together one vote; independent members count 1.
- ``voices(models)``: how many independent voices a set of agreeing members is (members
  that move together count once): cascade's agreement check.
- ``alternatives(configured)``: k for log-odds weights, configured or learned (from c,
  conservatively: see ``alternatives_of``).
- ``details()``: what the response's ``ensemble.details.weights`` object reports.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .model import TrustView

# Accuracies are clipped so that a "perfect" model does not get an infinite weight.
_P_MIN, _P_MAX = 0.01, 0.99


@dataclass(frozen=True, slots=True)
class MemberWeight:
    model: str
    # None: neither learned nor configured (the strategy uses the configured weight).
    accuracy: float | None
    source: str  # learned | configured | default | weight
    interval: tuple[float, float] | None
    multiplier: float  # share of an independent vote (1: independent)
    group: tuple[str, ...]  # the members it moves with, itself included


@dataclass(frozen=True, slots=True)
class WeightPlan:
    key: str | None
    members: Mapping[str, MemberWeight]
    groups: tuple[tuple[str, ...], ...]
    # k for learned weights: ``ensemble.trust.alternatives`` when set, else learned from c
    # (alternatives_of) once c is learned; None before, and when weights are not learned.
    learned_alternatives: float | None = None
    learned_alternatives_source: str = "learned"  # learned | configured

    def alternatives(self, configured: int | None) -> float | None:
        """k for log-odds weights: the configured one, else the learned one, else None."""
        return float(configured) if configured is not None else self.learned_alternatives

    def alternatives_source(self, configured: int | None) -> str | None:
        """Where ``alternatives(configured)`` came from: configured, learned, or None."""
        if configured is not None:
            return "configured"
        return self.learned_alternatives_source if self.learned_alternatives is not None else None

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

    def details(
        self,
        weights: Mapping[str, float] | None = None,
        *,
        rule: str | None = None,
        tiebreaks: Mapping[str, float] | None = None,
        alternatives: tuple[float, str] | None = None,
        accuracies: bool = True,
    ) -> dict[str, Any]:
        """The ``ensemble.details.weights`` object: per member the weight used (when
        given), the accuracy behind it and its source, the correlation multiplier; the
        groups. ``rule`` names how weights were counted (votes, votes then log-odds,
        log-odds), ``alternatives`` the k of log-odds weights and its source. Without
        ``accuracies`` (voting: every vote is a multiplier) the source says whether any
        vote was discounted (``learned``) or all are equal (``equal``)."""
        if accuracies:
            sources = {m.source for m in self.members.values()}
            source = sources.pop() if len(sources) == 1 else "mixed"
        else:
            source = "learned" if self.groups else "equal"
        return {
            **({"rule": rule} if rule is not None else {}),
            "source": source,
            **(
                {"alternatives": {"value": round(alternatives[0], 4), "source": alternatives[1]}}
                if alternatives is not None
                else {}
            ),
            "trust_key": self.key,
            "members": {
                model: _member_details(model, m, weights, tiebreaks, accuracies)
                for model, m in self.members.items()
            },
            "groups": [list(g) for g in self.groups],
        }


def _member_details(
    model: str,
    member: MemberWeight,
    weights: Mapping[str, float] | None,
    tiebreaks: Mapping[str, float] | None,
    accuracies: bool,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if weights and model in weights:
        out["weight"] = round(weights[model], 6)
    if tiebreaks and model in tiebreaks:
        out["tiebreak"] = round(tiebreaks[model], 6)
    if accuracies:
        out["accuracy"] = None if member.accuracy is None else round(member.accuracy, 4)
        span = member.interval
        out["interval"] = None if span is None else [round(x, 4) for x in span]
        out["source"] = member.source
    out["multiplier"] = round(member.multiplier, 4)
    return out


def plan_weights(
    view: TrustView | None,
    models: Sequence[str],
    configured: Mapping[str, float],
    *,
    learned: bool = True,
    correlation: bool = True,
    fixed_alternatives: int | None = None,
) -> WeightPlan:
    """The weights of one ensemble of ``models``.

    ``configured``: the configured accuracies (models without one are absent).
    ``learned``: use learned accuracies where there is enough evidence, and the learned
    k (``weights: learned``); ``correlation``: discount members that move together.
    ``fixed_alternatives``: ``ensemble.trust.alternatives`` (k known, c not learned).
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
        elif learned and estimate is not None:
            # The learner's prior (ensemble.trust.default_accuracy), as GET /admin/trust
            # reports it `used`: weights of one kind for every member, not a configured
            # `weight` among log-odds (e.g. a member whose update was just detected).
            accuracy, source = estimate.prior, "default"
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
    k = alternatives_of(view, fixed_alternatives) if learned else None
    return WeightPlan(
        view.key if view is not None else None,
        members,
        groups,
        k,
        "configured" if fixed_alternatives is not None else "learned",
    )


def log_odds(accuracy: float, alternatives: float = 1.0) -> float:
    """ln(k p / (1 - p)): the optimal vote weight of an independent member of accuracy p
    whose wrong answers spread evenly over k alternatives (k = 1: the classic log-odds);
    the weighted strategy's rule."""
    p = min(max(accuracy, _P_MIN), _P_MAX)
    return math.log(alternatives * p / (1.0 - p))


def alternatives_of(view: TrustView | None, configured: int | None) -> float | None:
    """k for log-odds weights: configured, else learned from c, else None.

    Learned, k is the largest the data support: 1 / the low end of c's 95 % interval,
    not 1 / c. An error in k costs asymmetrically: too small a k lets a strong member
    outvote agreeing weaker ones too readily and can do worse than voting; too large a k
    only moves the weights towards votes first (the limit of large k), which is never
    worse than voting. So while c is uncertain, weights stay near votes first, and they
    approach the optimal ln(k p / (1 - p)) as c's interval narrows. None (votes first)
    while c is not learned, or its interval reaches 0.
    """
    if configured is not None:
        return float(configured)
    if view is None or not view.wrong_agreement_learned or view.wrong_agreement_low <= 0:
        return None
    return max(1.0, 1.0 / view.wrong_agreement_low)
