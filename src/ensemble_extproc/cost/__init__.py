"""What ensembles cost: model prices, estimates before a call, the cost of each call and
the total (docs/cost.md)."""

from __future__ import annotations

from .model import CostEstimate, Price

__all__ = ["CostEstimate", "Price"]
