"""Cost, declared: a model's price (``models[].price``, ``demo.models[].price``), how a
call's cost is estimated before it starts (``ensemble.cost_estimate``), and what one call
cost (``CallCost``).

A leaf like ``section``: ``config.model`` and ``config.demo`` both declare a price, and
``strategies.base`` carries a call's cost on its candidate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from msgspec import Meta

from ..section import Count, Positive, Section

Dollars = Annotated[float, Meta(ge=0)]


class Price(Section, frozen=True):
    """What a model charges, in US dollars per million tokens."""

    input_per_million: Annotated[Dollars, Meta(description="US dollars per million prompt tokens")]
    output_per_million: Annotated[
        Dollars, Meta(description="US dollars per million completion tokens")
    ]

    def usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (
            prompt_tokens * self.input_per_million + completion_tokens * self.output_per_million
        ) / 1_000_000


class CostEstimate(Section, frozen=True):
    """How a call's cost is estimated before it starts, to keep an ensemble under its cost
    cap (docs/cost.md): its prompt tokens from the size of the body's ``messages`` and
    ``tools`` as JSON, its completion tokens from ``max_completion_tokens`` or
    ``max_tokens``, else ``output_tokens``."""

    # About 4 bytes a token in English, fewer in code and other scripts: 3 errs on the
    # side of the cap.
    bytes_per_token: Annotated[
        Positive, Meta(description="prompt bytes (as JSON) per token; smaller is more cautious")
    ] = 3.0
    output_tokens: Annotated[
        Count,
        Meta(description="the completion tokens assumed when a request sets no max_tokens"),
    ] = 1024


@dataclass(frozen=True, slots=True)
class CallCost:
    """What one call cost: US dollars, or unknown and why (never a silent 0)."""

    usd: float | None
    # When usd is None: why the cost is not known.
    unknown: str | None = None
    # usd comes from usage the gateway counted itself (a stream that broke and was
    # resumed), not from usage the model reported.
    estimated: bool = False


FREE = CallCost(0.0)
