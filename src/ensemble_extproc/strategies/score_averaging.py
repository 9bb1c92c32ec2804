"""score_averaging: the answer with the highest average confidence wins.

Each member is asked for logprobs; a candidate's score is its mean token log-probability
as a probability. Candidates with the same extracted answer pool their scores, and the
answer with the highest average score wins. With ``ensemble.score_averaging.numeric``
set to ``mean`` or ``median``, purely numeric answers are combined into that value instead.
Without logprobs the strategy says so and falls back to voting.
"""

from __future__ import annotations

import math
import statistics
from fractions import Fraction

from .base import Call, Candidate, Context, Plan, Selection, Strategy
from .steps import gather
from .tally import summary, tally
from .voting import majority


def score(candidate: Candidate) -> float:
    return math.exp(candidate.mean_logprob) if candidate.mean_logprob is not None else 0.0


def format_number(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    return f"{float(value):.10g}"


def numeric_selection(
    ctx: Context, valid: list[Candidate], how: str, best: Candidate
) -> Selection | None:
    numbers = [c.answer.number for c in valid]
    if how == "none" or any(
        n is None or c.answer.kind != "number" for n, c in zip(numbers, valid, strict=True)
    ):
        return None
    values = [n for n in numbers if n is not None]
    value = (
        Fraction(statistics.median(values))
        if how == "median"
        else sum(values, Fraction(0)) / len(values)
    )
    text = format_number(value)
    return Selection(
        winner=best,
        reason=f"{how} of {len(values)} numeric answers",
        details={"numeric": how, "values": [format_number(v) for v in values]},
        message={"role": "assistant", "content": text},
    )


class ScoreAveraging(Strategy):
    name = "score_averaging"

    def plan(self, ctx: Context) -> Plan:
        progress = yield from gather(ctx, (Call(m, extra={"logprobs": True}) for m in ctx.models))
        if progress is None:
            return None
        valid = list(progress.valid_members())
        if len(valid) < ctx.min_responses:
            return None
        scored = [c for c in valid if c.mean_logprob is not None]
        if not scored:
            fallback = majority(ctx, valid)
            details = {
                **fallback.details,
                "fallback": "voting",
                "why": "no endpoint returned logprobs",
            }
            return Selection(
                fallback.winner,
                fallback.agreement,
                "no logprobs: fell back to voting; " + fallback.reason,
                details,
            )
        best = max(scored, key=score)
        numeric = numeric_selection(ctx, scored, ctx.settings.score_averaging.numeric, best)
        if numeric is not None:
            return numeric
        groups = tally(scored, ctx.models, ctx.settings.similarity_threshold)
        averages = [sum(score(c) for c in g.members) / len(g.members) for g in groups]
        # max() keeps the first of equal averages: groups are in weight, then model order.
        winner_index = max(range(len(groups)), key=lambda i: averages[i])
        leader, average = groups[winner_index], averages[winner_index]
        return Selection(
            winner=max(leader.members, key=score),
            agreement=len(leader.members) / len(valid),
            reason=f"highest average confidence {average:.3f} for {leader.answer.key!r}",
            details={
                "groups": [
                    {**g, "average_confidence": round(a, 4)}
                    for g, a in zip(summary(groups), averages, strict=True)
                ],
                "unscored": [c.model for c in valid if c.mean_logprob is None],
            },
        )
