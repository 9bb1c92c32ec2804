"""weighted: a weighted vote over extracted answers.

With ``ensemble.weighted.alternatives`` = k, a model of configured accuracy ``p`` votes
with ``log(k p / (1 - p))``: the optimal weight of independent voters whose wrong answers
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

Optionally every vote is multiplied by the answer's confidence (mean token probability)
when the endpoint returned logprobs.
"""

from __future__ import annotations

import math

from .base import Context, Plan
from .settings import StrategySettings
from .voting import Ballot, vote_plan

# Accuracies are clipped so that a "perfect" model does not get an infinite weight.
_P_MIN, _P_MAX = 0.01, 0.99


def log_odds(p: float, alternatives: int = 1) -> float:
    """log(k p / (1 - p)): the optimal vote weight of an independent voter of accuracy p
    whose wrong answers spread evenly over k alternatives (k = 1: the classic log-odds)."""
    p = min(max(p, _P_MIN), _P_MAX)
    return math.log(alternatives * p / (1 - p))


def model_weight(ctx: Context, model: str) -> float:
    """The vote weight with a fixed number of alternatives (or the configured weight)."""
    accuracy = ctx.accuracies.get(model)
    alternatives = ctx.settings.weighted.k
    if accuracy is None or alternatives is None:
        return ctx.weights.get(model, 1.0)
    return log_odds(accuracy, alternatives)


def model_tiebreak(ctx: Context, model: str) -> float:
    """With the default: the log-odds that decide between answers of equal votes."""
    accuracy = ctx.accuracies.get(model)
    if accuracy is None or ctx.settings.weighted.k is not None:
        return 0.0
    return log_odds(accuracy)


def ballot(ctx: Context) -> Ballot:
    return Ballot(
        weight=lambda model: model_weight(ctx, model),
        tiebreak=lambda model: model_tiebreak(ctx, model),
        use_confidence=ctx.settings.weighted.use_confidence,
        unit="weight",
    )


class Weighted:
    name = "weighted"
    natural_min_responses: int | None = None

    def missing_setting(self, settings: StrategySettings) -> str | None:
        return None

    def plan(self, ctx: Context) -> Plan:
        return vote_plan(ctx, ballot(ctx), self.name)
