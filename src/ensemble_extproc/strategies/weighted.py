"""weighted: a weighted vote over extracted answers.

A model's weight is ``log(p / (1 - p))`` when config gives its accuracy ``p`` (the optimal
rule for independent voters), else its configured ``weight``; optionally multiplied by the
answer's confidence (mean token probability) when the endpoint returned logprobs.
"""

from __future__ import annotations

import math

from .base import Context, Plan, StrategySettings
from .voting import vote_plan

# Accuracies are clipped so that a "perfect" model does not get an infinite weight.
_P_MIN, _P_MAX = 0.01, 0.99


def log_odds(p: float) -> float:
    p = min(max(p, _P_MIN), _P_MAX)
    return math.log(p / (1 - p))


def model_weight(ctx: Context, model: str) -> float:
    accuracy = ctx.accuracies.get(model)
    return log_odds(accuracy) if accuracy is not None else ctx.weights.get(model, 1.0)


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
