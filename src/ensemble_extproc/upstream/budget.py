"""The cost cap of one ensemble while it runs: each call's estimate before it starts, and
what the calls so far have committed (docs/cost.md).

What is committed: a finished call's cost when it is known, else its estimate (a call
cancelled or broken before it reported usage may still be billed); a running call's
estimate. A call starts only if the committed total plus its own estimate stays within
the cap. The calls a plan starts first, before any other, must fit together: otherwise
the request is refused (400 ``max_cost_exceeded``) before any call is made, naming the
estimate. Later calls (a cascade's next stage, a hedge, a judge, a resumed stream) that do
not fit are not started, and the candidate says so (status ``over_budget``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .. import headers as h
from ..cost.account import format_usd
from ..errors import ApiError, ErrorCode
from ..strategies.base import Call, Candidate, Status

# Sums of float dollars: a call that fits exactly is not refused for a rounding error.
_SLACK = 1e-12


class Budget:
    """``estimate``: what a call may cost before it starts (``cost.estimate``)."""

    def __init__(self, cap: float, estimate: Callable[[Call], float]) -> None:
        self.cap = cap
        self.estimate = estimate

    def fits(self, estimate: float, committed: float) -> bool:
        return committed + estimate <= self.cap + max(self.cap, 1.0) * _SLACK

    def check_first(self, calls: Sequence[Call]) -> list[float]:
        """The estimates of the calls a plan starts first; the client's 400 when together
        they would pass the cap."""
        estimates = [self.estimate(call) for call in calls]
        if self.fits(sum(estimates), 0.0):
            return estimates
        each = ", ".join(
            f"{call.model} {format_usd(usd)}" for call, usd in zip(calls, estimates, strict=True)
        )
        raise ApiError(
            ErrorCode.MAX_COST_EXCEEDED,
            f"the calls this strategy starts at once are estimated at "
            f"{format_usd(sum(estimates))} USD ({each}), over the cost cap of "
            f"{format_usd(self.cap)} USD: raise the cap, lower max_tokens, or name fewer or "
            "cheaper models",
            param=h.MAX_COST,
        )

    def refused(self, call: Call, estimate: float, committed: float) -> Candidate:
        """A call that is not started: it would take the ensemble over its cap."""
        error = (
            f"not started: its estimated {format_usd(estimate)} USD on top of the "
            f"{format_usd(committed)} USD committed would pass the cost cap of "
            f"{format_usd(self.cap)} USD"
        )
        return Candidate(call.model, Status.OVER_BUDGET, role=call.role, error=error, sent=False)
