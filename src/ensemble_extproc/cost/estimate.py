"""A call's cost before it starts (pure): the upper estimate a cost cap is checked against.

Prompt tokens: the body's ``messages`` and ``tools`` encoded as JSON, ``bytes_per_token``
bytes a token, rounded up (JSON's quotes and keys count too, which errs on the side of the
cap). Completion tokens: the lower of ``max_completion_tokens`` and ``max_tokens`` when the
body sets one (then the estimate bounds what the call can cost, as far as the prompt
estimate holds), else ``output_tokens`` (an assumption: the call may cost more).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..json_out import encode
from .model import CostEstimate, Price

LIMIT_FIELDS = ("max_completion_tokens", "max_tokens")


def prompt_tokens(body: Mapping[str, Any], settings: CostEstimate) -> int:
    size = len(encode(body.get("messages") or []))
    tools = body.get("tools")
    if tools:
        size += len(encode(tools))
    return math.ceil(size / settings.bytes_per_token)


def token_limit(body: Mapping[str, Any]) -> int | None:
    """The completion tokens the body allows, if it says."""
    limits = [
        value
        for value in (body.get(name) for name in LIMIT_FIELDS)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0
    ]
    return min(limits) if limits else None


def completion_tokens(body: Mapping[str, Any], settings: CostEstimate) -> int:
    limit = token_limit(body)
    return settings.output_tokens if limit is None else limit


def call_estimate(body: Mapping[str, Any], price: Price | None, settings: CostEstimate) -> float:
    """US dollars that sending ``body`` may cost; infinite for a model without a price
    (nothing bounds it)."""
    if price is None:
        return math.inf
    return price.usd(prompt_tokens(body, settings), completion_tokens(body, settings))
