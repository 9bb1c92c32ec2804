"""voting: the most common *extracted* answer wins.

Answers are compared after extraction (``answers``: numbers by value, choice letters,
yes/no, formulas, ``\\boxed{}``, "the answer is ...", chains of thought), near-identical free
text counting as one. The plan stops early, cancelling the calls still running, only when
their answers could not change the winner whatever they are (``tally.leader_is_safe``) and
``min_responses`` valid answers are in: the answer with early stop is the answer without.

With learned trust (``ensemble.trust``, correlation on), members that move together
share a vote: each one counts its ``WeightPlan.multiplier`` (three clones a third each).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .base import (
    Call,
    CancelRest,
    Candidate,
    Context,
    Launch,
    Plan,
    Selection,
    Strategy,
    Wait,
)
from .tally import leader_is_safe, names, representative, summary, tally


@dataclass(frozen=True, slots=True)
class Ballot:
    """How much a model's vote counts: ``weight`` (may be negative), times the answer's
    mean token probability with ``use_confidence``; ``tiebreak`` decides equal weights."""

    weight: Callable[[str], float] = lambda _: 1.0
    tiebreak: Callable[[str], float] = lambda _: 0.0
    use_confidence: bool = False
    unit: str = "votes"
    # The ``weights`` object of the response's details (which weights, from where).
    report: Callable[[], Mapping[str, Any]] | None = None

    def weight_of(self, candidate: Candidate) -> float:
        weight = self.weight(candidate.model)
        if self.use_confidence and candidate.mean_logprob is not None:
            weight *= math.exp(candidate.mean_logprob)
        return weight

    def tiebreak_of(self, candidate: Candidate) -> float:
        return self.tiebreak(candidate.model)


VOTES = Ballot()


def correlated_votes(ctx: Context, rule: str = "votes") -> Ballot:
    """One vote each, except that members that move together share one (learned trust);
    plain votes when trust is off. ``rule`` names the count in the weights' report."""
    plan = ctx.weight_plan
    if plan is None:
        return VOTES
    shares = {model: plan.multiplier(model) for model in ctx.models}
    return Ballot(
        weight=lambda model: shares.get(model, 1.0),
        report=lambda: plan.details(shares, rule=rule, accuracies=False),
    )


def vote_plan(ctx: Context, ballot: Ballot, name: str) -> Plan:
    """Launch every member, then count as answers arrive (shared by voting and weighted)."""
    yield Launch(tuple(Call(model) for model in ctx.models))
    early = False
    while True:
        progress = yield Wait()
        valid = progress.valid_members()
        running = progress.running_members()
        if len(valid) + len(running) < ctx.min_responses:
            return None  # the quorum can no longer be met
        if not running or progress.deadline_passed:
            break
        if len(valid) < ctx.min_responses or ctx.complete:
            continue
        groups = tally(
            valid,
            ctx.models,
            ctx.settings.similarity_threshold,
            ballot.weight_of,
            ballot.tiebreak_of,
        )
        # A running call's vote weighs between 0 and its model's weight (confidence <= 1).
        if leader_is_safe(groups, [ballot.weight(m) for m in running]):
            early = True
            yield CancelRest("the leading answer could no longer be overtaken")
            break
    if len(valid) < ctx.min_responses:
        return None
    return majority(ctx, valid, ballot, name, early)


def majority(
    ctx: Context,
    valid: Sequence[Candidate],
    ballot: Ballot = VOTES,
    name: str = "voting",
    early: bool = False,
) -> Selection:
    """The (weighted) majority among valid answers; also the fallback of other strategies."""
    groups = tally(
        valid, ctx.models, ctx.settings.similarity_threshold, ballot.weight_of, ballot.tiebreak_of
    )
    leader = groups[0]
    total = sum(g.weight for g in groups)
    return Selection(
        winner=representative(leader.members),
        agreement=len(leader.members) / len(valid),
        reason=f"{name}: {leader.weight:g} of {total:g} {ballot.unit} for {leader.answer.key!r}"
        + (", stopped early" if early else ""),
        details={
            "groups": summary(groups),
            "stopped_early": early,
            **({"weights": ballot.report()} if ballot.report is not None else {}),
            **({"learning_sample": True} if ctx.complete else {}),
        },
        groups=names(groups),
    )


class Voting(Strategy):
    name = "voting"

    def may_stop_early(self, ctx: Context) -> bool:
        """vote_plan stops early only once min_responses answers are in and others run."""
        return ctx.min_responses < len(ctx.models)

    def plan(self, ctx: Context) -> Plan:
        return vote_plan(ctx, correlated_votes(ctx), self.name)
