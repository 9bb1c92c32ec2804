"""first_success: the fastest valid answer wins; the calls still running are cancelled."""

from __future__ import annotations

from collections.abc import Sequence

from .base import Candidate, Selection


class FirstSuccess:
    name = "first_success"
    natural_min_responses: int | None = 1

    def enough(self, valid: Sequence[Candidate], pending: int) -> bool:
        return bool(valid)

    def select(self, valid: Sequence[Candidate], model_order: Sequence[str]) -> Selection:
        winner = min(valid, key=lambda c: c.order)
        return Selection(winner=winner)
