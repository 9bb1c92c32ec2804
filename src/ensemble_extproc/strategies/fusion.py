"""fusion (mixture-of-agents): an aggregator model writes one answer from the candidates.

It is told to resolve contradictions and keep the requested output format; the client's
system prompt and ``response_format`` go along. An aggregator failure falls back to voting.
"""

from __future__ import annotations

from typing import Any

from .. import prompts
from ..chat import conversation_text
from .base import Call, Context, Plan, Role, Selection, Strategy
from .judging import HELPER_CALL_DROPS, candidate_texts
from .settings import StrategySettings
from .steps import ask, gather
from .tally import ordered
from .voting import majority


class Fusion(Strategy):
    name = "fusion"

    def missing_setting(self, settings: StrategySettings) -> str | None:
        return None if settings.fusion.aggregator_model else "ensemble.fusion.aggregator_model"

    def helpers(self, settings: StrategySettings) -> tuple[str, ...]:
        model = settings.fusion.aggregator_model
        return (model,) if model else ()

    def plan(self, ctx: Context) -> Plan:
        progress = yield from gather(ctx, (Call(m) for m in ctx.models))
        if progress is None or len(progress.valid_members()) < ctx.min_responses:
            return None
        valid = ordered(progress.valid_members(), ctx.models)
        aggregator = ctx.settings.fusion.aggregator_model or ""
        prompt = prompts.candidates_prompt(
            prompts.AGGREGATOR_INSTRUCTION, conversation_text(ctx.request), candidate_texts(valid)
        )
        system: list[dict[str, Any]] = [
            dict(m)
            for m in ctx.request.get("messages", [])
            if isinstance(m, dict) and m.get("role") in ("system", "developer")
        ]
        # If candidates call tools, the aggregator may too: it keeps the client's tools.
        keeps_tools = any(c.tool_calls for c in valid)
        drops = {
            k: v
            for k, v in HELPER_CALL_DROPS.items()
            if not (keeps_tools and k in ("tools", "tool_choice", "parallel_tool_calls"))
        }
        call = Call(
            aggregator,
            Role.AGGREGATOR,
            extra=drops,
            messages=(*system, {"role": "user", "content": prompt}),
            relay=True,  # a streaming client gets the aggregator's answer as it is written
        )
        progress = yield from ask(call)
        fused = [c for c in progress.finished if c.role is Role.AGGREGATOR]
        if fused and fused[-1].valid:
            return Selection(
                fused[-1],
                None,
                f"fused by {aggregator} from {len(valid)} answers",
                {"aggregator": aggregator, "candidates": [c.model for c in valid]},
            )
        why = fused[-1].invalid_reason if fused else "no answer"
        fallback = majority(ctx, valid)
        return Selection(
            fallback.winner,
            fallback.agreement,
            f"aggregator {aggregator} failed ({why}); fell back to voting: " + fallback.reason,
            {**fallback.details, "fallback": "voting"},
        )
