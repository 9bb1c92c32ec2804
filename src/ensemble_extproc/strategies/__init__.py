"""Aggregation strategies, registered by name; each one a small module with a plan."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from .base import (
    Candidate,
    Context,
    Failure,
    Role,
    Selection,
    Status,
    Strategy,
    Usage,
)
from .cascade import Cascade
from .first_success import FirstSuccess
from .fusion import Fusion
from .reranking import Reranking
from .score_averaging import ScoreAveraging
from .settings import StrategySettings
from .voting import Voting
from .weighted import Weighted

STRATEGIES: Mapping[str, Strategy] = MappingProxyType(
    {
        strategy.name: strategy
        for strategy in (
            Voting(),
            Weighted(),
            FirstSuccess(),
            ScoreAveraging(),
            Reranking(),
            Fusion(),
            Cascade(),
        )
    }
)

__all__ = [
    "STRATEGIES",
    "Candidate",
    "Context",
    "Failure",
    "Role",
    "Selection",
    "Status",
    "Strategy",
    "StrategySettings",
    "Usage",
]
