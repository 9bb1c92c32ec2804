"""first_success: the fastest valid answer wins; the calls still running are cancelled.

With ``ensemble.first_success.hedge_delay_ms``, models start one by one in request order:
the next starts when the delay passes without a valid answer, or at once when a call
fails, so a fast first model costs a single call.
"""

from __future__ import annotations

from .base import Call, CancelRest, Context, Launch, Plan, Selection, Wait
from .settings import StrategySettings


class FirstSuccess:
    name = "first_success"
    natural_min_responses: int | None = 1

    def missing_setting(self, settings: StrategySettings) -> str | None:
        return None

    def plan(self, ctx: Context) -> Plan:
        delay_ms = ctx.settings.first_success.hedge_delay_ms
        delay = None if delay_ms is None else delay_ms / 1000
        count = len(ctx.models) if delay is None else 1
        waiting = list(ctx.models[count:])
        # Relayed: a streaming client gets the first model to produce output, live.
        yield Launch(tuple(Call(m, relay=True) for m in ctx.models[:count]))
        while True:
            progress = yield Wait(delay if waiting else None)
            valid = progress.valid_members()
            if len(valid) >= ctx.min_responses:
                yield CancelRest("a valid answer arrived first")
                winner = min(valid, key=lambda c: c.order)
                launched = len(ctx.models) - len(waiting)
                return Selection(
                    winner=winner,
                    reason=f"first valid answer ({winner.latency_ms:.0f} ms)",
                    details={"hedged": delay is not None, "launched": launched},
                )
            if waiting and not progress.deadline_passed:
                # No valid answer yet: the hedge delay passed or a call failed. Next model.
                yield Launch((Call(waiting.pop(0), relay=True),))
            elif not progress.running_members() or progress.deadline_passed:
                return None
