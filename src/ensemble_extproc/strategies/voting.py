"""voting: the most common *extracted* answer wins.

Answers are compared after extraction (``answers.extract``: numbers, choice letters,
yes/no, ``\\boxed{}``, "the answer is ..."), near-identical free text counting as one.
The plan stops early, cancelling the calls still running, once they can no longer
overtake the leading answer and ``min_responses`` valid answers are in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from .base import (
    Call,
    CancelRest,
    Candidate,
    Context,
    Launch,
    Plan,
    Selection,
    StrategySettings,
    Wait,
)
from .tally import leader_is_safe, representative, summary, tally


def vote_plan(
    ctx: Context, model_weight: Callable[[str], float], use_confidence: bool, name: str
) -> Plan:
    """Launch every member, then count as answers arrive (shared by voting and weighted).

    A vote weighs ``model_weight(model)``, times the answer's mean token probability when
    ``use_confidence`` is set and the endpoint returned logprobs.
    """

    def weight_of(candidate: Candidate) -> float:
        weight = model_weight(candidate.model)
        if use_confidence and candidate.mean_logprob is not None:
            weight *= math.exp(candidate.mean_logprob)
        return weight

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
        groups = tally(valid, ctx.models, ctx.settings.similarity_threshold, weight_of)
        # Upper bound of what the running calls can still add (confidence is at most 1).
        remaining = sum(max(model_weight(m), 0.0) for m in running)
        if len(valid) >= ctx.min_responses and leader_is_safe(groups, remaining):
            early = True
            yield CancelRest("the leading answer could no longer be overtaken")
            break
    if len(valid) < ctx.min_responses:
        return None
    return majority(ctx, valid, weight_of, name, early)


def majority(
    ctx: Context,
    valid: Sequence[Candidate],
    weight_of: Callable[[Candidate], float] = lambda _: 1.0,
    name: str = "voting",
    early: bool = False,
) -> Selection:
    """The (weighted) majority among valid answers; also the fallback of other strategies."""
    groups = tally(valid, ctx.models, ctx.settings.similarity_threshold, weight_of)
    leader = groups[0]
    total = sum(g.weight for g in groups)
    unit = "weight" if name == "weighted" else "votes"
    return Selection(
        winner=representative(leader.members),
        agreement=len(leader.members) / len(valid),
        reason=f"{name}: {leader.weight:g} of {total:g} {unit} for {leader.answer.key!r}"
        + (", stopped early" if early else ""),
        details={"groups": summary(groups), "stopped_early": early},
    )


class Voting:
    name = "voting"
    natural_min_responses: int | None = None

    def missing_setting(self, settings: StrategySettings) -> str | None:
        return None

    def plan(self, ctx: Context) -> Plan:
        return vote_plan(ctx, lambda _: 1.0, False, self.name)
