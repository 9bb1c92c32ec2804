"""weighted: a weighted vote over extracted answers.

With ``ensemble.weighted.alternatives`` = k, a model of accuracy ``p`` votes with
``log(k p / (1 - p))``: the optimal weight of independent voters whose wrong answers
spread evenly over k alternatives (k = 1: the classic log-odds). It may be negative (a
model below chance, p < 1 / (k + 1)): its vote then counts against its answer. Models
without an accuracy vote with their configured ``weight``.

The default (``alternatives`` unset or ``auto``) is the limit of large k: answers are
ranked by their number of votes, and equal numbers by the summed log-odds
``log(p / (1 - p))`` of their voters, then by model order. Among answers with equal votes
the log-odds sum is the most likely answer for ANY k (the k terms cancel), and otherwise it
ranks as voting does, so it is never worse than voting however many wrong answers there
are. A fixed k does better when k is right (on the quiz benchmark's 3 distractors) and can
do worse than voting when wrong answers are more spread out than k says; see
bench/RESULTS.md.

Where the accuracies come from (``ensemble.weighted.weights``): ``configured`` (each
model's ``accuracy``), or ``learned`` from the members' agreement (``ensemble.trust``,
docs/trust.md): a member's learned accuracy once it has enough evidence, its configured
one before. With ``learned`` and ``alternatives: auto``, k is learned too (1/c, the rate
at which two wrong answers agree) once it has enough evidence: the log-odds rule then
replaces votes-first, as it measures how spread out wrong answers are instead of assuming.
With learned trust, members that move together share their weight (times
``WeightPlan.multiplier``). The response's ``details.weights`` says what was used.

Optionally every vote is multiplied by the answer's confidence (mean token probability)
when the endpoint returned logprobs.
"""

from __future__ import annotations

from ..trust.weights import WeightPlan, log_odds, plan_weights
from .base import Context, Plan
from .voting import Ballot, Voting, vote_plan


def weight_plan(ctx: Context) -> WeightPlan:
    """The context's plan; with trust off, the configured accuracies, independent members."""
    if ctx.weight_plan is not None:
        return ctx.weight_plan
    return plan_weights(None, ctx.models, ctx.accuracies, learned=False, correlation=False)


def ballot(ctx: Context) -> Ballot:
    plan = weight_plan(ctx)
    configured_k = ctx.settings.weighted.k
    k = plan.alternatives(configured_k)
    weights: dict[str, float] = {}
    tiebreaks: dict[str, float] = {}
    for model in ctx.models:
        accuracy, share = plan.accuracy(model), plan.multiplier(model)
        if accuracy is None or k is None:
            weights[model] = ctx.weights.get(model, 1.0) * share
        else:
            weights[model] = log_odds(accuracy, k) * share
        # Votes first: the log-odds decide between answers of equal votes.
        if accuracy is not None and k is None:
            tiebreaks[model] = log_odds(accuracy) * share
    source = plan.alternatives_source(configured_k)
    rule = "votes, then log-odds" if k is None else "log-odds"
    return Ballot(
        weight=lambda model: weights.get(model, 1.0),
        tiebreak=lambda model: tiebreaks.get(model, 0.0),
        use_confidence=ctx.settings.weighted.use_confidence,
        unit="weight",
        report=lambda: plan.details(
            weights,
            rule=rule,
            tiebreaks=tiebreaks,
            alternatives=(k, source) if k is not None and source is not None else None,
        ),
    )


class Weighted(Voting):
    """A vote (and its early stop) with weights."""

    name = "weighted"

    def plan(self, ctx: Context) -> Plan:
        return vote_plan(ctx, ballot(ctx), self.name)
