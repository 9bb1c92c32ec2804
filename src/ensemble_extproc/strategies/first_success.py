"""first_success: the fastest valid answer wins; the calls still running are cancelled.

With ``ensemble.first_success.hedge_delay_ms``, models start one by one in request order:
the next starts when the delay passes without a valid answer, or at once when a call
fails, so a fast first model costs a single call. Under a cost cap, hedging stops at the
first hedge the cap keeps from starting (the later models cost no less, as a rule) and
the answer says so.
"""

from __future__ import annotations

from collections.abc import Generator

from .base import (
    Call,
    CancelRest,
    Context,
    Launch,
    Plan,
    Progress,
    Selection,
    Status,
    Step,
    Strategy,
    Wait,
)


def _the_rest(waiting: list[str], progress: Progress) -> Generator[Step, Progress, None]:
    """Launch the models not asked yet and wait for every call (not relayed)."""
    if waiting:
        progress = yield Launch(tuple(Call(m) for m in waiting))
    while progress.running and not progress.deadline_passed:
        progress = yield Wait()


class FirstSuccess(Strategy):
    name = "first_success"
    natural_min_responses = 1

    def may_stop_early(self, ctx: Context) -> bool:
        return len(ctx.models) > 1

    def plan(self, ctx: Context) -> Plan:
        delay_ms = ctx.settings.first_success.hedge_delay_ms
        delay = None if delay_ms is None else delay_ms / 1000
        count = len(ctx.models) if delay is None else 1
        waiting = list(ctx.models[count:])
        started = count
        # Relayed: a streaming client gets the first model to produce output, live.
        yield Launch(tuple(Call(m, relay=True) for m in ctx.models[:count]))
        while True:
            progress = yield Wait(delay if waiting else None)
            capped = [c.model for c in progress.finished if c.status is Status.OVER_BUDGET]
            if capped:
                waiting.clear()  # hedging stops at the cost cap
            valid = progress.valid_members()
            if len(valid) >= ctx.min_responses:
                winner = min(valid, key=lambda c: c.order)
                launched = started - len(capped)
                if ctx.complete:  # a learning sample: the others answer too, for learning
                    yield from _the_rest(waiting, progress)
                else:
                    yield CancelRest("a valid answer arrived first")
                stopped = f"; hedging stopped at the cost cap ({', '.join(capped)})"
                return Selection(
                    winner=winner,
                    reason=f"first valid answer ({winner.latency_ms:.0f} ms)"
                    + (stopped if capped else ""),
                    details={
                        "hedged": delay is not None,
                        "launched": launched,
                        **({"cost_capped": capped} if capped else {}),
                        **({"learning_sample": True} if ctx.complete else {}),
                    },
                )
            if waiting and not progress.deadline_passed:
                # No valid answer yet: the hedge delay passed or a call failed. Next model.
                yield Launch((Call(waiting.pop(0), relay=True),))
                started += 1
            elif not progress.running_members() or progress.deadline_passed:
                return None
