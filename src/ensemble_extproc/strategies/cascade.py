"""cascade: ask the cheapest model first; escalate only when its answer is not trusted.

Models run in ``ensemble.cascade.order`` (cheapest first; models of the request that it
does not list follow in request order). An answer is accepted when its confidence (mean
token probability) reaches ``confidence_threshold``, or when ``agreement`` answers so far
agree. Otherwise the cascade escalates: to the next model (``escalation: next``), or to
all remaining models at once and a vote (``escalation: ensemble``). When every model has
answered without acceptance, the majority wins. The response reports the depth reached.

Under a cost cap, a stage the cap keeps from starting ends the cascade: the answers so
far decide (their majority), and the answer says it stopped at the cap.

With learned trust (``ensemble.trust``, correlation on), the agreement check counts
independent *voices*: members that move together (one model behind two names, clones of
one fine-tune) are one voice however many of them agree, and share a vote in the final
majority.
"""

from __future__ import annotations

import math

from .base import Call, Candidate, Context, Launch, Plan, Selection, Status, Strategy, Wait
from .tally import Group, names, ordered, tally
from .voting import correlated_votes, majority


def cascade_order(ctx: Context) -> list[str]:
    listed = [m for m in ctx.settings.cascade.order if m in ctx.models]
    return listed + [m for m in ctx.models if m not in listed]


def confidence(candidate: Candidate) -> float | None:
    return math.exp(candidate.mean_logprob) if candidate.mean_logprob is not None else None


def voices(ctx: Context, group: Group) -> int:
    """Independent voices in a group of agreeing answers: members that move together
    (learned trust) count once."""
    models = [c.model for c in group.members]
    plan = ctx.weight_plan
    return plan.voices(models) if plan is not None else len(models)


def accepted(ctx: Context, valid: list[Candidate], newest: Candidate | None) -> Selection | None:
    """The answer the cascade may stop at, if any."""
    if len(valid) < ctx.min_responses:
        return None
    settings = ctx.settings.cascade
    level = confidence(newest) if newest is not None and newest.valid else None
    if newest is not None and level is not None and level >= settings.confidence_threshold:
        threshold = settings.confidence_threshold
        return Selection(newest, None, f"confidence {level:.3f} >= {threshold:g}")
    groups = tally(valid, [c.model for c in valid], ctx.settings.similarity_threshold)
    if not groups:
        return None
    # The first group (in the cascade's order) with the most voices.
    leader = max(groups, key=lambda g: voices(ctx, g))
    heard = voices(ctx, leader)
    if heard < settings.agreement:
        return None
    agree = len(leader.members)
    return Selection(
        leader.members[0],
        agree / len(valid),
        f"{agree} answers agree on {leader.answer.key!r}"
        + (f" ({heard} independent voices)" if heard != agree else ""),
        groups=names(groups),
    )


class Cascade(Strategy):
    name = "cascade"
    natural_min_responses = 1

    def may_stop_early(self, ctx: Context) -> bool:
        return len(ctx.models) > 1

    def plan(self, ctx: Context) -> Plan:
        order = cascade_order(ctx)
        # With learned trust: the members' shares of a vote and who moves with whom.
        ballot = correlated_votes(ctx, rule="voices")
        weights = {"weights": ballot.report()} if ballot.report is not None else {}
        launched = 0
        newest: Candidate | None = None
        while True:
            batch = 1 if launched == 0 or ctx.settings.cascade.escalation == "next" else None
            upcoming = order[launched:] if batch is None else order[launched : launched + 1]
            yield Launch(tuple(Call(m, extra={"logprobs": True}) for m in upcoming))
            launched += len(upcoming)
            progress = yield Wait()
            while progress.running and not progress.deadline_passed:
                progress = yield Wait()
            valid = ordered(progress.valid_members(), order)
            if batch is not None and progress.members():
                newest = max(progress.members(), key=lambda c: c.order)
            capped = [c.model for c in progress.finished if c.status is Status.OVER_BUDGET]
            selection = accepted(ctx, valid, newest if batch is not None else None)
            done = launched >= len(order) or progress.deadline_passed or bool(capped)
            if selection is None and done and len(valid) >= ctx.min_responses:
                selection = majority(ctx, valid, ballot)
            if selection is not None:
                asked = [m for m in order[:launched] if m not in capped]
                depth = {"cascade_depth": len(asked), "cascade_models": asked}
                if capped:
                    depth["cost_capped"] = capped
                    how = f" (stopped at the cost cap: {', '.join(capped)} not started)"
                else:
                    how = "" if launched < len(order) else " (all models asked)"
                sample = {}
                if ctx.complete and launched < len(order):
                    # A learning sample: the rest answer too; the answer stays this one.
                    sample = {"learning_sample": True, "asked_for_learning": order[launched:]}
                    progress = yield Launch(
                        tuple(Call(m, extra={"logprobs": True}) for m in order[launched:])
                    )
                    while progress.running and not progress.deadline_passed:
                        progress = yield Wait()
                return Selection(
                    selection.winner,
                    selection.agreement,
                    f"cascade stage {len(asked)} of {len(order)}{how}: {selection.reason}",
                    {**selection.details, **depth, **weights, **sample},
                    groups=selection.groups if not sample else None,
                )
            if done:
                return None
