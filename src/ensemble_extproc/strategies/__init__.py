"""Aggregation strategies, registered by name."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from .base import ACCEPTED_FINISH_REASONS, Candidate, Selection, Status, Strategy, Usage
from .first_success import FirstSuccess
from .voting import Voting

STRATEGIES: Mapping[str, Strategy] = MappingProxyType(
    {strategy.name: strategy for strategy in (FirstSuccess(), Voting())}
)

__all__ = [
    "ACCEPTED_FINISH_REASONS",
    "STRATEGIES",
    "Candidate",
    "Selection",
    "Status",
    "Strategy",
    "Usage",
]
