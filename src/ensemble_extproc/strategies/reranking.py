"""reranking: a judge model reads the request and the numbered answers and picks the best.

A judge failure or an unreadable verdict falls back to voting, and the response says so.
"""

from __future__ import annotations

from .. import prompts
from ..chat import conversation_text
from .base import Call, Context, Plan, Role, Selection, Strategy
from .judging import HELPER_CALL_DROPS, candidate_texts, parse_verdict
from .settings import StrategySettings
from .steps import ask, gather
from .tally import ordered
from .voting import majority


class Reranking(Strategy):
    name = "reranking"

    def missing_setting(self, settings: StrategySettings) -> str | None:
        return None if settings.reranking.judge_model else "ensemble.reranking.judge_model"

    def helpers(self, settings: StrategySettings) -> tuple[str, ...]:
        model = settings.reranking.judge_model
        return (model,) if model else ()

    def plan(self, ctx: Context) -> Plan:
        progress = yield from gather(ctx, (Call(m) for m in ctx.models))
        if progress is None or len(progress.valid_members()) < ctx.min_responses:
            return None
        valid = ordered(progress.valid_members(), ctx.models)
        if len(valid) == 1:
            return Selection(valid[0], 1.0, "only one valid answer: no judge needed")
        judge = ctx.settings.reranking.judge_model or ""
        prompt = prompts.candidates_prompt(
            prompts.JUDGE_INSTRUCTION, conversation_text(ctx.request), candidate_texts(valid)
        )
        call = Call(
            judge,
            Role.JUDGE,
            extra=HELPER_CALL_DROPS,
            messages=({"role": "user", "content": prompt},),
        )
        progress = yield from ask(call)
        verdicts = [c for c in progress.finished if c.role is Role.JUDGE]
        verdict = verdicts[-1] if verdicts else None
        choice = parse_verdict(verdict.content, len(valid)) if verdict and verdict.valid else None
        order = [c.model for c in valid]
        if choice is None:
            why = (
                f"judge {judge} failed: {verdict.invalid_reason if verdict else 'no answer'}"
                if verdict is None or not verdict.valid
                else f"judge {judge} gave an unreadable verdict {verdict.content[:100]!r}"
            )
            fallback = majority(ctx, valid)
            return Selection(
                fallback.winner,
                fallback.agreement,
                f"{why}; fell back to voting: {fallback.reason}",
                {**fallback.details, "fallback": "voting", "candidates": order},
            )
        winner = valid[choice - 1]
        agreeing = sum(c.answer.key == winner.answer.key for c in valid)
        return Selection(
            winner,
            agreeing / len(valid),
            f"judge {judge} picked candidate {choice} ({winner.model})",
            {
                "judge": judge,
                "verdict": verdict.content[:200] if verdict else None,
                "candidates": order,
            },
        )
