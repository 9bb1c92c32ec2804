"""weighted: a weighted vote over extracted answers.

A model's weight is ``log(p / (1 - p))`` when config gives its accuracy ``p`` (the optimal
rule for independent voters; ``log(k p / (1 - p))`` with
``ensemble.weighted.alternatives`` = k when wrong answers spread over k alternatives),
else its configured ``weight``; optionally multiplied by the
answer's confidence (mean token probability) when the endpoint returned logprobs.
"""

from __future__ import annotations

import math

from .base import Context, Plan, StrategySettings
from .voting import vote_plan

# Accuracies are clipped so that a "perfect" model does not get an infinite weight.
_P_MIN, _P_MAX = 0.01, 0.99


def log_odds(p: float, alternatives: int = 1) -> float:
    """log(k p / (1 - p)): the optimal vote weight of an independent voter of accuracy p
    whose wrong answers spread evenly over k alternatives (k = 1: the classic log-odds)."""
    p = min(max(p, _P_MIN), _P_MAX)
    return math.log(alternatives * p / (1 - p))


def model_weight(ctx: Context, model: str) -> float:
    accuracy = ctx.accuracies.get(model)
    if accuracy is None:
        return ctx.weights.get(model, 1.0)
    return log_odds(accuracy, ctx.settings.weighted_alternatives)


class Weighted:
    name = "weighted"
    natural_min_responses: int | None = None

    def missing_setting(self, settings: StrategySettings) -> str | None:
        return None

    def plan(self, ctx: Context) -> Plan:
        return vote_plan(
            ctx,
            lambda model: model_weight(ctx, model),
            ctx.settings.weighted_use_confidence,
            self.name,
        )
