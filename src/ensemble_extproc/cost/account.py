"""What an ensemble's calls cost (pure): each call at its model's price, and the total.

A call's cost is its usage at its model's price. It is 0 for a call that was never sent
(circuit open, over the cost cap, past the deadline) and for one the endpoint refused with
an error status (providers bill answers, not refusals). It is *unknown*, and says why,
for a call to a model without a price, and for a call that reported no usage (cancelled,
timed out or broken before its usage came, or an endpoint that never reports it): the
total then covers only the known calls, and says it is incomplete. Never a silent 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..strategies.base import Candidate, Failure, Status
from .model import FREE, CallCost, Price

NO_PRICE = "no price declared for this model"
_NO_USAGE = {
    Status.OK: "the model reported no usage",
    Status.CANCELLED: "cancelled before the model reported usage",
    Status.TIMEOUT: "timed out before the model reported usage",
}


def call_cost(candidate: Candidate, price: Price | None) -> CallCost:
    if not candidate.sent or candidate.failure is Failure.HTTP:
        return FREE
    if price is None:
        return CallCost(None, NO_PRICE)
    usage = candidate.usage
    if usage is None:
        why = _NO_USAGE.get(candidate.status, "failed before the model reported usage")
        return CallCost(None, why)
    usd = price.usd(usage.prompt_tokens, usage.completion_tokens)
    return CallCost(usd, estimated=candidate.usage_counted)


def cost_of(candidate: Candidate) -> CallCost:
    """The cost the orchestrator set; a candidate without one is priced as unpriced."""
    return candidate.cost if candidate.cost is not None else call_cost(candidate, None)


@dataclass(frozen=True, slots=True)
class CostSummary:
    # The calls whose cost is known, summed: the whole cost when ``complete``, else a
    # lower bound.
    total_usd: float
    complete: bool
    # Some call's cost comes from usage the gateway counted (a broken stream).
    estimated: bool
    # Models of the calls whose cost is unknown, in call order.
    unknown: tuple[str, ...]
    # The cap, and the models of the calls it kept from starting.
    max_usd: float | None
    not_started: tuple[str, ...]


def summary(candidates: Sequence[Candidate], max_usd: float | None) -> CostSummary:
    costs = [(c, cost_of(c)) for c in candidates]
    return CostSummary(
        total_usd=sum(cost.usd for _, cost in costs if cost.usd is not None),
        complete=all(cost.usd is not None for _, cost in costs),
        estimated=any(cost.estimated for _, cost in costs),
        unknown=tuple(c.model for c, cost in costs if cost.usd is None),
        max_usd=max_usd,
        not_started=tuple(c.model for c in candidates if c.status is Status.OVER_BUDGET),
    )


def format_usd(value: float) -> str:
    """Dollars for a header: plain decimals (no exponent), to a hundred-millionth of a cent."""
    text = f"{value:.10f}".rstrip("0").rstrip(".")
    return text or "0"
